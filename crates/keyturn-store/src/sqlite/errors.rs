//! Classification of sqlx errors into [`StoreError`] by kind and SQLite result code, never by
//! message text. The insert maps a unique violation to [`StoreError::DuplicateKeyId`], because
//! only it has the key id that collided.

use sqlx::error::DatabaseError;

use crate::StoreError;

/// `SQLITE_BUSY`: another connection holds a lock that this one needs.
const SQLITE_BUSY: i32 = 5;
/// `SQLITE_LOCKED`: a lock conflict inside one connection or shared cache.
const SQLITE_LOCKED: i32 = 6;

/// Maps a sqlx error to the store error a caller acts on: a locked or unreachable database is
/// [`StoreError::Unavailable`], everything else [`StoreError::Internal`]. Values are bound as
/// parameters, so no error text contains a stored value.
pub(super) fn classify(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(database_error) if is_busy(database_error.as_ref()) => {
            StoreError::Unavailable(format!("the database stayed locked by another connection: {error}"))
        }
        sqlx::Error::Io(_) => StoreError::Unavailable(format!("database I/O failed: {error}")),
        sqlx::Error::PoolTimedOut => {
            StoreError::Unavailable("timed out waiting for a free database connection".to_owned())
        }
        sqlx::Error::PoolClosed => StoreError::Unavailable("the database connection pool is closed".to_owned()),
        _ => StoreError::Internal(error.to_string()),
    }
}

/// Returns whether the error is `SQLITE_BUSY` or `SQLITE_LOCKED`, including their extended codes
/// such as `SQLITE_BUSY_SNAPSHOT` (517) and `SQLITE_LOCKED_SHAREDCACHE` (262). An extended code
/// keeps the primary code in its low 8 bits.
pub(super) fn is_busy(error: &dyn DatabaseError) -> bool {
    primary_code(error).is_some_and(|code| code == SQLITE_BUSY || code == SQLITE_LOCKED)
}

/// Returns the primary SQLite result code of a database error, when it carries one.
pub(super) fn primary_code(error: &dyn DatabaseError) -> Option<i32> {
    let code: i32 = error.code()?.parse().ok()?;
    Some(code & 0xff)
}

/// Returns whether the error is a unique or primary key constraint violation.
pub(super) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database_error) if database_error.is_unique_violation())
}
