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
    /// An argument the store cannot take, such as an empty lease holder (caused by the caller).
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    /// A paging cursor that this store did not hand out (caused by the caller).
    #[error("invalid paging cursor {cursor:?}")]
    InvalidCursor { cursor: String },
    /// The database URL is not one this build understands (caused by the configuration).
    #[error("database URL: {reason}")]
    InvalidUrl { reason: String },
    /// The database server could not be reached or refused the connection; `location` names it without any
    /// password.
    #[error("cannot connect to the database at {location}")]
    Connect {
        location: String,
        #[source]
        source: sqlx::Error,
    },
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

    /// Whether retrying the same operation later may succeed: a busy, locked or unreachable database, a lost
    /// connection, a serialization failure or deadlock (PostgreSQL).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database { source, .. } | StoreError::Connect { source, .. } => {
                is_transient_sqlx(source)
            }
            _ => false,
        }
    }
}

fn is_transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                is_transient_pg_code(pg.code())
                    // 55000 is broad (object_not_in_prerequisite_state); only its "database … is not currently
                    // accepting connections" (ALTER DATABASE … ALLOW_CONNECTIONS false, a maintenance) is an outage.
                    || (pg.code() == "55000" && pg.message().contains("accepting connections"))
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                db.code()
                    .and_then(|code| code.parse::<i64>().ok())
                    .is_some_and(is_transient_sqlite_code)
            } else {
                false
            }
        }
        _ => false,
    }
}

/// SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
fn is_transient_sqlite_code(code: i64) -> bool {
    code & 0xff == 5 || code & 0xff == 6
}

/// PostgreSQL SQLSTATEs after which the same operation may succeed when retried.
fn is_transient_pg_code(code: &str) -> bool {
    // Class 08: connection exceptions.
    code.starts_with("08")
        || matches!(
            code,
            "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available (lock_timeout)
                | "53300" // too_many_connections
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now (starting up, in recovery)
                | "57P04" // database_dropped
                | "57P05" // idle_session_timeout
                | "3D000" // invalid_catalog_name: the database is gone (dropped, being restored)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes() {
        for code in [
            "40001", "40P01", "08006", "08001", "57P01", "57P03", "57P04", "57P05", "53300",
            "55P03",
            // the database gone (dropped, being restored): the API answers 503, not 500
            "3D000",
        ] {
            assert!(is_transient_pg_code(code), "{code}");
        }
        for code in ["23505", "23503", "42P01", "28P01", "42501"] {
            assert!(!is_transient_pg_code(code), "{code}");
        }
        assert!(is_transient_sqlite_code(5));
        assert!(is_transient_sqlite_code(517)); // SQLITE_BUSY_SNAPSHOT
        assert!(is_transient_sqlite_code(6));
        assert!(!is_transient_sqlite_code(2067)); // SQLITE_CONSTRAINT_UNIQUE
    }

    #[test]
    fn lost_connections_and_timeouts_are_transient() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = StoreError::Connect {
            location: "postgres://ferry@db:5432/ferry".into(),
            source: sqlx::Error::Io(refused),
        };
        assert!(e.is_transient());
        assert!(StoreError::db("x")(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!StoreError::db("x")(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::InvalidUrl { reason: "x".into() }.is_transient());
    }
}
