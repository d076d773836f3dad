//! A [`Store`] that measures every call of the store it wraps: the time each operation takes and its failures,
//! by operation (`ferry_store_query_duration_seconds`, `ferry_store_errors_total`; docs/metrics.md). Errors the
//! caller caused (already exists, not found, invalid input or cursor) are answers, not failures, and are not
//! counted.

use crate::*;
use ferry_metrics::prometheus_client::metrics::counter::Counter;
use ferry_metrics::prometheus_client::metrics::family::Family;
use ferry_metrics::prometheus_client::registry::Registry;
use ferry_metrics::{Histogram, Labels};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The operations of [`Store`], as the `op` label, in the order of the trait.
pub const OPS: &[&str] = &[
    "create_tenant",
    "get_tenant",
    "update_tenant",
    "list_tenants",
    "delete_tenant",
    "add_secret",
    "active_secrets",
    "revoke_secret",
    "list_secrets",
    "secrets_revoked_since",
    "signing_keys",
    "add_signing_key",
    "add_first_signing_key",
    "add_signing_key_after",
    "remove_signing_key",
    "add_admin_key",
    "admin_key_by_hash",
    "list_admin_keys",
    "revoke_admin_key",
    "record_connection",
    "record_disconnection",
    "list_connections",
    "heartbeat_node",
    "list_nodes",
    "expire_nodes",
    "expire_silent_nodes",
    "put_stats",
    "stats",
    "roll_up_stats",
    "append_request_log",
    "request_log",
    "prune_request_log",
    "prune_history",
    "acquire_lease",
    "release_lease",
    "lease",
    "create_user",
    "get_user",
    "list_users",
    "set_user_disabled",
    "set_user_password",
    "record_sign_in",
    "delete_user",
    "create_session",
    "session",
    "touch_session",
    "delete_session",
    "delete_expired_sessions",
    "append_audit",
    "audit_log",
    "prune_audit",
    "set_user_role",
];

struct Op {
    duration: Histogram,
    errors: Counter,
}

/// The wrapper; see the module documentation.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    ops: Vec<Op>,
    durations: Family<Labels, Histogram>,
    errors: Family<Labels, Counter>,
}

