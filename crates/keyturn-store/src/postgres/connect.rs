//! Connecting to PostgreSQL: turning a [`DatabaseUrl`] into connection options, building the
//! pools with keyturn's per-connection settings, and opening the one-off connection that runs
//! the migrations. Errors found here name the URL without its password and what to check.
//! The schema is not touched here; see `migrate`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Executor};

use super::errors::is_unavailable;
use super::PostgresOptions;
use crate::{DatabaseUrl, StoreError};

/// The `application_name` keyturn's connections report in `pg_stat_activity`, unless the URL sets
/// one.
const APPLICATION_NAME: &str = "keyturn";

/// The largest `statement_timeout` PostgreSQL accepts, in milliseconds (`i32::MAX`, about 24.8
/// days).
const MAX_STATEMENT_TIMEOUT_MS: u128 = 2_147_483_647;

/// Connection options and the text that names the database in logs and errors.
pub(super) struct Target {
    pub(super) options: PgConnectOptions,
    /// The URL with its password replaced by `***`.
    pub(super) location: String,
}

/// Reads the connection options from a PostgreSQL URL. The libpq environment variables
/// (`PGHOST`, `PGUSER`, `PGPASSWORD`, ...) and `~/.pgpass` fill in what the URL leaves out, as
/// libpq does, so the password need not appear in the URL.
pub(super) fn target(url: &DatabaseUrl, options: &PostgresOptions) -> Result<Target, StoreError> {
    let location = url.to_string();
    let Some(text) = url.postgres_url() else {
        return Err(StoreError::Open { location, reason: "the URL does not name a PostgreSQL database".to_owned() });
    };
    if options.max_connections == 0 {
        return Err(StoreError::Open { location, reason: "max_connections is 0; set it to at least 1".to_owned() });
    }
    if options.statement_timeout.as_millis() > MAX_STATEMENT_TIMEOUT_MS {
        return Err(StoreError::Open {
            location,
            reason: format!(
                "statement_timeout is {} ms, above PostgreSQL's maximum of {MAX_STATEMENT_TIMEOUT_MS} ms; set a \
                 shorter one, or zero for no limit",
                options.statement_timeout.as_millis()
            ),
        });
    }

    let mut connect_options = PgConnectOptions::from_str(text).map_err(|error| StoreError::Open {
        location: location.clone(),
        reason: url.redact_secrets(&format!("invalid connection settings: {error}; check the database URL")),
    })?;
    if connect_options.get_application_name().is_none() {
        connect_options = connect_options.application_name(APPLICATION_NAME);
    }
    Ok(Target { options: connect_options, location })
}

/// Builds the store's pool. No connection is opened here: the pool opens them on demand, tests
/// each idle one before handing it out, and replaces any that broke, so the store recovers after
/// a server restart without being reopened.
pub(super) fn pool(target: &Target, options: &PostgresOptions) -> PgPool {
    pool_options(options.statement_timeout)
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect_lazy_with(target.options.clone())
}

/// Builds the one-connection pool of the change listener, whose connection stays open for as long
/// as it listens.
pub(super) fn listener_pool(target: &Target, options: &PostgresOptions) -> PgPool {
    pool_options(options.statement_timeout)
        .max_connections(1)
        .acquire_timeout(options.connect_timeout)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(target.options.clone())
}

/// Returns pool options that set `statement_timeout` on every new connection. A zero timeout
/// disables it, as in PostgreSQL.
fn pool_options(statement_timeout: Duration) -> PgPoolOptions {
    let set_timeout = format!("SET statement_timeout = {}", statement_timeout.as_millis());
    PgPoolOptions::new().test_before_acquire(true).after_connect(move |conn, _metadata| {
        let set_timeout = set_timeout.clone();
        Box::pin(async move {
            conn.execute(set_timeout.as_str()).await?;
            Ok(())
        })
    })
}

/// Opens one connection outside the pools, waiting at most `options.connect_timeout`.
pub(super) async fn connect_once(
    url: &DatabaseUrl,
    target: &Target,
    options: &PostgresOptions,
) -> Result<PgConnection, StoreError> {
    match tokio::time::timeout(options.connect_timeout, target.options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(connect_error(url, &target.location, error)),
        Err(_elapsed) => Err(StoreError::Unavailable(format!(
            "timed out after {} ms connecting to PostgreSQL at {}; check that the server is running and \
             reachable from this host",
            options.connect_timeout.as_millis(),
            target.location
        ))),
    }
}

/// Maps a failure to connect: an unreachable, starting or overloaded server is
/// [`StoreError::Unavailable`], and a refused login, a missing database or failed TLS are
/// [`StoreError::Open`] naming the URL without its password.
fn connect_error(url: &DatabaseUrl, location: &str, error: sqlx::Error) -> StoreError {
    let message = url.redact_secrets(&error.to_string());
    let open = |reason: String| StoreError::Open { location: location.to_owned(), reason };

    match &error {
        sqlx::Error::Database(database_error) if !is_unavailable(database_error.as_ref()) => {
            open(format!("the server rejected the connection: {message}; check the user, password and database name"))
        }
        sqlx::Error::Database(_) | sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => StoreError::Unavailable(format!(
            "failed to connect to PostgreSQL at {location}: {message}; check that the server is running and \
                 reachable from this host"
        )),
        sqlx::Error::Tls(_) => open(format!("TLS with the server failed: {message}; check sslmode and sslrootcert")),
        _ => open(message),
    }
}
