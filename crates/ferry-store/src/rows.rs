//! What every backend shares around its SQL: reading records out of rows, the stored forms of values that SQL has
//! no type for, paging, and the classification of database errors.
//!
//! Owns: [`Columns`] (typed, error-mapped column access for the rows of any sqlx backend), one `*_from_row`
//! function per record type, the JSON text of [`TenantSettings`] and of the latency histogram, the conversion of
//! counters between `u64` and the databases' signed 64-bit integers, summing the per-node statistics rows, the page
//! limit and cursors, the `LIKE` pattern of the tenant filter, and the builders of the list queries whose `WHERE`
//! clause depends on the query (their SQL is the same on SQLite and PostgreSQL: both accept `$n` parameters).
//! Does not own: any fixed SQL statement (each backend writes its own) or connection handling.

use ferry_proto::{TenantName, TenantSettings};
use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use crate::{
    AdminKey, AuditEntry, AuditQuery, ConnectionQuery, ConnectionRecord, Lease, NodeRecord, Page,
    RequestLogEntry, Role, SecretRecord, SessionRecord, SigningKey, StatsRecord, StoreError,
    Tenant, TenantQuery, UserRecord, LATENCY_BUCKETS_MS,
};

/// Page size when a query asks for `limit` 0.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;
/// The largest page any list returns; larger limits are capped to it.
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// The page size a query's `limit` stands for: 0 means [`DEFAULT_PAGE_LIMIT`], larger than [`MAX_PAGE_LIMIT`] is
/// capped.
pub fn page_limit(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_PAGE_LIMIT,
        n => n.min(MAX_PAGE_LIMIT),
    }
}

/// Typed access to the columns of a row, with failures reported as [`StoreError::Corrupt`] naming the table and
/// column. Implemented for the rows of every sqlx backend that decodes these types.
pub(crate) trait Columns {
    fn text(&self, table: &'static str, name: &str) -> Result<String, StoreError>;
    fn int(&self, table: &'static str, name: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, table: &'static str, name: &str) -> Result<Option<i64>, StoreError>;
    fn opt_text(&self, table: &'static str, name: &str) -> Result<Option<String>, StoreError>;
    fn bytes(&self, table: &'static str, name: &str) -> Result<Vec<u8>, StoreError>;

    /// A counter, stored as a signed integer that must not be negative.
    fn count(&self, table: &'static str, name: &str) -> Result<u64, StoreError> {
        let value = self.int(table, name)?;
        u64::try_from(value)
            .map_err(|_| corrupt(table, format!("column {name}: negative count {value}")))
    }

    fn tenant(&self, table: &'static str, name: &str) -> Result<TenantName, StoreError> {
        TenantName::new(self.text(table, name)?)
            .map_err(|e| corrupt(table, format!("column {name}: {e}")))
    }
}

impl<R> Columns for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database>,
    String: Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database>,
    Vec<u8>: Type<R::Database>,
{
    fn text(&self, table: &'static str, name: &str) -> Result<String, StoreError> {
        get(self, table, name)
    }
    fn int(&self, table: &'static str, name: &str) -> Result<i64, StoreError> {
        get(self, table, name)
    }
    fn opt_int(&self, table: &'static str, name: &str) -> Result<Option<i64>, StoreError> {
        get(self, table, name)
    }
    fn opt_text(&self, table: &'static str, name: &str) -> Result<Option<String>, StoreError> {
        get(self, table, name)
    }
    fn bytes(&self, table: &'static str, name: &str) -> Result<Vec<u8>, StoreError> {
        get(self, table, name)
    }
}

fn get<'r, R, T>(row: &'r R, table: &'static str, name: &str) -> Result<T, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(name)
        .map_err(|e| corrupt(table, format!("column {name}: {e}")))
}

fn corrupt(table: &'static str, reason: String) -> StoreError {
    StoreError::Corrupt { table, reason }
}

/// A counter as the databases store it (signed 64-bit); saturates, which no real counter reaches.
pub fn db_count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The stored form of a tenant's settings: JSON text, `{}` when nothing is set.
pub fn settings_text(settings: &TenantSettings) -> Result<String, StoreError> {
    // Cannot fail for a struct of optional numbers and booleans; mapped rather than unwrapped all the same.
    serde_json::to_string(settings).map_err(|e| corrupt("tenants", format!("settings: {e}")))
}

fn parse_settings(text: &str) -> Result<TenantSettings, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt("tenants", format!("column settings: {e}")))
}

