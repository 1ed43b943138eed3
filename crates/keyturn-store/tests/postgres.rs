//! Runs the store suite against a real PostgreSQL server, each test in a database of its own so
//! that tests run in parallel. The other tests cover what only PostgreSQL has: migrations and
//! writers racing across instances, sequence numbers under concurrent writers, the write lock,
//! change notifications, lost connections, and passwords in URLs.
//!
//! `KEYTURN_TEST_POSTGRES_URL` names a server and a superuser that may create databases, such as
//! `postgres://postgres@127.0.0.1:5432/postgres`; `scripts/with-postgres cargo test` starts a
//! throwaway server and sets it. Without the variable every test here prints a notice and passes,
//! unless `CI` is set, where it fails so that CI cannot skip PostgreSQL by accident.

mod suite;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as WallClock};

use keyturn_core::{Actor, AuditEventType, Instant, KeyId, NewAuditEvent, Outcome};
use keyturn_store::{
    AuditFilter, DatabaseUrl, KeyFilter, PostgresOptions, PostgresStore, Revocation, Store, StoreError, UsageRecord,
};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

const URL_VARIABLE: &str = "KEYTURN_TEST_POSTGRES_URL";

/// The advisory lock key every writer of audit events or change rows holds: "keyturn" and 2.
const WRITE_LOCK_KEY: i64 = 0x6b65_7974_7572_6e02;

/// The role that scripts/postgres-test-server makes log in with a password.
const PASSWORD_ROLE: &str = "keyturn_password_test";

/// Returns the server URL, or `None` after printing a notice when it is unset outside CI.
fn server_url() -> Option<String> {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{URL_VARIABLE} is not set, but CI must run the PostgreSQL store tests; start a server with \
             scripts/postgres-test-server start DIR and export the URL it prints as {URL_VARIABLE}"
        ),
        _ => {
            eprintln!("skipping PostgreSQL store test: {URL_VARIABLE} is not set (scripts/with-postgres sets it)");
            None
        }
    }
}

fn options() -> PostgresOptions {
    PostgresOptions { max_connections: 4, ..PostgresOptions::default() }
}

/// Returns `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_path(&format!("/{database}"));
    parsed.to_string()
}

/// Returns a name no other test of any process uses at the same time.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{}_{}", std::process::id(), nanos % 1_000_000_000_000, count)
}

/// A database created for one test and dropped at its end, also when the test panics.
struct TestDatabase {
    server: String,
    name: String,
    url: String,
    dropped: bool,
}

impl TestDatabase {
    async fn create() -> Option<TestDatabase> {
        TestDatabase::create_with("").await
    }

    /// Creates the database with `settings` appended to `CREATE DATABASE name`.
    async fn create_with(settings: &str) -> Option<TestDatabase> {
        let server = server_url()?;
        let name = unique_name("kt_test");
        let mut admin = PgConnection::connect(&server).await.unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\" {settings}")).execute(&mut admin).await.unwrap();
        admin.close().await.unwrap();

        let url = with_database(&server, &name);
        Some(TestDatabase { server, name, url, dropped: false })
    }

    fn database_url(&self) -> DatabaseUrl {
        DatabaseUrl::parse(&self.url).unwrap()
    }

    async fn open(&self) -> PostgresStore {
        PostgresStore::open(&self.database_url(), &options()).await.unwrap()
    }

    /// Opens a plain connection that bypasses the store, to inspect or damage the database.
    async fn raw(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    async fn execute(&self, sql: &str) {
        let mut conn = self.raw().await;
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }

    /// Ends every session on this database except the caller's, as a server restart would.
    async fn terminate_sessions(&self) {
        let mut admin = PgConnection::connect(&self.server).await.unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&self.name)
            .execute(&mut admin)
            .await
            .unwrap();
        for _ in 0..100 {
            let row = sqlx::query("SELECT count(*) AS sessions FROM pg_stat_activity WHERE datname = $1")
                .bind(&self.name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            if row.get::<i64, _>("sessions") == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        admin.close().await.unwrap();
    }

    async fn drop_database(mut self) {
        drop_database(&self.server, &self.name).await;
        self.dropped = true;
    }
}

impl Drop for TestDatabase {
    /// Drops the database of a test that panicked, on a thread of its own because no runtime may
    /// block inside another.
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(drop_database(&server, &name));
        });
        let _ = dropper.join();
    }
}

