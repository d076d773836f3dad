-- Ferry store, SQLite, version 2: what the management API needs. Tenant details and settings, admin API keys,
-- connections (live and past), nodes, request statistics per tenant, minute and node, the request log.
-- Times are unix seconds (INTEGER) except request_log.at_ms (unix milliseconds). Counters are INTEGER (64-bit).
-- The PostgreSQL set lives beside this one in ../postgres.

-- Rows written by version 1 load with empty details, no settings and updated_at = created_at.
ALTER TABLE tenants ADD COLUMN display_name TEXT    NOT NULL DEFAULT '';
ALTER TABLE tenants ADD COLUMN description  TEXT    NOT NULL DEFAULT '';
-- JSON object of ferry_proto::TenantSettings; '{}' is "nothing set".
ALTER TABLE tenants ADD COLUMN settings     TEXT    NOT NULL DEFAULT '{}';
ALTER TABLE tenants ADD COLUMN updated_at   INTEGER NOT NULL DEFAULT 0;
UPDATE tenants SET updated_at = created_at WHERE updated_at = 0;

-- Nodes poll for recent revocations.
CREATE INDEX IF NOT EXISTS secrets_revoked_at ON secrets (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS admin_keys (
    id         TEXT    PRIMARY KEY NOT NULL,
    name       TEXT    NOT NULL,
    -- Lowercase hex SHA-256 of the key; every management request looks it up.
    sha256     TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- No foreign key to tenants: a tunnel of a tenant deleted a moment ago is still recorded. Deleting a tenant
-- deletes its rows here explicitly.
CREATE TABLE IF NOT EXISTS connections (
    id              TEXT    PRIMARY KEY NOT NULL,
    tenant          TEXT    NOT NULL,
    connector_id    TEXT    NOT NULL,
    node            TEXT    NOT NULL,
    remote_addr     TEXT    NOT NULL,
    connected_at    INTEGER NOT NULL,
    disconnected_at INTEGER
);

-- Listing, newest first, by the (connected_at, id) cursor: all, one tenant's, live ones.
CREATE INDEX IF NOT EXISTS connections_order ON connections (connected_at, id);
CREATE INDEX IF NOT EXISTS connections_tenant ON connections (tenant, connected_at, id);
CREATE INDEX IF NOT EXISTS connections_live ON connections (connected_at, id) WHERE disconnected_at IS NULL;
-- Closing the open tunnels of an expired node.
CREATE INDEX IF NOT EXISTS connections_live_node ON connections (node) WHERE disconnected_at IS NULL;

CREATE TABLE IF NOT EXISTS nodes (
    id           TEXT    PRIMARY KEY NOT NULL,
    address      TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS nodes_heartbeat ON nodes (heartbeat_at);

-- One row per tenant, minute and node: each node writes only its own rows, readers sum over nodes.
CREATE TABLE IF NOT EXISTS stats (
    tenant     TEXT    NOT NULL,
    minute     INTEGER NOT NULL,
    node       TEXT    NOT NULL,
    requests   INTEGER NOT NULL,
    bytes_in   INTEGER NOT NULL,
    bytes_out  INTEGER NOT NULL,
    status_1xx INTEGER NOT NULL,
    status_2xx INTEGER NOT NULL,
    status_3xx INTEGER NOT NULL,
    status_4xx INTEGER NOT NULL,
    status_5xx INTEGER NOT NULL,
    -- JSON array of the counts per latency bucket (ferry_store::LATENCY_BUCKETS_MS, then the overflow bucket).
    latency    TEXT    NOT NULL,
    PRIMARY KEY (tenant, minute, node)
);

-- Reading every tenant's minutes of a window (one tenant's use the primary key).
CREATE INDEX IF NOT EXISTS stats_minute ON stats (minute, tenant);

CREATE TABLE IF NOT EXISTS request_log (
    -- AUTOINCREMENT: ids are never reused, also not after pruning, so paging cursors stay valid.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant      TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    request_id  TEXT    NOT NULL,
    method      TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    status      INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    bytes_in    INTEGER NOT NULL,
    bytes_out   INTEGER NOT NULL,
    client_addr TEXT    NOT NULL
);

CREATE INDEX IF NOT EXISTS request_log_tenant ON request_log (tenant, id);
CREATE INDEX IF NOT EXISTS request_log_at ON request_log (at_ms);
