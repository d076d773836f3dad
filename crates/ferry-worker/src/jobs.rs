//! The cluster chores, each as a plain function (to call from anywhere, at any time) and as a [`Job`] that the
//! active worker runs at an interval.
//!
//! | job | every (default) | what |
//! |---|---|---|
//! | `node_expiry` | 10 s | nodes without a heartbeat for `node_expiry` (60 s) are gone: their rows go, their live connections are closed in the history at their last heartbeat; live connections of nodes with no row that opened before the same bound are closed at their `connected_at` |
//! | `stats_rollup` | 60 s | every minute that ended more than `stats_rollup_after` (1 h) ago is merged into one row per tenant and minute (see below) |
//! | `retention` | 10 min | request log entries older than `request_log_retention` (7 d) go; connections closed and statistics of minutes older than `history_retention` (30 d) go |
//! | `signing_keys` | 60 s | the built-in issuer's keys: the first key, rotation when `rotate_every` has passed, removal of rotated-out keys after their overlap |
//!
//! The statistics roll-up rule: each node writes its own row per tenant and minute (cumulative counts, rewritten
//! every flush while the minute is recent), and reads sum a minute's rows over nodes. Once a minute has ended more
//! than `stats_rollup_after` ago, its rows of every node are replaced by one row per tenant (node `''`) holding the
//! sums of every count and of the latency histogram, so that the table keeps one row per tenant and minute
//! instead of one per tenant, minute and node, and every read (per minute, per tenant, any window) answers exactly
//! as before. A rolled-up tenant's minute is closed: a node writing it again later (a node that could not reach
//! the store for longer than `stats_rollup_after`) is ignored rather than counted twice. Minute resolution is kept
//! for the whole history (the management API answers per minute for any window up to 7 days); `history_retention`
//! bounds the rest.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_auth::{AuthError, IssuerSettings, KeyMaintenance};
use ferry_store::{unix_now, ExpiredNodes, StatsRollUp, Store, StoreError};

/// One chore of the active worker.
#[async_trait]
pub trait Job: Send + Sync + 'static {
    /// A short lowercase name for logs (`node_expiry`).
    fn name(&self) -> &'static str;
    /// The pause between two runs while the worker is active; the first run comes at once when it becomes active.
    fn every(&self) -> Duration;
    /// One run. Jobs must be safe to run twice at the same moment (a worker that lost the lease stops its jobs at
    /// their next await, which may come after its successor started), and idempotent.
    async fn run(&self, store: &dyn Store) -> Result<(), JobError>;
}

/// Why a job run failed; the job runs again at its next interval.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// The chores' settings. Defaults are those of a single node today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoreSettings {
    /// A node without a heartbeat for this long is gone. Must exceed the nodes' heartbeat interval (10 s) by a
    /// good margin. Default 60 s.
    pub node_expiry: Duration,
    /// How often silent nodes are looked for. Default 10 s.
    pub node_expiry_every: Duration,
    /// Minutes that ended this long ago are rolled up; at least [`MIN_STATS_ROLLUP_AFTER`] (shorter is raised).
    /// Default 1 h.
    pub stats_rollup_after: Duration,
    /// How often the roll-up runs. Default 60 s.
    pub stats_rollup_every: Duration,
    /// Most minutes one roll-up run merges (one transaction each); the rest waits for the next run. Default 1440.
    pub stats_rollup_batch: u32,
    /// Request log entries older than this go. Default 7 days.
    pub request_log_retention: Duration,
    /// Closed connections and statistics older than this go. Default 30 days.
    pub history_retention: Duration,
    /// How often retention runs. Default 10 min.
    pub prune_every: Duration,
    /// How long the audit log keeps an entry (expired sign-in sessions go with the same job).
    pub audit_retention: Duration,
    /// The built-in issuer's settings (`rotate_every`, token ttl and `key_refresh` make the overlap); `None`: no
    /// signing key job. Default `None`.
    pub signing_keys: Option<IssuerSettings>,
    /// How often the signing keys are looked at. Default 60 s.
    pub signing_keys_every: Duration,
}