/// Drops a test database, ending the sessions still connected to it.
async fn drop_database(server: &str, name: &str) {
    let mut admin = PgConnection::connect(server).await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
}

macro_rules! suite_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some(database) = TestDatabase::create().await else { return };
                let store = database.open().await;
                suite::$name(&store).await;
                store.close().await;
                database.drop_database().await;
            }
        )*
    };
}

suite_tests!(
    insert_get_round_trip,
    insert_duplicate_key_id,
    list_keys_by_owner,
    list_keys_pages_after_cursor,
    rotate_links_both_keys,
    rotate_twice_conflicts,
    rotate_revoked_key_fails,
    rotate_missing_key_fails,
    replace_unused_successor,
    replace_used_successor_fails,
    replace_wrong_successor_mismatches,
    revoke_is_final,
    revoke_missing_key_fails,
    rehash_only_from_expected_pepper,
    usage_accumulates,
    usage_since_rotation_counts_after_rotation,
    usage_since_rotation_saturates,
    list_overlapping_orders_and_filters,
    audit_filters,
    change_feed_order,
    insert_if_empty_once,
    revoke_selection_by_owner,
    revoke_selection_by_key_ids,
    revoke_selection_too_large_writes_nothing,
    select_keys_writes_nothing,
    select_and_revoke_by_policy,
    pepper_usage_counts_live_keys,
    revoke_selection_at_limit,
    outbox_written_for_notifiable_events,
    outbox_rolls_back_with_change,
    endpoints_filter_fan_out,
    claim_keeps_endpoint_order,
    expired_lease_claimed_again,
    dead_letter_and_retry,
    secret_rotation_keeps_old_until_expiry,
    disabled_endpoint_gets_nothing,
    remove_endpoint_drops_deliveries,
    rotation_request_moves_expiry,
    rotation_request_keeps_earlier_expiry,
    rotation_request_reports_skipped_keys,
    list_due_selects_boundary_range,
    scheduler_high_water_only_advances,
    append_once_per_key_and_event,
    import_rebuilds_once_guard,
    cadence_due_selects_candidates,
    first_rotation_request_recorded_once,
);

macro_rules! policy_suite_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some(database) = TestDatabase::create().await else { return };
                let store = database.open().await;
                suite::policies::$name(&store).await;
                store.close().await;
                database.drop_database().await;
            }
        )*
    };
}

policy_suite_tests!(
    policy_crud,
    policy_stale_change_conflicts,
    policy_apply_to_existing,
    policy_update_is_one_transaction,
    overlap_shortens_at_first_use,
    overlap_cap_holds_without_successor_use,
    overlap_without_after_first_use_stays,
);

/// Opens `count` stores on one database, each with its own pool, as separate instances would.
async fn instances(database: &TestDatabase, count: usize) -> Vec<Arc<dyn Store>> {
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..count {
        stores.push(Arc::new(database.open().await));
    }
    stores
}

fn revocation(key_id: KeyId, at: i64) -> Revocation {
    let event = NewAuditEvent::new(
        AuditEventType::AuthnTokenRevoked,
        Instant::from_millis(at),
        Some(key_id.clone()),
        Actor::System,
    );
    Revocation { key_id, revoked_at: Instant::from_millis(at), reason: Some("test".to_owned()), event }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_new_database_concurrently_migrates_once() {
    let Some(database) = TestDatabase::create().await else { return };

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = database.database_url();
        tasks.push(tokio::spawn(async move { PostgresStore::open(&url, &options()).await }));
    }
    let mut stores = Vec::new();
    for task in tasks {
        stores.push(task.await.unwrap().unwrap());
    }

    suite::insert(&stores[0], &suite::key(1, None, 1_000)).await;
    assert!(stores[7].get_key(&suite::key_id(1)).await.unwrap().is_some());
    let mut conn = database.raw().await;
    let versions: Vec<i64> = sqlx::query("SELECT version FROM keyturn_schema_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("version"))
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6, 7]);
    conn.close().await.unwrap();

    for store in &stores {
        store.close().await;
    }
    database.drop_database().await;
}

