//! Ferry's persistent state behind one [`Store`] trait.
//!
//! Owns: the `Store` trait and its record types (tenants with their settings, connector secret hashes, token
//! signing keys, admin API keys, connections, nodes with their roles, request statistics and their roll-up, the
//! request log, named leases, operator accounts with their sessions, the audit log), the
//! SQLite implementation ([`SqliteStore`], the embedded default), the PostgreSQL implementation
//! ([`PostgresStore`], shared by a cluster), what the two share (the SQL both accept, written once in `sql.rs`;
//! reading records out of rows, stored forms of settings and histograms, paging, in `rows.rs`), the one resolver from a database URL to a store ([`open_url`]), the
//! versioned migrations of every backend (`migrations/<backend>/`), and a backend-independent conformance suite
//! ([`conformance`], compiled for this crate's tests and behind the `conformance` feature) that every
//! implementation must pass.
//! Does not own: hashing or checking secrets, generating keys, issuing tokens (all in `ferry-auth`); where the
//! URL comes from (configuration, in `ferry-config`); limits on free text such as display names (the management
//! API's; PostgreSQL refuses NUL characters in text, SQLite does not).
#![forbid(unsafe_code)]

mod error;
mod metered;
mod postgres;
mod private_files;
mod resolve;
mod rows;
mod sql;
mod sqlite;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "conformance"))]
pub use postgres::testdb;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_proto::{TenantName, TenantSettings};

pub use error::StoreError;
pub use metered::MeteredStore;
pub use postgres::PostgresStore;
pub use resolve::{describe_url, open_url, sqlite_file, ACCEPTED_SCHEMES};
pub use rows::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
pub use sqlite::SqliteStore;

/// The file name of the SQLite database inside the data directory.
pub const SQLITE_FILE_NAME: &str = "ferry.db";

/// A tenant: the unit that owns connectors, targets and secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: TenantName,
    /// Free text for people; empty when not set.
    pub display_name: String,
    /// Free text for people; empty when not set.
    pub description: String,
    /// Per-tenant overrides of the node's defaults.
    pub settings: TenantSettings,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; equal to `created_at` until the first update. Every update makes it strictly greater (the
    /// current time, or one second past the previous value when updates come faster than one a second), so a
    /// reader can tell that a tenant changed by comparing it.
    pub updated_at: i64,
}

/// The mutable fields of a tenant, as created or replaced as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantFields {
    pub display_name: String,
    pub description: String,
    pub settings: TenantSettings,
}

/// One page of the tenant list: ordered by name (bytewise), starting after the name `after` (the previous page's
/// [`Page::next`]), at most `limit` long ([`DEFAULT_PAGE_LIMIT`] for 0, capped at [`MAX_PAGE_LIMIT`]), only names or
/// display names that contain `filter` when it is set and not empty. The filter is literal text (`%`, `_` and `\`
/// are not wildcards) and ignores the case of ASCII letters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantQuery {
    pub filter: Option<String>,
    pub after: Option<String>,
    pub limit: u32,
}

/// A page of results and the cursor of the next page (`None` on the last page). Cursors are opaque to callers: pass
/// them back unchanged; a cursor this store did not make fails with [`StoreError::InvalidCursor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A management API key. The key itself is high-entropy random, so the store keeps its SHA-256 (hex), which
/// makes the per-request lookup one indexed query; it is shown once, at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminKey {
    /// Opaque id, used to list and revoke.
    pub id: String,
    /// Free text naming the key's holder or purpose.
    pub name: String,
    /// Lowercase hex SHA-256 of the whole key.
    pub sha256: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; set once when revoked.
    pub revoked_at: Option<i64>,
    /// What the key may do (keys made before roles existed are admins).
    pub role: Role,
    /// The tenants an operator key may see; empty for the other roles.
    pub tenants: Vec<TenantName>,
}

/// What a caller of the management API may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything, users and admin keys included.
    Admin,
    /// Read and change only the tenants of its scope.
    Operator,
    /// Read everything but secrets; change nothing.
    Viewer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Viewer];

    /// The stored (and API) name: `admin`, `operator`, `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?} (admin, operator or viewer)"))
    }
}

