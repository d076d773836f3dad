-- Ferry store, PostgreSQL, version 2: what the management API needs. Tenant details and settings, admin API keys,
-- connections (live and past), nodes, request statistics per tenant, minute and node, the request log.
-- The same tables as ../sqlite/0002_management.sql. Times are unix seconds (BIGINT) except request_log.at_ms (unix
-- milliseconds); counters are BIGINT. Text that is sorted or compared uses the "C" collation, so ORDER BY and
-- lower() behave as on SQLite (bytewise; only ASCII letters fold).

-- Rows written by version 1 load with empty details, no settings and updated_at = created_at.
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS display_name TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS description  TEXT   NOT NULL DEFAULT '';
-- JSON object of ferry_proto::TenantSettings as text (the same bytes as on SQLite); '{}' is "nothing set".
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS settings     TEXT   NOT NULL DEFAULT '{}';
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS updated_at   BIGINT NOT NULL DEFAULT 0;
UPDATE tenants SET updated_at = created_at WHERE updated_at = 0;

-- Nodes poll for recent revocations.
CREATE INDEX IF NOT EXISTS secrets_revoked_at ON secrets (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS admin_keys (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT   NOT NULL,
    -- Lowercase hex SHA-256 of the key; every management request looks it up.
    sha256     TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- No foreign key to tenants: a tunnel of a tenant deleted a moment ago is still recorded. Deleting a tenant
-- deletes its rows here explicitly.
CREATE TABLE IF NOT EXISTS connections (
    id              TEXT COLLATE "C" PRIMARY KEY,
    tenant          TEXT COLLATE "C" NOT NULL,
    connector_id    TEXT   NOT NULL,
    node            TEXT COLLATE "C" NOT NULL,
    remote_addr     TEXT   NOT NULL,
    connected_at    BIGINT NOT NULL,
    disconnected_at BIGINT
);

-- Listing, newest first, by the (connected_at, id) cursor: all, one tenant's, live ones.
CREATE INDEX IF NOT EXISTS connections_order ON connections (connected_at, id);
CREATE INDEX IF NOT EXISTS connections_tenant ON connections (tenant, connected_at, id);
CREATE INDEX IF NOT EXISTS connections_live ON connections (connected_at, id) WHERE disconnected_at IS NULL;
-- Closing the open tunnels of an expired node.
CREATE INDEX IF NOT EXISTS connections_live_node ON connections (node) WHERE disconnected_at IS NULL;

CREATE TABLE IF NOT EXISTS nodes (
    id           TEXT COLLATE "C" PRIMARY KEY,
    address      TEXT   NOT NULL,
    version      TEXT   NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS nodes_heartbeat ON nodes (heartbeat_at);

-- One row per tenant, minute and node: each node writes only its own rows, readers sum over nodes.
CREATE TABLE IF NOT EXISTS stats (
    tenant     TEXT COLLATE "C" NOT NULL,
    minute     BIGINT NOT NULL,
    node       TEXT COLLATE "C" NOT NULL,
    requests   BIGINT NOT NULL,
    bytes_in   BIGINT NOT NULL,
    bytes_out  BIGINT NOT NULL,
    status_1xx BIGINT NOT NULL,
    status_2xx BIGINT NOT NULL,
    status_3xx BIGINT NOT NULL,
    status_4xx BIGINT NOT NULL,
    status_5xx BIGINT NOT NULL,
    -- JSON array of the counts per latency bucket (ferry_store::LATENCY_BUCKETS_MS, then the overflow bucket).
    latency    TEXT   NOT NULL,
    PRIMARY KEY (tenant, minute, node)
);

-- Reading every tenant's minutes of a window (one tenant's use the primary key).
CREATE INDEX IF NOT EXISTS stats_minute ON stats (minute, tenant);

CREATE TABLE IF NOT EXISTS request_log (
    -- An identity never hands out an id twice, also not after pruning, so paging cursors stay valid.
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant      TEXT COLLATE "C" NOT NULL,
    at_ms       BIGINT  NOT NULL,
    request_id  TEXT    NOT NULL,
    method      TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    status      BIGINT  NOT NULL,
    duration_ms BIGINT  NOT NULL,
    bytes_in    BIGINT  NOT NULL,
    bytes_out   BIGINT  NOT NULL,
    client_addr TEXT    NOT NULL
);

CREATE INDEX IF NOT EXISTS request_log_tenant ON request_log (tenant, id);
CREATE INDEX IF NOT EXISTS request_log_at ON request_log (at_ms);
