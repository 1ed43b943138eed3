//! The SQLite schema migrations and their runner. Each script in `migrations/sqlite` brings the
//! schema to one version, and `PRAGMA user_version` records the version a database has. The
//! runner holds the write lock from start to commit, so processes that open one new file at once
//! apply each script exactly once. Scripts are embedded in the binary; nothing is read at run time.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool};
use sqlx::{ConnectOptions, Connection, Executor, Row};

use super::errors::classify;
use super::open::connect_error;
use super::TARGET;
use crate::error::check_existing_schema;
use crate::StoreError;

/// The schema scripts in order; script `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_initial.sql"),
    include_str!("../../migrations/sqlite/0002_self_rotation.sql"),
    include_str!("../../migrations/sqlite/0003_usage_since_rotation.sql"),
    include_str!("../../migrations/sqlite/0004_named_policies.sql"),
    include_str!("../../migrations/sqlite/0005_webhooks.sql"),
    include_str!("../../migrations/sqlite/0006_rotation_requests.sql"),
    include_str!("../../migrations/sqlite/0007_rotation_cadence.sql"),
];

/// The schema version this build writes.
fn latest_version() -> i64 {
    // The list has a few entries, far below i64::MAX.
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Applies the scripts the database lacks in one `BEGIN IMMEDIATE` transaction. A database whose
/// version is newer than this build's is rejected, because an older keyturn could corrupt it.
pub(super) async fn run(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)?;
    let applied = apply_missing(&mut tx, path).await?;
    tx.commit().await.map_err(classify)?;

    if let Some((from, to)) = applied {
        tracing::info!(target: TARGET, path = %path.display(), from, to, "migrated sqlite schema");
    }
    Ok(())
}

/// Checks on a read-only connection, which writes nothing to the file, that the database has this
/// build's schema version.
pub(super) async fn check_existing(path: &Path) -> Result<(), StoreError> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .map_err(|error| connect_error(path, error))?;
    let version = sqlx::query("PRAGMA user_version").fetch_one(&mut conn).await;
    let _ = conn.close().await;
    let current: i64 = version.map_err(|error| connect_error(path, error))?.try_get(0).map_err(classify)?;
    check_existing_schema(&path.display().to_string(), current, latest_version())
}

/// Applies the missing scripts on a connection inside the caller's transaction and returns the
/// versions it moved between, or `None` when the schema was current.
async fn apply_missing(conn: &mut SqliteConnection, path: &Path) -> Result<Option<(i64, i64)>, StoreError> {
    let row = sqlx::query("PRAGMA user_version").fetch_one(&mut *conn).await.map_err(classify)?;
    let current: i64 = row.try_get(0).map_err(classify)?;
    let latest = latest_version();

    if current > latest {
        return Err(StoreError::Open {
            location: path.display().to_string(),
            reason: format!(
                "its schema version is {current}, but this build of keyturn supports versions up to {latest}; \
                 a newer keyturn wrote it, so upgrade keyturn"
            ),
        });
    }
    if current == latest {
        return Ok(None);
    }

    for (index, script) in MIGRATIONS.iter().enumerate().skip(usize::try_from(current).unwrap_or(0)) {
        conn.execute(*script).await.map_err(|error| match classify(error) {
            StoreError::Internal(message) => {
                StoreError::Internal(format!("schema migration {} failed: {message}", index + 1))
            }
            other => other,
        })?;
    }
    // PRAGMA takes no bound parameters; `latest` is an integer this build computed.
    let set_version = format!("PRAGMA user_version = {latest}");
    conn.execute(set_version.as_str()).await.map_err(classify)?;
    Ok(Some((current, latest)))
}