/// An operator account of the management API and the dashboard.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Unique; what the person types to sign in.
    pub name: String,
    /// argon2 PHC string; `None` for an account that signs in only through OpenID Connect.
    pub password_hash: Option<String>,
    pub role: Role,
    /// The tenants an operator may see; empty for the other roles.
    pub tenants: Vec<TenantName>,
    /// A disabled account cannot sign in and its sessions are ended.
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last successful sign-in.
    pub last_sign_in_at: Option<i64>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "***"))
            .field("role", &self.role)
            .field("tenants", &self.tenants)
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("last_sign_in_at", &self.last_sign_in_at)
            .finish()
    }
}

/// A signed-in user's session. The cookie carries a random value; the store keeps only its SHA-256, so that
/// reading the database does not give anyone a session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Lowercase hex SHA-256 of the cookie value.
    pub id_sha256: String,
    /// The user's name.
    pub user: String,
    /// What a change made with this session must carry in `X-CSRF-Token`.
    pub csrf_token: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last request made with it.
    pub last_seen_at: i64,
    /// Unix seconds: the session ends here unless used before (each use moves it on).
    pub idle_expires_at: i64,
    /// Unix seconds: the session ends here however much it is used.
    pub expires_at: i64,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id_sha256", &"***")
            .field("user", &self.user)
            .field("csrf_token", &"***")
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("idle_expires_at", &self.idle_expires_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// One entry of the audit log: who changed what, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Assigned by the store on append; ignored when appending.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// `user:NAME`, `admin-key:ID`, a token's subject, or `local` (the command line on the store).
    pub actor: String,
    /// `object.verb`, e.g. `tenant.create`.
    pub action: String,
    /// What was changed: a tenant name, `tenant/secret-id`, a user name, a key id.
    pub object: String,
    /// A JSON object (text) with further detail; never a secret.
    pub detail: String,
}

/// Which audit entries to read: newest first (by id), optionally in `[from, to)` (unix seconds), by one actor, of
/// one action, with `id` below `before_id`, at most `limit` ([`DEFAULT_PAGE_LIMIT`] for 0, capped at
/// [`MAX_PAGE_LIMIT`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// One tunnel of a connector on a node, current (`disconnected_at` unset) or past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// Unique id of this tunnel (not of the connector, which may reconnect many times).
    pub id: String,
    pub tenant: TenantName,
    /// The connector's self-chosen id (stable across its reconnects).
    pub connector_id: String,
    /// The node holding the tunnel.
    pub node: String,
    /// The connector's address as the node saw it.
    pub remote_addr: String,
    /// Unix seconds.
    pub connected_at: i64,
    /// Unix seconds.
    pub disconnected_at: Option<i64>,
}

/// Which connections to list: newest first (by `connected_at`, then id, both descending), optionally one tenant's,
/// optionally only live ones, at most `limit` ([`DEFAULT_PAGE_LIMIT`] for 0, capped at [`MAX_PAGE_LIMIT`]), and
/// after the cursor `before` (a `connected_at`/id cursor as returned in [`Page::next`]). The cursor is stable:
/// rows recorded later never shift the pages that follow it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionQuery {
    pub tenant: Option<TenantName>,
    pub live_only: bool,
    pub before: Option<String>,
    pub limit: u32,
}

/// A Ferry node (one server process) as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    /// The public address the node serves on.
    pub address: String,
    /// Ferry version of the node.
    pub version: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds of the last heartbeat.
    pub heartbeat_at: i64,
    /// The roles the node runs, comma-separated (`gateway,relay,management,worker`); empty when the node did not
    /// say (rows written before roles existed).
    pub roles: String,
}

/// What [`Store::expire_silent_nodes`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiredNodes {
    /// Ids of the nodes taken as gone (their rows removed), ordered by id.
    pub nodes: Vec<String>,
    /// Live connections closed in the history: those of the gone nodes and those of nodes with no row at all.
    pub connections_closed: u64,
}