/// The stored form of a latency histogram: a JSON array of its bucket counts.
pub fn histogram_text(buckets: &[u64]) -> String {
    let items: Vec<String> = buckets.iter().map(u64::to_string).collect();
    format!("[{}]", items.join(","))
}

fn parse_histogram(text: &str) -> Result<[u64; LATENCY_BUCKETS_MS.len() + 1], StoreError> {
    let counts: Vec<u64> =
        serde_json::from_str(text).map_err(|e| corrupt("stats", format!("column latency: {e}")))?;
    <[u64; LATENCY_BUCKETS_MS.len() + 1]>::try_from(counts).map_err(|counts| {
        corrupt(
            "stats",
            format!(
                "column latency: {} buckets, expected {}",
                counts.len(),
                LATENCY_BUCKETS_MS.len() + 1
            ),
        )
    })
}

pub(crate) fn tenant_from_row(row: &impl Columns) -> Result<Tenant, StoreError> {
    const T: &str = "tenants";
    Ok(Tenant {
        name: row.tenant(T, "name")?,
        display_name: row.text(T, "display_name")?,
        description: row.text(T, "description")?,
        settings: parse_settings(&row.text(T, "settings")?)?,
        created_at: row.int(T, "created_at")?,
        updated_at: row.int(T, "updated_at")?,
    })
}

pub(crate) fn secret_from_row(row: &impl Columns) -> Result<SecretRecord, StoreError> {
    const T: &str = "secrets";
    Ok(SecretRecord {
        id: row.text(T, "id")?,
        tenant: row.tenant(T, "tenant")?,
        hash: row.text(T, "hash")?,
        created_at: row.int(T, "created_at")?,
        expires_at: row.opt_int(T, "expires_at")?,
        revoked_at: row.opt_int(T, "revoked_at")?,
    })
}

pub(crate) fn revoked_from_row(row: &impl Columns) -> Result<(TenantName, String), StoreError> {
    Ok((row.tenant("secrets", "tenant")?, row.text("secrets", "id")?))
}

pub(crate) fn key_from_row(row: &impl Columns) -> Result<SigningKey, StoreError> {
    const T: &str = "signing_keys";
    Ok(SigningKey {
        kid: row.text(T, "kid")?,
        algorithm: row.text(T, "algorithm")?,
        private_der: row.bytes(T, "private_der")?,
        public_key: row.bytes(T, "public_key")?,
        created_at: row.int(T, "created_at")?,
    })
}

pub(crate) fn admin_key_from_row(row: &impl Columns) -> Result<AdminKey, StoreError> {
    const T: &str = "admin_keys";
    Ok(AdminKey {
        id: row.text(T, "id")?,
        name: row.text(T, "name")?,
        sha256: row.text(T, "sha256")?,
        created_at: row.int(T, "created_at")?,
        revoked_at: row.opt_int(T, "revoked_at")?,
        role: parse_role(T, &row.text(T, "role")?)?,
        tenants: parse_tenant_list(T, &row.text(T, "tenants")?)?,
    })
}

