//! The SQLite store: one file in the data directory, shared safely by several processes.
//!
//! Owns: opening the file (WAL journal, busy timeout, foreign keys), running the embedded migrations of
//! `migrations/sqlite`, and the SQLite-only SQL: multi-statement writes under the write lock taken at `BEGIN
//! IMMEDIATE`, the first signing key, node expiry, the statistics roll-up's lock. Every other [`Store`](crate::Store) method is written once, for
//! both backends, in [`crate::sql`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use crate::{ExpiredNodes, StoreError, SQLITE_FILE_NAME};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection (or process) holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often opening retries a migration that lost a race with another process migrating the same file.
const MIGRATE_ATTEMPTS: u32 = 5;
/// How often opening retries when the file is locked by another opener.
const OPEN_ATTEMPTS: u32 = 10;
/// Connections of one process's pool. SQLite takes one writer at a time (the others wait for its lock) and the
/// store is off the request path, so two serve a node: a write and a read side by side. Each connection is a
/// thread of its own (sqlx's worker) with its own SQLite caches and a glibc heap for its C allocations, about
/// 150 KiB of an idle node's memory each; with 8, a starting node opened 6 at once (its roles' first store work
/// arrives together) and kept them, as sqlx hands idle connections out in turn, so periodic work kept each one
/// younger than the idle timeout below (docs/performance.md, "Idle memory").
const MAX_CONNECTIONS: u32 = 2;
/// How long a connection beyond the first may sit unused before the pool closes it (sqlx's default: ten minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A pause that grows with the attempt, with some jitter so that racing processes spread out.
fn backoff(attempt: u32) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos() % 20))
        .unwrap_or(0);
    Duration::from_millis(20 * u64::from(attempt) + jitter)
}

/// The embedded [`Store`](crate::Store): a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    location: String,
}

impl SqliteStore {
    /// Open (creating the directory and the file if needed) `<data_dir>/ferry.db` and bring its schema up to
    /// date.
    pub async fn open_in(data_dir: &Path) -> Result<Self, StoreError> {
        create_dir(data_dir).await?;
        Self::open(&data_dir.join(SQLITE_FILE_NAME)).await
    }

    /// Open (creating it and its parent directory if needed) the database file `db_file`, in WAL mode with a
    /// busy timeout and foreign keys on, and bring its schema up to date. Safe while other processes have the
    /// same file open.
    pub async fn open(db_file: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = db_file.parent() {
            if !parent.as_os_str().is_empty() {
                create_dir(parent).await?;
            }
        }
        let created = !db_file.exists();
        let store = Self::open_retrying(db_file).await?;
        crate::private_files::after_open(db_file, created);
        Ok(store)
    }

