//! Where keyturn finds its database and its pepper, the same way for the CLI, the server and the
//! Flask extension. The pepper comes from `KEYTURN_PEPPER`, from the file named by
//! `KEYTURN_PEPPER_FILE`, or from the file next to an embedded SQLite database that
//! `keyturn init` writes; without one nothing starts, because an empty or built-in pepper would
//! make every stored hash forgeable by whoever reads the database.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use keyturn_core::{AuditKey, PepperId, PepperRing};
use keyturn_store::{DatabaseUrl, KeyFilter, PostgresOptions, Store};
use rand_core::OsRng;

use crate::Error;

pub const DATABASE_URL_VAR: &str = "KEYTURN_DATABASE_URL";
pub const PEPPER_VAR: &str = "KEYTURN_PEPPER";
pub const PEPPER_FILE_VAR: &str = "KEYTURN_PEPPER_FILE";
pub const DEFAULT_DATABASE: &str = "keyturn.db";
pub const AUDIT_KEY_VAR: &str = "KEYTURN_AUDIT_KEY";
pub const AUDIT_KEY_FILE_VAR: &str = "KEYTURN_AUDIT_KEY_FILE";
pub const POSTGRES_MAX_CONNECTIONS_VAR: &str = "KEYTURN_POSTGRES_MAX_CONNECTIONS";
pub const POSTGRES_CONNECT_TIMEOUT_VAR: &str = "KEYTURN_POSTGRES_CONNECT_TIMEOUT";
pub const POSTGRES_STATEMENT_TIMEOUT_VAR: &str = "KEYTURN_POSTGRES_STATEMENT_TIMEOUT";
pub const POSTGRES_ACQUIRE_TIMEOUT_VAR: &str = "KEYTURN_POSTGRES_ACQUIRE_TIMEOUT";

/// The largest PostgreSQL pool a process may ask for. Every gunicorn worker and every instance
/// opens its own pool, so far smaller values are the norm.
const MAX_POSTGRES_CONNECTIONS: u32 = 1_000;

/// The source of the pepper ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PepperSource {
    /// The value of `KEYTURN_PEPPER` (never printed).
    Value(ValueSource),
    /// A pepper file, whose mode is checked on every read.
    File(PathBuf),
}

/// A pepper given as text; its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ValueSource(String);

impl std::fmt::Debug for ValueSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ValueSource(<redacted>)")
    }
}

impl PepperSource {
    /// Chooses the pepper source: an explicit value, else an explicit file, else the file next
    /// to the SQLite database. Setting both a value and a file is ambiguous and rejected.
    pub fn resolve(value: Option<String>, file: Option<PathBuf>, database: &DatabaseUrl) -> Result<Self, Error> {
        let value = value.filter(|v| !v.trim().is_empty());
        let file = file.filter(|f| !f.as_os_str().is_empty());
        match (value, file) {
            (Some(_), Some(_)) => {
                Err(Error::Pepper(format!("both {PEPPER_VAR} and {PEPPER_FILE_VAR} are set; set only one of them")))
            }
            (Some(value), None) => Ok(PepperSource::Value(ValueSource(value))),
            (None, Some(file)) => Ok(PepperSource::File(file)),
            (None, None) => default_pepper_file(database).map(PepperSource::File).ok_or_else(|| {
                Error::Pepper(format!(
                    "no pepper is configured, and a PostgreSQL database has no default pepper file; set \
                     {PEPPER_VAR} or {PEPPER_FILE_VAR} to the same pepper on every instance"
                ))
            }),
        }
    }

    /// Resolves the source from the process environment.
    pub fn from_env(database: &DatabaseUrl) -> Result<Self, Error> {
        let (value, file) = pepper_from_env()?;
        Self::resolve(value, file, database)
    }

    /// Reads and parses the pepper ring. A file must exist, be a regular file and be readable by
    /// its owner only.
    pub fn load(&self) -> Result<PepperRing, Error> {
        match self {
            PepperSource::Value(ValueSource(text)) => {
                PepperRing::parse_list(text).map_err(|error| Error::Pepper(format!("{PEPPER_VAR}: {error}")))
            }
            PepperSource::File(path) => {
                let text = read_private_file(path)?;
                PepperRing::parse_file(&text)
                    .map_err(|error| Error::PepperFile { path: path.clone(), reason: error.to_string() })
            }
        }
    }

