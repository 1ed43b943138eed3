//! Opening a SQLite file: resolving its path, checking its directory before SQLite creates files
//! there, and building the connection pool with keyturn's pragmas. Errors found here name the
//! path or directory and the fix in one line. The schema is not touched here; see `migrate`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;

use super::errors::{classify, is_busy, primary_code};
use super::{SqliteOptions, TARGET};
use crate::{DatabaseUrl, StoreError};

/// `SQLITE_CANTOPEN`: the file or its journal could not be opened or created.
const SQLITE_CANTOPEN: i32 = 14;
/// `SQLITE_NOTADB`: the file exists but is not a SQLite database.
const SQLITE_NOTADB: i32 = 26;

/// Resolves the URL's path against the working directory. Symbolic links are kept as written.
pub(super) fn resolve_path(url: &DatabaseUrl) -> Result<PathBuf, StoreError> {
    let Some(path) = url.sqlite_path() else {
        return Err(StoreError::Open {
            location: url.to_string(),
            reason: "the URL does not name a SQLite file".to_owned(),
        });
    };
    std::path::absolute(path).map_err(|error| StoreError::Open {
        location: path.display().to_string(),
        reason: format!("failed to resolve the path against the working directory: {error}"),
    })
}

/// Checks that the database's directory exists and is writable, and that the file exists unless
/// it may be created. SQLite in WAL mode creates `-wal` and `-shm` files beside the database, so
/// the directory must be writable even when the file exists.
pub(super) fn check_location(path: &Path, create_if_missing: bool) -> Result<(), StoreError> {
    let fail = |reason: String| Err(StoreError::Open { location: path.display().to_string(), reason });
    // An absolute path other than the root has a parent, and the URL parser rejects a path that
    // names a directory. The root fallback only keeps this function total.
    let directory = path.parent().unwrap_or(Path::new("/"));
    let directory_name = directory.display();

    match std::fs::metadata(directory) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return fail(format!("{directory_name} is not a directory; choose a database path inside a directory"))
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {
            return fail(format!(
                "directory {directory_name} does not exist; create it (mkdir -p {directory_name}) or choose another path"
            ));
        }
        Err(error) => return fail(format!("failed to read directory {directory_name}: {error}; choose another path")),
    }
    if !is_writable(directory) {
        return fail(format!(
            "directory {directory_name} is not writable by this user, and SQLite creates its -wal and -shm files \
             there; grant write access to {directory_name} or choose another path"
        ));
    }

    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => {
            fail("the path is a directory; add a file name such as keyturn.db".to_owned())
        }
        Ok(_) if !is_writable(path) => {
            fail("the database file is not writable by this user; grant write access to it".to_owned())
        }
        Ok(_) => Ok(()),
        Err(error) if error.kind() == ErrorKind::NotFound && create_if_missing => Ok(()),
        Err(error) if error.kind() == ErrorKind::NotFound => fail(
            "the database file does not exist; run `keyturn init` to create it, or check the database URL".to_owned(),
        ),
        Err(error) => fail(format!("failed to read the database file: {error}")),
    }
}

/// Returns whether this process may write to `path`. The kernel decides, so root passes even
/// where the mode bits forbid writing, exactly as SQLite's own writes would.
#[cfg(unix)]
fn is_writable(path: &Path) -> bool {
    use rustix::fs::{accessat, Access, AtFlags, CWD};

    let access = if path.is_dir() { Access::WRITE_OK | Access::EXEC_OK } else { Access::WRITE_OK };
    accessat(CWD, path, access, AtFlags::EACCESS).is_ok()
}

/// Returns whether `path` lacks the read-only attribute; other platforms have no cheap check of
/// the effective permissions.
#[cfg(not(unix))]
fn is_writable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|metadata| !metadata.permissions().readonly())
}

/// Creates a missing database file with mode 0600, so other local users cannot read the key
/// hashes and the audit log. SQLite gives the `-wal` and `-shm` files the mode of the database
/// file, and treats an empty file as an empty database. An existing file is left as it is.
pub(super) fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;

    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StoreError::Open { location: path.display().to_string(), reason: error.to_string() }),
    }
}

/// The pause between attempts to connect while another connection switches a new file to WAL.
const CONNECT_RETRY_DELAY: Duration = Duration::from_millis(20);

/// Builds the connection pool: WAL journal, `synchronous=NORMAL`, foreign keys and the busy
/// timeout on every connection. Connecting opens one connection, so an unreadable file fails here.
pub(super) async fn connect(path: &Path, options: &SqliteOptions) -> Result<SqlitePool, StoreError> {
    if options.max_connections == 0 {
        return Err(StoreError::Open {
            location: path.display().to_string(),
            reason: "max_connections is 0; set it to at least 1".to_owned(),
        });
    }

    let connect_options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(options.create_if_missing)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(options.busy_timeout);
    // By default sqlx also pings a pooled connection before handing it out. Each ping is a round
    // trip to the connection's worker thread, and it nearly doubled the time of a store read. A
    // SQLite connection has no server to lose, and sqlx 0.8 still pings every connection when it
    // returns to the pool, off the request path, and closes it when that ping fails.
    let pool_options = SqlitePoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.busy_timeout)
        .test_before_acquire(false);

    // Switching a new file from its rollback journal to WAL takes an exclusive lock. When several
    // processes open the same new file at once, SQLite (3.46, bundled by libsqlite3-sys 0.30)
    // returns SQLITE_BUSY for the switch at once instead of waiting for the busy timeout, so the
    // wait happens here. Once the file is in WAL mode, setting WAL again changes nothing.
    let deadline = tokio::time::Instant::now() + options.busy_timeout;
    let pool = loop {
        match pool_options.clone().connect_with(connect_options.clone()).await {
            Ok(pool) => break pool,
            Err(sqlx::Error::Database(error)) if is_busy(error.as_ref()) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(target: TARGET, path = %path.display(), "database busy while connecting; retrying");
                tokio::time::sleep(CONNECT_RETRY_DELAY).await;
            }
            Err(error) => return Err(connect_error(path, error)),
        }
    };

    check_wal(&pool, path).await?;
    Ok(pool)
}

/// Checks that the file is in WAL mode. SQLite reports the old mode instead of failing when it
/// cannot switch, and without WAL a reader blocks every writer.
async fn check_wal(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let row = sqlx::query("PRAGMA journal_mode").fetch_one(pool).await.map_err(classify)?;
    let mode: String = row.try_get(0).map_err(classify)?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    Err(StoreError::Open {
        location: path.display().to_string(),
        reason: format!(
            "SQLite kept the {mode} journal mode instead of switching to WAL, which keyturn needs so that \
             readers do not block writers. WAL does not work on network file systems, so move the file to a \
             local disk"
        ),
    })
}

/// Maps a failure to connect: a busy database is [`StoreError::Unavailable`], and a file SQLite
/// cannot open or read is [`StoreError::Open`] naming the path.
pub(super) fn connect_error(path: &Path, error: sqlx::Error) -> StoreError {
    let open = |reason: String| StoreError::Open { location: path.display().to_string(), reason };
    let sqlx::Error::Database(database_error) = &error else {
        return classify(error);
    };
    if is_busy(database_error.as_ref()) {
        return classify(error);
    }
    match primary_code(database_error.as_ref()) {
        Some(SQLITE_NOTADB) => open("the file is not a SQLite database; check the database URL".to_owned()),
        Some(SQLITE_CANTOPEN) => {
            open(format!("SQLite failed to open the file or its -wal file ({error}); check the file's permissions"))
        }
        _ => open(error.to_string()),
    }
}