    async fn open_retrying(db_file: &Path) -> Result<Self, StoreError> {
        // Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked" at once
        // (without waiting the busy timeout) when two connections try it together: retry with a growing pause.
        let mut attempt = 1;
        loop {
            match Self::open_once(db_file).await {
                Err(error) if error.is_transient() && attempt < OPEN_ATTEMPTS => {
                    tracing::debug!(path = %db_file.display(), attempt, %error, "sqlite open raced, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn open_once(db_file: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(db_file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(1)
            .idle_timeout(IDLE_TIMEOUT)
            .acquire_timeout(BUSY_TIMEOUT * 2)
            .connect_with(options)
            .await
            .map_err(StoreError::db("opening the database"))?;
        let store = SqliteStore {
            pool,
            location: db_file.display().to_string(),
        };
        store.migrate().await?;
        tracing::debug!(path = %store.location, "sqlite store open");
        Ok(store)
    }

    /// Open a private in-memory database (for tests of other crates); it disappears when the store is dropped.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        // Every connection to `:memory:` is its own database: keep exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(StoreError::db("opening the in-memory database"))?;
        let store = SqliteStore {
            pool,
            location: ":memory:".to_owned(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Close every connection; waits for running operations.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Run the embedded migrations. Another process migrating the same file at the same moment can make one
    /// attempt fail: both see a version missing, and the second to apply it fails on a statement that cannot be
    /// repeated (`ALTER TABLE … ADD COLUMN`) or on recording the version. Each version runs in a transaction, so
    /// the failed attempt leaves nothing behind, and the next attempt finds the version applied.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut attempt = 1;
        loop {
            match MIGRATOR.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(error @ (MigrateError::Execute(_) | MigrateError::ExecuteMigration(..)))
                    if attempt < MIGRATE_ATTEMPTS =>
                {
                    tracing::debug!(path = %self.location, attempt, %error, "sqlite migration raced, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(source) => {
                    return Err(StoreError::Migrate {
                        location: self.location.clone(),
                        source,
                    })
                }
            }
        }
    }
}

async fn create_dir(dir: &Path) -> Result<(), StoreError> {
    crate::private_files::create_dir(dir)
        .await
        .map_err(|source| StoreError::Io {
            action: "create directory",
            path: PathBuf::from(dir),
            source,
        })
}

impl SqliteStore {
    /// A transaction that holds SQLite's write lock from its start (`BEGIN IMMEDIATE`, waiting the busy timeout
    /// for it): no other connection or process writes between its statements, and none of them can fail on a
    /// stale read snapshot.
    async fn write_transaction(
        &self,
        context: &'static str,
    ) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::db(context))
    }

    /// SQLite's write lock is all it takes: no other writer adds a key until the transaction ends.
    async fn signing_keys_transaction(
        &self,
        context: &'static str,
    ) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        self.write_transaction(context).await
    }

    async fn expire_stale_nodes(&self, before: i64) -> Result<u64, StoreError> {
        const CONTEXT: &str = "expiring nodes";
        // The write lock, held from the start, keeps heartbeats out until both statements are done.
        let mut tx = self.write_transaction(CONTEXT).await?;
        sqlx::query(
            "UPDATE connections \
             SET disconnected_at = MAX(connections.connected_at, nodes.heartbeat_at) \
             FROM nodes WHERE connections.node = nodes.id AND nodes.heartbeat_at < $1 \
             AND connections.disconnected_at IS NULL",
        )
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(CONTEXT))?;
        let done = sqlx::query("DELETE FROM nodes WHERE heartbeat_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(CONTEXT))?;
        tx.commit().await.map_err(StoreError::db(CONTEXT))?;
        Ok(done.rows_affected())
    }

    /// [`Store::expire_silent_nodes`](crate::Store::expire_silent_nodes): under the write lock, held from the
    /// start, no heartbeat or new connection comes between the statements.
    async fn expire_silent(&self, before: i64) -> Result<ExpiredNodes, StoreError> {
        const CONTEXT: &str = "expiring silent nodes";
        let mut tx = self.write_transaction(CONTEXT).await?;
        let nodes: Vec<String> =
            sqlx::query_scalar("SELECT id FROM nodes WHERE heartbeat_at < $1 ORDER BY id")
                .bind(before)
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::db(CONTEXT))?;
        let closed = sqlx::query(
            "UPDATE connections \
             SET disconnected_at = MAX(connections.connected_at, nodes.heartbeat_at) \
             FROM nodes WHERE connections.node = nodes.id AND nodes.heartbeat_at < $1 \
             AND connections.disconnected_at IS NULL",
        )
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(CONTEXT))?;
        let orphaned = sqlx::query(ORPHANED_CONNECTIONS_CLOSE)
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(CONTEXT))?;
        sqlx::query("DELETE FROM nodes WHERE heartbeat_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(CONTEXT))?;
        tx.commit().await.map_err(StoreError::db(CONTEXT))?;
        Ok(ExpiredNodes {
            nodes,
            connections_closed: closed.rows_affected() + orphaned.rows_affected(),
        })
    }

    /// Writes hold SQLite's write lock from their start: a roll-up and a statistics write never interleave.
    async fn stats_transaction(
        &self,
        context: &'static str,
    ) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        self.write_transaction(context).await
    }

    async fn stats_rollup_transaction(
        &self,
        context: &'static str,
    ) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        self.write_transaction(context).await
    }
}

/// Close, at their `connected_at`, the live connections opened before `$1` whose node has no row.
const ORPHANED_CONNECTIONS_CLOSE: &str = "UPDATE connections SET disconnected_at = connected_at \
     WHERE disconnected_at IS NULL AND connected_at < $1 \
     AND NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.id = connections.node)";

