//! The store's error type, shared by every backend.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record to create is already present (caused by the caller; retrying will not help).
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// The record the operation depends on does not exist (caused by the caller).
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// The database refused or failed an operation; `context` says which.
    #[error("database error while {context}")]
    Database {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// Bringing the schema up to date failed.
    #[error("database migration of {location} failed")]
    Migrate {
        location: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A file system operation around the database failed (e.g. creating the data directory).
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored row does not make sense (e.g. a tenant name that no longer validates).
    #[error("corrupt row in table {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
}

impl StoreError {
    /// Wrap a database error with what was being done.
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { context, source }
    }

    /// Whether retrying the same operation later may succeed (a busy or unreachable database).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database { source, .. } => {
                matches!(
                    source,
                    sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Io(_)
                        | sqlx::Error::WorkerCrashed
                ) || source
                    .as_database_error()
                    .and_then(|e| e.code())
                    .is_some_and(|code| {
                        // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
                        code.parse::<i64>()
                            .is_ok_and(|c| c & 0xff == 5 || c & 0xff == 6)
                    })
            }
            _ => false,
        }
    }
}
