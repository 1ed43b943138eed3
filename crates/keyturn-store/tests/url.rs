//! Database URL parsing: the accepted SQLite forms, and a rejection with a fixable message for
//! every other input.

use std::path::Path;

use keyturn_store::{DatabaseUrl, StoreError};

fn path_of(url: &str) -> String {
    let parsed = DatabaseUrl::parse(url).unwrap_or_else(|error| panic!("{url:?} should parse: {error}"));
    parsed.sqlite_path().unwrap().display().to_string()
}

/// Returns the `(url, reason)` of a rejected URL.
fn rejection(url: &str) -> (String, String) {
    match DatabaseUrl::parse(url) {
        Err(StoreError::InvalidUrl { url, reason }) => (url, reason),
        other => panic!("{url:?} should be rejected with InvalidUrl, got {other:?}"),
    }
}

#[test]
fn url_three_slashes_is_absolute() {
    assert_eq!(path_of("sqlite:///var/lib/app/keyturn.db"), "/var/lib/app/keyturn.db");
    assert!(DatabaseUrl::parse("sqlite:///var/lib/app/keyturn.db").unwrap().sqlite_path().unwrap().is_absolute());
}

#[test]
fn url_without_slashes_is_relative() {
    assert_eq!(path_of("sqlite:keyturn.db"), "keyturn.db");
    assert_eq!(path_of("sqlite:dir/keyturn.db"), "dir/keyturn.db");
    assert_eq!(path_of("SQLite:keyturn.db"), "keyturn.db");
    assert!(DatabaseUrl::parse("sqlite:keyturn.db").unwrap().sqlite_path().unwrap().is_relative());
}

#[test]
fn url_plain_path_is_sqlite() {
    assert_eq!(path_of("keyturn.db"), "keyturn.db");
    assert_eq!(path_of("/tmp/x.db"), "/tmp/x.db");
    assert_eq!(path_of("./data/keyturn.db"), "./data/keyturn.db");
    assert_eq!(path_of("  /tmp/x.db\n"), "/tmp/x.db");
}

#[test]
fn url_display_is_canonical() {
    assert_eq!(DatabaseUrl::parse("/tmp/x.db").unwrap().to_string(), "sqlite:///tmp/x.db");
    assert_eq!(DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap().to_string(), "sqlite:///tmp/x.db");
    assert_eq!(DatabaseUrl::parse("keyturn.db").unwrap().to_string(), "sqlite:keyturn.db");
    assert_eq!(DatabaseUrl::parse("sqlite:dir/keyturn.db").unwrap().to_string(), "sqlite:dir/keyturn.db");
}

#[test]
fn url_display_round_trips() {
    for url in ["sqlite:///var/lib/app/keyturn.db", "sqlite:keyturn.db", "keyturn.db", "/tmp/x.db"] {
        let parsed = DatabaseUrl::parse(url).unwrap();
        assert_eq!(DatabaseUrl::parse(&parsed.to_string()).unwrap(), parsed, "{url}");
    }
}

#[test]
fn url_from_str_matches_parse() {
    let parsed: DatabaseUrl = "sqlite:keyturn.db".parse().unwrap();
    assert_eq!(parsed.sqlite_path(), Some(Path::new("keyturn.db")));
}

#[test]
fn url_host_part_shows_both_forms() {
    for url in ["sqlite://keyturn.db", "sqlite://localhost/var/keyturn.db"] {
        let (_, reason) = rejection(url);
        assert!(reason.contains("sqlite:///absolute/path.db"), "{url}: {reason}");
        assert!(reason.contains("sqlite:relative/path.db"), "{url}: {reason}");
    }
}

#[test]
fn url_empty_rejected() {
    for url in ["", "   ", "sqlite:", "sqlite://", "sqlite:///"] {
        let (_, reason) = rejection(url);
        assert!(reason.contains("sqlite:///absolute/path.db") || reason.contains("file name"), "{url:?}: {reason}");
    }
    assert!(rejection("").1.contains("empty"));
    assert!(rejection("sqlite:").1.contains("no file path"));
    assert!(rejection("sqlite://").1.contains("no file path"));
}

#[test]
fn url_memory_rejected() {
    for url in ["sqlite::memory:", ":memory:", "sqlite:file::memory:"] {
        let (_, reason) = rejection(url);
        assert!(reason.contains("in-memory"), "{url}: {reason}");
    }
}

#[test]
fn url_postgres_not_available() {
    for url in ["postgres://app@db/keyturn", "postgresql://app@db/keyturn", "POSTGRES://db/keyturn"] {
        let (_, reason) = rejection(url);
        assert!(reason.contains("PostgreSQL support is not available in this build"), "{url}: {reason}");
    }
}

#[test]
fn url_rejection_redacts_password() {
    let (url, _) = rejection("postgres://app:hunter2@db:5432/keyturn");
    assert!(!url.contains("hunter2"), "{url}");
    assert_eq!(url, "postgres://app:***@db:5432/keyturn");

    let message = DatabaseUrl::parse("mysql://root:hunter2@db/keyturn").unwrap_err().to_string();
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn url_other_scheme_named() {
    for (url, scheme) in [("mysql://db/keyturn", "mysql"), ("file:keyturn.db", "file"), ("redis://cache", "redis")] {
        let (_, reason) = rejection(url);
        assert!(reason.contains(&format!("{scheme:?}")), "{url}: {reason}");
        assert!(reason.contains("sqlite:///absolute/path.db"), "{url}: {reason}");
        assert!(reason.contains("sqlite:relative/path.db"), "{url}: {reason}");
    }
}

#[test]
fn url_query_string_rejected() {
    for url in ["sqlite:keyturn.db?mode=ro", "sqlite:///tmp/x.db?cache=shared", "keyturn.db?mode=rwc"] {
        let (_, reason) = rejection(url);
        assert!(reason.contains("query parameters"), "{url}: {reason}");
    }
}

#[test]
fn url_directory_path_rejected() {
    let (_, reason) = rejection("sqlite:data/");
    assert!(reason.contains("directory"), "{reason}");
}
