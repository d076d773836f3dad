//! The PostgreSQL store: one database shared by every node of a cluster.
//!
//! Owns: connecting (a modest pool, a bounded connect timeout, errors that name the server but never the
//! password), running the embedded migrations of `migrations/postgres` (sqlx serialises concurrent migrators with
//! an advisory lock), and the PostgreSQL-only SQL: the signing keys' table lock, node expiry (one statement each),
//! and the table locks that keep the statistics roll-up and statistics writes apart. Every other [`Store`](crate::Store) method is written once, for both backends, in [`crate::sql`].

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};

use crate::{ExpiredNodes, StoreError};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections kept by one process; several nodes share the server's `max_connections`.
const MAX_CONNECTIONS: u32 = 10;
/// How long opening the store, or any operation, waits for a connection (including establishing it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `add_first_signing_key` and a statistics roll-up wait for their table lock before failing
/// (transiently).
const LOCK_TIMEOUT: &str = "5s";

/// The [`Store`](crate::Store) on a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    location: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connect to the database of a `postgres://` (or `postgresql://`) URL and bring its schema up to date.
    /// Fails within about five seconds when the server cannot be reached; the error names the server, never
    /// the password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
            reason: format!("not a valid PostgreSQL URL: {e}"),
        })?;
        Self::connect_with(options).await
    }

    /// [`PostgresStore::connect`] with options built by the caller.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        Self::open(options, CONNECT_TIMEOUT).await
    }

    async fn open(options: PgConnectOptions, timeout: Duration) -> Result<Self, StoreError> {
        let location = location(&options);
        let options = if options.get_application_name().is_none() {
            options.application_name("ferry")
        } else {
            options
        };
        // Without this, every start logs the server's NOTICEs of the idempotent migration statements
        // ("relation … already exists, skipping") at info level.
        let options = options.options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                location: location.clone(),
                source,
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                location: location.clone(),
                source,
            })?;
        tracing::debug!(location, "postgres store open");
        Ok(PostgresStore { pool, location })
    }

    /// Where this store is, as `postgres://user@host:port/database` (no password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Close every connection; waits for running operations.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `postgres://user@host:port/database`, for logs and errors: everything but the password.
pub(crate) fn location(options: &PgConnectOptions) -> String {
    let user = options.get_username();
    let database = options.get_database().unwrap_or(user);
    if let Some(socket) = options.get_socket() {
        return format!("postgres://{user}@/{database}?host={}", socket.display());
    }
    let host = options.get_host();
    let port = options.get_port();
    if host.contains(':') {
        format!("postgres://{user}@[{host}]:{port}/{database}")
    } else {
        format!("postgres://{user}@{host}:{port}/{database}")
    }
}

