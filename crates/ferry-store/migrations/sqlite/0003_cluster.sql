-- Ferry store, SQLite, version 3: what a cluster of nodes needs. Named leases (one holder at a time: the worker),
-- the roles each node runs, and the statistics roll-up.
-- Lease times are unix milliseconds of the database's clock (INTEGER). The PostgreSQL set lives beside this one in
-- ../postgres.

-- One row per lease name, kept for ever (releasing ends the term, it does not delete the row), so that `term`
-- grows by one with every new holder or new acquisition after a lapse.
CREATE TABLE IF NOT EXISTS leases (
    name           TEXT    PRIMARY KEY NOT NULL,
    holder         TEXT    NOT NULL,
    term           INTEGER NOT NULL,
    acquired_at_ms INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL
);

-- Comma-separated role names (`gateway,relay`); rows written by version 2 load with none.
ALTER TABLE nodes ADD COLUMN roles TEXT NOT NULL DEFAULT '';

-- Statistics rows written by nodes (node <> ''), as opposed to the roll-up rows (node = '') that the worker merges
-- them into: the roll-up finds the minutes still to merge without reading the rolled-up past.
CREATE INDEX IF NOT EXISTS stats_node_rows ON stats (minute) WHERE node <> '';
