//! Setup of the CLI's database and pepper: `keyturn init`, which creates both and a first admin
//! key, and the opening
//! of an existing keyring that every other command starts with. Only `init` may create
//! the database file, so a mistyped path fails instead of starting an empty key store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyturn::settings::{self, PepperFileStatus, PepperSource, AUDIT_KEY_FILE_VAR, AUDIT_KEY_VAR, PEPPER_VAR};
use keyturn::webhooks::settings as webhook_settings;
use keyturn::{Caller, Config, Keyring, NewKey, OpenOptions};
use keyturn_core::{SystemClock, TokenFormat};
use keyturn_store::{AuditFilter, DatabaseUrl, KeyFilter, Store};

use crate::commands::{parse_scopes, show_token, with_keyring};
use crate::error::CliError;
use crate::output::{self, emit};
use crate::GlobalArgs;

/// Name of the admin key that `keyturn init` creates in a database without keys.
const BOOTSTRAP_NAME: &str = "bootstrap admin";
const BOOTSTRAP_SCOPE: &str = "keyturn:admin";

/// Opens the existing database with the configured pepper and token prefix. Background tasks
/// are not started, because each command is short and verification reads through to the store.
pub async fn open_keyring(global: &GlobalArgs) -> Result<Arc<Keyring>, CliError> {
    open_keyring_with(global, Config::default()).await
}

/// Opens the existing database like [`open_keyring`], with `config` apart from the token format,
/// which comes from the global options.
pub async fn open_keyring_with(global: &GlobalArgs, config: Config) -> Result<Arc<Keyring>, CliError> {
    let database = settings::resolve_database_url(global.database.as_deref())?;
    let format = token_format(global)?;
    let pepper = PepperSource::from_env(&database)?;
    let options = OpenOptions {
        database: database.clone(),
        pepper,
        create_if_missing: false,
        config: Config { format, ..config },
    };

    match keyturn::open(options, Arc::new(SystemClock)).await {
        Ok(keyring) => Ok(keyring),
        Err(error @ (keyturn::Error::Pepper(_) | keyturn::Error::PepperFile { .. })) => {
            // The pepper is loaded before the database is opened. When the database is missing
            // too, as with a mistyped path, the store's error names the actual cause.
            Err(missing_database_error(&database).await.unwrap_or_else(|| error.into()))
        }
        Err(error) => Err(error.into()),
    }
}

/// Returns the store's error for a SQLite file that does not exist, or `None` when it exists.
/// Opening without `create_if_missing` fails before SQLite creates or migrates anything.
async fn missing_database_error(database: &DatabaseUrl) -> Option<CliError> {
    let path = database.sqlite_path()?;
    if path.exists() {
        return None;
    }
    keyturn::open_store(database, false).await.err().map(CliError::from)
}

/// Creates the pepper file and the database, or reports that they exist, then creates a bootstrap
/// admin key, whose token is printed once, when the database contains no key. An existing
/// database is only migrated, and an existing pepper file is checked but never rewritten, because
/// a new pepper would invalidate every stored key. The pepper comes first, so an invalid pepper
/// path or value leaves no database behind, and a pepper file this run created is removed again
/// when the database cannot be created. A run that failed before the admin key was created can
/// be repeated, since an empty database gets the key on the next run.
pub async fn init(global: &GlobalArgs) -> Result<(), CliError> {
    let database = settings::resolve_database_url(global.database.as_deref())?;
    token_format(global)?;
    let pepper = PepperSource::from_env(&database)?;
    let database_path = database.sqlite_path().map(absolute);
    let database_existed = database_path.as_deref().is_some_and(Path::exists);

    let pepper_status = match &pepper {
        PepperSource::File(pepper_path) => {
            // A PostgreSQL database may hold keys whatever this host's files say.
            let may_hold_keys = database_existed || database.is_postgres();
            Some(init_pepper_file(&database, may_hold_keys, &pepper, pepper_path).await?)
        }
        PepperSource::Value(_) => {
            pepper.load()?;
            None
        }
    };

    // Only read through this store: the audit key file may not exist until init_audit_key.
    let store = match keyturn::open_store_unsigned(&database, true).await {
        Ok(store) => store,
        Err(error) => {
            if let Some(PepperFileStatus::Created(pepper_path)) = &pepper_status {
                remove_unused_pepper_file(pepper_path);
            }
            return Err(error.into());
        }
    };
    let location = store.location();
    if database.is_postgres() {
        emit(&format!("using database {location}; its keyturn tables are up to date\n"))?;
    } else if database_existed {
        emit(&format!("database {location} already exists; left unchanged\n"))?;
    } else {
        emit(&format!("created database {location}\n"))?;
    }
    let pepper_line = match &pepper_status {
        Some(PepperFileStatus::Created(path)) => format!("created pepper file {} (mode 0600)\n", path.display()),
        Some(PepperFileStatus::AlreadyExists(path)) => {
            format!("pepper file {} already exists; left unchanged\n", path.display())
        }
        None => format!("{PEPPER_VAR} is set, so no pepper file was created\n"),
    };
    emit(&pepper_line)?;
    if let Some(pepper_path) = pepper_status.as_ref().map(pepper_file_path) {
        warn_if_beside_database(database_path.as_deref(), pepper_path);
    }

    init_audit_key(&database, store.as_ref()).await?;
    init_webhook_key(&database, store.as_ref()).await?;

    let empty = store
        .list_keys(&KeyFilter { limit: Some(1), ..KeyFilter::default() })
        .await
        .map_err(keyturn::Error::from)?
        .is_empty();
    drop(store);
    if empty {
        create_bootstrap_admin(global).await?;
    }
    Ok(())
}