impl MeteredStore {
    /// Measure the calls of `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        let durations =
            Family::<Labels, Histogram>::new_with_constructor(Histogram::fast as fn() -> Histogram);
        let errors = Family::<Labels, Counter>::default();
        let ops = OPS
            .iter()
            .map(|op| {
                let labels: Labels = vec![("op", (*op).to_owned())];
                Op {
                    duration: durations.get_or_create_owned(&labels),
                    errors: errors.get_or_create_owned(&labels),
                }
            })
            .collect();
        Self {
            inner,
            ops,
            durations,
            errors,
        }
    }

    /// Register the families with `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferry_store_query_duration_seconds",
            "Time each store operation took, by operation.",
            self.durations.clone(),
        );
        registry.register(
            "ferry_store_errors",
            "Store operations that failed (database or connection errors), by operation.",
            self.errors.clone(),
        );
    }

    fn done(&self, op: usize, started: Instant, error: Option<&StoreError>) {
        let Some(op) = self.ops.get(op) else {
            return;
        };
        op.duration.observe(started.elapsed());
        if let Some(e) = error {
            if !matches!(
                e,
                StoreError::AlreadyExists { .. }
                    | StoreError::NotFound { .. }
                    | StoreError::InvalidInput { .. }
                    | StoreError::InvalidCursor { .. }
            ) {
                op.errors.inc();
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for MeteredStore {
    async fn create_tenant(
        &self,
        name: &TenantName,
        fields: &TenantFields,
    ) -> Result<Tenant, StoreError> {
        let started = Instant::now();
        let r = self.inner.create_tenant(name, fields).await;
        self.done(0, started, r.as_ref().err());
        r
    }
    async fn get_tenant(&self, name: &TenantName) -> Result<Option<Tenant>, StoreError> {
        let started = Instant::now();
        let r = self.inner.get_tenant(name).await;
        self.done(1, started, r.as_ref().err());
        r
    }
    async fn update_tenant(
        &self,
        name: &TenantName,
        fields: &TenantFields,
    ) -> Result<Option<Tenant>, StoreError> {
        let started = Instant::now();
        let r = self.inner.update_tenant(name, fields).await;
        self.done(2, started, r.as_ref().err());
        r
    }
    async fn list_tenants(&self, query: &TenantQuery) -> Result<Page<Tenant>, StoreError> {
        let started = Instant::now();
        let r = self.inner.list_tenants(query).await;
        self.done(3, started, r.as_ref().err());
        r
    }
    async fn delete_tenant(&self, name: &TenantName) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.delete_tenant(name).await;
        self.done(4, started, r.as_ref().err());
        r
    }
    async fn add_secret(
        &self,
        tenant: &TenantName,
        hash: &str,
        expires_at: Option<i64>,
    ) -> Result<SecretRecord, StoreError> {
        let started = Instant::now();
        let r = self.inner.add_secret(tenant, hash, expires_at).await;
        self.done(5, started, r.as_ref().err());
        r
    }
    async fn active_secrets(
        &self,
        tenant: &TenantName,
        now: i64,
    ) -> Result<Vec<SecretRecord>, StoreError> {
        let started = Instant::now();
        let r = self.inner.active_secrets(tenant, now).await;
        self.done(6, started, r.as_ref().err());
        r
    }
    async fn revoke_secret(&self, tenant: &TenantName, id: &str) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.revoke_secret(tenant, id).await;
        self.done(7, started, r.as_ref().err());
        r
    }
    async fn list_secrets(&self, tenant: &TenantName) -> Result<Vec<SecretRecord>, StoreError> {
        let started = Instant::now();
        let r = self.inner.list_secrets(tenant).await;
        self.done(8, started, r.as_ref().err());
        r
    }
    async fn secrets_revoked_since(
        &self,
        since: i64,
    ) -> Result<Vec<(TenantName, String)>, StoreError> {
        let started = Instant::now();
        let r = self.inner.secrets_revoked_since(since).await;
        self.done(9, started, r.as_ref().err());
        r
    }
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        let started = Instant::now();
        let r = self.inner.signing_keys().await;
        self.done(10, started, r.as_ref().err());
        r
    }
    async fn add_signing_key(&self, key: &SigningKey) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.add_signing_key(key).await;
        self.done(11, started, r.as_ref().err());
        r
    }
    async fn add_first_signing_key(&self, key: &SigningKey) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.add_first_signing_key(key).await;
        self.done(12, started, r.as_ref().err());
        r
    }
    async fn add_signing_key_after(
        &self,
        newest: Option<&str>,
        key: &SigningKey,
    ) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.add_signing_key_after(newest, key).await;
        self.done(13, started, r.as_ref().err());
        r
    }
    async fn remove_signing_key(&self, kid: &str) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.remove_signing_key(kid).await;
        self.done(14, started, r.as_ref().err());
        r
    }
    async fn add_admin_key(&self, key: &AdminKey) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.add_admin_key(key).await;
        self.done(15, started, r.as_ref().err());
        r
    }
    async fn admin_key_by_hash(&self, sha256: &str) -> Result<Option<AdminKey>, StoreError> {
        let started = Instant::now();
        let r = self.inner.admin_key_by_hash(sha256).await;
        self.done(16, started, r.as_ref().err());
        r
    }
    async fn list_admin_keys(&self) -> Result<Vec<AdminKey>, StoreError> {
        let started = Instant::now();
        let r = self.inner.list_admin_keys().await;
        self.done(17, started, r.as_ref().err());
        r
    }
    async fn revoke_admin_key(&self, id: &str) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.revoke_admin_key(id).await;
        self.done(18, started, r.as_ref().err());
        r
    }
    async fn record_connection(&self, connection: &ConnectionRecord) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.record_connection(connection).await;
        self.done(19, started, r.as_ref().err());
        r
    }
    async fn record_disconnection(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.record_disconnection(id, at).await;
        self.done(20, started, r.as_ref().err());
        r
    }
    async fn list_connections(
        &self,
        query: &ConnectionQuery,
    ) -> Result<Page<ConnectionRecord>, StoreError> {
        let started = Instant::now();
        let r = self.inner.list_connections(query).await;
        self.done(21, started, r.as_ref().err());
        r
    }
    async fn heartbeat_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.heartbeat_node(node).await;
        self.done(22, started, r.as_ref().err());
        r
    }
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let started = Instant::now();
        let r = self.inner.list_nodes().await;
        self.done(23, started, r.as_ref().err());
        r
    }
    async fn expire_nodes(&self, before: i64) -> Result<u64, StoreError> {
        let started = Instant::now();
        let r = self.inner.expire_nodes(before).await;
        self.done(24, started, r.as_ref().err());
        r
    }
    async fn expire_silent_nodes(&self, before: i64) -> Result<ExpiredNodes, StoreError> {
        let started = Instant::now();
        let r = self.inner.expire_silent_nodes(before).await;
        self.done(25, started, r.as_ref().err());
        r
    }
    async fn put_stats(&self, node: &str, records: &[StatsRecord]) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.put_stats(node, records).await;
        self.done(26, started, r.as_ref().err());
        r
    }
    async fn stats(
        &self,
        tenant: Option<&TenantName>,
        from: i64,
        to: i64,
    ) -> Result<Vec<StatsRecord>, StoreError> {
        let started = Instant::now();
        let r = self.inner.stats(tenant, from, to).await;
        self.done(27, started, r.as_ref().err());
        r
    }
    async fn roll_up_stats(
        &self,
        before: i64,
        max_minutes: u32,
    ) -> Result<StatsRollUp, StoreError> {
        let started = Instant::now();
        let r = self.inner.roll_up_stats(before, max_minutes).await;
        self.done(28, started, r.as_ref().err());
        r
    }
    async fn append_request_log(&self, entries: &[RequestLogEntry]) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.append_request_log(entries).await;
        self.done(29, started, r.as_ref().err());
        r
    }
    async fn request_log(
        &self,
        tenant: Option<&TenantName>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RequestLogEntry>, StoreError> {
        let started = Instant::now();
        let r = self.inner.request_log(tenant, before_id, limit).await;
        self.done(30, started, r.as_ref().err());
        r
    }
    async fn prune_request_log(&self, before_ms: i64) -> Result<u64, StoreError> {
        let started = Instant::now();
        let r = self.inner.prune_request_log(before_ms).await;
        self.done(31, started, r.as_ref().err());
        r
    }
    async fn prune_history(&self, before: i64) -> Result<u64, StoreError> {
        let started = Instant::now();
        let r = self.inner.prune_history(before).await;
        self.done(32, started, r.as_ref().err());
        r
    }
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let started = Instant::now();
        let r = self.inner.acquire_lease(name, holder, ttl).await;
        self.done(33, started, r.as_ref().err());
        r
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.release_lease(name, holder).await;
        self.done(34, started, r.as_ref().err());
        r
    }
    async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let started = Instant::now();
        let r = self.inner.lease(name).await;
        self.done(35, started, r.as_ref().err());
        r
    }
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.create_user(user).await;
        self.done(36, started, r.as_ref().err());
        r
    }
    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let started = Instant::now();
        let r = self.inner.get_user(name).await;
        self.done(37, started, r.as_ref().err());
        r
    }
    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let started = Instant::now();
        let r = self.inner.list_users().await;
        self.done(38, started, r.as_ref().err());
        r
    }
    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.set_user_disabled(name, disabled).await;
        self.done(39, started, r.as_ref().err());
        r
    }
    async fn set_user_password(
        &self,
        name: &str,
        password_hash: Option<&str>,
    ) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.set_user_password(name, password_hash).await;
        self.done(40, started, r.as_ref().err());
        r
    }
    async fn record_sign_in(&self, name: &str, at: i64) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.record_sign_in(name, at).await;
        self.done(41, started, r.as_ref().err());
        r
    }
    async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.delete_user(name).await;
        self.done(42, started, r.as_ref().err());
        r
    }
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.create_session(session).await;
        self.done(43, started, r.as_ref().err());
        r
    }
    async fn session(
        &self,
        id_sha256: &str,
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let started = Instant::now();
        let r = self.inner.session(id_sha256, now).await;
        self.done(44, started, r.as_ref().err());
        r
    }
    async fn touch_session(
        &self,
        id_sha256: &str,
        now: i64,
        idle_expires_at: i64,
    ) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self
            .inner
            .touch_session(id_sha256, now, idle_expires_at)
            .await;
        self.done(45, started, r.as_ref().err());
        r
    }
    async fn delete_session(&self, id_sha256: &str) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.delete_session(id_sha256).await;
        self.done(46, started, r.as_ref().err());
        r
    }
    async fn delete_expired_sessions(&self, now: i64) -> Result<u64, StoreError> {
        let started = Instant::now();
        let r = self.inner.delete_expired_sessions(now).await;
        self.done(47, started, r.as_ref().err());
        r
    }
    async fn append_audit(&self, entry: &AuditEntry) -> Result<i64, StoreError> {
        let started = Instant::now();
        let r = self.inner.append_audit(entry).await;
        self.done(48, started, r.as_ref().err());
        r
    }
    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let started = Instant::now();
        let r = self.inner.audit_log(query).await;
        self.done(49, started, r.as_ref().err());
        r
    }
    async fn prune_audit(&self, before: i64) -> Result<u64, StoreError> {
        let started = Instant::now();
        let r = self.inner.prune_audit(before).await;
        self.done(50, started, r.as_ref().err());
        r
    }
    async fn set_user_role(
        &self,
        name: &str,
        role: Role,
        tenants: &[TenantName],
    ) -> Result<bool, StoreError> {
        let started = Instant::now();
        let r = self.inner.set_user_role(name, role, tenants).await;
        self.done(51, started, r.as_ref().err());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_timed_and_failures_counted() {
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let store = MeteredStore::new(inner);
        let name = TenantName::new("acme").expect("name");
        store.get_tenant(&name).await.expect("get");
        store
            .create_tenant(&name, &TenantFields::default())
            .await
            .expect("create");
        // a caller's error is an answer, not a failure
        assert!(store
            .create_tenant(&name, &TenantFields::default())
            .await
            .is_err());
        let mut r = Registry::default();
        store.register(&mut r);
        let text = ferry_metrics::render(&r);
        assert!(
            text.contains("ferry_store_query_duration_seconds_count{op=\"get_tenant\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_store_query_duration_seconds_count{op=\"create_tenant\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ferry_store_errors_total{op=\"create_tenant\"} 0"),
            "{text}"
        );
        assert_eq!(OPS.len(), store.ops.len());
    }
}