/// A named lease: at most one holder at a time, until it expires or is released. Times are unix milliseconds of
/// the database's clock (the PostgreSQL server's, or the host's for SQLite), so that the clocks of the nodes do not
/// matter; a holder should measure its own deadline from when it sent the request that granted the lease (the
/// grant happened later, so that deadline is earlier than `expires_at_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    /// Whoever holds it: any non-empty text unique to the holder (a process, not a node id that two processes may
    /// share).
    pub holder: String,
    /// Grows by one with every acquisition that is not a renewal (a new holder, or the same holder after the lease
    /// lapsed or was released); renewals keep it. A fencing token: a holder whose term changed was not the holder
    /// all along.
    pub term: i64,
    /// When this term began (unix milliseconds, database clock).
    pub acquired_at_ms: i64,
    /// When the lease lapses unless renewed (unix milliseconds, database clock).
    pub expires_at_ms: i64,
}

/// What one [`Store::roll_up_stats`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsRollUp {
    /// Minutes merged.
    pub minutes: u64,
    /// Per-node rows merged into roll-up rows.
    pub rows_merged: u64,
    /// Whether minutes before the cut-off are left to merge (the call stopped at its limit).
    pub more: bool,
}

/// The `node` of the statistics roll-up rows (no node's id is empty; [`Store::put_stats`] refuses it).
pub const ROLLUP_NODE: &str = "";

/// Upper bounds (milliseconds, inclusive) of the request latency histogram buckets; one more bucket counts
/// everything slower than the last bound.
pub const LATENCY_BUCKETS_MS: [u64; 13] =
    [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// Request statistics of one tenant in one minute, as counted by one node (nodes write their own rows; reading
/// sums them). Not `Default` (a tenant name cannot be empty): start from [`StatsRecord::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRecord {
    pub tenant: TenantName,
    /// Unix seconds of the minute's start (a multiple of 60).
    pub minute: i64,
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Responses by class: index 0 for 1xx … index 4 for 5xx.
    pub status_classes: [u64; 5],
    /// Counts per [`LATENCY_BUCKETS_MS`] bucket, plus the overflow bucket last.
    pub latency_buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
}

impl StatsRecord {
    /// All counts zero, for `tenant` in the minute starting at `minute` (unix seconds, a multiple of 60).
    pub fn new(tenant: TenantName, minute: i64) -> Self {
        StatsRecord {
            tenant,
            minute,
            requests: 0,
            bytes_in: 0,
            bytes_out: 0,
            status_classes: [0; 5],
            latency_buckets: [0; LATENCY_BUCKETS_MS.len() + 1],
        }
    }
}

/// One relayed request in the optional request log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLogEntry {
    /// Assigned by the store on append; ignored when appending.
    pub id: i64,
    pub tenant: TenantName,
    /// Unix milliseconds of the request's arrival.
    pub at_ms: i64,
    pub request_id: String,
    pub method: String,
    pub target: String,
    /// The path sent to the target, without the query string.
    pub path: String,
    pub status: u16,
    pub duration_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub client_addr: String,
}

/// One connector secret of a tenant, stored only as an argon2 PHC hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// Opaque id, unique across tenants; used to revoke the secret.
    pub id: String,
    pub tenant: TenantName,
    /// PHC string (never the plain secret).
    pub hash: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the secret is refused from this instant on.
    pub expires_at: Option<i64>,
    /// Unix seconds; set once when the secret is revoked.
    pub revoked_at: Option<i64>,
}

/// A key that signs the tokens of the built-in token endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// Key id, carried in the `kid` header of every token it signs.
    pub kid: String,
    /// JOSE algorithm name, e.g. `EdDSA`.
    pub algorithm: String,
    /// The private key as a PKCS#8 document.
    pub private_der: Vec<u8>,
    /// The raw public key (32 bytes for Ed25519).
    pub public_key: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_der", &"***")
            .field("public_key", &self.public_key)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Ferry's persistent state. Every method is one atomic operation; implementations must be safe to use from