/// The stored form of a tenant scope: a JSON array of names.
pub(crate) fn tenant_list_text(tenants: &[TenantName]) -> String {
    let names: Vec<&str> = tenants.iter().map(TenantName::as_str).collect();
    serde_json::to_string(&names).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_tenant_list(table: &'static str, text: &str) -> Result<Vec<TenantName>, StoreError> {
    let names: Vec<String> =
        serde_json::from_str(text).map_err(|e| corrupt(table, format!("column tenants: {e}")))?;
    names
        .into_iter()
        .map(|n| TenantName::new(n).map_err(|e| corrupt(table, format!("column tenants: {e}"))))
        .collect()
}

fn parse_role(table: &'static str, text: &str) -> Result<Role, StoreError> {
    text.parse::<Role>()
        .map_err(|e| corrupt(table, format!("column role: {e}")))
}

pub(crate) fn user_from_row(row: &impl Columns) -> Result<UserRecord, StoreError> {
    const T: &str = "users";
    Ok(UserRecord {
        name: row.text(T, "name")?,
        password_hash: row.opt_text(T, "password_hash")?,
        role: parse_role(T, &row.text(T, "role")?)?,
        tenants: parse_tenant_list(T, &row.text(T, "tenants")?)?,
        disabled: row.int(T, "disabled")? != 0,
        created_at: row.int(T, "created_at")?,
        last_sign_in_at: row.opt_int(T, "last_sign_in_at")?,
    })
}

pub(crate) fn session_from_row(row: &impl Columns) -> Result<SessionRecord, StoreError> {
    const T: &str = "sessions";
    Ok(SessionRecord {
        id_sha256: row.text(T, "id_sha256")?,
        user: row.text(T, "user_name")?,
        csrf_token: row.text(T, "csrf_token")?,
        created_at: row.int(T, "created_at")?,
        last_seen_at: row.int(T, "last_seen_at")?,
        idle_expires_at: row.int(T, "idle_expires_at")?,
        expires_at: row.int(T, "expires_at")?,
    })
}

pub(crate) fn audit_from_row(row: &impl Columns) -> Result<AuditEntry, StoreError> {
    const T: &str = "audit_log";
    Ok(AuditEntry {
        id: row.int(T, "id")?,
        at: row.int(T, "at")?,
        actor: row.text(T, "actor")?,
        action: row.text(T, "action")?,
        object: row.text(T, "object")?,
        detail: row.text(T, "detail")?,
    })
}

pub(crate) fn connection_from_row(row: &impl Columns) -> Result<ConnectionRecord, StoreError> {
    const T: &str = "connections";
    Ok(ConnectionRecord {
        id: row.text(T, "id")?,
        tenant: row.tenant(T, "tenant")?,
        connector_id: row.text(T, "connector_id")?,
        node: row.text(T, "node")?,
        remote_addr: row.text(T, "remote_addr")?,
        connected_at: row.int(T, "connected_at")?,
        disconnected_at: row.opt_int(T, "disconnected_at")?,
    })
}

pub(crate) fn node_from_row(row: &impl Columns) -> Result<NodeRecord, StoreError> {
    const T: &str = "nodes";
    Ok(NodeRecord {
        id: row.text(T, "id")?,
        address: row.text(T, "address")?,
        version: row.text(T, "version")?,
        started_at: row.int(T, "started_at")?,
        heartbeat_at: row.int(T, "heartbeat_at")?,
        roles: row.text(T, "roles")?,
    })
}

pub(crate) fn lease_from_row(row: &impl Columns) -> Result<Lease, StoreError> {
    const T: &str = "leases";
    Ok(Lease {
        name: row.text(T, "name")?,
        holder: row.text(T, "holder")?,
        term: row.int(T, "term")?,
        acquired_at_ms: row.int(T, "acquired_at_ms")?,
        expires_at_ms: row.int(T, "expires_at_ms")?,
    })
}

/// The names of the five status class columns of `stats`, 1xx first.
pub const STATUS_COLUMNS: [&str; 5] = [
    "status_1xx",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
];

/// One node's row of `stats`.
pub(crate) fn stats_from_row(row: &impl Columns) -> Result<StatsRecord, StoreError> {
    const T: &str = "stats";
    let mut status_classes = [0; 5];
    for (count, column) in status_classes.iter_mut().zip(STATUS_COLUMNS) {
        *count = row.count(T, column)?;
    }
    Ok(StatsRecord {
        tenant: row.tenant(T, "tenant")?,
        minute: row.int(T, "minute")?,
        requests: row.count(T, "requests")?,
        bytes_in: row.count(T, "bytes_in")?,
        bytes_out: row.count(T, "bytes_out")?,
        status_classes,
        latency_buckets: parse_histogram(&row.text(T, "latency")?)?,
    })
}

/// Sum per-node rows that are ordered by minute then tenant into one record per minute and tenant.
pub(crate) fn sum_stats(rows: impl IntoIterator<Item = StatsRecord>) -> Vec<StatsRecord> {
    let mut summed: Vec<StatsRecord> = Vec::new();
    for row in rows {
        match summed.last_mut() {
            Some(last) if last.minute == row.minute && last.tenant == row.tenant => {
                last.requests = last.requests.saturating_add(row.requests);
                last.bytes_in = last.bytes_in.saturating_add(row.bytes_in);
                last.bytes_out = last.bytes_out.saturating_add(row.bytes_out);
                for (sum, add) in last.status_classes.iter_mut().zip(row.status_classes) {
                    *sum = sum.saturating_add(add);
                }
                for (sum, add) in last.latency_buckets.iter_mut().zip(row.latency_buckets) {
                    *sum = sum.saturating_add(add);
                }
            }
            _ => summed.push(row),
        }
    }
    summed
}

pub(crate) fn log_entry_from_row(row: &impl Columns) -> Result<RequestLogEntry, StoreError> {
    const T: &str = "request_log";
    let status = row.int(T, "status")?;
    Ok(RequestLogEntry {
        id: row.int(T, "id")?,
        tenant: row.tenant(T, "tenant")?,
        at_ms: row.int(T, "at_ms")?,
        request_id: row.text(T, "request_id")?,
        method: row.text(T, "method")?,
        target: row.text(T, "target")?,
        path: row.text(T, "path")?,
        status: u16::try_from(status)
            .map_err(|_| corrupt(T, format!("column status: {status} is not a status code")))?,
        duration_ms: row.count(T, "duration_ms")?,
        bytes_in: row.count(T, "bytes_in")?,
        bytes_out: row.count(T, "bytes_out")?,
        client_addr: row.text(T, "client_addr")?,
    })
}

/// Convert every row with `convert`, failing on the first that does not make sense.
pub(crate) fn rows<R, T>(
    rows: Vec<R>,
    convert: fn(&R) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(convert).collect()
}

/// Whether the statement failed on a unique or primary key constraint.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

/// Whether the statement failed on a foreign key constraint.
pub(crate) fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_foreign_key_violation())
}

