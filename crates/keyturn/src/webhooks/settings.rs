//! Where the webhook worker finds its key and settings. The webhook key comes from
//! `KEYTURN_WEBHOOK_KEY` (base64 of 32 bytes) or from the file named by
//! `KEYTURN_WEBHOOK_KEY_FILE` (mode 0600 checked on every read). For a SQLite database it also
//! comes from the `.webhook-key` file next to it that `keyturn init` creates, as the audit key
//! does. The key lives
//! outside the database so that a copy of the database does not reveal the signing secrets.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use keyturn_core::webhook::WebhookKey;
use keyturn_core::Duration;
use keyturn_store::DatabaseUrl;
use rand_core::OsRng;

use super::WebhookConfig;
use crate::settings::{absolute, env_text, read_secret_file};
use crate::Error;

pub const WEBHOOK_KEY_VAR: &str = "KEYTURN_WEBHOOK_KEY";
pub const WEBHOOK_KEY_FILE_VAR: &str = "KEYTURN_WEBHOOK_KEY_FILE";
pub const WEBHOOK_ALLOW_PRIVATE_VAR: &str = "KEYTURN_WEBHOOK_ALLOW_PRIVATE";
pub const WEBHOOK_CA_FILE_VAR: &str = "KEYTURN_WEBHOOK_CA_FILE";
pub const WEBHOOK_MAX_ATTEMPTS_VAR: &str = "KEYTURN_WEBHOOK_MAX_ATTEMPTS";
pub const WEBHOOK_RETRY_BASE_VAR: &str = "KEYTURN_WEBHOOK_RETRY_BASE";
pub const WEBHOOK_TIMEOUT_VAR: &str = "KEYTURN_WEBHOOK_TIMEOUT";
pub const WEBHOOK_POLL_INTERVAL_VAR: &str = "KEYTURN_WEBHOOK_POLL_INTERVAL";

/// The maximum number of attempts a delivery may be given.
const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// Returns the webhook key file used for an embedded SQLite database when none is configured: the
/// database path with the extension `.webhook-key`. A development default only.
pub fn default_webhook_key_file(database: &DatabaseUrl) -> Option<PathBuf> {
    database.sqlite_path().map(|path| absolute(&path.with_extension("webhook-key")))
}

/// Reads the webhook key from `KEYTURN_WEBHOOK_KEY`, the file named by
/// `KEYTURN_WEBHOOK_KEY_FILE`, or, for a SQLite database, the file next to it when that file
/// exists. `None` means no key: endpoints can then be neither added nor sent to.
pub fn webhook_key_from_env(database: &DatabaseUrl) -> Result<Option<WebhookKey>, Error> {
    let value = env_text(WEBHOOK_KEY_VAR)?;
    let file = env_text(WEBHOOK_KEY_FILE_VAR)?.map(PathBuf::from);
    match (value, file) {
        (Some(_), Some(_)) => Err(Error::InvalidInput {
            field: "webhook key",
            reason: format!("both {WEBHOOK_KEY_VAR} and {WEBHOOK_KEY_FILE_VAR} are set; set only one of them"),
        }),
        (Some(value), None) => Ok(Some(WebhookKey::parse(&value, WEBHOOK_KEY_VAR)?)),
        (None, Some(path)) => read_webhook_key_file(&path).map(Some),
        (None, None) => match default_webhook_key_file(database) {
            Some(path) if path.exists() => read_webhook_key_file(&path).map(Some),
            _ => Ok(None),
        },
    }
}

/// Returns the webhook key file that `keyturn init` creates: `KEYTURN_WEBHOOK_KEY_FILE`, else the
/// default next to a SQLite database. `None` when `KEYTURN_WEBHOOK_KEY` is set or there is no
/// default (PostgreSQL without a configured file).
pub fn webhook_key_file_to_create(database: &DatabaseUrl) -> Result<Option<PathBuf>, Error> {
    if env_text(WEBHOOK_KEY_VAR)?.is_some() {
        return Ok(None);
    }
    Ok(env_text(WEBHOOK_KEY_FILE_VAR)?.map(PathBuf::from).or_else(|| default_webhook_key_file(database)))
}

