//! The SQLite store: one file in the data directory, shared safely by several processes.
//!
//! Owns: opening the file (WAL journal, busy timeout, foreign keys), running the embedded migrations of
//! `migrations/sqlite`, and the SQL of every [`Store`] method for SQLite.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_proto::TenantName;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;

use crate::{unix_now, SecretRecord, SigningKey, Store, StoreError, Tenant, SQLITE_FILE_NAME};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection (or process) holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often opening retries a migration that lost a race with another process migrating the same file.
const MIGRATE_ATTEMPTS: u32 = 5;
/// How often opening retries when the file is locked by another opener.
const OPEN_ATTEMPTS: u32 = 10;
const MAX_CONNECTIONS: u32 = 8;

/// A pause that grows with the attempt, with some jitter so that racing processes spread out.
fn backoff(attempt: u32) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos() % 20))
        .unwrap_or(0);
    Duration::from_millis(20 * u64::from(attempt) + jitter)
}

/// The embedded [`Store`]: a SQLite database file.
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
    /// attempt fail (both see the version missing, the second insert of it conflicts); the next attempt then
    /// finds it applied.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut attempt = 1;
        loop {
            match MIGRATOR.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(MigrateError::Execute(error)) if attempt < MIGRATE_ATTEMPTS => {
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
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| StoreError::Io {
            action: "create directory",
            path: PathBuf::from(dir),
            source,
        })
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_foreign_key_violation())
}

fn column<'r, T>(row: &'r SqliteRow, table: &'static str, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name).map_err(|e| StoreError::Corrupt {
        table,
        reason: format!("column {name}: {e}"),
    })
}

fn tenant_name(value: String, table: &'static str) -> Result<TenantName, StoreError> {
    TenantName::new(value).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

fn tenant_from_row(row: &SqliteRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        name: tenant_name(column(row, "tenants", "name")?, "tenants")?,
        created_at: column(row, "tenants", "created_at")?,
    })
}

fn secret_from_row(row: &SqliteRow) -> Result<SecretRecord, StoreError> {
    const T: &str = "secrets";
    Ok(SecretRecord {
        id: column(row, T, "id")?,
        tenant: tenant_name(column(row, T, "tenant")?, T)?,
        hash: column(row, T, "hash")?,
        created_at: column(row, T, "created_at")?,
        expires_at: column(row, T, "expires_at")?,
        revoked_at: column(row, T, "revoked_at")?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<SigningKey, StoreError> {
    const T: &str = "signing_keys";
    Ok(SigningKey {
        kid: column(row, T, "kid")?,
        algorithm: column(row, T, "algorithm")?,
        private_der: column(row, T, "private_der")?,
        public_key: column(row, T, "public_key")?,
        created_at: column(row, T, "created_at")?,
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_tenant(&self, name: &TenantName) -> Result<Tenant, StoreError> {
        let created_at = unix_now();
        let result = sqlx::query("INSERT INTO tenants (name, created_at) VALUES (?, ?)")
            .bind(name.as_str())
            .bind(created_at)
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(Tenant {
                name: name.clone(),
                created_at,
            }),
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                kind: "tenant",
                name: name.to_string(),
            }),
            Err(e) => Err(StoreError::db("creating a tenant")(e)),
        }
    }

    async fn get_tenant(&self, name: &TenantName) -> Result<Option<Tenant>, StoreError> {
        sqlx::query("SELECT name, created_at FROM tenants WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a tenant"))?
            .as_ref()
            .map(tenant_from_row)
            .transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        sqlx::query("SELECT name, created_at FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("listing tenants"))?
            .iter()
            .map(tenant_from_row)
            .collect()
    }

    async fn delete_tenant(&self, name: &TenantName) -> Result<bool, StoreError> {
        // Secrets go with the tenant through `ON DELETE CASCADE` (foreign keys are on for every connection).
        let done = sqlx::query("DELETE FROM tenants WHERE name = ?")
            .bind(name.as_str())
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("deleting a tenant"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_secret(
        &self,
        tenant: &TenantName,
        hash: &str,
        expires_at: Option<i64>,
    ) -> Result<SecretRecord, StoreError> {
        let record = SecretRecord {
            id: uuid::Uuid::new_v4().simple().to_string(),
            tenant: tenant.clone(),
            hash: hash.to_owned(),
            created_at: unix_now(),
            expires_at,
            revoked_at: None,
        };
        let result = sqlx::query(
            "INSERT INTO secrets (id, tenant, hash, created_at, expires_at, revoked_at) \
             VALUES (?, ?, ?, ?, ?, NULL)",
        )
        .bind(&record.id)
        .bind(record.tenant.as_str())
        .bind(&record.hash)
        .bind(record.created_at)
        .bind(record.expires_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(record),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound {
                kind: "tenant",
                name: tenant.to_string(),
            }),
            Err(e) => Err(StoreError::db("adding a secret")(e)),
        }
    }

    async fn active_secrets(
        &self,
        tenant: &TenantName,
        now: i64,
    ) -> Result<Vec<SecretRecord>, StoreError> {
        sqlx::query(
            "SELECT id, tenant, hash, created_at, expires_at, revoked_at FROM secrets \
             WHERE tenant = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(tenant.as_str())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("reading active secrets"))?
        .iter()
        .map(secret_from_row)
        .collect()
    }

    async fn revoke_secret(&self, tenant: &TenantName, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE secrets SET revoked_at = ? WHERE tenant = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(unix_now())
        .bind(tenant.as_str())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("revoking a secret"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        sqlx::query(
            "SELECT kid, algorithm, private_der, public_key, created_at FROM signing_keys \
             ORDER BY created_at DESC, kid DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("reading signing keys"))?
        .iter()
        .map(key_from_row)
        .collect()
    }

    async fn add_signing_key(&self, key: &SigningKey) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_der, public_key, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_der)
        .bind(&key.public_key)
        .bind(key.created_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                kind: "signing key",
                name: key.kid.clone(),
            }),
            Err(e) => Err(StoreError::db("adding a signing key")(e)),
        }
    }

    async fn add_first_signing_key(&self, key: &SigningKey) -> Result<bool, StoreError> {
        // One statement, so SQLite's single writer makes the check and the insert atomic across processes.
        let done = sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_der, public_key, created_at) \
             SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_der)
        .bind(&key.public_key)
        .bind(key.created_at)
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("adding the first signing key"))?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::conformance;

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

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let name = TenantName::new("keeper").expect("name");
        {
            let store = SqliteStore::open_in(dir.path()).await.expect("open");
            store.create_tenant(&name).await.expect("create");
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
                for j in 0..10 {
                    let name = TenantName::new(format!("t{i}-{j}")).expect("name");
                    store.create_tenant(&name).await.expect("create");
                    store.add_secret(&name, "h", None).await.expect("secret");
                }
                store.close().await;
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let store = SqliteStore::open(&path).await.expect("open");
        assert_eq!(store.list_tenants().await.expect("list").len(), 60);
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
        for j in 0..20 {
            let name = TenantName::new(format!("p{id}-{j}")).expect("name");
            store.create_tenant(&name).await.expect("create");
            store.add_secret(&name, "h", None).await.expect("secret");
            store.list_tenants().await.expect("list");
        }
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
            assert_eq!(store.list_tenants().await.expect("list").len(), 80);
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