    /// Returns a description for messages: the file path, or the variable name for a value.
    pub fn describe(&self) -> String {
        match self {
            PepperSource::Value(_) => PEPPER_VAR.to_owned(),
            PepperSource::File(path) => absolute(path).display().to_string(),
        }
    }
}

/// Reads `KEYTURN_PEPPER` and `KEYTURN_PEPPER_FILE`. A variable that is set but empty, blank or
/// not valid UTF-8 is an error rather than unset, because silently falling back to another
/// pepper would make every key fail to verify.
pub fn pepper_from_env() -> Result<(Option<String>, Option<PathBuf>), Error> {
    let read = |name: &str| -> Result<Option<String>, Error> {
        match std::env::var(name) {
            Ok(value) if value.trim().is_empty() => {
                Err(Error::Pepper(format!("{name} is set but empty; unset it or give it a value")))
            }
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::Pepper(format!("{name} is not valid UTF-8; set it to ASCII text or unset it")))
            }
        }
    };
    Ok((read(PEPPER_VAR)?, read(PEPPER_FILE_VAR)?.map(PathBuf::from)))
}

/// Resolves the database URL: an explicit value, else `KEYTURN_DATABASE_URL`, else `keyturn.db`
/// in the working directory.
pub fn resolve_database_url(explicit: Option<&str>) -> Result<DatabaseUrl, Error> {
    let from_env = std::env::var(DATABASE_URL_VAR).ok().filter(|v| !v.trim().is_empty());
    let text = explicit.map(str::to_owned).or(from_env).unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
    DatabaseUrl::parse(&text).map_err(Error::from)
}

/// Reads the PostgreSQL connection settings from `KEYTURN_POSTGRES_MAX_CONNECTIONS` (default 10),
/// `KEYTURN_POSTGRES_CONNECT_TIMEOUT` (5s), `KEYTURN_POSTGRES_STATEMENT_TIMEOUT` (5s, `0s` turns
/// the limit off) and `KEYTURN_POSTGRES_ACQUIRE_TIMEOUT` (5s). Durations are written like `500ms`
/// or `5s`. A variable that is set but invalid is an error that names it and its value.
pub fn postgres_options_from_env() -> Result<PostgresOptions, Error> {
    postgres_options(|name| std::env::var(name).ok())
}

fn postgres_options(read: impl Fn(&str) -> Option<String>) -> Result<PostgresOptions, Error> {
    let defaults = PostgresOptions::default();
    let duration = |name: &'static str, default: std::time::Duration, zero_allowed: bool| {
        let Some(text) = read(name) else { return Ok(default) };
        let parsed = keyturn_core::Duration::parse(text.trim())
            .map_err(|error| Error::InvalidInput { field: name, reason: format!("{text:?}: {error}") })?;
        if parsed.is_zero() && !zero_allowed {
            return Err(Error::InvalidInput {
                field: name,
                reason: format!("{text:?}: a timeout must be greater than zero, such as 5s"),
            });
        }
        Ok(std::time::Duration::from_millis(parsed.as_millis().unsigned_abs()))
    };

    let max_connections = match read(POSTGRES_MAX_CONNECTIONS_VAR) {
        None => defaults.max_connections,
        Some(text) => match text.trim().parse::<u32>() {
            Ok(count @ 1..=MAX_POSTGRES_CONNECTIONS) => count,
            _ => {
                return Err(Error::InvalidInput {
                    field: POSTGRES_MAX_CONNECTIONS_VAR,
                    reason: format!("{text:?} is not a whole number from 1 to {MAX_POSTGRES_CONNECTIONS}"),
                })
            }
        },
    };
    Ok(PostgresOptions {
        max_connections,
        connect_timeout: duration(POSTGRES_CONNECT_TIMEOUT_VAR, defaults.connect_timeout, false)?,
        statement_timeout: duration(POSTGRES_STATEMENT_TIMEOUT_VAR, defaults.statement_timeout, true)?,
        acquire_timeout: duration(POSTGRES_ACQUIRE_TIMEOUT_VAR, defaults.acquire_timeout, false)?,
        migrate: defaults.migrate,
    })
}

