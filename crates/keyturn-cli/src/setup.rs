//! Setup of the CLI's database and pepper: `keyturn init`, which creates both, and the opening
//! of an existing keyring that every other command starts with. Only `init` may create
//! the database file, so a mistyped path fails instead of starting an empty key store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyturn::settings::{self, PepperFileStatus, PepperSource, PEPPER_VAR};
use keyturn::{Config, Keyring, OpenOptions};
use keyturn_core::{SystemClock, TokenFormat};
use keyturn_store::{DatabaseUrl, KeyFilter, Store};

use crate::error::CliError;
use crate::output::emit;
use crate::GlobalArgs;

/// Opens the existing database with the configured pepper and token prefix. Background tasks
/// are not started, because each command is short and verification reads through to the store.
pub async fn open_keyring(global: &GlobalArgs) -> Result<Arc<Keyring>, CliError> {
    let database = settings::resolve_database_url(global.database.as_deref())?;
    let format = token_format(global)?;
    let pepper = PepperSource::from_env(&database)?;
    let options = OpenOptions {
        database: database.clone(),
        pepper,
        create_if_missing: false,
        config: Config { format, ..Config::default() },
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

/// Creates the database and the pepper file, or reports that they exist. An existing database
/// is only migrated, and an existing pepper file is checked but never rewritten, because a new
/// pepper would invalidate every stored key.
pub async fn init(global: &GlobalArgs) -> Result<(), CliError> {
    let database = settings::resolve_database_url(global.database.as_deref())?;
    token_format(global)?;
    let pepper = PepperSource::from_env(&database)?;
    if let PepperSource::Value(_) = pepper {
        // Check the configured pepper before creating anything.
        pepper.load()?;
    }

    let database_path = database.sqlite_path().map(absolute);
    let database_existed = database_path.as_deref().is_some_and(Path::exists);
    let store = keyturn::open_store(&database, true).await?;
    let location = store.location();
    if database_existed {
        emit(&format!("database {location} already exists; left unchanged\n"))?;
    } else {
        emit(&format!("created database {location}\n"))?;
    }

    let PepperSource::File(pepper_path) = &pepper else {
        return emit(&format!("{PEPPER_VAR} is set, so no pepper file was created\n"));
    };
    if database_existed && !pepper_path.exists() {
        check_no_keys_without_pepper(store.as_ref(), &location, pepper_path).await?;
    }
    drop(store);

    let line = match settings::create_pepper_file(pepper_path)? {
        PepperFileStatus::Created(path) => format!("created pepper file {} (mode 0600)\n", path.display()),
        PepperFileStatus::AlreadyExists(path) => {
            format!("pepper file {} already exists; left unchanged\n", path.display())
        }
    };
    emit(&line)?;
    pepper.load()?;

    let beside_database = database_path.as_deref().and_then(Path::parent) == absolute(pepper_path).parent();
    if beside_database {
        eprintln!(
            "warning: a pepper file next to the database is a development default; in production keep the \
             pepper elsewhere, such as in a secrets manager that sets {PEPPER_VAR}"
        );
    }
    Ok(())
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
