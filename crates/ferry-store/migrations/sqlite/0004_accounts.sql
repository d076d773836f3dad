-- Ferry store, SQLite, version 4: operator accounts. Users with a role and a tenant scope, their sign-in sessions,
-- the audit log, and a role and tenant scope on admin keys. Times are unix seconds (INTEGER). The PostgreSQL set
-- lives beside this one in ../postgres.

-- Keys created before roles existed keep their full power.
ALTER TABLE admin_keys ADD COLUMN role    TEXT NOT NULL DEFAULT 'admin';
-- JSON array of tenant names; '[]' is "no tenant" (what an admin or viewer has: they see every tenant).
ALTER TABLE admin_keys ADD COLUMN tenants TEXT NOT NULL DEFAULT '[]';

CREATE TABLE IF NOT EXISTS users (
    name               TEXT    PRIMARY KEY NOT NULL,
    -- argon2 PHC string; NULL for an account that signs in only through OpenID Connect.
    password_hash      TEXT,
    role               TEXT    NOT NULL,
    -- JSON array of tenant names (an operator's scope).
    tenants            TEXT    NOT NULL DEFAULT '[]',
    disabled           INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    last_sign_in_at    INTEGER
);

-- A session is found by the SHA-256 (hex) of its cookie value; the value itself is never stored.
CREATE TABLE IF NOT EXISTS sessions (
    id_sha256       TEXT    PRIMARY KEY NOT NULL,
    user_name       TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf_token      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL,
    idle_expires_at INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_name);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (idle_expires_at);

CREATE TABLE IF NOT EXISTS audit_log (
    -- AUTOINCREMENT: ids are never reused, also not after pruning, so paging cursors stay valid.
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    -- Who: `user:NAME`, `admin-key:ID`, an OpenID Connect subject, `local` for the command line on the store.
    actor   TEXT    NOT NULL,
    -- What, as `object.verb`: `tenant.create`, `secret.revoke`, `user.passwd`, `session.create` …
    action  TEXT    NOT NULL,
    -- Which: a tenant name, `tenant/secret-id`, a user name, a key id.
    object  TEXT    NOT NULL,
    -- JSON object of further detail; never a secret, a password or a hash.
    detail  TEXT    NOT NULL DEFAULT '{}'
);

CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor, id);