/// The shortest `stats_rollup_after`: nodes rewrite a minute for up to two minutes after it ended (and longer while
/// the store is unreachable), and writes to a rolled-up minute are ignored.
pub const MIN_STATS_ROLLUP_AFTER: Duration = Duration::from_secs(5 * 60);

impl Default for ChoreSettings {
    fn default() -> Self {
        ChoreSettings {
            node_expiry: Duration::from_secs(60),
            node_expiry_every: Duration::from_secs(10),
            stats_rollup_after: Duration::from_secs(3600),
            stats_rollup_every: Duration::from_secs(60),
            stats_rollup_batch: 1440,
            request_log_retention: Duration::from_secs(7 * 86_400),
            history_retention: Duration::from_secs(30 * 86_400),
            prune_every: Duration::from_secs(600),
            audit_retention: Duration::from_secs(90 * 86_400),
            signing_keys: None,
            signing_keys_every: Duration::from_secs(60),
        }
    }
}

/// The chores as jobs for [`Worker::start`](crate::Worker::start): node expiry, statistics roll-up, retention,
/// and signing keys when `settings.signing_keys` is set.
pub fn chores(settings: &ChoreSettings) -> Vec<Arc<dyn Job>> {
    let mut jobs: Vec<Arc<dyn Job>> = vec![
        Arc::new(NodeExpiryJob {
            expiry: settings.node_expiry,
            every: settings.node_expiry_every,
        }),
        Arc::new(StatsRollUpJob {
            after: settings.stats_rollup_after,
            batch: settings.stats_rollup_batch,
            every: settings.stats_rollup_every,
        }),
        Arc::new(RetentionJob {
            request_log: settings.request_log_retention,
            history: settings.history_retention,
            audit: settings.audit_retention,
            every: settings.prune_every,
        }),
    ];
    if let Some(issuer) = &settings.signing_keys {
        jobs.push(Arc::new(SigningKeyJob {
            settings: issuer.clone(),
            every: settings.signing_keys_every,
        }));
    }
    jobs
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// Nodes whose last heartbeat is older than `node_expiry` at `now` (unix seconds) are gone: remove them and close
/// their live connections in the history; close live connections of nodes without a row opened before the same
/// bound ([`Store::expire_silent_nodes`]).
pub async fn expire_silent_nodes(
    store: &dyn Store,
    node_expiry: Duration,
    now: i64,
) -> Result<ExpiredNodes, StoreError> {
    store
        .expire_silent_nodes(now.saturating_sub(secs(node_expiry)))
        .await
}

/// The first minute that the roll-up leaves alone at `now` (unix seconds): the start of the minute
/// `stats_rollup_after` (at least [`MIN_STATS_ROLLUP_AFTER`]) ago.
pub fn stats_rollup_cutoff(stats_rollup_after: Duration, now: i64) -> i64 {
    let bound = now.saturating_sub(secs(stats_rollup_after.max(MIN_STATS_ROLLUP_AFTER)));
    bound - bound.rem_euclid(60)
}

/// Roll up the minutes before [`stats_rollup_cutoff`], at most `max_minutes` of them ([`Store::roll_up_stats`]).
pub async fn roll_up_stats(
    store: &dyn Store,
    stats_rollup_after: Duration,
    max_minutes: u32,
    now: i64,
) -> Result<StatsRollUp, StoreError> {
    store
        .roll_up_stats(stats_rollup_cutoff(stats_rollup_after, now), max_minutes)
        .await
}

/// What [`prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Request log entries.
    pub log_entries: u64,
    /// Closed connections and statistics rows.
    pub history_rows: u64,
}

/// Retention at `now` (unix seconds): request log entries older than `request_log_retention`, closed connections
/// and statistics older than `history_retention`.
pub async fn prune(
    store: &dyn Store,
    request_log_retention: Duration,
    history_retention: Duration,
    now: i64,
) -> Result<Pruned, StoreError> {
    let log_before = now
        .saturating_mul(1000)
        .saturating_sub(i64::try_from(request_log_retention.as_millis()).unwrap_or(i64::MAX));
    let log_entries = store.prune_request_log(log_before).await?;
    let history_rows = store
        .prune_history(now.saturating_sub(secs(history_retention)))
        .await?;
    Ok(Pruned {
        log_entries,
        history_rows,
    })
}