/// The pepper file used for an embedded SQLite database when none is configured: the database
/// path with the extension `.pepper`. A development default only, because a backup of the
/// directory then contains both the hashes and the pepper.
pub fn default_pepper_file(database: &DatabaseUrl) -> Option<PathBuf> {
    database.sqlite_path().map(|path| absolute(&path.with_extension("pepper")))
}

/// Returns the audit key file used for an embedded SQLite database when none is configured: the
/// database path with the extension `.audit-key`. Like the pepper file next to the database, a
/// development default only.
pub fn default_audit_key_file(database: &DatabaseUrl) -> Option<PathBuf> {
    database.sqlite_path().map(|path| absolute(&path.with_extension("audit-key")))
}

/// Reads the audit key from `KEYTURN_AUDIT_KEY` (base64), the file named by
/// `KEYTURN_AUDIT_KEY_FILE`, or, for a SQLite database, the file next to it when that file
/// exists. `None` means no key: audit rows are then written without a MAC.
pub fn audit_key_from_env(database: &DatabaseUrl) -> Result<Option<AuditKey>, Error> {
    let value = env_text(AUDIT_KEY_VAR)?;
    let file = env_text(AUDIT_KEY_FILE_VAR)?.map(PathBuf::from);
    match (value, file) {
        (Some(_), Some(_)) => {
            Err(Error::AuditKey(format!("both {AUDIT_KEY_VAR} and {AUDIT_KEY_FILE_VAR} are set; set only one of them")))
        }
        (Some(value), None) => Ok(Some(AuditKey::parse(&value, AUDIT_KEY_VAR)?)),
        (None, Some(path)) => read_audit_key_file(&path).map(Some),
        (None, None) => match default_audit_key_file(database) {
            Some(path) if path.exists() => read_audit_key_file(&path).map(Some),
            _ => Ok(None),
        },
    }
}

/// Returns the audit key file that `keyturn init` creates: `KEYTURN_AUDIT_KEY_FILE`, else the
/// default next to a SQLite database. `None` when `KEYTURN_AUDIT_KEY` is set or there is no
/// default (PostgreSQL without a configured file).
pub fn audit_key_file_to_create(database: &DatabaseUrl) -> Result<Option<PathBuf>, Error> {
    if env_text(AUDIT_KEY_VAR)?.is_some() {
        return Ok(None);
    }
    Ok(env_text(AUDIT_KEY_FILE_VAR)?.map(PathBuf::from).or_else(|| default_audit_key_file(database)))
}

/// Reads an audit key file, which must be readable by its owner only.
pub fn read_audit_key_file(path: &Path) -> Result<AuditKey, Error> {
    let vars = [AUDIT_KEY_VAR, AUDIT_KEY_FILE_VAR];
    let text = read_secret_file(path, vars, |path, reason| Error::AuditKeyFile { path, reason })?;
    let line = text.lines().map(str::trim).find(|line| !line.is_empty() && !line.starts_with('#')).unwrap_or("");
    AuditKey::parse(line, &absolute(path).display().to_string()).map_err(Error::from)
}

/// Creates an audit key file with a fresh 32-byte key and mode 0600, unless one exists; an
/// existing file is checked but never overwritten, because a new key would break the chain.
/// Returns whether the file was created now.
pub fn create_audit_key_file(path: &Path) -> Result<bool, Error> {
    let path = absolute(path);
    if path.exists() {
        read_audit_key_file(&path)?;
        return Ok(false);
    }
    let content = format!(
        "# keyturn audit key: signs the audit chain. Keep this file secret (mode 0600) and out of the\n\
         # database backups; give it to whoever verifies the audit log.\n{}\n",
        AuditKey::generate(&mut OsRng)
    );
    let fail = |reason: String| Error::AuditKeyFile { path: path.clone(), reason };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|error| fail(io_reason(&error, &path, [AUDIT_KEY_VAR, AUDIT_KEY_FILE_VAR])))?;
    file.write_all(content.as_bytes()).and_then(|()| file.sync_all()).map_err(|error| fail(error.to_string()))?;
    Ok(true)
}

