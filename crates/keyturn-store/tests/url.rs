//! Database URL parsing: the accepted SQLite and PostgreSQL forms, and a rejection with a fixable
//! message for every other input.

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
fn url_postgres_accepted() {
    for url in [
        "postgres://app@db/keyturn",
        "postgresql://app@db/keyturn",
        "POSTGRES://db/keyturn",
        "postgres://app:s3cret@db.internal:6432/keyturn?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        "postgres:///keyturn?host=/var/run/postgresql",
        "postgres://db/keyturn?application_name=api&options=-c%20search_path%3Dkeyturn",
    ] {
        let parsed = DatabaseUrl::parse(url).unwrap_or_else(|error| panic!("{url:?} should parse: {error}"));
        assert!(parsed.is_postgres(), "{url}");
        assert_eq!(parsed.sqlite_path(), None, "{url}");
    }
    assert!(!DatabaseUrl::parse("keyturn.db").unwrap().is_postgres());
}

#[test]
fn url_postgres_display_redacts_password() {
    let parsed = DatabaseUrl::parse("postgres://app:s3cret@db:5432/keyturn?sslmode=require").unwrap();

    assert_eq!(parsed.to_string(), "postgres://app:***@db:5432/keyturn?sslmode=require");
    assert_eq!(format!("{parsed:?}"), "DatabaseUrl(postgres://app:***@db:5432/keyturn?sslmode=require)");
    let without_password = DatabaseUrl::parse("postgres://app@db/keyturn").unwrap();
    assert_eq!(without_password.to_string(), "postgres://app@db/keyturn");
}

#[test]
fn url_postgres_unparseable_shows_form() {
    let (url, reason) = rejection("postgres://app:s3cret@db:port/keyturn");

    assert_eq!(url, "postgres://app:***@db:port/keyturn");
    assert!(reason.contains("not a valid PostgreSQL URL"), "{reason}");
    assert!(reason.contains("postgres://user:password@host:port/database"), "{reason}");
    assert!(reason.contains("percent-encode"), "{reason}");
}

#[test]
fn url_postgres_fragment_rejected() {
    let (url, reason) = rejection("postgres://db/keyturn#replica");

    assert_eq!(url, "postgres://db/keyturn#***");
    assert!(reason.contains("%23"), "{reason}");

    // An unencoded '#' in a password parameter starts a fragment that contains the rest of it.
    let (url, _) = rejection("postgres://db/keyturn?password=ab#cd-Secret1");
    assert_eq!(url, "postgres://db/keyturn?password=***#***");
}

#[test]
fn url_postgres_unknown_parameter_named() {
    let (_, reason) = rejection("postgres://db/keyturn?connect_timeout=3");
    assert!(reason.contains("\"connect_timeout\""), "{reason}");
    assert!(reason.contains("sslmode"), "{reason}");

    let (_, reason) = rejection("postgres://db/keyturn?sslmode=always");
    assert!(reason.contains("\"always\""), "{reason}");
    assert!(reason.contains("verify-full"), "{reason}");
}

#[test]
fn url_rejection_redacts_password() {
    let (url, _) = rejection("postgres://app:hunter2@db:5432/keyturn?sslmode=sometimes");
    assert!(!url.contains("hunter2"), "{url}");
    assert_eq!(url, "postgres://app:***@db:5432/keyturn?sslmode=sometimes");

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
