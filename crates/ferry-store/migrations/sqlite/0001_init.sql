-- Ferry store, SQLite, version 1: tenants, their connector secrets, token signing keys.
-- Times are unix seconds (INTEGER). The PostgreSQL set lives beside this one in ../postgres.

CREATE TABLE IF NOT EXISTS tenants (
    name       TEXT    PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS secrets (
    id         TEXT    PRIMARY KEY NOT NULL,
    tenant     TEXT    NOT NULL REFERENCES tenants (name) ON DELETE CASCADE,
    hash       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);

CREATE INDEX IF NOT EXISTS secrets_tenant ON secrets (tenant);

CREATE TABLE IF NOT EXISTS signing_keys (
    kid         TEXT    PRIMARY KEY NOT NULL,
    algorithm   TEXT    NOT NULL,
    private_der BLOB    NOT NULL,
    public_key  BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);
