//! Parsing of the database URL that selects a store, such as `sqlite:///var/lib/app/keyturn.db` or
//! `postgres://app@db.internal:5432/keyturn`. This module decides which backend a URL names and
//! where its data lives. It does not touch the file system or the network, so the store that opens
//! the URL resolves a relative path, checks its directory, or connects to the server. A PostgreSQL
//! URL may contain a password, so it is kept only for connecting: `Display`, `Debug` and every
//! error show it as `***`, and show the value of a query parameter only when its name is in
//! [`SHOWN_PARAMETERS`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::StoreError;

/// The accepted forms, quoted by every rejection so the fix is in the message.
const ACCEPTED_FORMS: &str = "sqlite:///absolute/path.db, sqlite:relative/path.db, a plain file path such as \
     keyturn.db, or postgres://user:password@host:port/database";

/// The form of a PostgreSQL URL, quoted when one does not parse.
const POSTGRES_FORM: &str = "postgres://user:password@host:port/database?sslmode=require";

/// The query parameters a PostgreSQL URL may carry. They have the meaning libpq gives them.
/// Anything else is rejected, because the driver would ignore it and log its value, which may be
/// a secret.
const POSTGRES_PARAMETERS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "options",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
];

/// The query parameters whose values `Display`, `Debug` and errors show, matched against the
/// percent-decoded name without regard to case. Every other value is shown as `***`, including
/// the value of a misspelt or percent-encoded name such as `pass%77ord`, which the driver decodes
/// to `password`.
const SHOWN_PARAMETERS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "options",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
];

/// The values of the `sslmode` parameter.
const SSL_MODES: &[&str] = &["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

/// A parsed database URL: a SQLite file or a PostgreSQL server.
///
/// `Display` and `Debug` never show a PostgreSQL password, so a `DatabaseUrl` may be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    backend: Backend,
}

/// The backend a URL names. Kept private so that callers match on accessors, and new backends
/// break no caller.
#[derive(Clone, PartialEq, Eq)]
enum Backend {
    /// A SQLite file, as written: absolute, or relative to the working directory.
    Sqlite(PathBuf),
    /// A PostgreSQL server, as the whole URL including any password. Only the code that connects
    /// reads it; everything shown to people goes through [`redact_password`].
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses a database URL or a plain SQLite file path.
    ///
    /// `sqlite:///abs/path.db` is absolute, `sqlite:rel/path.db` and a plain path are relative to
    /// the working directory. A host part (`sqlite://name`), an empty path, `:memory:` and a query
    /// string are rejected for SQLite.
    ///
    /// `postgres://` and `postgresql://` URLs name a PostgreSQL server, with the libpq query
    /// parameters listed in the crate documentation. A URL that does not parse, has a fragment
    /// (usually an unencoded `#` in the password), carries another query parameter, or gives
    /// one parameter twice (compared decoded and without regard to case) is rejected. Every other scheme is rejected too, and each message shows the accepted forms.
    pub fn parse(url: &str) -> Result<DatabaseUrl, StoreError> {
        let text = url.trim();
        if text.is_empty() {
            return Err(invalid(url, format!("the URL is empty; use {ACCEPTED_FORMS}")));
        }

        let path = match split_scheme(text) {
            None => text,
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sqlite") => sqlite_path_of(url, rest)?,
            Some((scheme, _)) if is_postgres(scheme) => {
                check_postgres_url(url, text)?;
                return Ok(DatabaseUrl { backend: Backend::Postgres(text.to_owned()) });
            }
            Some((scheme, _)) => {
                return Err(invalid(url, format!("unsupported scheme {scheme:?}; use {ACCEPTED_FORMS}")));
            }
        };

        check_sqlite_path(url, path)?;
        Ok(DatabaseUrl { backend: Backend::Sqlite(PathBuf::from(path)) })
    }

