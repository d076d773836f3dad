-- Ferry store, PostgreSQL, version 3: what a cluster of nodes needs. Named leases (one holder at a time: the
-- worker), the roles each node runs, and the statistics roll-up.
-- The same tables as ../sqlite/0003_cluster.sql. Lease times are unix milliseconds of the database server's clock
-- (BIGINT), so that the nodes' clocks do not matter.

-- One row per lease name, kept for ever (releasing ends the term, it does not delete the row), so that `term`
-- grows by one with every new holder or new acquisition after a lapse.
CREATE TABLE IF NOT EXISTS leases (
    name           TEXT COLLATE "C" PRIMARY KEY,
    holder         TEXT COLLATE "C" NOT NULL,
    term           BIGINT NOT NULL,
    acquired_at_ms BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL
);

-- Comma-separated role names (`gateway,relay`); rows written by version 2 load with none.
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS roles TEXT NOT NULL DEFAULT '';

-- Statistics rows written by nodes (node <> ''), as opposed to the roll-up rows (node = '') that the worker merges
-- them into: the roll-up finds the minutes still to merge without reading the rolled-up past.
CREATE INDEX IF NOT EXISTS stats_node_rows ON stats (minute) WHERE node <> '';