/// Cut rows fetched with `limit + 1` down to one page; when there were more, the next page starts after the last
/// kept row, named by `cursor`.
fn into_page<T>(mut items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next }
}

/// The `LIKE` pattern (with `\` as the escape character) matching text that contains `filter`, ASCII letters
/// folded to lowercase, as `lower()` folds the column on both backends.
pub fn like_pattern(filter: &str) -> String {
    let mut pattern = String::with_capacity(filter.len() + 2);
    pattern.push('%');
    for c in filter.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c.to_ascii_lowercase());
    }
    pattern.push('%');
    pattern
}

/// The columns every tenant query selects.
pub(crate) const TENANT_COLUMNS: &str =
    "name, display_name, description, settings, created_at, updated_at";
/// The columns every secret query selects.
pub(crate) const SECRET_COLUMNS: &str = "id, tenant, hash, created_at, expires_at, revoked_at";
/// The columns every admin key query selects.
pub(crate) const ADMIN_KEY_COLUMNS: &str =
    "id, name, sha256, created_at, revoked_at, role, tenants";
/// The columns of `users`.
pub(crate) const USER_COLUMNS: &str =
    "name, password_hash, role, tenants, disabled, created_at, last_sign_in_at";
/// The columns of `sessions`.
pub(crate) const SESSION_COLUMNS: &str =
    "id_sha256, user_name, csrf_token, created_at, last_seen_at, idle_expires_at, expires_at";
/// The columns of `audit_log`.
pub(crate) const AUDIT_COLUMNS: &str = "id, at, actor, action, object, detail";
/// The columns of `nodes`.
pub(crate) const NODE_COLUMNS: &str = "id, address, version, started_at, heartbeat_at, roles";
/// The columns of `leases`.
pub(crate) const LEASE_COLUMNS: &str = "name, holder, term, acquired_at_ms, expires_at_ms";
/// The columns every connection query selects.
pub(crate) const CONNECTION_COLUMNS: &str =
    "id, tenant, connector_id, node, remote_addr, connected_at, disconnected_at";
/// The columns every request log query selects.
pub(crate) const LOG_COLUMNS: &str =
    "id, tenant, at_ms, request_id, method, target, path, status, \
     duration_ms, bytes_in, bytes_out, client_addr";