/// Creates the audit key file unless it exists or `KEYTURN_AUDIT_KEY` is set, and says which key
/// will sign the audit chain. A missing file is not recreated for a database whose audit rows
/// were signed, because a new key could not verify them.
async fn init_audit_key(database: &DatabaseUrl, store: &dyn Store) -> Result<(), CliError> {
    let Some(path) = settings::audit_key_file_to_create(database)? else {
        if settings::audit_key_from_env(database)?.is_some() {
            emit(&format!("{AUDIT_KEY_VAR} is set, so no audit key file was created\n"))?;
        } else {
            eprintln!(
                "warning: no audit key is configured, so audit rows are written without a MAC and `keyturn audit \
                 verify` cannot vouch for them; set {AUDIT_KEY_VAR} or {AUDIT_KEY_FILE_VAR} on every instance"
            );
        }
        return Ok(());
    };
    if !path.exists() {
        let signed = store
            .list_audit(&AuditFilter::default())
            .await
            .map_err(keyturn::Error::from)?
            .iter()
            .filter(|row| row.mac.is_some())
            .count();
        if signed > 0 {
            return Err(CliError::new(format!(
                "audit key file {} is missing, but database {} already contains {signed} signed audit rows; restore \
                 the file from a backup or set {AUDIT_KEY_VAR}, because a new key could not verify them",
                path.display(),
                store.location()
            )));
        }
    }
    if settings::create_audit_key_file(&path)? {
        emit(&format!("created audit key file {} (mode 0600)\n", path.display()))
    } else {
        emit(&format!("audit key file {} already exists; left unchanged\n", path.display()))
    }
}

/// Creates the webhook key file unless it exists or `KEYTURN_WEBHOOK_KEY` is set. A missing file
/// is not recreated for a database that holds webhook endpoints, because a new key could not open
/// their stored secrets.
async fn init_webhook_key(database: &DatabaseUrl, store: &dyn Store) -> Result<(), CliError> {
    let Some(path) = webhook_settings::webhook_key_file_to_create(database)? else {
        if webhook_settings::webhook_key_from_env(database)?.is_some() {
            emit(&format!("{} is set, so no webhook key file was created\n", webhook_settings::WEBHOOK_KEY_VAR))?;
        }
        return Ok(());
    };
    if !path.exists() {
        let endpoints = store.list_webhook_endpoints().await.map_err(keyturn::Error::from)?.len();
        if endpoints > 0 {
            return Err(CliError::new(format!(
                "webhook key file {} is missing, but database {} already holds {endpoints} webhook endpoint(s) whose \
                 secrets it encrypted; restore the file from a backup or set {}",
                path.display(),
                store.location(),
                webhook_settings::WEBHOOK_KEY_VAR
            )));
        }
    }
    if webhook_settings::create_webhook_key_file(&path)? {
        emit(&format!("created webhook key file {} (mode 0600)\n", path.display()))
    } else {
        emit(&format!("webhook key file {} already exists; left unchanged\n", path.display()))
    }
}