    /// Returns the SQLite file path as written, which may be relative to the working directory,
    /// or `None` for a PostgreSQL URL.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(path) => Some(path),
            Backend::Postgres(_) => None,
        }
    }

    /// Returns whether the URL names a PostgreSQL server.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Returns the whole PostgreSQL URL, password included, for connecting. Never log it.
    pub(crate) fn postgres_url(&self) -> Option<&str> {
        match &self.backend {
            Backend::Postgres(url) => Some(url),
            Backend::Sqlite(_) => None,
        }
    }

    /// Replaces every password of this URL that occurs in `message` with `***`, as written and
    /// percent-decoded, and so the value of every query parameter that `Display` hides. The
    /// driver's messages are not known to quote the URL; this keeps a password out of an error
    /// even if one does.
    pub(crate) fn redact_secrets(&self, message: &str) -> String {
        let Some(parsed) = self.postgres_url().and_then(|text| url::Url::parse(text).ok()) else {
            return message.to_owned();
        };
        let mut secrets: Vec<String> = Vec::new();
        if let Some(password) = parsed.password() {
            secrets.push(password.to_owned());
            secrets.push(percent_encoding::percent_decode_str(password).decode_utf8_lossy().into_owned());
        }
        for (name, value) in parsed.query_pairs() {
            if !is_shown_parameter(&name) {
                secrets.push(value.into_owned());
            }
        }

        let mut redacted = message.to_owned();
        for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
            redacted = redacted.replace(secret.as_str(), "***");
        }
        redacted
    }
}

impl FromStr for DatabaseUrl {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, StoreError> {
        DatabaseUrl::parse(url)
    }
}

impl fmt::Display for DatabaseUrl {
    /// Writes the URL in its canonical form: `sqlite:///abs.db` for an absolute path and
    /// `sqlite:rel.db` for a relative one. No SQLite URL contains a secret. A PostgreSQL URL is
    /// written as given, with its password and the value of every query parameter outside
    /// [`SHOWN_PARAMETERS`] replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Sqlite(path) if path.is_absolute() => write!(f, "sqlite://{}", path.display()),
            Backend::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Backend::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    /// Writes `DatabaseUrl("...")` with the `Display` form, so the password stays hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&format_args!("{self}")).finish()
    }
}

/// Splits `scheme:rest` when the text starts with a URL scheme. A single letter before the colon
/// is a Windows drive (`C:\keyturn.db`), not a scheme.
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let valid = starts_with_letter
        && scheme.len() > 1
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

fn is_postgres(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
}

/// Returns the path part of a `sqlite:` URL given what follows the colon.
fn sqlite_path_of<'a>(url: &str, rest: &'a str) -> Result<&'a str, StoreError> {
    let Some(after_slashes) = rest.strip_prefix("//") else {
        return Ok(rest);
    };

    // `sqlite:///abs` has an empty host and the absolute path `/abs`. Any host part, as in
    // `sqlite://keyturn.db`, is a mistake: SQLAlchemy users read three slashes as relative and
    // may have meant either form.
    if after_slashes.is_empty() || after_slashes.starts_with('/') {
        return Ok(after_slashes);
    }
    let host = after_slashes.split('/').next().unwrap_or_default();
    Err(invalid(
        url,
        format!(
            "a SQLite URL has no host part, but {host:?} was given; write sqlite:///absolute/path.db \
             (three slashes) for an absolute path or sqlite:relative/path.db (no slashes) for a path \
             relative to the working directory"
        ),
    ))
}

