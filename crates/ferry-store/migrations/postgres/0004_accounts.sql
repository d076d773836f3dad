-- Ferry store, PostgreSQL, version 4: operator accounts. Users with a role and a tenant scope, their sign-in
-- sessions, the audit log, and a role and tenant scope on admin keys. The same tables as
-- ../sqlite/0004_accounts.sql. Times are unix seconds (BIGINT); sorted or compared text uses the "C" collation.

-- Keys created before roles existed keep their full power.
ALTER TABLE admin_keys ADD COLUMN IF NOT EXISTS role    TEXT NOT NULL DEFAULT 'admin';
-- JSON array of tenant names as text (the same bytes as on SQLite); '[]' is "no tenant".
ALTER TABLE admin_keys ADD COLUMN IF NOT EXISTS tenants TEXT NOT NULL DEFAULT '[]';

CREATE TABLE IF NOT EXISTS users (
    name               TEXT COLLATE "C" PRIMARY KEY,
    -- argon2 PHC string; NULL for an account that signs in only through OpenID Connect.
    password_hash      TEXT,
    role               TEXT   NOT NULL,
    -- JSON array of tenant names (an operator's scope).
    tenants            TEXT   NOT NULL DEFAULT '[]',
    disabled           BIGINT NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL,
    last_sign_in_at    BIGINT
);

-- A session is found by the SHA-256 (hex) of its cookie value; the value itself is never stored.
CREATE TABLE IF NOT EXISTS sessions (
    id_sha256       TEXT COLLATE "C" PRIMARY KEY,
    user_name       TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf_token      TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    last_seen_at    BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_name);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (idle_expires_at);

CREATE TABLE IF NOT EXISTS audit_log (
    -- An identity never hands out an id twice, also not after pruning, so paging cursors stay valid.
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    -- Who: `user:NAME`, `admin-key:ID`, an OpenID Connect subject, `local` for the command line on the store.
    actor   TEXT COLLATE "C" NOT NULL,
    -- What, as `object.verb`: `tenant.create`, `secret.revoke`, `user.passwd`, `session.create` …
    action  TEXT COLLATE "C" NOT NULL,
    -- Which: a tenant name, `tenant/secret-id`, a user name, a key id.
    object  TEXT   NOT NULL,
    -- JSON object of further detail; never a secret, a password or a hash.
    detail  TEXT   NOT NULL DEFAULT '{}'
);

CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor, id);