/// Reads a variable that must be valid UTF-8 and not blank when set.
pub(crate) fn env_text(name: &str) -> Result<Option<String>, Error> {
    match std::env::var(name) {
        Ok(value) if value.trim().is_empty() => Err(Error::InvalidInput {
            field: "environment",
            reason: format!("{name} is set but empty; unset it or give it a value"),
        }),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::InvalidInput {
            field: "environment",
            reason: format!("{name} is not valid UTF-8; set it to ASCII text or unset it"),
        }),
    }
}

/// Outcome of [`create_pepper_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PepperFileStatus {
    Created(PathBuf),
    AlreadyExists(PathBuf),
}

/// Creates a pepper file with one fresh 32-byte pepper and mode 0600, unless one exists. An
/// existing file is checked but never overwritten, because that would orphan every stored hash.
pub fn create_pepper_file(path: &Path) -> Result<PepperFileStatus, Error> {
    let path = absolute(path);
    if path.exists() {
        read_private_file(&path)?;
        return Ok(PepperFileStatus::AlreadyExists(path));
    }
    let id = PepperId::parse("1").expect("\"1\" is a valid pepper id");
    let entry = PepperRing::generate_entry(&id, &mut OsRng);
    let content = format!(
        "# keyturn pepper ring: one ID:BASE64 entry per line, the first is current. Keep this file\n\
         # secret (mode 0600) and out of the database backups; losing it invalidates every key.\n{entry}\n"
    );
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(|error| {
        Error::PepperFile { path: path.clone(), reason: io_reason(&error, &path, [PEPPER_VAR, PEPPER_FILE_VAR]) }
    })?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| Error::PepperFile { path: path.clone(), reason: error.to_string() })?;
    Ok(PepperFileStatus::Created(path))
}

/// Rejects creating a pepper file at `pepper_path` when it is missing but the store already
/// contains keys. Their hashes were computed under the lost pepper, so a new one would make every
/// existing token invalid.
pub async fn check_pepper_not_lost(store: &dyn Store, pepper_path: &Path) -> Result<(), Error> {
    if pepper_path.exists() {
        return Ok(());
    }
    let count = store.list_keys(&KeyFilter::default()).await?.len();
    if count == 0 {
        return Ok(());
    }
    Err(Error::Pepper(format!(
        "pepper file {} is missing, but database {} already contains {count} key(s) hashed under its pepper; \
         restore the pepper file from a backup or set {PEPPER_VAR}, because a new pepper would make every \
         existing key invalid",
        absolute(pepper_path).display(),
        store.location(),
    )))
}

pub(crate) fn read_private_file(path: &Path) -> Result<String, Error> {
    read_secret_file(path, [PEPPER_VAR, PEPPER_FILE_VAR], |path, reason| Error::PepperFile { path, reason })
}

/// Reads a file that contains a secret, after checking that only its owner can read it. `vars`
/// names the variables that hold the secret or name its file, for the hint when the file is
/// missing. `fail` builds the error from the absolute path and the reason.
pub(crate) fn read_secret_file(
    path: &Path,
    vars: [&str; 2],
    fail: impl Fn(PathBuf, String) -> Error,
) -> Result<String, Error> {
    let fail = |reason: String| fail(absolute(path), reason);
    let metadata = fs::metadata(path).map_err(|error| fail(io_reason(&error, path, vars)))?;
    if !metadata.is_file() {
        return Err(fail("it is not a regular file".to_owned()));
    }
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "its mode is {mode:04o}, so other users can read it; run `chmod 600 {}`",
            absolute(path).display()
        )));
    }
    debug_assert_eq!(metadata.permissions().mode() & 0o077, 0);
    fs::read_to_string(path).map_err(|error| fail(io_reason(&error, path, vars)))
}

pub(crate) fn io_reason(error: &std::io::Error, path: &Path, [value_var, file_var]: [&str; 2]) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && !parent.exists() => {
                format!("directory {} does not exist; create it first", parent.display())
            }
            _ => format!("the file does not exist; run `keyturn init` to create it, or set {value_var} or {file_var}"),
        },
        std::io::ErrorKind::PermissionDenied => "permission denied; run as the user that owns it".to_owned(),
        _ => error.to_string(),
    }
}

pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options_from(pairs: &[(&str, &str)]) -> Result<PostgresOptions, Error> {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        postgres_options(|name| pairs.iter().find(|(n, _)| n == name).map(|(_, value)| value.clone()))
    }

    #[test]
    fn postgres_options_default_and_parse() {
        assert_eq!(options_from(&[]).unwrap(), PostgresOptions::default());
        let options = options_from(&[
            (POSTGRES_MAX_CONNECTIONS_VAR, "3"),
            (POSTGRES_CONNECT_TIMEOUT_VAR, "2s"),
            (POSTGRES_STATEMENT_TIMEOUT_VAR, "0s"),
            (POSTGRES_ACQUIRE_TIMEOUT_VAR, "750ms"),
        ])
        .unwrap();
        assert_eq!(options.max_connections, 3);
        assert_eq!(options.connect_timeout, std::time::Duration::from_secs(2));
        assert_eq!(options.statement_timeout, std::time::Duration::ZERO);
        assert_eq!(options.acquire_timeout, std::time::Duration::from_millis(750));
    }

    #[test]
    fn postgres_options_reject_bad_values() {
        for (name, value) in [
            (POSTGRES_MAX_CONNECTIONS_VAR, "0"),
            (POSTGRES_MAX_CONNECTIONS_VAR, "1001"),
            (POSTGRES_MAX_CONNECTIONS_VAR, "ten"),
            (POSTGRES_CONNECT_TIMEOUT_VAR, "0s"),
            (POSTGRES_CONNECT_TIMEOUT_VAR, "soon"),
            (POSTGRES_ACQUIRE_TIMEOUT_VAR, "-1s"),
        ] {
            let message = options_from(&[(name, value)]).unwrap_err().to_string();
            assert!(message.contains(name), "{message}");
            assert!(message.contains(value), "{message}");
        }
    }

    fn sqlite(path: &Path) -> DatabaseUrl {
        DatabaseUrl::parse(path.to_str().unwrap()).unwrap()
    }

    #[test]
    fn pepper_file_created_private_and_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyturn.pepper");
        assert_eq!(create_pepper_file(&path).unwrap(), PepperFileStatus::Created(path.clone()));
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let ring = PepperSource::File(path.clone()).load().unwrap();
        assert_eq!(ring.current_id().as_str(), "1");
        assert_eq!(create_pepper_file(&path).unwrap(), PepperFileStatus::AlreadyExists(path));
    }

    #[test]
    fn pepper_file_readable_by_others_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyturn.pepper");
        create_pepper_file(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let message = PepperSource::File(path).load().unwrap_err().to_string();
        assert!(message.contains("0644"), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
    }

    #[test]
    fn missing_pepper_file_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let message = PepperSource::File(dir.path().join("none.pepper")).load().unwrap_err().to_string();
        assert!(message.contains("keyturn init"), "{message}");
    }

    #[test]
    fn default_pepper_file_sits_next_to_database() {
        let dir = tempfile::tempdir().unwrap();
        let database = sqlite(&dir.path().join("app.db"));
        let source = PepperSource::resolve(None, None, &database).unwrap();
        assert_eq!(source, PepperSource::File(dir.path().join("app.pepper")));
    }

    #[test]
    fn value_and_file_together_rejected() {
        let database = DatabaseUrl::parse("keyturn.db").unwrap();
        let error = PepperSource::resolve(Some("1:abc".into()), Some("x".into()), &database).unwrap_err();
        assert!(error.to_string().contains("only one"));
    }

    #[test]
    fn pepper_value_error_hides_value() {
        let database = DatabaseUrl::parse("keyturn.db").unwrap();
        let source = PepperSource::resolve(Some("1:c2hvcnQ=".into()), None, &database).unwrap();
        let message = source.load().unwrap_err().to_string();
        assert!(!message.contains("c2hvcnQ="), "{message}");
        assert!(!format!("{source:?}").contains("c2hvcnQ="));
    }
}