/// Creates the pepper file unless it exists, and checks that it loads. For an existing database
/// without its pepper file it first checks that the database contains no keys.
async fn init_pepper_file(
    database: &DatabaseUrl,
    may_hold_keys: bool,
    pepper: &PepperSource,
    pepper_path: &Path,
) -> Result<PepperFileStatus, CliError> {
    if may_hold_keys && !pepper_path.exists() {
        let store = keyturn::open_store(database, false).await?;
        check_no_keys_without_pepper(store.as_ref(), &store.location(), pepper_path).await?;
    }

    let status = settings::create_pepper_file(pepper_path)?;
    pepper.load()?;
    Ok(status)
}

/// Removes a pepper file that this run created before init failed. No key was hashed under it
/// yet, so removing it loses nothing, and the next run creates a fresh one.
fn remove_unused_pepper_file(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        eprintln!(
            "warning: failed to remove pepper file {}, which init created before it failed: {error}; no key \
             uses it yet, so the next `keyturn init` keeps it",
            path.display()
        );
    }
}

fn pepper_file_path(status: &PepperFileStatus) -> &Path {
    match status {
        PepperFileStatus::Created(path) | PepperFileStatus::AlreadyExists(path) => path,
    }
}

fn warn_if_beside_database(database_path: Option<&Path>, pepper_path: &Path) {
    if database_path.and_then(Path::parent) == absolute(pepper_path).parent() {
        eprintln!(
            "warning: a pepper file next to the database is a development default; in production keep the \
             pepper elsewhere, such as in a secrets manager that sets {PEPPER_VAR}"
        );
    }
}

/// Creates the first key with `keyturn:admin` in an empty database and prints its token once, so the
/// operator can call the admin HTTP API, which accepts only keys, without another step. When the
/// database contains a key by the time of the insert, as after a concurrent `keyturn init`, it creates
/// nothing and prints that.
async fn create_bootstrap_admin(global: &GlobalArgs) -> Result<(), CliError> {
    let scopes = parse_scopes(&[BOOTSTRAP_SCOPE.to_owned()])?;
    let new = NewKey { name: BOOTSTRAP_NAME.to_owned(), scopes, ..NewKey::default() };
    with_keyring(global, |keyring| async move {
        let created = keyring.create_if_empty(new, &Caller::cli()).await.map_err(|error| {
            CliError::new(format!(
                "{error}; the database is ready, but its admin key was not created, so run `keyturn init` \
                 again or create one with `keyturn keys create --name \"{BOOTSTRAP_NAME}\" --scope {BOOTSTRAP_SCOPE}`"
            ))
        })?;
        let Some(issued) = created else {
            return emit(&format!(
                "database {} already has keys, so no admin key was created; another `keyturn init` probably \
                 created one at the same time and printed its token\n",
                keyring.store().location()
            ));
        };
        let text = format!(
            "created key {} ({BOOTSTRAP_NAME}) with scope {BOOTSTRAP_SCOPE}; its token is\n{}",
            issued.record.key_id,
            output::token_text(&issued)
        );
        show_token(&text, &issued.record.key_id, false)
    })
    .await
}

/// Rejects creating a pepper file for a database that already contains keys. Their hashes were
/// computed under the lost pepper, so a new one would make every existing token invalid.
async fn check_no_keys_without_pepper(store: &dyn Store, location: &str, pepper_path: &Path) -> Result<(), CliError> {
    let keys = store.list_keys(&KeyFilter::default()).await.map_err(keyturn::Error::from)?;
    let count = match keys.len() {
        0 => return Ok(()),
        1 => "1 key".to_owned(),
        count => format!("{count} keys"),
    };
    Err(CliError::new(format!(
        "pepper file {} is missing, but database {location} already contains {count} hashed under its pepper; \
         restore the pepper file from a backup or set {PEPPER_VAR}, because a new pepper would make every \
         existing key invalid",
        pepper_path.display(),
    )))
}

/// Builds the token format from `--token-prefix` or `KEYTURN_TOKEN_PREFIX`.
fn token_format(global: &GlobalArgs) -> Result<TokenFormat, CliError> {
    TokenFormat::new(&global.token_prefix)
        .map_err(|error| CliError::new(format!("--token-prefix or KEYTURN_TOKEN_PREFIX: {error}")))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