// Unix milliseconds; SQLite gives every use of `'now'` within one statement the same value.
crate::sql::impl_store!(
    SqliteStore,
    Sqlite,
    "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::conformance;
    use crate::{unix_now, SigningKey, Store, TenantFields};
    use ferry_proto::TenantName;

    #[tokio::test]
    async fn conformance_on_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open_in(&dir.path().join("data"))
            .await
            .expect("open");
        assert!(dir.path().join("data").join(SQLITE_FILE_NAME).is_file());
        conformance::run_suite(&store).await;
        store.close().await;
    }

    #[tokio::test]
    async fn conformance_in_memory() {
        let store = SqliteStore::open_in_memory().await.expect("open");
        conformance::run_suite(&store).await;
    }

    /// A database written by version 1 of the schema opens with every tenant and secret, the new tenant
    /// columns at their defaults.
    #[tokio::test]
    async fn upgrade_from_version_1() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v1.db");
        {
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .expect("open v1");
            conformance::version_1(&MIGRATOR)
                .run(&pool)
                .await
                .expect("version 1");
            sqlx::raw_sql(conformance::VERSION_1_ROWS)
                .execute(&pool)
                .await
                .expect("rows");
            pool.close().await;
        }
        let store = SqliteStore::open(&path).await.expect("upgrade");
        conformance::check_upgraded_from_version_1(&store).await;
        store.close().await;
    }

    /// A SQLite file at `path` written by version `version` of the schema, holding `rows`.
    async fn database_at_version(path: &std::path::Path, version: usize, rows: &str) {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("open the old database");
        conformance::up_to_version(&MIGRATOR, version)
            .run(&pool)
            .await
            .expect("the old schema");
        sqlx::raw_sql(rows).execute(&pool).await.expect("rows");
        pool.close().await;
    }

    /// A database written by version 2 of the schema opens with its nodes (without roles) and statistics.
    #[tokio::test]
    async fn upgrade_from_version_2() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v2.db");
        database_at_version(&path, 2, conformance::VERSION_2_ROWS).await;
        let store = SqliteStore::open(&path).await.expect("upgrade");
        conformance::check_upgraded_from_version_2(&store).await;
        store.close().await;
    }

    /// A database written by version 3 of the schema opens with its admin keys as admins.
    #[tokio::test]
    async fn upgrade_from_version_3() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v3.db");
        database_at_version(&path, 3, conformance::VERSION_3_ROWS).await;
        let store = SqliteStore::open(&path).await.expect("upgrade");
        conformance::check_upgraded_from_version_3(&store).await;
        store.close().await;
    }

    /// Pools on one file behave like processes: racing lease acquisitions have one winner, and a roll-up racing
    /// statistics writers never counts a write twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_leases_and_rollups_on_one_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("race.db");
        let mut stores: Vec<Arc<dyn Store>> = Vec::new();
        for _ in 0..4 {
            stores.push(Arc::new(SqliteStore::open(&path).await.expect("open")));
        }
        conformance::racing_leases(&stores, 12).await;
        conformance::rollup_races_writers(&stores).await;
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let name = TenantName::new("keeper").expect("name");
        {
            let store = SqliteStore::open_in(dir.path()).await.expect("open");
            store
                .create_tenant(&name, &TenantFields::default())
                .await
                .expect("create");
            store.close().await;
        }
        let store = SqliteStore::open_in(dir.path()).await.expect("reopen");
        assert!(store.get_tenant(&name).await.expect("get").is_some());
    }

    /// Separate pools on one file behave like separate processes: concurrent first opens (migrations) and
    /// concurrent writes must all succeed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_openers_share_one_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = Arc::new(dir.path().join("shared.db"));
        let mut tasks = Vec::new();
        for i in 0..6 {
            let path = Arc::clone(&path);
            tasks.push(tokio::spawn(async move {
                let store = SqliteStore::open(&path).await.expect("open");
                conformance::concurrent_writer(&store, &format!("t{i}"), 10).await;
                store.close().await;
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let store = SqliteStore::open(&path).await.expect("open");
        let writers: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
        conformance::check_concurrent_writers(&store, &writers, 10).await;
    }

    const CHILD_DB_ENV: &str = "FERRY_STORE_TEST_CHILD_DB";
    const CHILD_ID_ENV: &str = "FERRY_STORE_TEST_CHILD_ID";

    /// Run by `separate_processes_share_one_file` in child processes; does nothing when run on its own.
    #[tokio::test]
    #[ignore = "helper, started by separate_processes_share_one_file"]
    async fn child_writer() {
        let (Ok(path), Ok(id)) = (std::env::var(CHILD_DB_ENV), std::env::var(CHILD_ID_ENV)) else {
            return;
        };
        let store = SqliteStore::open(Path::new(&path)).await.expect("open");
        conformance::concurrent_writer(&store, &format!("p{id}"), 20).await;
        store.close().await;
    }

    /// Real processes (this test binary, re-run) open a fresh file at once and write concurrently.
    #[test]
    fn separate_processes_share_one_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("procs").join("ferry.db");
        let exe = std::env::current_exe().expect("test binary");
        let children: Vec<_> = (0..4)
            .map(|i| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "sqlite::tests::child_writer",
                        "--ignored",
                        "--quiet",
                    ])
                    .env(CHILD_DB_ENV, &path)
                    .env(CHILD_ID_ENV, i.to_string())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn child")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("child");
            assert!(
                out.status.success(),
                "child failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let store = SqliteStore::open(&path).await.expect("open");
            let writers: Vec<String> = (0..4).map(|i| format!("p{i}")).collect();
            conformance::check_concurrent_writers(&store, &writers, 20).await;
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_first_signing_keys_agree() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = Arc::new(dir.path().join("keys.db"));
        SqliteStore::open(&path).await.expect("create file");
        let mut tasks = Vec::new();
        for i in 0..4 {
            let path = Arc::clone(&path);
            tasks.push(tokio::spawn(async move {
                let store = SqliteStore::open(&path).await.expect("open");
                let key = SigningKey {
                    kid: format!("k{i}"),
                    algorithm: "EdDSA".into(),
                    private_der: vec![i],
                    public_key: vec![i],
                    created_at: unix_now(),
                };
                store.add_first_signing_key(&key).await.expect("add")
            }));
        }
        let mut added = 0;
        for task in tasks {
            if task.await.expect("task") {
                added += 1;
            }
        }
        assert_eq!(added, 1);
        let store = SqliteStore::open(&path).await.expect("open");
        assert_eq!(store.signing_keys().await.expect("keys").len(), 1);
    }
}