/// Checks a PostgreSQL URL the way the driver will read it, so that a mistake fails here with a
/// fix instead of at the first connection. Nothing is resolved and no file is read: the libpq
/// environment variables and `~/.pgpass` are applied when the store connects.
fn check_postgres_url(url: &str, text: &str) -> Result<(), StoreError> {
    let parsed = url::Url::parse(text).map_err(|error| {
        invalid(
            url,
            format!(
                "it is not a valid PostgreSQL URL ({error}); write {POSTGRES_FORM}, and percent-encode \
                 '@', ':', '/', '?' and '#' in the user name and password (for example %40 for '@')"
            ),
        )
    })?;

    if parsed.fragment().is_some() {
        return Err(invalid(
            url,
            "the URL has a '#' fragment, which a PostgreSQL URL never has; percent-encode '#' in the \
             password as %23"
                .to_owned(),
        ));
    }
    // The driver decodes each name and applies the last of two equal ones, so a second
    // `sslmode=disable` would silently turn off TLS that the first one required.
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in parsed.query_pairs() {
        let lowercase = name.to_ascii_lowercase();
        if seen.contains(&lowercase) {
            return Err(invalid(
                url,
                format!("query parameter {lowercase:?} is given more than once; keep only the value you mean"),
            ));
        }
        seen.push(lowercase);
        if !POSTGRES_PARAMETERS.contains(&name.as_ref()) {
            return Err(invalid(
                url,
                format!(
                    "unsupported query parameter {name:?}; a PostgreSQL URL may carry {}",
                    POSTGRES_PARAMETERS.join(", ")
                ),
            ));
        }
        if name == "sslmode" && !SSL_MODES.contains(&value.as_ref()) {
            return Err(invalid(url, format!("invalid sslmode {value:?}; use one of {}", SSL_MODES.join(", "))));
        }
    }
    Ok(())
}

fn check_sqlite_path(url: &str, path: &str) -> Result<(), StoreError> {
    if path.is_empty() {
        return Err(invalid(url, format!("the SQLite URL has no file path; use {ACCEPTED_FORMS}")));
    }
    if path == ":memory:" || path.starts_with("file::memory:") {
        return Err(invalid(
            url,
            format!(
                "an in-memory database is not supported, because every process must see the same keys; \
                 use {ACCEPTED_FORMS}"
            ),
        ));
    }
    if path.contains('?') {
        return Err(invalid(
            url,
            "query parameters are not supported, because keyturn sets the SQLite connection options \
             itself; remove everything from the '?'"
                .to_owned(),
        ));
    }
    if path.ends_with('/') || path.ends_with(std::path::MAIN_SEPARATOR) {
        return Err(invalid(url, "the path names a directory; add a file name such as keyturn.db".to_owned()));
    }
    Ok(())
}

fn invalid(url: &str, reason: String) -> StoreError {
    StoreError::InvalidUrl { url: redact_password(url), reason }
}

/// Replaces the password of `scheme://user:password@host` (or `scheme:user:password@host`), any
/// fragment, and the value of every query parameter outside [`SHOWN_PARAMETERS`] with `***`, so
/// an error that quotes a rejected URL never shows a secret. Everything up to the last `@` counts
/// as user information, because pasted passwords often contain unescaped `@`, `/`, `?` or `#`.
/// Over-redacting a URL is harmless.
pub(crate) fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once(':') else {
        return url.to_owned();
    };
    let (slashes, rest) = rest.strip_prefix("//").map_or(("", rest), |rest| ("//", rest));
    let mut redacted = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}:{slashes}{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };

    // A PostgreSQL URL has no fragment, so one is either a mistake or part of a secret.
    let mut fragment = "";
    if let Some(position) = redacted.find('#') {
        redacted.truncate(position);
        fragment = "#***";
    }
    match redacted.split_once('?') {
        Some((base, query)) => {
            let parameters: Vec<String> = query.split('&').map(redact_parameter).collect();
            format!("{base}?{}{fragment}", parameters.join("&"))
        }
        None => format!("{redacted}{fragment}"),
    }
}

/// Returns one `name=value` pair of a query with its value replaced by `***`, unless its name is
/// in [`SHOWN_PARAMETERS`]. A name without a value has nothing to hide.
fn redact_parameter(parameter: &str) -> String {
    match parameter.split_once('=') {
        Some((name, _value)) if !is_shown_parameter(&decode_query_component(name)) => format!("{name}=***"),
        _ => parameter.to_owned(),
    }
}