/// What [`prune_accounts`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunedAccounts {
    /// Audit log entries.
    pub audit_entries: u64,
    /// Sign-in sessions past their idle or absolute expiry.
    pub sessions: u64,
}

/// Retention of the accounts' records at `now` (unix seconds): audit entries older than `audit_retention`, and
/// sessions no longer valid.
pub async fn prune_accounts(
    store: &dyn Store,
    audit_retention: Duration,
    now: i64,
) -> Result<PrunedAccounts, StoreError> {
    let audit_entries = store
        .prune_audit(now.saturating_sub(secs(audit_retention)))
        .await?;
    let sessions = store.delete_expired_sessions(now).await?;
    Ok(PrunedAccounts {
        audit_entries,
        sessions,
    })
}

/// The signing keys at `now` (unix seconds): `ferry_auth::maintain_signing_keys`.
pub async fn maintain_signing_keys(
    store: &dyn Store,
    settings: &IssuerSettings,
    now: i64,
) -> Result<KeyMaintenance, AuthError> {
    ferry_auth::maintain_signing_keys(store, settings, now).await
}

/// The `node_expiry` job.
#[derive(Debug, Clone)]
pub struct NodeExpiryJob {
    pub expiry: Duration,
    pub every: Duration,
}

#[async_trait]
impl Job for NodeExpiryJob {
    fn name(&self) -> &'static str {
        "node_expiry"
    }
    fn every(&self) -> Duration {
        self.every
    }
    async fn run(&self, store: &dyn Store) -> Result<(), JobError> {
        let expired = expire_silent_nodes(store, self.expiry, unix_now()).await?;
        for gone in &expired.nodes {
            tracing::info!(
                gone_node_id = %gone,
                expiry_s = self.expiry.as_secs(),
                "node without a heartbeat taken as gone"
            );
        }
        if expired.connections_closed > 0 {
            tracing::info!(
                nodes = expired.nodes.len(),
                connections = expired.connections_closed,
                "connections of gone nodes closed in the history"
            );
        }
        Ok(())
    }
}

/// The `stats_rollup` job.
#[derive(Debug, Clone)]
pub struct StatsRollUpJob {
    pub after: Duration,
    pub batch: u32,
    pub every: Duration,
}

#[async_trait]
impl Job for StatsRollUpJob {
    fn name(&self) -> &'static str {
        "stats_rollup"
    }
    fn every(&self) -> Duration {
        self.every
    }
    async fn run(&self, store: &dyn Store) -> Result<(), JobError> {
        let done = roll_up_stats(store, self.after, self.batch.max(1), unix_now()).await?;
        if done.minutes > 0 {
            tracing::info!(
                minutes = done.minutes,
                rows = done.rows_merged,
                more = done.more,
                "statistics rolled up"
            );
        }
        Ok(())
    }
}

/// The `retention` job.
#[derive(Debug, Clone)]
pub struct RetentionJob {
    pub request_log: Duration,
    pub history: Duration,
    pub audit: Duration,
    pub every: Duration,
}

#[async_trait]
impl Job for RetentionJob {
    fn name(&self) -> &'static str {
        "retention"
    }
    fn every(&self) -> Duration {
        self.every
    }
    async fn run(&self, store: &dyn Store) -> Result<(), JobError> {
        let pruned = prune(store, self.request_log, self.history, unix_now()).await?;
        if pruned.log_entries > 0 {
            tracing::info!(entries = pruned.log_entries, "request log pruned");
        }
        if pruned.history_rows > 0 {
            tracing::info!(
                rows = pruned.history_rows,
                "old connections and statistics pruned"
            );
        }
        let accounts = prune_accounts(store, self.audit, unix_now()).await?;
        if accounts.audit_entries > 0 {
            tracing::info!(entries = accounts.audit_entries, "audit log pruned");
        }
        if accounts.sessions > 0 {
            tracing::info!(
                sessions = accounts.sessions,
                "expired sign-in sessions deleted"
            );
        }
        Ok(())
    }
}