/// Reads a webhook key file, which must be readable by its owner only.
pub fn read_webhook_key_file(path: &Path) -> Result<WebhookKey, Error> {
    let text = read_secret_file(path, [WEBHOOK_KEY_VAR, WEBHOOK_KEY_FILE_VAR], |path, reason| Error::InvalidInput {
        field: "webhook key file",
        reason: format!("cannot read {}: {reason}", path.display()),
    })?;
    let line = text.lines().map(str::trim).find(|line| !line.is_empty() && !line.starts_with('#')).unwrap_or("");
    WebhookKey::parse(line, &absolute(path).display().to_string()).map_err(Error::from)
}

/// Creates a webhook key file with a fresh key and mode 0600, unless one exists. An existing file
/// is checked but never overwritten, because a new key could not open the stored secrets.
/// Returns whether the file was created now.
pub fn create_webhook_key_file(path: &Path) -> Result<bool, Error> {
    let path = absolute(path);
    if path.exists() {
        read_webhook_key_file(&path)?;
        return Ok(false);
    }
    let content = format!(
        "# keyturn webhook key: encrypts the webhook signing secrets in the database. Keep this file\n\
         # secret (mode 0600) and out of the database backups.\n{}\n",
        WebhookKey::generate(&mut OsRng).as_str()
    );
    let fail = |reason: String| Error::InvalidInput {
        field: "webhook key file",
        reason: format!("cannot create {}: {reason}", path.display()),
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|error| fail(error.to_string()))?;
    file.write_all(content.as_bytes()).and_then(|()| file.sync_all()).map_err(|error| fail(error.to_string()))?;
    Ok(true)
}

/// Builds the worker's settings from the `KEYTURN_WEBHOOK_*` variables over the defaults.
pub fn webhook_config_from_env() -> Result<WebhookConfig, Error> {
    let mut config = WebhookConfig::default();
    if let Some(value) = env_text(WEBHOOK_ALLOW_PRIVATE_VAR)? {
        config.allow_private = match value.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            other => {
                return Err(Error::InvalidInput {
                    field: "environment",
                    reason: format!("{WEBHOOK_ALLOW_PRIVATE_VAR} is {other:?}; set it to 1 or 0"),
                })
            }
        };
    }
    config.ca_file = env_text(WEBHOOK_CA_FILE_VAR)?.map(PathBuf::from);
    if let Some(value) = env_text(WEBHOOK_MAX_ATTEMPTS_VAR)? {
        config.max_attempts =
            value.trim().parse::<u32>().ok().filter(|count| (1..=MAX_ATTEMPTS_LIMIT).contains(count)).ok_or_else(
                || Error::InvalidInput {
                    field: "environment",
                    reason: format!(
                        "{WEBHOOK_MAX_ATTEMPTS_VAR} is {value:?}; use a whole number from 1 to {MAX_ATTEMPTS_LIMIT}"
                    ),
                },
            )?;
    }
    if let Some(value) = env_text(WEBHOOK_RETRY_BASE_VAR)? {
        config.retry_base = env_duration(WEBHOOK_RETRY_BASE_VAR, &value)?;
    }
    if let Some(value) = env_text(WEBHOOK_TIMEOUT_VAR)? {
        config.request_timeout = env_duration(WEBHOOK_TIMEOUT_VAR, &value)?;
    }
    if let Some(value) = env_text(WEBHOOK_POLL_INTERVAL_VAR)? {
        config.poll_interval = env_duration(WEBHOOK_POLL_INTERVAL_VAR, &value)?;
    }
    Ok(config)
}

/// Parses a positive duration such as `5s` or `250ms`.
fn env_duration(name: &str, value: &str) -> Result<StdDuration, Error> {
    let duration = Duration::parse(value)?;
    let millis = u64::try_from(duration.as_millis()).unwrap_or(0);
    if millis == 0 {
        return Err(Error::InvalidInput { field: "environment", reason: format!("{name} must be longer than 0") });
    }
    Ok(StdDuration::from_millis(millis))
}
