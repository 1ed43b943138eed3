//! `copy_store` on a SQLite database with a key in every lifecycle state. After the copy to
//! another SQLite file, and to PostgreSQL when `KEYTURN_TEST_POSTGRES_URL` names a server, every
//! token gets the same decision at the same instant. The audit rows, usage counters, usage since
//! rotation and last client addresses are the same too. Without that variable the PostgreSQL case prints a notice and
//! passes, unless `CI` is set, where it fails.

mod common;

use std::sync::Arc;

use common::*;
use keyturn::core::{Duration, PepperRing};
use keyturn::store::{AuditFilter, DatabaseUrl, SqliteOptions, SqliteStore, Store, StoreError};
use keyturn::{copy_store, Config, Error, Issued, Keyring, RotateOptions};
use sqlx::{Connection, PgConnection};

/// The instant every decision is compared at, 200 days after T0.
const NOW: i64 = T0 + 200 * DAY;

/// Builds keys that are, at NOW: active, expiring, in grace, expired, superseded, rotated after
/// their overlap, revoked, and one that never expires, with usage and an exposure report.
async fn populate(fixture: &Fixture) -> Vec<Issued> {
    let keyring = &fixture.keyring;
    let create = |name: &'static str, at: i64| async move {
        fixture.at(at);
        keyring.create(new_key(name), &cli()).await.unwrap()
    };
    let mut keys = vec![
        create("active", NOW - DAY).await,
        create("expiring", NOW - 80 * DAY).await,
        create("grace", NOW - 93 * DAY).await,
        create("expired", NOW - 100 * DAY).await,
    ];
    let superseded = create("superseded", NOW - 3 * DAY).await;
    let rotated = create("rotated", NOW - 10 * DAY).await;
    let revoked = create("revoked", NOW - 2 * DAY).await;

    fixture.at(NOW - 2 * DAY);
    let week = RotateOptions { overlap: Some(Duration::from_days(7)), ..RotateOptions::default() };
    let successor = keyring.rotate(&superseded.record.key_id, &week, &cli()).await.unwrap();
    fixture.at(NOW - 5 * DAY);
    let day = RotateOptions { overlap: Some(Duration::from_days(1)), ..RotateOptions::default() };
    keyring.rotate(&rotated.record.key_id, &day, &cli()).await.unwrap();
    keyring.revoke(&revoked.record.key_id, Some("leaked"), &cli()).await.unwrap();
    let forever = keyturn::NewKey { expiry: Some(keyturn::core::Expiry::Never), ..new_key("forever") };
    keys.push(keyring.create(forever, &cli()).await.unwrap());
    keys.extend([superseded, successor, rotated, revoked]);

    fixture.at(NOW - DAY);
    for key in &keys {
        let request = keyturn::AuthRequest {
            authorization: &[&format!("Bearer {}", key.token.expose())],
            api_key: &[],
            query: &[],
            client_addr: Some("192.0.2.7"),
        };
        keyring.authenticate(&request, &Default::default()).await;
    }
    let exposed = [("api_key", keys[0].token.expose())];
    assert!(keyring.check_query(&exposed, Some("192.0.2.8")).is_some());
    keyring.flush().await.unwrap();
    keys
}

/// Returns the decision code of every token at the clock's current instant.
async fn decisions(keyring: &Keyring, keys: &[Issued]) -> Vec<(String, &'static str)> {
    let mut codes = Vec::new();
    for key in keys {
        let decision = keyring.verify(key.token.expose(), &Default::default(), None).await.unwrap();
        codes.push((key.record.name.clone(), decision.code()));
    }
    codes
}

async fn assert_same_store(source: &dyn Store, target: &dyn Store, keys: &[Issued]) {
    assert_eq!(source.row_counts().await.unwrap(), target.row_counts().await.unwrap());
    let all = AuditFilter::default();
    let (from, to) = (source.list_audit(&all).await.unwrap(), target.list_audit(&all).await.unwrap());
    assert_eq!(from.len(), to.len());
    for (row, copy) in from.iter().zip(&to) {
        assert_eq!(row.seq, copy.seq);
        assert_eq!(row.canonical, copy.canonical);
        assert_eq!(row.mac, copy.mac);
        assert_eq!(row.event, copy.event);
    }
    for key in keys {
        let id = &key.record.key_id;
        assert_eq!(source.get_key(id).await.unwrap(), target.get_key(id).await.unwrap(), "{id}");
        assert_eq!(source.usage_counts(id).await.unwrap(), target.usage_counts(id).await.unwrap(), "{id}");
        assert_eq!(source.last_client_addr(id).await.unwrap(), target.last_client_addr(id).await.unwrap(), "{id}");
        let uses = source.uses_since_rotation(id).await.unwrap();
        assert_eq!(uses, target.uses_since_rotation(id).await.unwrap(), "{id}");
        if key.record.name == "superseded" && key.record.predecessor_id.is_none() {
            assert_eq!(uses, 1, "the superseded key was used once after its rotation");
        }
    }
}

