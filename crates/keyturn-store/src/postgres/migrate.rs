//! The PostgreSQL schema migrations and their runner. Each script in `migrations/postgres` brings
//! the schema to one version, the same versions as the SQLite scripts, and the table
//! `keyturn_schema_migrations` records each version applied. The runner holds a session-level
//! advisory lock while it reads the version and applies the scripts, so instances that start
//! together against a new database apply each script exactly once. Scripts are embedded in the
//! binary; nothing is read at run time.

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor, Row};

use super::errors::classify;
use super::TARGET;
use crate::error::check_existing_schema;
use crate::StoreError;

/// The schema scripts in order; script `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_initial.sql"),
    include_str!("../../migrations/postgres/0002_self_rotation.sql"),
    include_str!("../../migrations/postgres/0003_usage_since_rotation.sql"),
    include_str!("../../migrations/postgres/0004_named_policies.sql"),
    include_str!("../../migrations/postgres/0005_webhooks.sql"),
    include_str!("../../migrations/postgres/0006_rotation_requests.sql"),
    include_str!("../../migrations/postgres/0007_rotation_cadence.sql"),
];

/// The advisory lock key that the migration runner holds. The eight bytes spell "keyturn" in
/// ASCII followed by 1, so the key is unlikely to collide with another application's advisory
/// locks in the same database.
const MIGRATION_LOCK_KEY: i64 = 0x6b65_7974_7572_6e01;

/// How long an instance waits for the migration lock, or for a table lock a migration needs,
/// before it gives up.
const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The schema version this build writes.
pub(super) fn latest_version() -> i64 {
    // The list has a few entries, far below i64::MAX.
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Applies the scripts the database lacks, in one transaction, while holding the migration lock.
/// A database whose version is newer than this build's is rejected, because an older keyturn
/// could corrupt it. The connection is the caller's own and is closed afterwards, which releases
/// the lock even when unlocking fails.
pub(super) async fn run(conn: &mut PgConnection, location: &str) -> Result<(), StoreError> {
    // Scripts may take longer than the store's statement timeout, but waiting for a lock is
    // bounded, so a stuck instance cannot block every other one forever.
    let settings = format!("SET statement_timeout = 0; SET lock_timeout = {}", MIGRATION_LOCK_TIMEOUT.as_millis());
    conn.execute(settings.as_str()).await.map_err(classify)?;
    lock(conn, location).await?;

    let applied = apply_missing(conn, location).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK_KEY).execute(&mut *conn).await;
    let applied = applied?;
    unlocked.map_err(classify)?;

    if let Some((from, to)) = applied {
        tracing::info!(target: TARGET, location, from, to, "migrated postgres schema");
    }
    Ok(())
}

/// Takes the migration lock, waiting for another instance that holds it.
async fn lock(conn: &mut PgConnection, location: &str) -> Result<(), StoreError> {
    let locked = sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK_KEY).execute(&mut *conn).await;
    match locked.map_err(classify) {
        Ok(_) => Ok(()),
        Err(StoreError::Unavailable(reason)) => Err(StoreError::Unavailable(format!(
            "failed to take the schema migration lock of {location} within {} s: {reason}; another keyturn \
             instance may be stuck migrating it (see pg_locks where locktype = 'advisory'), so stop that instance \
             or retry",
            MIGRATION_LOCK_TIMEOUT.as_secs()
        ))),
        Err(other) => Err(other),
    }
}

/// Applies the missing scripts in one transaction and returns the versions it moved between, or
/// `None` when the schema was current.
async fn apply_missing(conn: &mut PgConnection, location: &str) -> Result<Option<(i64, i64)>, StoreError> {
    let current = current_version(conn).await?;
    let latest = latest_version();

    if current > latest {
        return Err(StoreError::Open {
            location: location.to_owned(),
            reason: format!(
                "its schema version is {current}, but this build of keyturn supports versions up to {latest}; \
                 a newer keyturn wrote it, so upgrade keyturn"
            ),
        });
    }
    if current == latest {
        return Ok(None);
    }

    let mut tx = conn.begin().await.map_err(classify)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS keyturn_schema_migrations (\
           version BIGINT PRIMARY KEY, \
           applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    for (index, script) in MIGRATIONS.iter().enumerate().skip(usize::try_from(current).unwrap_or(0)) {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        // A query without bound parameters runs as a simple query, which may hold several statements.
        tx.execute(*script).await.map_err(|error| match classify(error) {
            StoreError::Internal(message) => {
                StoreError::Internal(format!("schema migration {version} failed: {message}"))
            }
            other => other,
        })?;
        sqlx::query("INSERT INTO keyturn_schema_migrations (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
    }
    tx.commit().await.map_err(classify)?;
    Ok(Some((current, latest)))
}

/// Checks, without writing, that the database has this build's schema version.
pub(super) async fn check_existing(conn: &mut PgConnection, location: &str) -> Result<(), StoreError> {
    let current = current_version(conn).await?;
    check_existing_schema(location, current, latest_version())
}

/// Returns the newest version recorded, 0 for a database keyturn never migrated.
async fn current_version(conn: &mut PgConnection) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT to_regclass('keyturn_schema_migrations') IS NOT NULL AS present")
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)?;
    let present: bool = row.try_get("present").map_err(classify)?;
    if !present {
        return Ok(0);
    }

    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS version FROM keyturn_schema_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)?;
    row.try_get("version").map_err(classify)
}
