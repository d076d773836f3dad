//! The one resolver from a database URL to a [`Store`].
//!
//! Accepted: `sqlite://PATH` (or `sqlite:PATH`; a file, created if missing, relative paths from the working
//! directory), `sqlite::memory:` (a private in-memory database), `postgres://…` / `postgresql://…`. No URL means
//! the SQLite file `ferry.db` in the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{PostgresStore, SqliteStore, Store, StoreError};

/// The schemes [`open_url`] accepts, for error messages and docs.
pub const ACCEPTED_SCHEMES: &str = "sqlite://PATH, sqlite::memory:, postgres://… or postgresql://…";

/// Where the store lives, parsed from a URL (without connecting).
#[derive(Clone, PartialEq, Eq)]
enum Location {
    SqliteFile(PathBuf),
    SqliteMemory,
    /// The whole URL, passed on to the PostgreSQL driver; may hold a password.
    Postgres(String),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::SqliteFile(path) => f.debug_tuple("SqliteFile").field(path).finish(),
            Location::SqliteMemory => f.write_str("SqliteMemory"),
            Location::Postgres(_) => f.write_str("Postgres(***)"),
        }
    }
}

fn invalid(reason: impl Into<String>) -> StoreError {
    StoreError::InvalidUrl {
        reason: reason.into(),
    }
}

impl Location {
    fn parse(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Location::Postgres(url.to_owned()));
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            if rest == ":memory:" {
                return Ok(Location::SqliteMemory);
            }
            if rest.is_empty() {
                return Err(invalid(format!(
                    "{url:?} names no file; use sqlite://PATH (e.g. sqlite://ferry-data/ferry.db or \
                     sqlite:///var/lib/ferry/ferry.db) or sqlite::memory:"
                )));
            }
            if rest.contains('?') {
                return Err(invalid(format!(
                    "{url:?}: query parameters are not supported on sqlite URLs"
                )));
            }
            return Ok(Location::SqliteFile(PathBuf::from(rest)));
        }
        // Name only the scheme: the rest may hold a password.
        let scheme = match url.split_once(':') {
            Some((scheme, _)) if !scheme.is_empty() => format!("scheme {scheme:?}"),
            _ => "a URL without a scheme".to_owned(),
        };
        Err(invalid(format!(
            "unsupported {scheme}; accepted: {ACCEPTED_SCHEMES}"
        )))
    }

    async fn open(self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            Location::SqliteFile(path) => Arc::new(SqliteStore::open(&path).await?),
            Location::SqliteMemory => Arc::new(SqliteStore::open_in_memory().await?),
            Location::Postgres(url) => Arc::new(PostgresStore::connect(&url).await?),
        })
    }
}

/// Open the store a database URL names, migrating its schema: `sqlite://PATH`, `sqlite::memory:`,
/// `postgres://…` or `postgresql://…`; without a URL (`None`, or an empty string), the SQLite file `ferry.db`
/// in `data_dir` (created if missing). Anything else fails with [`StoreError::InvalidUrl`] naming the accepted
/// schemes. Errors never contain a password.
pub async fn open_url(url: Option<&str>, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    match url.map(str::trim).filter(|u| !u.is_empty()) {
        None => Ok(Arc::new(SqliteStore::open_in(data_dir).await?)),
        Some(url) => Location::parse(url)?.open().await,
    }
}

/// Where the store of `url` (or, without one, of `data_dir`) is, for a log line: the SQLite file's path,
/// `sqlite::memory:`, or `postgres://user@host:port/database` without the password. `None` for a URL that
/// [`open_url`] would refuse.
pub fn describe_url(url: Option<&str>, data_dir: &Path) -> Option<String> {
    match url.map(str::trim).filter(|u| !u.is_empty()) {
        None => Some(data_dir.join(crate::SQLITE_FILE_NAME).display().to_string()),
        Some(url) => match Location::parse(url).ok()? {
            Location::SqliteFile(path) => Some(path.display().to_string()),
            Location::SqliteMemory => Some("sqlite::memory:".to_owned()),
            Location::Postgres(url) => url
                .parse::<sqlx::postgres::PgConnectOptions>()
                .ok()
                .map(|o| crate::postgres::location(&o)),
        },
    }
}

