//! The keyturn service layer ("keyring"): create, list, rotate, revoke and verify API keys over
//! a [`keyturn_store::Store`], with a verification cache kept coherent across processes and
//! usage counters written behind the verify path, and report which clients of rotated keys have
//! moved to the successor. The CLI, the HTTP server and the Flask extension call this crate and
//! nothing below it, so they reach identical decisions.
//!
//! No log line, error or `Debug` output of this crate contains a token, a secret or a pepper:
//! they name key ids and pepper ids instead.

mod background;
mod cache;
mod cadence;
mod campaign;
mod config;
mod copy;
mod error;
mod guard;
mod incident;
pub mod json;
mod keyring;
mod listing;
mod migration;
pub mod pepper_file;
mod pepper_ops;
mod policies;
mod rotation_request;
mod scheduler;
mod self_rotation;
pub mod settings;
mod usage;
mod verify;
pub mod webhooks;

use std::sync::Arc;

pub use keyturn_core as core;
pub use keyturn_store as store;

pub use crate::cache::CacheStats;
pub use crate::cadence::CadenceRequest;
pub use crate::campaign::CampaignEntry;
pub use crate::config::{Config, Consistency};
pub use crate::copy::{copy_store, CopyReport};
pub use crate::error::Error;
pub use crate::guard::{GuardConfig, GuardStats};
pub use crate::incident::{
    parse_token_lines, LeakResult, LeakStatus, ReportedToken, LEAK_REASON, MAX_LEAK_LINE_BYTES, MAX_LEAK_TOKENS,
};
pub use crate::keyring::{Caller, Issued, KeyView, Keyring, ListFilter, NewKey, RotateOptions, SelfRotationOptions};
pub use crate::listing::{KeyPage, MAX_PAGE_SIZE};
pub use crate::migration::{MigrationEntry, MigrationPage, MAX_REPORT_KEYS};
pub use crate::pepper_ops::{PepperEntry, PepperRetirement, PepperStatus, PEPPER_RETIRED_REASON};
pub use crate::policies::{policy_json, PlannedPolicy, PolicyPlan};
pub use crate::rotation_request::{parse_deadline, RequestEntry, RequestStatus, RotationSelector, MAX_REQUEST_KEYS};
pub use crate::scheduler::{RecordedEvent, ScheduleRun};
pub use crate::verify::{AuthRequest, Authentication};

use keyturn_core::Clock;
use keyturn_store::{DatabaseUrl, PostgresOptions, PostgresStore, SqliteOptions, SqliteStore, Store};

use crate::settings::PepperSource;

/// What [`open`] needs: where the database and the pepper are, and how to run.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub database: DatabaseUrl,
    pub pepper: PepperSource,
    /// Create the database file when it does not exist (`keyturn init` and test stores).
    pub create_if_missing: bool,
    pub config: Config,
}

/// Opens a keyring: loads the pepper ring first (nothing starts without one), then opens the
/// store named by the database URL and applies its migrations.
pub async fn open(options: OpenOptions, clock: Arc<dyn Clock>) -> Result<Arc<Keyring>, Error> {
    let peppers = options.pepper.load()?;
    let store = open_store(&options.database, options.create_if_missing).await?;
    Ok(Keyring::new(store, peppers, clock, options.config))
}

/// Opens the store named by a database URL: a SQLite file, or a PostgreSQL database with the
/// connection settings of [`settings::postgres_options_from_env`]. The store signs audit rows
/// with the key of [`settings::audit_key_from_env`] when there is one. `create_if_missing` applies to
/// SQLite only, because a PostgreSQL database is created by its administrator; keyturn creates
/// only its tables there.
pub async fn open_store(database: &DatabaseUrl, create_if_missing: bool) -> Result<Arc<dyn Store>, Error> {
    open_store_with(database, create_if_missing, true).await
}

/// Opens the store named by a database URL like [`open_store`], but only when it already has
/// this build's schema: the database is never created or migrated, and one without keyturn tables
/// fails with [`StoreError::Open`](keyturn_store::StoreError::Open) naming it. For reading a
/// database that a mistyped URL may name, such as the source of `keyturn store copy`.
pub async fn open_existing_store(database: &DatabaseUrl) -> Result<Arc<dyn Store>, Error> {
    open_store_with(database, false, false).await
}

/// Writes a consistent copy of the SQLite database that `database` names to `target`, a new file
/// created with mode 0600, while other processes keep using the database. The database must
/// already have this build's schema, so a backup taken before an upgrade is taken by the keyturn
/// that wrote it. PostgreSQL is backed up with its own tools, such as `pg_dump`, and is refused
/// here with an error that says so.
pub async fn backup_store(database: &DatabaseUrl, target: &std::path::Path) -> Result<(), Error> {
    if database.is_postgres() {
        return Err(Error::InvalidInput {
            field: "database",
            reason: format!(
                "{database} is a PostgreSQL database; back it up with pg_dump or your provider's backups, \
                 because this command writes SQLite files only"
            ),
        });
    }
    let options = SqliteOptions { migrate: false, ..SqliteOptions::default() };
    let store = SqliteStore::open(database, &options).await?;
    let result = store.backup_to(target).await;
    store.close().await;
    Ok(result?)
}

/// Opens the store named by a database URL like [`open_store`], without reading the audit key,
/// so the store signs no audit row it appends. For a caller that only reads before the audit key
/// exists: `keyturn init` checks the database for signed rows before it creates the key file.
pub async fn open_store_unsigned(database: &DatabaseUrl, create_if_missing: bool) -> Result<Arc<dyn Store>, Error> {
    open_store_signed_with(database, create_if_missing, true, None).await
}

async fn open_store_with(
    database: &DatabaseUrl,
    create_if_missing: bool,
    migrate: bool,
) -> Result<Arc<dyn Store>, Error> {
    let audit_key = settings::audit_key_from_env(database)?;
    open_store_signed_with(database, create_if_missing, migrate, audit_key).await
}

async fn open_store_signed_with(
    database: &DatabaseUrl,
    create_if_missing: bool,
    migrate: bool,
    audit_key: Option<keyturn_core::AuditKey>,
) -> Result<Arc<dyn Store>, Error> {
    if database.is_postgres() {
        let options = PostgresOptions { migrate, ..settings::postgres_options_from_env()? };
        let store = PostgresStore::open(database, &options).await?.with_audit_key(audit_key);
        return Ok(Arc::new(store));
    }
    let sqlite = SqliteOptions { create_if_missing, migrate, ..SqliteOptions::default() };
    let store = SqliteStore::open(database, &sqlite).await?.with_audit_key(audit_key);
    Ok(Arc::new(store))
}
