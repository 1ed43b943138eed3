//! Classification of sqlx errors into [`StoreError`] by kind and SQLSTATE, never by message text.
//! The insert maps a unique violation to [`StoreError::DuplicateKeyId`], because only it has the
//! key id that collided. Every value is a bound parameter, and PostgreSQL reports the values of
//! a row in an error's detail, which sqlx's message leaves out. So an error text is not expected
//! to contain a stored value or a hash; the tests check this for the errors they provoke.

use sqlx::error::DatabaseError;

use crate::StoreError;

/// SQLSTATE codes that mean the server cannot do the work now but may later, as a list of exact
/// codes and of two-character classes.
const UNAVAILABLE_CLASSES: &[&str] = &[
    "08", // connection exception
    "53", // insufficient resources, such as too many connections or a full disk
];
const UNAVAILABLE_CODES: &[&str] = &[
    "57P01", // admin_shutdown: the server is shutting down or the backend was terminated
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now: the server is starting up or in recovery
    "57014", // query_canceled: statement_timeout, or a cancel request
    "40001", // serialization_failure
    "40P01", // deadlock_detected: the server aborted this transaction to break a deadlock
    "55P03", // lock_not_available: lock_timeout passed while waiting for a lock
    "25006", // read_only_sql_transaction: connected to a standby, as during a failover
];

/// Maps a sqlx error to the store error a caller acts on: an unreachable, overloaded or
/// restarting server, a timed-out statement and a transaction the server aborted to resolve a
/// conflict are [`StoreError::Unavailable`], everything else [`StoreError::Internal`].
pub(super) fn classify(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(database_error) if is_unavailable(database_error.as_ref()) => {
            StoreError::Unavailable(format!("PostgreSQL could not complete the request: {error}"))
        }
        sqlx::Error::Io(_) => StoreError::Unavailable(format!("the connection to PostgreSQL failed: {error}")),
        sqlx::Error::Tls(_) => StoreError::Unavailable(format!("TLS with PostgreSQL failed: {error}")),
        sqlx::Error::PoolTimedOut => StoreError::Unavailable(
            "timed out waiting for a PostgreSQL connection; the server may be down or every pooled connection busy"
                .to_owned(),
        ),
        sqlx::Error::PoolClosed => StoreError::Unavailable("the PostgreSQL connection pool is closed".to_owned()),
        _ => StoreError::Internal(error.to_string()),
    }
}

/// Returns whether a database error has one of the SQLSTATE codes a retry may cure.
pub(super) fn is_unavailable(error: &dyn DatabaseError) -> bool {
    let Some(code) = error.code() else {
        return false;
    };
    UNAVAILABLE_CODES.contains(&code.as_ref()) || UNAVAILABLE_CLASSES.iter().any(|class| code.starts_with(class))
}

/// Returns whether the error is a unique or primary key constraint violation (SQLSTATE 23505).
pub(super) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database_error) if database_error.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_pool_errors_unavailable() {
        assert!(classify(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(classify(sqlx::Error::PoolClosed).is_unavailable());
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert!(classify(sqlx::Error::Io(refused)).is_unavailable());
    }

    #[test]
    fn classify_other_errors_internal() {
        let error = classify(sqlx::Error::RowNotFound);
        assert!(matches!(error, StoreError::Internal(_)), "{error:?}");
        let error = classify(sqlx::Error::ColumnNotFound("seq".to_owned()));
        assert!(matches!(error, StoreError::Internal(_)), "{error:?}");
    }
}