/// A list query, built for the backend `DB`, with the page limit it asked for (the query fetches one row more, to
/// learn whether there is a next page).
pub(crate) struct ListQuery<'a, DB: Database> {
    pub builder: QueryBuilder<'a, DB>,
    pub limit: u32,
}

/// `SELECT` one page of tenants (see [`TenantQuery`]).
pub(crate) fn tenants_query<'a, DB>(query: &'a TenantQuery) -> ListQuery<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let limit = page_limit(query.limit);
    let mut builder =
        QueryBuilder::new(format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE 1 = 1"));
    if let Some(filter) = query.filter.as_deref().filter(|f| !f.is_empty()) {
        let pattern = like_pattern(filter);
        builder
            .push(" AND (lower(name) LIKE ")
            .push_bind(pattern.clone())
            .push(" ESCAPE '\\' OR lower(display_name) LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\')");
    }
    if let Some(after) = query.after.as_deref() {
        builder.push(" AND name > ").push_bind(after);
    }
    builder
        .push(" ORDER BY name LIMIT ")
        .push_bind(i64::from(limit) + 1);
    ListQuery { builder, limit }
}

pub(crate) fn tenants_page(items: Vec<Tenant>, limit: u32) -> Page<Tenant> {
    into_page(items, limit, |t| t.name.to_string())
}

/// The cursor of the connection list: the last row's `connected_at` and id.
pub fn connection_cursor(connected_at: i64, id: &str) -> String {
    format!("{connected_at}:{id}")
}

/// Parse a cursor made by [`connection_cursor`]. An empty id is accepted: `"<t>:"` starts right below the time
/// `t`.
pub fn parse_connection_cursor(cursor: &str) -> Result<(i64, String), StoreError> {
    let invalid = || StoreError::InvalidCursor {
        cursor: cursor.to_owned(),
    };
    let (at, id) = cursor.split_once(':').ok_or_else(invalid)?;
    let at = at.parse::<i64>().map_err(|_| invalid())?;
    Ok((at, id.to_owned()))
}

/// `SELECT` one page of connections (see [`ConnectionQuery`]), newest first.
pub(crate) fn connections_query<'a, DB>(
    query: &'a ConnectionQuery,
) -> Result<ListQuery<'a, DB>, StoreError>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let limit = page_limit(query.limit);
    let before = query
        .before
        .as_deref()
        .map(parse_connection_cursor)
        .transpose()?;
    let mut builder = QueryBuilder::new(format!(
        "SELECT {CONNECTION_COLUMNS} FROM connections WHERE 1 = 1"
    ));
    if let Some(tenant) = &query.tenant {
        builder.push(" AND tenant = ").push_bind(tenant.as_str());
    }
    if query.live_only {
        builder.push(" AND disconnected_at IS NULL");
    }
    if let Some((at, id)) = before {
        builder
            .push(" AND (connected_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    builder
        .push(" ORDER BY connected_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    Ok(ListQuery { builder, limit })
}

pub(crate) fn connections_page(items: Vec<ConnectionRecord>, limit: u32) -> Page<ConnectionRecord> {
    into_page(items, limit, |c| connection_cursor(c.connected_at, &c.id))
}

/// `SELECT` request log entries, newest first (see [`crate::Store::request_log`]).
pub(crate) fn request_log_query<'a, DB>(
    tenant: Option<&'a TenantName>,
    before_id: Option<i64>,
    limit: u32,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut builder =
        QueryBuilder::new(format!("SELECT {LOG_COLUMNS} FROM request_log WHERE 1 = 1"));
    if let Some(tenant) = tenant {
        builder.push(" AND tenant = ").push_bind(tenant.as_str());
    }
    if let Some(before) = before_id {
        builder.push(" AND id < ").push_bind(before);
    }
    builder
        .push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(page_limit(limit)));
    builder
}

