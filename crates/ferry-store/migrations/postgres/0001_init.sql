-- Ferry store, PostgreSQL, version 1: tenants, their connector secrets, token signing keys.
-- The same tables as ../sqlite/0001_init.sql. Times are unix seconds (BIGINT). Text keys use the "C" collation so
-- that ORDER BY sorts bytewise, as SQLite does, whatever the database's locale.

CREATE TABLE IF NOT EXISTS tenants (
    name       TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS secrets (
    id         TEXT COLLATE "C" PRIMARY KEY,
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (name) ON DELETE CASCADE,
    hash       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

CREATE INDEX IF NOT EXISTS secrets_tenant ON secrets (tenant);

CREATE TABLE IF NOT EXISTS signing_keys (
    kid         TEXT COLLATE "C" PRIMARY KEY,
    algorithm   TEXT   NOT NULL,
    private_der BYTEA  NOT NULL,
    public_key  BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL
);