/// Copies the fixture's store to `target`, then checks that a keyring on the target decides
/// exactly as one on the source.
async fn copy_and_compare(fixture: &Fixture, keys: &[Issued], target: Arc<dyn Store>) {
    fixture.at(NOW);
    let before = decisions(&fixture.keyring, keys).await;
    let expected: Vec<&str> = before.iter().map(|(_, code)| *code).collect();
    assert_eq!(
        expected,
        ["active", "expiring", "grace", "expired", "active", "superseded", "active", "rotated", "revoked"],
        "{before:?}"
    );

    let report = copy_store(fixture.store.as_ref(), target.as_ref(), false).await.unwrap();
    assert_eq!(report.copied, report.target);
    assert_same_store(fixture.store.as_ref(), target.as_ref(), keys).await;

    let ring = PepperRing::parse_list(&fixture.pepper).unwrap();
    let copy = Keyring::new(target, ring, Arc::new(fixture.clock.clone()), Config::default());
    assert_eq!(decisions(&copy, keys).await, before);
    copy.shutdown().await;
}

async fn new_sqlite(dir: &tempfile::TempDir, name: &str) -> Arc<dyn Store> {
    let url = DatabaseUrl::parse(dir.path().join(name).to_str().unwrap()).unwrap();
    let options = SqliteOptions { create_if_missing: true, ..SqliteOptions::default() };
    Arc::new(SqliteStore::open(&url, &options).await.unwrap())
}

#[tokio::test]
async fn copy_to_sqlite_keeps_every_outcome() {
    let fixture = Fixture::new().await;
    let keys = populate(&fixture).await;
    let dir = tempfile::tempdir().unwrap();
    copy_and_compare(&fixture, &keys, new_sqlite(&dir, "copy.db").await).await;
}

#[tokio::test]
async fn copy_rejects_non_empty_target() {
    let fixture = Fixture::new().await;
    let keys = populate(&fixture).await;
    let dir = tempfile::tempdir().unwrap();
    let target = new_sqlite(&dir, "copy.db").await;
    copy_store(fixture.store.as_ref(), target.as_ref(), false).await.unwrap();
    let counts = target.row_counts().await.unwrap();

    let error = copy_store(fixture.store.as_ref(), target.as_ref(), false).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("already holds"), "{message}");
    assert!(!message.contains(keys[0].token.expose()), "{message}");

    // Allowed into a non-empty target, the first batch collides and nothing more is written.
    let error = copy_store(fixture.store.as_ref(), target.as_ref(), true).await.unwrap_err();
    assert!(matches!(error, Error::Store(_) | Error::CopyCheck(_)), "{error:?}");
    assert_eq!(target.row_counts().await.unwrap(), counts);
}

#[tokio::test]
async fn copy_to_empty_source_copies_nothing() {
    let fixture = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let target = new_sqlite(&dir, "copy.db").await;
    let report = copy_store(fixture.store.as_ref(), target.as_ref(), false).await.unwrap();
    assert!(report.copied.is_empty());
    assert!(target.row_counts().await.unwrap().is_empty());
}

/// Returns the store error inside `error`, which must be [`StoreError::Open`], as its reason.
fn open_reason(error: Error) -> String {
    match error {
        Error::Store(StoreError::Open { reason, .. }) => reason,
        other => panic!("expected StoreError::Open, got {other:?}"),
    }
}

#[tokio::test]
async fn open_existing_rejects_empty_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.db");
    std::fs::File::create(&path).unwrap();
    let url = DatabaseUrl::parse(path.to_str().unwrap()).unwrap();

    let error = keyturn::open_existing_store(&url).await.err().expect("an empty file is no keyturn database");

    assert!(open_reason(error).contains("no keyturn tables"));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

/// A database of its own on the test server, dropped at the end of a passing test.
struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create() -> Option<TestDatabase> {
        let Ok(server) = std::env::var("KEYTURN_TEST_POSTGRES_URL") else {
            assert!(std::env::var_os("CI").is_none(), "CI must set KEYTURN_TEST_POSTGRES_URL");
            eprintln!("skipping: KEYTURN_TEST_POSTGRES_URL is not set; run `scripts/with-postgres cargo test`");
            return None;
        };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let name = format!("kt_copy_{}_{nanos}", std::process::id());
        let mut admin = PgConnection::connect(&server).await.unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.unwrap();
        admin.close().await.unwrap();
        let (base, _) = server.rsplit_once('/').expect("the server URL names a database");
        let url = format!("{base}/{name}");
        Some(TestDatabase { server, name, url })
    }

    async fn drop_database(self) {
        let mut admin = PgConnection::connect(&self.server).await.unwrap();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        sqlx::raw_sql(&sql).execute(&mut admin).await.unwrap();
        admin.close().await.unwrap();
    }
}

#[tokio::test]
async fn open_existing_rejects_empty_postgres_database() {
    let Some(database) = TestDatabase::create().await else { return };
    let url = DatabaseUrl::parse(&database.url).unwrap();

    let error = keyturn::open_existing_store(&url).await.err().expect("an empty database is no keyturn database");

    assert!(open_reason(error).contains("no keyturn tables"));
    let mut conn = PgConnection::connect(&database.url).await.unwrap();
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!(tables, 0);
    database.drop_database().await;
}

#[tokio::test]
async fn copy_to_postgres_keeps_every_outcome() {
    let Some(database) = TestDatabase::create().await else { return };
    let fixture = Fixture::new().await;
    let keys = populate(&fixture).await;
    let url = DatabaseUrl::parse(&database.url).unwrap();
    let target = keyturn::open_store(&url, false).await.unwrap();
    copy_and_compare(&fixture, &keys, target).await;
    database.drop_database().await;
}