impl PostgresStore {
    /// A transaction for a multi-statement write (READ COMMITTED; statements that must not interleave with other
    /// writers lock what they need).
    async fn write_transaction(
        &self,
        context: &'static str,
    ) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(StoreError::db(context))
    }

    /// Under READ COMMITTED, `INSERT … WHERE NOT EXISTS` alone lets two transactions both see an empty table.
    /// The EXCLUSIVE table lock (which conflicts with itself and with every writer, not with readers) makes the
    /// check and the insert one step across processes; the statement after the lock sees every commit made
    /// before it was granted. Waiting for the lock fails (transiently) after [`LOCK_TIMEOUT`].
    async fn signing_keys_transaction(
        &self,
        context: &'static str,
    ) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.write_transaction(context).await?;
        sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(context))?;
        sqlx::query("LOCK TABLE signing_keys IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(context))?;
        Ok(tx)
    }

    async fn expire_stale_nodes(&self, before: i64) -> Result<u64, StoreError> {
        // One statement: the DELETE locks the rows of the stale nodes (re-checking a row that a heartbeat is
        // updating once that commits), and their open connections are closed in the same snapshot. A heartbeat
        // that waited on a deleted row inserts the node afresh.
        let removed: i64 = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM nodes WHERE heartbeat_at < $1 RETURNING id, heartbeat_at), \
             closed AS (UPDATE connections \
             SET disconnected_at = GREATEST(connections.connected_at, gone.heartbeat_at) \
             FROM gone WHERE connections.node = gone.id AND connections.disconnected_at IS NULL \
             RETURNING 1) \
             SELECT count(*) FROM gone",
        )
        .bind(before)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db("expiring nodes"))?;
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    /// [`Store::expire_silent_nodes`](crate::Store::expire_silent_nodes) in one statement, as
    /// [`Self::expire_stale_nodes`]. Every part reads one snapshot, in which the gone nodes still have their rows:
    /// their connections are closed by `closed`, never counted again as orphans.
    async fn expire_silent(&self, before: i64) -> Result<ExpiredNodes, StoreError> {
        let (mut nodes, closed): (Vec<String>, i64) = sqlx::query_as(
            "WITH gone AS (DELETE FROM nodes WHERE heartbeat_at < $1 RETURNING id, heartbeat_at), \
             closed AS (UPDATE connections \
             SET disconnected_at = GREATEST(connections.connected_at, gone.heartbeat_at) \
             FROM gone WHERE connections.node = gone.id AND connections.disconnected_at IS NULL \
             RETURNING 1), \
             orphaned AS (UPDATE connections SET disconnected_at = connections.connected_at \
             WHERE connections.disconnected_at IS NULL AND connections.connected_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.id = connections.node) \
             RETURNING 1) \
             SELECT COALESCE((SELECT array_agg(id) FROM gone), ARRAY[]::text[]), \
             (SELECT count(*) FROM closed) + (SELECT count(*) FROM orphaned)",
        )
        .bind(before)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db("expiring silent nodes"))?;
        nodes.sort_unstable();
        Ok(ExpiredNodes {
            nodes,
            connections_closed: u64::try_from(closed).unwrap_or(0),
        })
    }

    /// Statistics writes take ROW EXCLUSIVE on `stats` in a statement of their own, first: a roll-up holding its
    /// lock makes them wait, and their statements, which start after the wait, see the roll-up's rows (and skip
    /// the minutes it closed).
    async fn stats_transaction(
        &self,
        context: &'static str,
    ) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.write_transaction(context).await?;
        sqlx::query("LOCK TABLE stats IN ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(context))?;
        Ok(tx)
    }

    /// SHARE ROW EXCLUSIVE conflicts with itself and with every writer of `stats`, not with readers: one minute's
    /// roll-up sees the last committed count of every node and no write slips in before its rows are replaced.
    /// Waiting for the lock fails (transiently) after [`LOCK_TIMEOUT`].
    async fn stats_rollup_transaction(
        &self,
        context: &'static str,
    ) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.write_transaction(context).await?;
        sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(context))?;
        sqlx::query("LOCK TABLE stats IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(context))?;
        Ok(tx)
    }
}

// Unix milliseconds of the server's clock at the start of the statement (one value for the whole statement).
crate::sql::impl_store!(
    PostgresStore,
    Postgres,
    "CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT)"
);

/// Test support for every crate whose tests need a real PostgreSQL (compiled for this crate's tests and behind the
/// `conformance` feature): a fresh database per test on the server of `FERRY_TEST_POSTGRES_URL`.
#[cfg(any(test, feature = "conformance"))]
pub mod testdb {
    use std::future::Future;
    use std::str::FromStr;
    use std::time::Duration;

    use sqlx::postgres::{PgConnectOptions, PgConnection};
    use sqlx::{ConnectOptions, Connection};

    use super::location;

    /// The variable naming the server (any database on it; the tests create their own).
    pub const URL_ENV: &str = "FERRY_TEST_POSTGRES_URL";
    pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// Run `test` with the options of a fresh, uniquely named, empty database, and drop the database afterwards
    /// (also when `test` panics). Without a reachable server: panics when `CI` is set, prints `skipped: …` and
    /// returns otherwise.
    pub async fn with_database<F, Fut>(test: F)
    where
        F: FnOnce(PgConnectOptions) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let url = std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let admin_options = match PgConnectOptions::from_str(&url) {
            Ok(options) => options,
            Err(e) => panic!("{URL_ENV} is not a valid PostgreSQL URL: {e}"),
        };
        let server = location(&admin_options);
        let connected = tokio::time::timeout(Duration::from_secs(5), admin_options.connect()).await;
        let mut admin: PgConnection = match connected {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return unreachable(&server, &e.to_string()),
            Err(_) => return unreachable(&server, "timed out after 5s"),
        };
        let name = format!("ferry_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("create database {name} on {server}: {e}"));
        let outcome = tokio::spawn(test(admin_options.clone().database(&name))).await;
        let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await;
        let _ = admin.close().await;
        match outcome {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("test task failed: {e}"),
        }
        if let Err(e) = dropped {
            panic!("drop database {name} on {server}: {e}");
        }
    }