/// several processes on the same database at once.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Create a tenant; [`StoreError::AlreadyExists`] if it is present.
    async fn create_tenant(
        &self,
        name: &TenantName,
        fields: &TenantFields,
    ) -> Result<Tenant, StoreError>;
    async fn get_tenant(&self, name: &TenantName) -> Result<Option<Tenant>, StoreError>;
    /// Replace a tenant's mutable fields (and bump `updated_at`); `None` if it does not exist.
    async fn update_tenant(
        &self,
        name: &TenantName,
        fields: &TenantFields,
    ) -> Result<Option<Tenant>, StoreError>;
    /// One page of tenants, ordered by name.
    async fn list_tenants(&self, query: &TenantQuery) -> Result<Page<Tenant>, StoreError>;
    /// Delete a tenant with all its secrets and all its connection records (live and past), atomically, so that a
    /// tenant created again under the same name starts clean; `false` if it did not exist. Its statistics and
    /// request log entries stay (they record traffic that happened; the request log ages out by pruning).
    async fn delete_tenant(&self, name: &TenantName) -> Result<bool, StoreError>;

    /// Store a secret hash for a tenant; [`StoreError::NotFound`] if the tenant does not exist.
    async fn add_secret(
        &self,
        tenant: &TenantName,
        hash: &str,
        expires_at: Option<i64>,
    ) -> Result<SecretRecord, StoreError>;
    /// Secrets of the tenant that are neither revoked nor expired at `now` (unix seconds), newest first. Empty
    /// for an unknown tenant.
    async fn active_secrets(
        &self,
        tenant: &TenantName,
        now: i64,
    ) -> Result<Vec<SecretRecord>, StoreError>;
    /// Revoke one secret of the tenant; `false` if no such unrevoked secret exists.
    async fn revoke_secret(&self, tenant: &TenantName, id: &str) -> Result<bool, StoreError>;
    /// Every secret of the tenant (revoked and expired ones too), newest first. Empty for an unknown tenant.
    async fn list_secrets(&self, tenant: &TenantName) -> Result<Vec<SecretRecord>, StoreError>;
    /// Ids of secrets revoked at or after `since` (unix seconds), with their tenant, oldest revocation first: how
    /// nodes learn, by polling, which tunnels to close. Secrets of a deleted tenant are gone with it and do not
    /// appear here.
    async fn secrets_revoked_since(
        &self,
        since: i64,
    ) -> Result<Vec<(TenantName, String)>, StoreError>;

    /// All signing keys, newest first (ties broken by `kid`, descending, so every reader agrees).
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError>;
    /// Add a signing key (key rotation); [`StoreError::AlreadyExists`] if the kid is taken.
    async fn add_signing_key(&self, key: &SigningKey) -> Result<(), StoreError>;
    /// Add `key` only if the store holds no signing key at all, atomically, so that processes racing on their
    /// first start agree on one key. `true` if it was added.
    async fn add_first_signing_key(&self, key: &SigningKey) -> Result<bool, StoreError>;
    /// Add `key` only if the newest signing key (as [`Store::signing_keys`] orders them) is still the one named
    /// `newest` (`None`: only into a store without keys, as [`Store::add_first_signing_key`]), atomically, so that
    /// of several processes deciding to rotate on the same view exactly one adds a key. `true` if it was added;
    /// [`StoreError::AlreadyExists`] if the kid is taken.
    async fn add_signing_key_after(
        &self,
        newest: Option<&str>,
        key: &SigningKey,
    ) -> Result<bool, StoreError>;
    /// Remove a signing key (the end of a rotation's overlap); `false` if there was none.
    async fn remove_signing_key(&self, kid: &str) -> Result<bool, StoreError>;

    /// Store a new admin key; [`StoreError::AlreadyExists`] if the id or hash is taken.
    async fn add_admin_key(&self, key: &AdminKey) -> Result<(), StoreError>;
    /// The unrevoked admin key with this SHA-256 (lowercase hex), if any.
    async fn admin_key_by_hash(&self, sha256: &str) -> Result<Option<AdminKey>, StoreError>;
    /// Every admin key (revoked ones too), newest first.
    async fn list_admin_keys(&self) -> Result<Vec<AdminKey>, StoreError>;
    /// Revoke an admin key; `false` if no such unrevoked key exists.
    async fn revoke_admin_key(&self, id: &str) -> Result<bool, StoreError>;

    /// Record a tunnel that just opened; [`StoreError::AlreadyExists`] if its id is taken. The tenant is not
    /// checked (a tunnel of a tenant deleted a moment ago is still recorded, then closed as usual).
    async fn record_connection(&self, connection: &ConnectionRecord) -> Result<(), StoreError>;
    /// Mark a tunnel closed at `at` (unix seconds); a no-op if it already is.
    async fn record_disconnection(&self, id: &str, at: i64) -> Result<(), StoreError>;
    /// A page of connections, newest first.
    async fn list_connections(
        &self,
        query: &ConnectionQuery,
    ) -> Result<Page<ConnectionRecord>, StoreError>;

    /// Insert or refresh a node's row (its heartbeat): every field is replaced, roles too.
    async fn heartbeat_node(&self, node: &NodeRecord) -> Result<(), StoreError>;
    /// Every known node, ordered by id.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;
    /// Nodes whose last heartbeat is older than `before` (unix seconds) are gone: close their open connections
    /// at their last heartbeat (or at `connected_at`, if that is later) and delete them, in one transaction.
    /// Returns how many nodes were removed. A removed node that is still running reappears with its next
    /// heartbeat, but its tunnels stay closed in the store.
    async fn expire_nodes(&self, before: i64) -> Result<u64, StoreError>;
    /// The worker's node expiry: what [`Store::expire_nodes`] does, and also close the live connections of nodes
    /// that have no row at all (a node that recorded tunnels but never wrote a heartbeat, or whose row went while
    /// it kept recording) that opened before `before`, at their `connected_at` (nothing is known of them after
    /// it). One transaction; says which nodes went and how many connections were closed.
    async fn expire_silent_nodes(&self, before: i64) -> Result<ExpiredNodes, StoreError>;

    /// Write this node's counts for the given minutes, replacing what the node wrote before for the same
    /// tenant and minute (the node sends cumulative counts of the minute). All records or none are written;
    /// when one tenant and minute appears twice in `records`, the later one wins. A tenant's minute that has been
    /// rolled up ([`Store::roll_up_stats`]) is closed: records for it are ignored, since the roll-up already holds
    /// this node's earlier count and a cumulative count written again would count it twice. An empty `node` (the
    /// roll-up's, [`ROLLUP_NODE`]) is refused with [`StoreError::InvalidInput`].
    async fn put_stats(&self, node: &str, records: &[StatsRecord]) -> Result<(), StoreError>;
    /// Statistics summed over nodes, per tenant per minute, for minutes in `[from, to)`, optionally one tenant,
    /// ordered by minute then tenant. Roll-up rows are summed like any node's: a roll-up changes no answer.
    async fn stats(
        &self,
        tenant: Option<&TenantName>,
        from: i64,
        to: i64,
    ) -> Result<Vec<StatsRecord>, StoreError>;
    /// The roll-up: merge every row of each minute before `before` (unix seconds) that still has per-node rows
    /// into one roll-up row per tenant and minute (node [`ROLLUP_NODE`]), summing every count and the histogram,
    /// oldest minute first, one minute per transaction, at most `max_minutes` minutes. Reads are unchanged by it;
    /// later writes to a rolled-up tenant's minute are ignored (see [`Store::put_stats`]), so `before` must lie
    /// past the minutes that nodes still write.
    async fn roll_up_stats(&self, before: i64, max_minutes: u32)
        -> Result<StatsRollUp, StoreError>;

    /// Append entries to the request log (their `id` is ignored), all or none. Ids are never reused, also not
    /// after pruning.
    async fn append_request_log(&self, entries: &[RequestLogEntry]) -> Result<(), StoreError>;
    /// Request log entries, newest first (by id, which grows with every append), optionally one tenant's, with
    /// `id` below `before_id`, at most `limit` ([`DEFAULT_PAGE_LIMIT`] for 0, capped at [`MAX_PAGE_LIMIT`]).
    async fn request_log(
        &self,
        tenant: Option<&TenantName>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RequestLogEntry>, StoreError>;
    /// Delete entries that arrived before `before_ms` (unix milliseconds); returns how many.
    async fn prune_request_log(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Delete history older than `before` (unix seconds): connections closed before it and statistics of
    /// minutes before it. Live connections stay. Returns how many rows went.
    async fn prune_history(&self, before: i64) -> Result<u64, StoreError>;

    /// Acquire or renew the lease `name` for `holder`, atomically: it is granted when nobody holds it, when it
    /// has expired, or when `holder` holds it already (a renewal: same term), and then expires `ttl` from now
    /// (database clock, millisecond precision; a zero `ttl` grants a lease that has already lapsed). Returns the
    /// lease as it stands after the attempt: held by `holder` when granted, else by whoever holds it.
    /// [`StoreError::InvalidInput`] for an empty name or holder.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError>;
    /// End `holder`'s term of the lease now, so that another can take it at once; `false` if `holder` did not
    /// hold it (expired, released, or someone else's).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool, StoreError>;
    /// The lease `name` while someone holds it; `None` when free (never taken, released or expired).
    async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError>;

    /// Create a user; [`StoreError::AlreadyExists`] if the name is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// The user with this name, disabled or not.
    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Every user, ordered by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// Disable (ending every session of the user, in the same transaction) or enable a user; `false` if there
    /// is no such user.
    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError>;
    /// Replace a user's password hash (`None`: no password sign-in) and end every session of the user, in one
    /// transaction; `false` if there is no such user.
    async fn set_user_password(
        &self,
        name: &str,
        password_hash: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// Replace a user's role and tenant scope (an account of the OpenID Connect provider, whose claims say its
    /// role at each sign-in); `false` if there is no such user. Its sessions see the new role at once.
    async fn set_user_role(
        &self,
        name: &str,
        role: Role,
        tenants: &[TenantName],
    ) -> Result<bool, StoreError>;
    /// Note a successful sign-in at `at` (unix seconds); `false` if there is no such user.
    async fn record_sign_in(&self, name: &str, at: i64) -> Result<bool, StoreError>;
    /// Delete a user with every session of it; `false` if there was none.
    async fn delete_user(&self, name: &str) -> Result<bool, StoreError>;

    /// Store a new session; [`StoreError::NotFound`] if its user does not exist, [`StoreError::AlreadyExists`]
    /// if its hash is taken.
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// The session with this hash if it is still valid at `now` (unix seconds): neither idle nor past its
    /// absolute expiry.
    async fn session(&self, id_sha256: &str, now: i64)
        -> Result<Option<SessionRecord>, StoreError>;
    /// Note a use of a valid session at `now`, moving its idle expiry to `idle_expires_at` (never past its
    /// absolute expiry); `false` if no session valid at `now` has this hash.
    async fn touch_session(
        &self,
        id_sha256: &str,
        now: i64,
        idle_expires_at: i64,
    ) -> Result<bool, StoreError>;
    /// End a session (sign-out); `false` if there was none.
    async fn delete_session(&self, id_sha256: &str) -> Result<bool, StoreError>;
    /// Delete every session no longer valid at `now`; returns how many.
    async fn delete_expired_sessions(&self, now: i64) -> Result<u64, StoreError>;

    /// Append an audit entry (its `id` is ignored); returns the id it got. Ids are never reused.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<i64, StoreError>;
    /// Audit entries, newest first, as `query` selects.
    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
    /// Delete audit entries from before `before` (unix seconds); returns how many.
    async fn prune_audit(&self, before: i64) -> Result<u64, StoreError>;
}

/// The current time in unix seconds, as every store timestamp is written.
pub fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}