/// The SQLite file the store of `url` (or, without one, of `data_dir`) lives in; `None` for PostgreSQL and
/// in-memory stores.
pub fn sqlite_file(url: Option<&str>, data_dir: &Path) -> Option<PathBuf> {
    match url.map(str::trim).filter(|u| !u.is_empty()) {
        None => Some(data_dir.join(crate::SQLITE_FILE_NAME)),
        Some(url) => match Location::parse(url).ok()? {
            Location::SqliteFile(path) => Some(path),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SQLITE_FILE_NAME;

    #[test]
    fn describes_stores_without_passwords() {
        let dir = Path::new("/var/lib/ferry");
        assert_eq!(
            describe_url(None, dir).as_deref(),
            Some("/var/lib/ferry/ferry.db")
        );
        assert_eq!(
            describe_url(Some("postgres://ferry:s3cret@db:5432/ferry"), dir).as_deref(),
            Some("postgres://ferry@db:5432/ferry")
        );
        assert_eq!(
            describe_url(Some("sqlite::memory:"), dir).as_deref(),
            Some("sqlite::memory:")
        );
        assert_eq!(describe_url(Some("mysql://x"), dir), None);
        assert_eq!(
            sqlite_file(Some("sqlite://data/f.db"), dir),
            Some(PathBuf::from("data/f.db"))
        );
        assert_eq!(sqlite_file(Some("postgres://db/ferry"), dir), None);
        assert_eq!(sqlite_file(Some("sqlite::memory:"), dir), None);
    }

    #[test]
    fn parses_accepted_urls() {
        let file = |p: &str| Ok(Location::SqliteFile(PathBuf::from(p)));
        assert_eq!(
            Location::parse("sqlite:///var/lib/ferry/ferry.db"),
            file("/var/lib/ferry/ferry.db")
        );
        assert_eq!(Location::parse("sqlite://data/f.db"), file("data/f.db"));
        assert_eq!(Location::parse("sqlite:data/f.db"), file("data/f.db"));
        assert_eq!(
            Location::parse("sqlite::memory:"),
            Ok(Location::SqliteMemory)
        );
        assert_eq!(
            Location::parse("sqlite://:memory:"),
            Ok(Location::SqliteMemory)
        );
        for url in [
            "postgres://ferry:pw@db:5432/ferry",
            "postgresql://db/ferry?sslmode=disable",
        ] {
            assert_eq!(Location::parse(url), Ok(Location::Postgres(url.to_owned())));
        }
    }

    impl PartialEq for StoreError {
        fn eq(&self, other: &Self) -> bool {
            self.to_string() == other.to_string()
        }
    }

    #[test]
    fn refuses_other_urls_naming_the_schemes() {
        for url in [
            "mysql://root:hunter2@db/ferry",
            "ferry.db",
            "sqlite://",
            "sqlite:",
            "sqlite://f.db?mode=ro",
            "http://x",
        ] {
            let err = Location::parse(url).expect_err(url);
            let text = err.to_string();
            assert!(
                matches!(err, StoreError::InvalidUrl { .. }),
                "{url}: {err:?}"
            );
            assert!(text.starts_with("database URL: "), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!err.is_transient());
        }
        let text = Location::parse("mysql://root:hunter2@db/ferry")
            .expect_err("mysql")
            .to_string();
        assert!(text.contains("\"mysql\""), "{text}");
        assert!(text.contains(ACCEPTED_SCHEMES), "{text}");
        assert!(format!("{:?}", Location::parse("postgres://u:hunter2@h/d")).contains("***"));
    }

    #[tokio::test]
    async fn no_url_means_the_file_in_the_data_dir() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        for url in [None, Some(""), Some("  ")] {
            let store = open_url(url, &data).await.expect("open");
            store
                .list_tenants(&crate::TenantQuery::default())
                .await
                .expect("usable");
        }
        assert!(data.join(SQLITE_FILE_NAME).is_file());
    }

    #[tokio::test]
    async fn opens_sqlite_urls() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("sub").join("x.db");
        let url = format!("sqlite://{}", file.display());
        let unused = dir.path().join("unused");
        let store = open_url(Some(&url), &unused).await.expect("open file");
        crate::conformance::run_suite(store.as_ref()).await;
        assert!(file.is_file());
        assert!(!unused.exists(), "the data dir is not used with a URL");

        let store = open_url(Some("sqlite::memory:"), &unused)
            .await
            .expect("open memory");
        crate::conformance::run_suite(store.as_ref()).await;
        assert!(!unused.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opens_postgres_urls() {
        crate::postgres::testdb::with_database(|options| async move {
            let url = crate::postgres::testdb::url_of(&options);
            let store = open_url(Some(&url), Path::new("unused"))
                .await
                .expect("open");
            crate::conformance::run_suite(store.as_ref()).await;
        })
        .await;
    }
}