/// The `signing_keys` job.
#[derive(Debug, Clone)]
pub struct SigningKeyJob {
    pub settings: IssuerSettings,
    pub every: Duration,
}

#[async_trait]
impl Job for SigningKeyJob {
    fn name(&self) -> &'static str {
        "signing_keys"
    }
    fn every(&self) -> Duration {
        self.every
    }
    async fn run(&self, store: &dyn Store) -> Result<(), JobError> {
        // ferry-auth logs each key added or removed.
        maintain_signing_keys(store, &self.settings, unix_now()).await?;
        Ok(())
    }
}

/// An error and its sources, `: `-separated, for one log field.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use ferry_proto::TenantName;
    use ferry_store::{
        ConnectionQuery, ConnectionRecord, NodeRecord, RequestLogEntry, SigningKey, SqliteStore,
        StatsRecord,
    };

    use super::*;

    fn node(id: &str, heartbeat_at: i64) -> NodeRecord {
        NodeRecord {
            id: id.to_owned(),
            address: format!("http://{id}:8080"),
            version: "test".to_owned(),
            started_at: heartbeat_at - 100,
            heartbeat_at,
            roles: "relay".to_owned(),
        }
    }

    fn connection(id: &str, node: &str, connected_at: i64) -> ConnectionRecord {
        ConnectionRecord {
            id: id.to_owned(),
            tenant: TenantName::new("acme").expect("name"),
            connector_id: "c1".to_owned(),
            node: node.to_owned(),
            remote_addr: "192.0.2.1:4000".to_owned(),
            connected_at,
            disconnected_at: None,
        }
    }

    fn counts(tenant: &TenantName, minute: i64, requests: u64) -> StatsRecord {
        let mut record = StatsRecord::new(tenant.clone(), minute);
        record.requests = requests;
        record.status_classes[1] = requests;
        record.latency_buckets[2] = requests;
        record
    }

    fn log_entry(at_ms: i64) -> RequestLogEntry {
        RequestLogEntry {
            id: 0,
            tenant: TenantName::new("acme").expect("name"),
            at_ms,
            request_id: uuid::Uuid::new_v4().simple().to_string(),
            method: "GET".to_owned(),
            target: "app".to_owned(),
            path: "/".to_owned(),
            status: 200,
            duration_ms: 1,
            bytes_in: 0,
            bytes_out: 0,
            client_addr: "192.0.2.2:5000".to_owned(),
        }
    }

    async fn connection_state(store: &dyn Store, id: &str) -> Option<Option<i64>> {
        store
            .list_connections(&ConnectionQuery {
                limit: 1000,
                ..ConnectionQuery::default()
            })
            .await
            .expect("connections")
            .items
            .into_iter()
            .find(|c| c.id == id)
            .map(|c| c.disconnected_at)
    }

    #[test]
    fn rollup_cutoff_is_a_minute_start_and_never_too_recent() {
        let now = 1_700_000_000 + 17;
        assert_eq!(stats_rollup_cutoff(Duration::from_secs(3600), now) % 60, 0);
        assert_eq!(
            stats_rollup_cutoff(Duration::from_secs(3600), now),
            (now - 3600) / 60 * 60
        );
        assert_eq!(
            stats_rollup_cutoff(Duration::ZERO, now),
            (now - 300) / 60 * 60,
            "raised to the minimum"
        );
    }

    #[test]
    fn the_chores() {
        let names = |jobs: Vec<Arc<dyn Job>>| -> Vec<&'static str> {
            jobs.iter().map(|j| j.name()).collect()
        };
        assert_eq!(
            names(chores(&ChoreSettings::default())),
            ["node_expiry", "stats_rollup", "retention"]
        );
        let with_keys = ChoreSettings {
            signing_keys: Some(IssuerSettings::default()),
            ..ChoreSettings::default()
        };
        let jobs = chores(&with_keys);
        assert_eq!(
            names(jobs.clone()),
            ["node_expiry", "stats_rollup", "retention", "signing_keys"]
        );
        assert_eq!(jobs[0].every(), Duration::from_secs(10));
        assert_eq!(jobs[3].every(), Duration::from_secs(60));
    }

    /// Each chore, run once as the worker runs it, against `store`.
    async fn each_chore_does_its_work(store: &dyn Store) {
        let now = unix_now();
        let settings = ChoreSettings {
            signing_keys: Some(IssuerSettings {
                rotate_every: Some(Duration::from_secs(86_400)),
                ..IssuerSettings::default()
            }),
            ..ChoreSettings::default()
        };
        let jobs = chores(&settings);
        let job = |name: &str| {
            jobs.iter()
                .find(|j| j.name() == name)
                .cloned()
                .expect("job")
        };

        // Node expiry: the silent node goes and its tunnel is closed at its last heartbeat; a tunnel of a node
        // that never wrote a heartbeat is closed too; the live node and its tunnel stay.
        store
            .heartbeat_node(&node("silent", now - 120))
            .await
            .expect("hb");
        store.heartbeat_node(&node("alive", now)).await.expect("hb");
        for c in [
            connection("of-silent", "silent", now - 200),
            connection("of-alive", "alive", now - 200),
            connection("of-ghost", "ghost", now - 300),
        ] {
            store.record_connection(&c).await.expect("record");
        }
        job("node_expiry").run(store).await.expect("node expiry");
        let ids: Vec<String> = store
            .list_nodes()
            .await
            .expect("nodes")
            .into_iter()
            .map(|n| n.id)
            .collect();
        assert_eq!(ids, ["alive"]);
        assert_eq!(
            connection_state(store, "of-silent").await,
            Some(Some(now - 120))
        );
        assert_eq!(
            connection_state(store, "of-ghost").await,
            Some(Some(now - 300))
        );
        assert_eq!(connection_state(store, "of-alive").await, Some(None));

        // Roll-up: the minute two hours ago is merged, the current one is not; every read answers as before;
        // the merged minute is closed to late writes.
        let t = TenantName::new("acme").expect("name");
        let old = (now - 7200) / 60 * 60;
        let current = now / 60 * 60;
        store
            .put_stats("n1", &[counts(&t, old, 1), counts(&t, current, 1)])
            .await
            .expect("n1");
        store
            .put_stats("n2", &[counts(&t, old, 2)])
            .await
            .expect("n2");
        let before = store
            .stats(Some(&t), old, current + 60)
            .await
            .expect("read");
        job("stats_rollup").run(store).await.expect("roll up");
        assert_eq!(
            store
                .stats(Some(&t), old, current + 60)
                .await
                .expect("read"),
            before
        );
        store
            .put_stats("n1", &[counts(&t, old, 100), counts(&t, current, 5)])
            .await
            .expect("late");
        let after = store
            .stats(Some(&t), old, current + 60)
            .await
            .expect("read");
        assert_eq!(
            after[0], before[0],
            "the rolled-up minute ignores a late write"
        );
        assert_eq!(
            after[1],
            counts(&t, current, 5),
            "the current minute takes writes"
        );
        assert_eq!(
            store
                .roll_up_stats(current, 10)
                .await
                .expect("again")
                .rows_merged,
            0,
            "the job left nothing before its cut-off"
        );

        // Retention: old log entries, old closed connections and old statistics go; recent ones stay.
        store
            .append_request_log(&[log_entry((now - 8 * 86_400) * 1000), log_entry(now * 1000)])
            .await
            .expect("log");
        let mut closed = connection("old-closed", "alive", now - 40 * 86_400);
        closed.disconnected_at = Some(now - 31 * 86_400);
        store.record_connection(&closed).await.expect("record");
        store
            .put_stats("n1", &[counts(&t, (now - 31 * 86_400) / 60 * 60, 9)])
            .await
            .expect("old stats");
        job("retention").run(store).await.expect("retention");
        let log = store.request_log(None, None, 100).await.expect("log");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].at_ms, now * 1000);
        assert_eq!(connection_state(store, "old-closed").await, None);
        assert_eq!(
            connection_state(store, "of-silent").await,
            Some(Some(now - 120))
        );
        assert!(store.stats(Some(&t), 0, old).await.expect("old").is_empty());
        // ... and the audit log's old entries and expired sessions.
        let audit = |at: i64| ferry_store::AuditEntry {
            id: 0,
            at,
            actor: "user:chore".to_owned(),
            action: "tenant.create".to_owned(),
            object: "t".to_owned(),
            detail: "{}".to_owned(),
        };
        store
            .append_audit(&audit(now - 91 * 86_400))
            .await
            .expect("old audit");
        store.append_audit(&audit(now)).await.expect("new audit");
        store
            .create_user(&ferry_store::UserRecord {
                name: "chore".to_owned(),
                password_hash: None,
                role: ferry_store::Role::Viewer,
                tenants: Vec::new(),
                disabled: false,
                created_at: now,
                last_sign_in_at: None,
            })
            .await
            .expect("user");
        let session = |id: &str, idle_expires_at: i64| ferry_store::SessionRecord {
            id_sha256: id.to_owned(),
            user: "chore".to_owned(),
            csrf_token: "c".to_owned(),
            created_at: now - 100,
            last_seen_at: now - 100,
            idle_expires_at,
            expires_at: now + 3600,
        };
        store
            .create_session(&session("idle", now - 1))
            .await
            .expect("idle");
        store
            .create_session(&session("live", now + 60))
            .await
            .expect("live");
        job("retention").run(store).await.expect("retention");
        let left = store
            .audit_log(&ferry_store::AuditQuery {
                actor: Some("user:chore".to_owned()),
                ..Default::default()
            })
            .await
            .expect("audit");
        assert_eq!(left.iter().map(|e| e.at).collect::<Vec<_>>(), vec![now]);
        assert!(!store.delete_session("idle").await.expect("swept"));
        assert!(store.delete_session("live").await.expect("kept"));

        // Signing keys: a key ten days old is rotated (and kept for the overlap).
        let stale = SigningKey {
            kid: "stale".to_owned(),
            algorithm: "EdDSA".to_owned(),
            private_der: vec![1],
            public_key: vec![2; 32],
            created_at: now - 10 * 86_400,
        };
        store.add_signing_key(&stale).await.expect("key");
        job("signing_keys").run(store).await.expect("keys");
        let kids: Vec<String> = store
            .signing_keys()
            .await
            .expect("keys")
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert_eq!(kids.len(), 2, "{kids:?}");
        assert_eq!(kids[1], "stale");
        job("signing_keys").run(store).await.expect("keys again");
        assert_eq!(
            store.signing_keys().await.expect("keys").len(),
            2,
            "not due again"
        );
    }

    #[tokio::test]
    async fn each_chore_does_its_work_on_sqlite() {
        let store = SqliteStore::open_in_memory().await.expect("store");
        each_chore_does_its_work(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_chore_does_its_work_on_postgres() {
        ferry_store::testdb::with_database(|options| async move {
            let store = ferry_store::PostgresStore::connect_with(options)
                .await
                .expect("open");
            each_chore_does_its_work(&store).await;
            store.close().await;
        })
        .await;
    }

    /// The chores wired into a worker: a silent node disappears without anyone calling the job.
    #[tokio::test]
    async fn an_active_worker_runs_the_chores() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        store
            .heartbeat_node(&node("silent", unix_now() - 600))
            .await
            .expect("hb");
        let settings = ChoreSettings {
            node_expiry_every: Duration::from_millis(20),
            ..ChoreSettings::default()
        };
        let worker = crate::Worker::start(
            store.clone(),
            "node-w",
            crate::WorkerSettings::with_ttl(Duration::from_secs(2)),
            chores(&settings),
        );
        let start = std::time::Instant::now();
        while !store.list_nodes().await.expect("nodes").is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "node expired by the worker"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(worker.is_active());
        worker.stop().await;
    }
}