    /// The URL of the database `options` names, on the server of `FERRY_TEST_POSTGRES_URL` (with its password
    /// and parameters, if any).
    pub fn url_of(options: &PgConnectOptions) -> String {
        let admin = std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let database = options.get_database().unwrap_or_default();
        let (base, query) = match admin.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (admin.as_str(), String::new()),
        };
        let authority_start = base.find("://").map_or(0, |i| i + 3);
        let authority_end = base[authority_start..]
            .find('/')
            .map_or(base.len(), |i| authority_start + i);
        format!("{}/{database}{query}", &base[..authority_end])
    }

    fn unreachable(server: &str, why: &str) {
        if std::env::var_os("CI").is_some() {
            panic!("PostgreSQL required in CI at {server} (set {URL_ENV}): {why}");
        }
        eprintln!("skipped: PostgreSQL not reachable at {server} (set {URL_ENV}): {why}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::testdb::with_database;
    use super::*;
    use crate::conformance;
    use crate::{unix_now, SigningKey, Store, TenantFields};
    use ferry_proto::TenantName;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_on_postgres() {
        with_database(|options| async move {
            let store = PostgresStore::connect_with(options).await.expect("open");
            conformance::run_suite(&store).await;
            // The suite cleans up after itself; it runs again on the same (now key-holding) database.
            conformance::run_suite(&store).await;
            store.close().await;
        })
        .await;
    }

    /// A database written by version 1 of the schema opens with every tenant and secret, the new tenant
    /// columns at their defaults.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upgrade_from_version_1() {
        with_database(|options| async move {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await
                .expect("connect");
            conformance::version_1(&MIGRATOR)
                .run(&pool)
                .await
                .expect("version 1");
            sqlx::raw_sql(conformance::VERSION_1_ROWS)
                .execute(&pool)
                .await
                .expect("rows");
            pool.close().await;
            let store = PostgresStore::connect_with(options).await.expect("upgrade");
            conformance::check_upgraded_from_version_1(&store).await;
            store.close().await;
        })
        .await;
    }

    /// Write version `version` of the schema into the database of `options`, holding `rows`.
    async fn database_at_version(options: &PgConnectOptions, version: usize, rows: &str) {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .expect("connect");
        conformance::up_to_version(&MIGRATOR, version)
            .run(&pool)
            .await
            .expect("the old schema");
        sqlx::raw_sql(rows).execute(&pool).await.expect("rows");
        pool.close().await;
    }

    /// A database written by version 2 of the schema opens with its nodes (without roles) and statistics.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upgrade_from_version_2() {
        with_database(|options| async move {
            database_at_version(&options, 2, conformance::VERSION_2_ROWS).await;
            let store = PostgresStore::connect_with(options).await.expect("upgrade");
            conformance::check_upgraded_from_version_2(&store).await;
            store.close().await;
        })
        .await;
    }

    /// A database written by version 3 of the schema opens with its admin keys as admins.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upgrade_from_version_3() {
        with_database(|options| async move {
            database_at_version(&options, 3, conformance::VERSION_3_ROWS).await;
            let store = PostgresStore::connect_with(options).await.expect("upgrade");
            conformance::check_upgraded_from_version_3(&store).await;
            store.close().await;
        })
        .await;
    }

    /// Separate pools behave like separate nodes: racing lease acquisitions have one winner, and a roll-up racing
    /// statistics writers never counts a write twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_leases_and_rollups() {
        with_database(|options| async move {
            let mut stores: Vec<Arc<dyn Store>> = Vec::new();
            for _ in 0..4 {
                stores.push(Arc::new(
                    PostgresStore::connect_with(options.clone())
                        .await
                        .expect("open"),
                ));
            }
            conformance::racing_leases(&stores, 16).await;
            conformance::rollup_races_writers(&stores).await;
        })
        .await;
    }

    /// `sslmode=require` speaks TLS to the server (rustls, system roots), as a managed database demands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sslmode_require_uses_tls() {
        with_database(|options| async move {
            let server_has_tls = {
                let plain = PostgresStore::connect_with(options.clone())
                    .await
                    .expect("open");
                let on: String = sqlx::query_scalar("SHOW ssl")
                    .fetch_one(&plain.pool)
                    .await
                    .expect("show ssl");
                plain.close().await;
                on == "on"
            };
            if !server_has_tls {
                if std::env::var_os("CI").is_some() {
                    panic!("the CI PostgreSQL has ssl = off; this test needs it on");
                }
                eprintln!("skipped: this PostgreSQL server has ssl = off");
                return;
            }
            let store =
                PostgresStore::connect_with(options.ssl_mode(sqlx::postgres::PgSslMode::Require))
                    .await
                    .expect("open with sslmode=require");
            let tls: bool =
                sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_one(&store.pool)
                    .await
                    .expect("pg_stat_ssl");
            assert!(tls, "the connection is encrypted");
            store.close().await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_reopen() {
        with_database(|options| async move {
            let name = TenantName::new("keeper").expect("name");
            let store = PostgresStore::connect_with(options.clone())
                .await
                .expect("open");
            store
                .create_tenant(&name, &TenantFields::default())
                .await
                .expect("create");
            store.close().await;
            let store = PostgresStore::connect_with(options).await.expect("reopen");
            assert!(store.get_tenant(&name).await.expect("get").is_some());
            store.close().await;
        })
        .await;
    }

    /// Separate pools behave like separate nodes: concurrent first opens (migrations) and concurrent writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_openers_share_one_database() {
        with_database(|options| async move {
            let mut tasks = Vec::new();
            for i in 0..6 {
                let options = options.clone();
                tasks.push(tokio::spawn(async move {
                    let store = PostgresStore::connect_with(options).await.expect("open");
                    conformance::concurrent_writer(&store, &format!("t{i}"), 10).await;
                    store.close().await;
                }));
            }
            for task in tasks {
                task.await.expect("task");
            }
            let store = PostgresStore::connect_with(options).await.expect("open");
            let writers: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
            conformance::check_concurrent_writers(&store, &writers, 10).await;
            store.close().await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_first_signing_keys_agree() {
        with_database(|options| async move {
            PostgresStore::connect_with(options.clone())
                .await
                .expect("migrate")
                .close()
                .await;
            let start = Arc::new(tokio::sync::Barrier::new(8));
            let mut tasks = Vec::new();
            for i in 0..8u8 {
                let options = options.clone();
                let start = Arc::clone(&start);
                tasks.push(tokio::spawn(async move {
                    let store = PostgresStore::connect_with(options).await.expect("open");
                    let key = SigningKey {
                        kid: format!("k{i}"),
                        algorithm: "EdDSA".into(),
                        private_der: vec![i],
                        public_key: vec![i],
                        created_at: unix_now(),
                    };
                    start.wait().await;
                    let added = store.add_first_signing_key(&key).await.expect("add");
                    store.close().await;
                    added
                }));
            }
            let mut added = 0;
            for task in tasks {
                if task.await.expect("task") {
                    added += 1;
                }
            }
            assert_eq!(added, 1);
            let store = PostgresStore::connect_with(options).await.expect("open");
            assert_eq!(store.signing_keys().await.expect("keys").len(), 1);
            store.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn unreachable_server_names_host_not_password() {
        let options = PgConnectOptions::from_str("postgres://ferry:hunter2@127.0.0.1:1/ferrydb")
            .expect("options");
        let err = PostgresStore::open(options, Duration::from_millis(300))
            .await
            .expect_err("nothing listens on port 1");
        let text = format!("{err} {err:?}");
        assert!(
            err.to_string()
                .contains("postgres://ferry@127.0.0.1:1/ferrydb"),
            "{err}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(err.is_transient(), "{err:?}");
    }

    #[test]
    fn location_has_no_password() {
        let options = PgConnectOptions::from_str("postgresql://u:secret@db.example:6543/app")
            .expect("options");
        assert_eq!(location(&options), "postgres://u@db.example:6543/app");
    }
}