#[tokio::test]
async fn open_existing_database_keeps_data() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = database.open().await;
    suite::insert(&store, &suite::key(1, None, 1_000)).await;
    store.close().await;

    let reopened = database.open().await;

    assert_eq!(reopened.list_keys(&KeyFilter::default()).await.unwrap().len(), 1);
    reopened.close().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotate_concurrently_across_instances() {
    let Some(database) = TestDatabase::create().await else { return };
    let stores = instances(&database, 4).await;

    suite::rotate_concurrently_one_wins(&stores).await;

    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_once_concurrently_across_instances() {
    let Some(database) = TestDatabase::create().await else { return };
    let stores = instances(&database, 4).await;

    suite::append_once_concurrently_records_once(&stores).await;

    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insert_concurrently_across_instances() {
    let Some(database) = TestDatabase::create().await else { return };
    let stores = instances(&database, 4).await;

    suite::insert_concurrently_all_succeed(&stores).await;

    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insert_if_empty_concurrently_across_instances() {
    let Some(database) = TestDatabase::create().await else { return };
    let stores = instances(&database, 8).await;

    suite::insert_if_empty_concurrently_one_wins(&stores).await;

    database.drop_database().await;
}

/// Inserts, revokes and appends from 4 instances at once while a follower reads the change feed
/// as a verifier cache does. The follower must see every change, audit sequence numbers must be
/// 1..=N, and change sequence numbers must increase without gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_keep_sequences_gap_free() {
    let Some(database) = TestDatabase::create().await else { return };
    let stores = instances(&database, 4).await;
    let follower_store = Arc::new(database.open().await);
    let done = Arc::new(tokio::sync::Notify::new());

    let follower = {
        let store = Arc::clone(&follower_store);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut last = 0;
            let mut finished = std::pin::pin!(done.notified());
            // Bounded: the writers finish within seconds, and the loop stops after 60 s regardless.
            let deadline = WallClock::now() + Duration::from_secs(60);
            loop {
                let stop = tokio::select! {
                    _ = &mut finished => true,
                    _ = tokio::time::sleep(Duration::from_millis(2)) => WallClock::now() > deadline,
                };
                // After the writers finished, one more read collects what they committed last.
                for change in store.changes_since(last, 1_000).await.unwrap() {
                    last = change.seq;
                    seen.push(change.seq);
                }
                if stop {
                    return seen;
                }
            }
        })
    };

    let mut writers = Vec::new();
    for (instance, store) in stores.iter().enumerate() {
        let store = Arc::clone(store);
        writers.push(tokio::spawn(async move {
            for n in 0..25u32 {
                let number = u32::try_from(instance).unwrap() * 100 + n;
                let key = suite::key(number, Some("load"), 1_000 + i64::from(number));
                store.insert_key(&key, &suite::created_event(&key)).await.unwrap();
                if n % 2 == 0 {
                    store.revoke_key(&revocation(key.key_id.clone(), 5_000)).await.unwrap();
                }
                if n % 5 == 0 {
                    let exposed = NewAuditEvent::new(
                        AuditEventType::AuthnTokenExposed,
                        Instant::from_millis(6_000),
                        Some(key.key_id.clone()),
                        Actor::System,
                    );
                    store.append_audit(&exposed).await.unwrap();
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    done.notify_one();
    let seen = follower.await.unwrap();

    // Per instance: 25 inserts, 13 revocations and 5 appended events.
    let audit = follower_store.list_audit(&AuditFilter::default()).await.unwrap();
    let audit_seqs: Vec<i64> = audit.iter().map(|event| event.seq).collect();
    assert_eq!(audit_seqs, (1..=4 * (25 + 13 + 5)).collect::<Vec<i64>>());
    for event in &audit {
        assert_eq!(event.canonical, event.event.canonical(event.seq), "audit event {}", event.seq);
    }
    let changes: Vec<i64> = follower_store.changes_since(0, 10_000).await.unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(changes, (1..=4 * (25 + 13)).collect::<Vec<i64>>());
    assert_eq!(seen, changes, "the follower skipped or repeated a change");

    follower_store.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn open_newer_schema_rejected() {
    let Some(database) = TestDatabase::create().await else { return };
    database.open().await.close().await;
    database.execute("INSERT INTO keyturn_schema_migrations (version) VALUES (8)").await;

    let error = PostgresStore::open(&database.database_url(), &options()).await.unwrap_err();

    match error {
        StoreError::Open { location, reason } => {
            assert_eq!(location, database.database_url().to_string());
            assert!(reason.contains("schema version is 8"), "{reason}");
            assert!(reason.contains("newer keyturn"), "{reason}");
        }
        other => panic!("expected StoreError::Open, got {other:?}"),
    }
    database.drop_database().await;
}

#[tokio::test]
async fn migration_gives_old_keys_default_self_rotation() {
    let Some(database) = TestDatabase::create().await else { return };
    database.execute(include_str!("../migrations/postgres/0001_initial.sql")).await;
    database
        .execute(
            "CREATE TABLE keyturn_schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL \
             DEFAULT now()); \
             INSERT INTO keyturn_schema_migrations (version) VALUES (1); \
             INSERT INTO keys (key_id, name, scopes, metadata, hash, pepper_id, created_at, grace_ms, warn_before_ms, \
             chain_started_at) VALUES ('abcdefABCDEF', 'old', '[]', '{}', decode(repeat('00', 32), 'hex'), '1', 1000, \
             0, 0, 1000)",
        )
        .await;

    let store = database.open().await;
    let key = store.get_key(&KeyId::parse("abcdefABCDEF").unwrap()).await.unwrap().unwrap();

    assert!(key.self_rotation);
    assert_eq!(key.max_chain_lifetime, keyturn_core::Duration::from_days(365));
    assert_eq!(store.uses_since_rotation(&key.key_id).await.unwrap(), 0);
    store.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn open_zero_max_connections_fails() {
    let Some(database) = TestDatabase::create().await else { return };
    let options = PostgresOptions { max_connections: 0, ..options() };

    let error = PostgresStore::open(&database.database_url(), &options).await.unwrap_err();

    assert!(matches!(&error, StoreError::Open { reason, .. } if reason.contains("max_connections")), "{error:?}");
    database.drop_database().await;
}

#[tokio::test]
async fn open_huge_statement_timeout_fails() {
    let Some(database) = TestDatabase::create().await else { return };
    let options = PostgresOptions { statement_timeout: Duration::from_secs(30 * 86_400), ..options() };

    let error = PostgresStore::open(&database.database_url(), &options).await.unwrap_err();

    assert!(matches!(&error, StoreError::Open { reason, .. } if reason.contains("statement_timeout")), "{error:?}");
    database.drop_database().await;
}

/// Returns the names of the tables in the database's `public` schema.
async fn public_tables(database: &TestDatabase) -> Vec<String> {
    let mut conn = database.raw().await;
    let rows = sqlx::query("SELECT tablename::text AS name FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows.iter().map(|row| row.get("name")).collect()
}

/// Opening without migrating rejects a database without keyturn tables and creates none, and
/// opens a keyturn database as usual.
#[tokio::test]
async fn open_without_migrate_rejects_empty_database() {
    let Some(database) = TestDatabase::create().await else { return };
    database.execute("CREATE TABLE notes (body TEXT)").await;
    let existing = PostgresOptions { migrate: false, ..options() };

    let error = PostgresStore::open(&database.database_url(), &existing).await.unwrap_err();

    match error {
        StoreError::Open { location, reason } => {
            assert_eq!(location, database.database_url().to_string());
            assert!(reason.contains("no keyturn tables"), "{reason}");
        }
        other => panic!("expected StoreError::Open, got {other:?}"),
    }
    assert_eq!(public_tables(&database).await, vec!["notes"]);

    database.open().await.close().await;
    let store = PostgresStore::open(&database.database_url(), &existing).await.unwrap();
    assert!(store.list_keys(&KeyFilter::default()).await.unwrap().is_empty());
    store.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn open_missing_database_fails() {
    let Some(server) = server_url() else { return };
    let url = DatabaseUrl::parse(&with_database(&server, &unique_name("kt_missing"))).unwrap();

    let error = PostgresStore::open(&url, &options()).await.unwrap_err();

    match error {
        StoreError::Open { location, reason } => {
            assert_eq!(location, url.to_string());
            assert!(reason.contains("does not exist"), "{reason}");
        }
        other => panic!("expected StoreError::Open, got {other:?}"),
    }
}

#[tokio::test]
async fn location_is_redacted_url() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = database.open().await;

    assert_eq!(store.location(), database.database_url().to_string());
    assert!(store.location().starts_with("postgres"), "{}", store.location());
    assert!(format!("{store:?}").contains(&store.location()));
    store.close().await;
    database.drop_database().await;
}

/// Logs in as a role with a password and checks that no URL, location, `Debug` output or error
/// shows it: with the right password, the wrong one, and a server that cannot be reached.
#[tokio::test]
async fn password_never_shown() {
    let Some(database) = TestDatabase::create().await else { return };
    let password = "Pw-s3cr3t/with@odd:chars";
    let encoded = "Pw-s3cr3t%2Fwith%40odd%3Achars";
    let hidden = |text: &str| !text.contains("s3cr3t") && !text.contains(encoded) && !text.contains(password);
    let mut admin = PgConnection::connect(&database.server).await.unwrap();
    sqlx::raw_sql(&format!(
        "DO $$ BEGIN CREATE ROLE {PASSWORD_ROLE} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
         ALTER ROLE {PASSWORD_ROLE} PASSWORD '{password}'; \
         ALTER DATABASE \"{}\" OWNER TO {PASSWORD_ROLE}",
        database.name
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    let mut role_url = url::Url::parse(&database.url).unwrap();
    role_url.set_username(PASSWORD_ROLE).unwrap();

    role_url.set_password(Some(encoded)).unwrap();
    let url = DatabaseUrl::parse(role_url.as_str()).unwrap();
    assert!(hidden(&url.to_string()), "{url}");
    assert!(hidden(&format!("{url:?}")), "{url:?}");
    let store = PostgresStore::open(&url, &options()).await.unwrap();
    suite::insert(&store, &suite::key(1, None, 1_000)).await;
    assert!(hidden(&store.location()), "{}", store.location());
    assert!(hidden(&format!("{store:?}")), "{store:?}");
    store.close().await;

    role_url.set_password(Some("Wrong-s3cr3t")).unwrap();
    match PostgresStore::open(&DatabaseUrl::parse(role_url.as_str()).unwrap(), &options()).await {
        Ok(store) => {
            eprintln!("the server accepted a wrong password for {PASSWORD_ROLE}, so it does not check passwords");
            store.close().await;
        }
        Err(error) => {
            assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
            assert!(hidden(&error.to_string()), "{error}");
            assert!(hidden(&format!("{error:?}")), "{error:?}");
        }
    }

    role_url.set_password(Some(encoded)).unwrap();
    role_url.set_port(Some(1)).unwrap();
    let error = PostgresStore::open(&DatabaseUrl::parse(role_url.as_str()).unwrap(), &options()).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(hidden(&error.to_string()), "{error}");
    assert!(hidden(&format!("{error:?}")), "{error:?}");

    database.drop_database().await;
}

/// Holds the write lock from a plain connection: writes that append audit events wait for it and
/// fail as unavailable once the statement timeout passes, while usage counters, which take no
/// lock, go through.
#[tokio::test]
async fn held_write_lock_times_out_unavailable() {
    let Some(database) = TestDatabase::create().await else { return };
    let options = PostgresOptions { statement_timeout: Duration::from_millis(300), ..options() };
    let store = PostgresStore::open(&database.database_url(), &options).await.unwrap();
    let key = suite::key(1, None, 1_000);
    suite::insert(&store, &key).await;
    let mut holder = database.raw().await;
    sqlx::raw_sql("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(WRITE_LOCK_KEY).execute(&mut holder).await.unwrap();

    let other = suite::key(2, None, 2_000);
    let started = WallClock::now();
    let error = store.insert_key(&other, &suite::created_event(&other)).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    let usage = UsageRecord {
        key_id: key.key_id.clone(),
        first_used_at: Instant::from_millis(3_000),
        last_used_at: Instant::from_millis(3_000),
        last_client_addr: None,
        counts: vec![(Outcome::Active, 1)],
    };
    store.record_usage(&[usage]).await.unwrap();

    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    suite::insert(&store, &other).await;
    assert_eq!(store.usage_counts(&key.key_id).await.unwrap(), vec![(Outcome::Active, 1)]);
    holder.close().await.unwrap();
    store.close().await;
    database.drop_database().await;
}

/// Ends every session of the database, as a server restart does: the same store must work again
/// without being reopened.
#[tokio::test]
async fn store_recovers_after_sessions_end() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = database.open().await;
    suite::insert(&store, &suite::key(1, None, 1_000)).await;

    database.terminate_sessions().await;

    let key = store.get_key(&suite::key_id(1)).await.unwrap();
    assert!(key.is_some());
    suite::insert(&store, &suite::key(2, None, 2_000)).await;
    assert_eq!(store.change_seq().await.unwrap(), 2);
    store.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn closed_store_is_unavailable() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = database.open().await;
    store.close().await;

    let error = store.get_key(&suite::key_id(1)).await.unwrap_err();

    assert!(error.is_unavailable(), "{error:?}");
    database.drop_database().await;
}

/// Inserts key 1, damages one column with `sql`, and returns the error of reading it back.
async fn read_after_damage(sql: &str) -> StoreError {
    let database = TestDatabase::create().await.expect("callers check the server URL first");
    let store = database.open().await;
    suite::insert(&store, &suite::key(1, None, 1_000)).await;
    database.execute(sql).await;

    let listed = store.list_keys(&KeyFilter::default()).await;
    assert!(matches!(listed, Err(StoreError::CorruptRow { .. })), "{listed:?}");
    let error = store.get_key(&suite::key_id(1)).await.unwrap_err();
    store.close().await;
    database.drop_database().await;
    error
}

#[tokio::test]
async fn corrupt_row_names_key_and_column() {
    if server_url().is_none() {
        return;
    }
    let cases = [
        ("UPDATE keys SET hash = '\\x0102'", "hash"),
        ("UPDATE keys SET scopes = 'not json'", "scopes"),
        ("UPDATE keys SET metadata = '[1, 2]'", "metadata"),
        ("UPDATE keys SET successor_id = 'short'", "successor_id"),
        ("UPDATE keys SET pepper_id = 'bad id!'", "pepper_id"),
        ("UPDATE keys SET grace_ms = -5", "grace_ms"),
    ];
    for (sql, column) in cases {
        let error = read_after_damage(sql).await;
        match &error {
            StoreError::CorruptRow { key_id, reason } => {
                assert_eq!(key_id, suite::key_id(1).as_str(), "{sql}");
                assert!(reason.contains(column), "{sql}: {reason}");
            }
            other => panic!("{sql}: expected CorruptRow, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn corrupt_row_never_quotes_hash() {
    if server_url().is_none() {
        return;
    }
    let error = read_after_damage("UPDATE keys SET hash = '\\xDEADBEEFDEADBEEF'").await;

    let message = format!("{error} {error:?}").to_lowercase();
    assert!(!message.contains("deadbeef"), "{message}");
}

/// PostgreSQL cannot store U+0000 in text: the insert fails as an internal error that quotes
/// nothing of the key, and writes nothing.
#[tokio::test]
async fn text_with_nul_fails_internal() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = database.open().await;
    let mut key = suite::key(1, None, 1_000);
    key.name = "before\0after".to_owned();

    let error = store.insert_key(&key, &suite::created_event(&key)).await.unwrap_err();

    assert!(matches!(error, StoreError::Internal(_)), "{error:?}");
    assert!(!error.to_string().contains("before"), "{error}");
    assert_eq!(store.get_key(&key.key_id).await.unwrap(), None);
    assert_eq!(store.change_seq().await.unwrap(), 0);
    store.close().await;
    database.drop_database().await;
}

/// Key ids that differ only in case list in byte order, as on SQLite, also in a database whose
/// locale sorts lowercase first (ICU `en-US`: keya, keyA, keyb, keyB).
#[tokio::test]
async fn list_keys_orders_ids_bytewise() {
    let Some(server) = server_url() else { return };
    let mut admin = PgConnection::connect(&server).await.unwrap();
    let icu_collations: i64 = sqlx::query("SELECT count(*) AS n FROM pg_collation WHERE collprovider = 'i'")
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get("n");
    admin.close().await.unwrap();
    let settings = if icu_collations > 0 {
        "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    } else {
        eprintln!("the server has no ICU support, so the database uses its default locale");
        ""
    };
    let database = TestDatabase::create_with(settings).await.unwrap();
    let store = database.open().await;
    let ids = ["keyb00000000", "keyB00000000", "keya00000000", "keyA00000000"];
    for id in ids {
        let mut key = suite::key(1, None, 1_000);
        key.key_id = KeyId::parse(id).unwrap();
        suite::insert(&store, &key).await;
    }

    let listed: Vec<String> = store
        .list_keys(&KeyFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|key| key.key_id.as_str().to_owned())
        .collect();

    assert_eq!(listed, vec!["keyA00000000", "keyB00000000", "keya00000000", "keyb00000000"]);
    store.close().await;
    database.drop_database().await;
}

/// A change made through one instance wakes a wait on another long before the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_change_wakes_other_instance() {
    let Some(database) = TestDatabase::create().await else { return };
    let writer = database.open().await;
    let reader = Arc::new(database.open().await);
    let before = reader.change_seq().await.unwrap();

    let waiting = {
        let reader = Arc::clone(&reader);
        tokio::spawn(async move {
            let started = WallClock::now();
            reader.wait_for_change(before, Duration::from_secs(20)).await.unwrap();
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    suite::insert(&writer, &suite::key(1, None, 1_000)).await;
    let waited = waiting.await.unwrap();

    assert!(waited < Duration::from_secs(5), "the wait took {waited:?} of its 20 s timeout");
    assert!(!reader.changes_since(before, 10).await.unwrap().is_empty());
    writer.close().await;
    reader.close().await;
    database.drop_database().await;
}

/// Without a change, a wait lasts its whole timeout. A notification older than the sequence
/// number waited past does not end a wait, but a newer one that arrived between waits ends the
/// next wait at once.
#[tokio::test]
async fn wait_for_change_skips_older_notifications() {
    let Some(database) = TestDatabase::create().await else { return };
    let writer = database.open().await;
    let reader = database.open().await;

    let started = WallClock::now();
    reader.wait_for_change(0, Duration::from_millis(400)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());

    suite::insert(&writer, &suite::key(1, None, 1_000)).await;
    let first = writer.change_seq().await.unwrap();
    let started = WallClock::now();
    reader.wait_for_change(first, Duration::from_millis(400)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());

    suite::insert(&writer, &suite::key(2, None, 2_000)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = WallClock::now();
    reader.wait_for_change(first, Duration::from_secs(20)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    writer.close().await;
    reader.close().await;
    database.drop_database().await;
}

/// After the change feed is renumbered behind the store, as restoring an older backup in place
/// does, a notification received before it no longer ends a wait: the wait sleeps out its timeout
/// instead of returning at once for a sequence number the feed no longer reaches.
#[tokio::test]
async fn wait_for_change_after_feed_renumbered_sleeps() {
    let Some(database) = TestDatabase::create().await else { return };
    let writer = database.open().await;
    let reader = database.open().await;
    for n in 1..=3 {
        suite::insert(&writer, &suite::key(n, None, 1_000 * i64::from(n))).await;
    }
    let before = reader.change_seq().await.unwrap();
    reader.wait_for_change(before, Duration::from_millis(100)).await.unwrap();
    suite::insert(&writer, &suite::key(4, None, 4_000)).await;
    reader.wait_for_change(before, Duration::from_secs(20)).await.unwrap();

    database.execute("TRUNCATE changes RESTART IDENTITY").await;
    suite::insert(&writer, &suite::key(5, None, 5_000)).await;
    let after = reader.change_seq().await.unwrap();
    assert!(after < before, "the feed was renumbered to {after}, below {before}");
    let started = WallClock::now();
    reader.wait_for_change(after, Duration::from_millis(500)).await.unwrap();
    let first_wait = started.elapsed();
    let started = WallClock::now();
    reader.wait_for_change(after, Duration::from_millis(500)).await.unwrap();
    let second_wait = started.elapsed();

    assert!(first_wait >= Duration::from_millis(300), "the first wait returned after {first_wait:?}");
    assert!(second_wait >= Duration::from_millis(300), "the second wait returned after {second_wait:?}");
    suite::insert(&writer, &suite::key(6, None, 6_000)).await;
    let started = WallClock::now();
    reader.wait_for_change(after, Duration::from_secs(20)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    writer.close().await;
    reader.close().await;
    database.drop_database().await;
}

/// A listener whose session ended connects again on the next wait, and that wait still ends
/// early for a change made while it was gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_change_reconnects_lost_listener() {
    let Some(database) = TestDatabase::create().await else { return };
    let writer = database.open().await;
    let reader = database.open().await;
    reader.wait_for_change(0, Duration::from_millis(100)).await.unwrap();
    let before = reader.change_seq().await.unwrap();

    database.terminate_sessions().await;
    suite::insert(&writer, &suite::key(1, None, 1_000)).await;
    let started = WallClock::now();
    reader.wait_for_change(before, Duration::from_secs(20)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    let after = reader.change_seq().await.unwrap();
    let waiting = WallClock::now();
    let wait = reader.wait_for_change(after, Duration::from_secs(20));
    let insert = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        suite::insert(&writer, &suite::key(2, None, 2_000)).await;
    };
    let (waited, ()) = tokio::join!(wait, insert);
    waited.unwrap();
    assert!(waiting.elapsed() < Duration::from_secs(5), "{:?}", waiting.elapsed());

    writer.close().await;
    reader.close().await;
    database.drop_database().await;
}

/// A server that cannot be reached makes a wait sleep out its timeout, never fail.
#[tokio::test]
async fn wait_for_change_without_server_polls() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = database.open().await;
    store.close().await;

    let started = WallClock::now();
    store.wait_for_change(0, Duration::from_millis(300)).await.unwrap();

    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlap_shortening_across_instances_recorded_once() {
    let Some(database) = TestDatabase::create().await else { return };
    let stores = instances(&database, 4).await;

    suite::policies::overlap_shortening_recorded_once(&stores).await;

    database.drop_database().await;
}

/// The outbox's `once_key` is unique when set, so an event recorded once per key is guarded by
/// the database, while rows without one never conflict.
#[tokio::test]
async fn outbox_once_key_unique() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = database.open().await;
    suite::insert(&store, &suite::key(1, None, 1_000)).await;
    suite::insert(&store, &suite::key(2, None, 2_000)).await;
    database.execute("UPDATE webhook_outbox SET once_key = 'expired:key000000001' WHERE audit_seq = 1").await;

    let mut conn = database.raw().await;
    let duplicate = sqlx::query("UPDATE webhook_outbox SET once_key = 'expired:key000000001' WHERE audit_seq = 2")
        .execute(&mut conn)
        .await;

    let error = duplicate.unwrap_err();
    assert!(error.as_database_error().is_some_and(|error| error.is_unique_violation()), "{error}");
    conn.close().await.unwrap();
    store.close().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_rotation_request_concurrently_across_instances() {
    let Some(database) = TestDatabase::create().await else { return };
    let stores = instances(&database, 4).await;

    suite::first_rotation_request_concurrently_once(&stores).await;

    database.drop_database().await;
}