/// Returns whether the value of the decoded parameter `name` may be shown.
fn is_shown_parameter(name: &str) -> bool {
    SHOWN_PARAMETERS.iter().any(|shown| name.eq_ignore_ascii_case(shown))
}

/// Decodes a query name the way the driver does (`application/x-www-form-urlencoded`): `+` is a
/// space and `%XX` is a byte.
fn decode_query_component(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_password_hides_only_password() {
        assert_eq!(redact_password("postgres://app:s3cr@t@db:5432/keyturn"), "postgres://app:***@db:5432/keyturn");
        assert_eq!(redact_password("postgres://app@db/keyturn"), "postgres://app@db/keyturn");
        assert_eq!(redact_password("postgres://db/keyturn?user=a"), "postgres://db/keyturn?user=a");
        assert_eq!(redact_password("keyturn.db"), "keyturn.db");
        for url in [
            "postgres://app:s3cr/et@db/k",
            "postgres://app:p#ss@db/k",
            "postgres://app:p?ss@db/k",
            "postgres:u:hunter2@h",
        ] {
            let redacted = redact_password(url);
            assert!(
                !redacted.contains("s3cr") && !redacted.contains("ss@") && !redacted.contains("hunter2"),
                "{redacted}"
            );
            assert!(redacted.contains(":***@"), "{redacted}");
        }
        assert_eq!(redact_password("postgres://db/k?user=a&password=x1"), "postgres://db/k?user=a&password=***");
        assert_eq!(redact_password("postgres://db/k?sslpassword=x1"), "postgres://db/k?sslpassword=***");
    }

    #[test]
    fn postgres_url_hides_password_in_display_and_debug() {
        for text in [
            "postgres://app:hunter2@db:5432/keyturn",
            "postgresql://app:hunter2@db/keyturn?sslmode=require",
            "postgres://db/keyturn?user=app&password=hunter2",
            "postgres://app:hunter2%40x@db/keyturn",
        ] {
            let url = DatabaseUrl::parse(text).unwrap();

            assert!(url.is_postgres(), "{text}");
            assert_eq!(url.postgres_url(), Some(text), "the connecting code needs the whole URL");
            let display = url.to_string();
            let debug = format!("{url:?}");
            assert!(!display.contains("hunter2"), "{display}");
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(display.contains("***"), "{display}");
            assert!(debug.contains("***"), "{debug}");
        }
    }

    #[test]
    fn postgres_rejection_hides_password() {
        for text in [
            "postgres://app:hunter2@db/keyturn?sslpassword=hunter2",
            "postgres://app:hunter2@db/keyturn?connect_timeout=3",
            "postgres://app:hunter2@db/keyturn?sslmode=sometimes",
            "postgres://app:hun#ter2@db/keyturn",
            "postgres://app:hunter2@db:port/keyturn",
            "postgres://app:hunter2@db/keyturn#x",
        ] {
            let error = DatabaseUrl::parse(text).unwrap_err();

            let message = error.to_string();
            let debug = format!("{error:?}");
            assert!(matches!(error, StoreError::InvalidUrl { .. }), "{text}: {debug}");
            assert!(!message.contains("ter2"), "{message}");
            assert!(!debug.contains("ter2"), "{debug}");
        }
    }

    /// Returns whether none of `secrets` occurs in `text`.
    fn hides(text: &str, secrets: &[&str]) -> bool {
        secrets.iter().all(|secret| !text.contains(secret))
    }

    #[test]
    fn postgres_display_hides_encoded_parameter_names() {
        for text in [
            "postgres://app@db/keyturn?pass%77ord=Secret1",
            "postgres://app@db/keyturn?%70%61%73%73%77%6F%72%64=Secret1",
            "postgres://app@db/keyturn?sslmode=require&pass%77ord=Secret1",
            "postgres://app@db/keyturn?password=Secret1&application_name=web",
        ] {
            let url = DatabaseUrl::parse(text).unwrap();

            let display = url.to_string();
            let debug = format!("{url:?}");
            assert!(hides(&display, &["Secret1"]), "{display}");
            assert!(hides(&debug, &["Secret1"]), "{debug}");
            assert!(display.contains("=***"), "{display}");
        }
    }

    #[test]
    fn postgres_display_shows_harmless_parameters() {
        let text = "postgres://app@db:5432/keyturn?sslmode=verify-full&application_name=web&SSLROOTCERT=%2Fca.pem";
        assert_eq!(redact_password(text), text);

        let url = DatabaseUrl::parse("postgres://app@db/keyturn?sslmode=require&application_name=web").unwrap();
        assert_eq!(url.to_string(), "postgres://app@db/keyturn?sslmode=require&application_name=web");
    }

    #[test]
    fn redact_password_hides_unknown_parameters() {
        for (text, expected) in [
            ("postgres://db/k?pass%77ord=Secret1", "postgres://db/k?pass%77ord=***"),
            ("postgres://db/k?PassWord=Secret1", "postgres://db/k?PassWord=***"),
            ("postgres://db/k?password%20=Secret1", "postgres://db/k?password%20=***"),
            (
                "postgres://db/k?connect_timeout=Secret1&sslmode=disable",
                "postgres://db/k?connect_timeout=***&sslmode=disable",
            ),
            ("postgres://db/k?sslmode=require#Secret1", "postgres://db/k?sslmode=require#***"),
            ("postgres://db/k?user=a&sslpassword=Secret1=x", "postgres://db/k?user=a&sslpassword=***"),
        ] {
            assert_eq!(redact_password(text), expected, "{text}");
        }
    }

    #[test]
    fn postgres_rejection_hides_parameter_values() {
        for text in [
            "postgres://app@db/keyturn?password%20=Secret1",
            "postgres://app@db/keyturn?PASSWORD=Secret1",
            "postgres://app@db/keyturn?Pass%57ord=Secret1",
            "postgres://app@db/keyturn?sslpass%77ord=Secret1",
            "postgres://app@db/keyturn?connect_timeout=Secret1",
            "postgres://app@db/keyturn?sslmode=require#Secret1",
            "postgres://app@db/keyturn?password=Secret1&sslmode=sometimes",
        ] {
            let error = DatabaseUrl::parse(text).unwrap_err();

            let message = error.to_string();
            let debug = format!("{error:?}");
            assert!(matches!(error, StoreError::InvalidUrl { .. }), "{text}: {debug}");
            assert!(hides(&message, &["Secret1"]), "{message}");
            assert!(hides(&debug, &["Secret1"]), "{debug}");
        }
    }

    #[test]
    fn postgres_duplicate_parameter_rejected() {
        for (text, name) in [
            ("postgres://app@db/keyturn?sslmode=verify-full&sslmode=disable", "sslmode"),
            ("postgres://app@db/keyturn?password=Secret1&pass%77ord=Secret2", "password"),
            ("postgres://app@db/keyturn?user=app&USER=other", "user"),
            ("postgres://app@db/keyturn?options=-c%20a%3D1&options=-c%20b%3D2", "options"),
        ] {
            let error = DatabaseUrl::parse(text).unwrap_err();

            let StoreError::InvalidUrl { url, reason } = &error else {
                panic!("{text}: expected InvalidUrl, got {error:?}");
            };
            assert!(reason.contains(&format!("{name:?}")), "{reason}");
            assert!(reason.contains("more than once"), "{reason}");
            assert!(hides(&reason.to_string(), &["Secret1", "Secret2", "disable"]), "{reason}");
            assert!(hides(url, &["Secret1", "Secret2"]), "{url}");
        }
    }

    #[test]
    fn split_scheme_treats_drive_letter_as_path() {
        assert_eq!(split_scheme(r"C:\data\keyturn.db"), None);
        assert_eq!(split_scheme("sqlite:x.db"), Some(("sqlite", "x.db")));
        assert_eq!(split_scheme("/tmp/x.db"), None);
    }
}