/// `SELECT` audit entries (see [`AuditQuery`]), newest first.
pub(crate) fn audit_query<'a, DB>(query: &'a AuditQuery) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut builder =
        QueryBuilder::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1"));
    if let Some(from) = query.from {
        builder.push(" AND at >= ").push_bind(from);
    }
    if let Some(to) = query.to {
        builder.push(" AND at < ").push_bind(to);
    }
    if let Some(actor) = query.actor.as_deref() {
        builder.push(" AND actor = ").push_bind(actor);
    }
    if let Some(action) = query.action.as_deref() {
        builder.push(" AND action = ").push_bind(action);
    }
    if let Some(before) = query.before_id {
        builder.push(" AND id < ").push_bind(before);
    }
    builder
        .push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(page_limit(query.limit)));
    builder
}

/// `SELECT` the per-node statistics rows of minutes in `[from, to)`, ordered for [`sum_stats`].
pub(crate) fn stats_query<'a, DB>(
    tenant: Option<&'a TenantName>,
    from: i64,
    to: i64,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut builder = QueryBuilder::new(format!(
        "SELECT tenant, minute, requests, bytes_in, bytes_out, {}, latency FROM stats \
         WHERE minute >= ",
        STATUS_COLUMNS.join(", ")
    ));
    builder.push_bind(from).push(" AND minute < ").push_bind(to);
    if let Some(tenant) = tenant {
        builder.push(" AND tenant = ").push_bind(tenant.as_str());
    }
    builder.push(" ORDER BY minute, tenant");
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards_and_fold_ascii() {
        assert_eq!(like_pattern("Ab"), "%ab%");
        assert_eq!(like_pattern("50%_x\\"), "%50\\%\\_x\\\\%");
        assert_eq!(like_pattern("Ä"), "%Ä%");
    }

    #[test]
    fn histogram_round_trip() {
        let mut buckets = [0u64; LATENCY_BUCKETS_MS.len() + 1];
        buckets[0] = 3;
        buckets[13] = u64::MAX;
        let text = histogram_text(&buckets);
        assert_eq!(parse_histogram(&text).expect("parse"), buckets);
        assert!(parse_histogram("[1,2]").is_err());
        assert!(parse_histogram("nope").is_err());
    }

    #[test]
    fn settings_text_round_trip() {
        let settings = TenantSettings {
            max_body_size: Some(1024),
            require_client_auth: Some(true),
            ..Default::default()
        };
        let text = settings_text(&settings).expect("text");
        assert_eq!(parse_settings(&text).expect("parse"), settings);
        assert_eq!(
            settings_text(&TenantSettings::default()).expect("text"),
            "{}"
        );
        assert!(parse_settings("{\"unknown\":1}").is_err());
    }

    #[test]
    fn connection_cursors() {
        let cursor = connection_cursor(-5, "a:b");
        assert_eq!(
            parse_connection_cursor(&cursor).expect("parse"),
            (-5, "a:b".to_owned())
        );
        assert_eq!(
            parse_connection_cursor("12:").expect("parse"),
            (12, String::new())
        );
        for bad in ["", "12", "x:y", ":id", "1.5:x"] {
            assert!(
                matches!(
                    parse_connection_cursor(bad),
                    Err(StoreError::InvalidCursor { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(0), DEFAULT_PAGE_LIMIT);
        assert_eq!(page_limit(5), 5);
        assert_eq!(page_limit(u32::MAX), MAX_PAGE_LIMIT);
        let page = into_page(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next.as_deref(), Some("2"));
        let page = into_page(vec![1, 2], 2, |n| n.to_string());
        assert_eq!(page.next, None);
    }

    #[test]
    fn sums_adjacent_rows_of_one_minute_and_tenant() {
        let a = TenantName::new("a").expect("name");
        let b = TenantName::new("b").expect("name");
        let row = |tenant: &TenantName, minute, requests| StatsRecord {
            requests,
            status_classes: [0, requests, 0, 0, 0],
            ..StatsRecord::new(tenant.clone(), minute)
        };
        let summed = sum_stats([
            row(&a, 60, 1),
            row(&a, 60, 2),
            row(&b, 60, 4),
            row(&a, 120, 8),
        ]);
        let got: Vec<(i64, &str, u64, u64)> = summed
            .iter()
            .map(|r| (r.minute, r.tenant.as_str(), r.requests, r.status_classes[1]))
            .collect();
        assert_eq!(
            got,
            vec![(60, "a", 3, 3), (60, "b", 4, 4), (120, "a", 8, 8)]
        );
    }
}
