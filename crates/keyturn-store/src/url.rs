//! Parsing of the database URL that selects a store, such as `sqlite:///var/lib/app/keyturn.db`.
//! This module decides which backend a URL names and where its data lives. It does not touch the
//! file system, so the store that opens the URL resolves a relative path and checks its directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::StoreError;

/// The accepted forms, quoted by every rejection so the fix is in the message.
const ACCEPTED_FORMS: &str =
    "sqlite:///absolute/path.db, sqlite:relative/path.db or a plain file path such as keyturn.db";

/// A parsed database URL. Only SQLite is accepted in this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    backend: Backend,
}

/// The backend a URL names. Kept private so a PostgreSQL variant can be added without breaking
/// callers; its `Display` must then print the URL with the password redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Backend {
    /// A SQLite file, as written: absolute, or relative to the working directory.
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Parses a database URL or a plain SQLite file path.
    ///
    /// `sqlite:///abs/path.db` is absolute, `sqlite:rel/path.db` and a plain path are relative to
    /// the working directory. A host part (`sqlite://name`), an empty path, `:memory:`, a query
    /// string and any scheme other than `sqlite` are rejected with a message that shows the
    /// accepted forms.
    pub fn parse(url: &str) -> Result<DatabaseUrl, StoreError> {
        let text = url.trim();
        if text.is_empty() {
            return Err(invalid(url, format!("the URL is empty; use {ACCEPTED_FORMS}")));
        }

        let path = match split_scheme(text) {
            None => text,
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sqlite") => sqlite_path_of(url, rest)?,
            Some((scheme, _)) if is_postgres(scheme) => {
                return Err(invalid(
                    url,
                    format!("PostgreSQL support is not available in this build; use {ACCEPTED_FORMS}"),
                ));
            }
            Some((scheme, _)) => {
                return Err(invalid(url, format!("unsupported scheme {scheme:?}; use {ACCEPTED_FORMS}")));
            }
        };

        check_sqlite_path(url, path)?;
        Ok(DatabaseUrl { backend: Backend::Sqlite(PathBuf::from(path)) })
    }

    /// Returns the SQLite file path as written, which may be relative to the working directory.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(path) => Some(path),
        }
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
    /// `sqlite:rel.db` for a relative one. No SQLite URL contains a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Sqlite(path) if path.is_absolute() => write!(f, "sqlite://{}", path.display()),
            Backend::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
        }
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

/// Replaces the password of `scheme://user:password@host` (or `scheme:user:password@host`) and
/// any `password=` query parameter with `***`, so an error that quotes a rejected URL never shows
/// it. Everything up to the last `@` counts as user information, because pasted passwords often
/// contain unescaped `@`, `/`, `?` or `#`; over-redacting a URL is harmless.
fn redact_password(url: &str) -> String {
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

    if let Some((base, query)) = redacted.split_once('?') {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => parameter.to_owned(),
            })
            .collect();
        redacted = format!("{base}?{}", parameters.join("&"));
    }
    redacted
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
    }

    #[test]
    fn split_scheme_treats_drive_letter_as_path() {
        assert_eq!(split_scheme(r"C:\data\keyturn.db"), None);
        assert_eq!(split_scheme("sqlite:x.db"), Some(("sqlite", "x.db")));
        assert_eq!(split_scheme("/tmp/x.db"), None);
    }
}
