//! The SQLite store's files hold the token signing keys and secret hashes: its directory is created `0700` and
//! its files made `0600` when they are created, and an existing directory or file that other local users can
//! read is named in a warning (it is left as it is: the operator may have a reason).

use std::path::Path;

/// Create `dir` (and missing parents) with mode `0700`.
pub(crate) async fn create_dir(dir: &Path) -> std::io::Result<()> {
    let existed = dir.is_dir();
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).await?;
    if existed {
        warn_if_open(dir, "data directory");
    }
    Ok(())
}

/// After opening `db_file`: make the files SQLite created `0600` (the database and its `-wal` and `-shm`
/// companions, which SQLite creates with the database's mode), or warn about an existing database that is wider.
pub(crate) fn after_open(db_file: &Path, created: bool) {
    if created {
        for file in companions(db_file) {
            restrict(&file);
        }
    } else {
        warn_if_open(db_file, "database file");
    }
}

fn companions(db_file: &Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![db_file.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = db_file.as_os_str().to_owned();
        name.push(suffix);
        files.push(name.into());
    }
    files
}

#[cfg(unix)]
fn restrict(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if file.exists() {
        if let Err(e) = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %file.display(), "cannot make the file private (0600): {e}");
        }
    }
}

#[cfg(not(unix))]
fn restrict(_file: &Path) {}

#[cfg(unix)]
fn warn_if_open(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "the {what} {} is readable by other users: it holds the token signing key; chmod {} it",
                path.display(),
                if meta.is_dir() { "700" } else { "600" },
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_open(_path: &Path, _what: &str) {}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn the_store_is_created_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a").join("data");
        let store = crate::SqliteStore::open_in(&dir).await.expect("open");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        for file in companions(&dir.join(crate::SQLITE_FILE_NAME)) {
            if file.exists() {
                assert_eq!(mode(&file), 0o600, "{}", file.display());
            }
        }
        drop(store);
    }
}
