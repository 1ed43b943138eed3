//! Runs the store suite against real SQLite files in temporary directories, plus the cases only
//! SQLite has: opening files, schema versions, corrupt rows written behind the store's back, and
//! several pools sharing one file as separate processes would.

mod suite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyturn_core::KeyId;
use keyturn_store::{DatabaseUrl, KeyFilter, SqliteOptions, SqliteStore, Store, StoreError};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Row};
use tempfile::TempDir;

fn url_for(path: &Path) -> DatabaseUrl {
    DatabaseUrl::parse(&format!("sqlite://{}", path.display())).unwrap()
}

fn create_options() -> SqliteOptions {
    SqliteOptions { create_if_missing: true, ..SqliteOptions::default() }
}

/// Creates a temporary directory with a new database `keyturn.db` in it.
async fn new_store() -> (TempDir, PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyturn.db");
    let store = SqliteStore::open(&url_for(&path), &create_options()).await.unwrap();
    (dir, path, store)
}

/// Opens a plain connection that bypasses the store, to inspect or damage the file.
async fn raw_connection(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new().filename(path).connect().await.unwrap()
}

async fn raw_execute(path: &Path, sql: &str) {
    let mut conn = raw_connection(path).await;
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

fn open_reason(error: StoreError) -> (String, String) {
    match error {
        StoreError::Open { location, reason } => (location, reason),
        other => panic!("expected StoreError::Open, got {other:?}"),
    }
}

macro_rules! suite_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_dir, _path, store) = new_store().await;
                suite::$name(&store).await;
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
                let (_dir, _path, store) = new_store().await;
                suite::policies::$name(&store).await;
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

/// Opens `count` stores on one file, each with its own pool, as separate processes would.
async fn shared_stores(path: &Path, count: usize) -> Vec<Arc<dyn Store>> {
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..count {
        stores.push(Arc::new(SqliteStore::open(&url_for(path), &create_options()).await.unwrap()));
    }
    stores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotate_concurrently_across_pools() {
    let (_dir, path, _store) = new_store().await;
    let stores = shared_stores(&path, 4).await;
    suite::rotate_concurrently_one_wins(&stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insert_concurrently_across_pools() {
    let (_dir, path, _store) = new_store().await;
    let stores = shared_stores(&path, 4).await;
    suite::insert_concurrently_all_succeed(&stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insert_if_empty_concurrently_across_pools() {
    let (_dir, path, _store) = new_store().await;
    let stores = shared_stores(&path, 8).await;
    suite::insert_if_empty_concurrently_one_wins(&stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_once_concurrently_across_pools() {
    let (_dir, path, _store) = new_store().await;
    let stores = shared_stores(&path, 4).await;
    suite::append_once_concurrently_records_once(&stores).await;
}

/// Opens one new file from 6 pools at once, 10 times over. Each opener races to switch the file
/// to WAL and to apply the schema, and a lost race must wait instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_new_file_concurrently_migrates_once() {
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyturn.db");

        let mut tasks = Vec::new();
        for _ in 0..6 {
            let url = url_for(&path);
            tasks.push(tokio::spawn(async move { SqliteStore::open(&url, &create_options()).await }));
        }
        let mut stores = Vec::new();
        for task in tasks {
            stores.push(task.await.unwrap().unwrap());
        }

        suite::insert(&stores[0], &suite::key(1, None, 1_000)).await;
        assert!(stores[5].get_key(&suite::key_id(1)).await.unwrap().is_some());
        let mut conn = raw_connection(&path).await;
        let version: i64 = sqlx::query("PRAGMA user_version").fetch_one(&mut conn).await.unwrap().get(0);
        assert_eq!(version, 7);
        let mode: String = sqlx::query("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap().get(0);
        assert_eq!(mode, "wal");
    }
}

#[tokio::test]
async fn open_sets_wal_and_absolute_location() {
    let (_dir, path, store) = new_store().await;

    assert_eq!(store.location(), path.display().to_string());
    assert!(Path::new(&store.location()).is_absolute());
    let mut conn = raw_connection(&path).await;
    let mode: String = sqlx::query("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn open_existing_file_keeps_data() {
    let (_dir, path, store) = new_store().await;
    suite::insert(&store, &suite::key(1, None, 1_000)).await;
    store.close().await;

    let reopened = SqliteStore::open(&url_for(&path), &SqliteOptions::default()).await.unwrap();

    assert_eq!(reopened.list_keys(&KeyFilter::default()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn open_missing_file_without_create_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");

    let error = SqliteStore::open(&url_for(&path), &SqliteOptions::default()).await.unwrap_err();

    let (location, reason) = open_reason(error);
    assert_eq!(location, path.display().to_string());
    assert!(reason.contains("keyturn init"), "{reason}");
    assert!(!path.exists(), "a failed open must not create the file");
}

#[tokio::test]
async fn open_relative_url_resolves_to_absolute_path() {
    let relative = "keyturn-store-test-missing-dir/keyturn.db";
    let url = DatabaseUrl::parse(&format!("sqlite:{relative}")).unwrap();

    let error = SqliteStore::open(&url, &create_options()).await.unwrap_err();

    let (location, _reason) = open_reason(error);
    let expected = std::env::current_dir().unwrap().join(relative);
    assert_eq!(location, expected.display().to_string());
}

#[tokio::test]
async fn open_missing_directory_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");

    let error = SqliteStore::open(&url_for(&missing.join("keyturn.db")), &create_options()).await.unwrap_err();

    let message = error.to_string();
    assert!(!message.contains('\n'), "{message}");
    let (_location, reason) = open_reason(error);
    assert!(reason.contains(&missing.display().to_string()), "{reason}");
    assert!(reason.contains("mkdir -p"), "{reason}");
}

#[tokio::test]
async fn open_path_under_regular_file_fails() {
    let error = SqliteStore::open(&url_for(Path::new("/dev/null/keyturn.db")), &create_options()).await.unwrap_err();

    let (_location, reason) = open_reason(error);
    assert!(reason.contains("/dev/null"), "{reason}");
    assert!(reason.contains("not a directory"), "{reason}");
}

#[cfg(unix)]
#[tokio::test]
async fn open_read_only_directory_fails() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root, and any user with CAP_DAC_OVERRIDE, writes through mode bits, so SQLite would succeed
    // and the check rightly passes. Only an unprivileged run can observe the rejection.
    let privileged = std::fs::write(locked.join("probe"), b"").is_ok();

    let result = SqliteStore::open(&url_for(&locked.join("keyturn.db")), &create_options()).await;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();

    if privileged {
        assert!(result.is_ok(), "{:?}", result.err());
        return;
    }
    let (_location, reason) = open_reason(result.unwrap_err());
    assert!(reason.contains(&locked.display().to_string()), "{reason}");
    assert!(reason.contains("not writable"), "{reason}");
}

#[tokio::test]
async fn open_non_database_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    std::fs::write(&path, "these are notes, not a database; ".repeat(100)).unwrap();

    let error = SqliteStore::open(&url_for(&path), &SqliteOptions::default()).await.unwrap_err();

    let (_location, reason) = open_reason(error);
    assert!(reason.contains("not a SQLite database"), "{reason}");
}

fn existing_options() -> SqliteOptions {
    SqliteOptions { migrate: false, ..SqliteOptions::default() }
}

/// Opening without migrating rejects an empty file and a SQLite database without keyturn tables,
/// and writes nothing to either.
#[tokio::test]
async fn open_without_migrate_rejects_foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::File::create(&empty).unwrap();
    let other = dir.path().join("other.db");
    let mut conn = SqliteConnectOptions::new().filename(&other).create_if_missing(true).connect().await.unwrap();
    sqlx::raw_sql("CREATE TABLE notes (body TEXT)").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let other_bytes = std::fs::read(&other).unwrap();

    for path in [&empty, &other] {
        let error = SqliteStore::open(&url_for(path), &existing_options()).await.unwrap_err();

        let (location, reason) = open_reason(error);
        assert_eq!(location, path.display().to_string());
        assert!(reason.contains("no keyturn tables"), "{reason}");
    }
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    assert_eq!(std::fs::read(&other).unwrap(), other_bytes);
    let mut conn = raw_connection(&other).await;
    let tables: Vec<String> = sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(tables, vec!["notes"]);
}

/// Opening without migrating reads a keyturn database, and never creates a missing file even
/// when `create_if_missing` is set.
#[tokio::test]
async fn open_without_migrate_reads_existing() {
    let (dir, path, store) = new_store().await;
    suite::insert(&store, &suite::key(1, None, 1_000)).await;
    store.close().await;

    let existing = SqliteStore::open(&url_for(&path), &existing_options()).await.unwrap();
    assert_eq!(existing.list_keys(&KeyFilter::default()).await.unwrap().len(), 1);
    existing.close().await;

    let missing = dir.path().join("missing.db");
    let options = SqliteOptions { create_if_missing: true, ..existing_options() };
    let error = SqliteStore::open(&url_for(&missing), &options).await.unwrap_err();
    let (_, reason) = open_reason(error);
    assert!(reason.contains("does not exist"), "{reason}");
    assert!(!missing.exists());
}

/// Opening without migrating rejects a database whose schema is older than this build's.
#[tokio::test]
async fn open_without_migrate_rejects_old_schema() {
    let (_dir, path, store) = new_store().await;
    store.close().await;
    raw_execute(&path, "PRAGMA user_version = 1").await;

    let error = SqliteStore::open(&url_for(&path), &existing_options()).await.unwrap_err();

    let (_, reason) = open_reason(error);
    assert!(reason.contains("schema version is 1, older than version 7"), "{reason}");
}

#[tokio::test]
async fn open_newer_schema_rejected() {
    let (_dir, path, store) = new_store().await;
    store.close().await;
    raw_execute(&path, "PRAGMA user_version = 8").await;

    let error = SqliteStore::open(&url_for(&path), &SqliteOptions::default()).await.unwrap_err();

    let (_location, reason) = open_reason(error);
    assert!(reason.contains("schema version is 8"), "{reason}");
    assert!(reason.contains("newer keyturn"), "{reason}");
}

#[tokio::test]
async fn open_zero_max_connections_fails() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions { max_connections: 0, ..create_options() };

    let error = SqliteStore::open(&url_for(&dir.path().join("keyturn.db")), &options).await.unwrap_err();

    let (_location, reason) = open_reason(error);
    assert!(reason.contains("max_connections"), "{reason}");
}

#[tokio::test]
async fn locked_database_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyturn.db");
    let options = SqliteOptions { busy_timeout: Duration::from_millis(200), ..create_options() };
    let store = SqliteStore::open(&url_for(&path), &options).await.unwrap();
    let mut holder = raw_connection(&path).await;
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();

    let error = store.insert_key(&suite::key(1, None, 1_000), &suite::created_event(&suite::key(1, None, 1_000))).await;

    let error = error.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    suite::insert(&store, &suite::key(1, None, 1_000)).await;
}

/// Reads see every commit made before them, by this store or another connection, and a closed
/// store reads nothing.
#[tokio::test]
async fn reads_see_other_connections_commits_until_closed() {
    let (_dir, path, store) = new_store().await;
    let key = suite::key(1, None, 1_000);
    suite::insert(&store, &key).await;
    assert_eq!(store.get_key(&key.key_id).await.unwrap().unwrap().name, key.name);

    raw_execute(&path, "UPDATE keys SET name = 'renamed elsewhere'").await;
    assert_eq!(store.get_key(&key.key_id).await.unwrap().unwrap().name, "renamed elsewhere");
    raw_execute(&path, "DELETE FROM keys").await;
    assert_eq!(store.get_key(&key.key_id).await.unwrap(), None);

    store.close().await;
    let error = store.get_key(&key.key_id).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
}

/// Inserts key 1, damages one column with `sql`, and returns the error of reading it back.
async fn read_after_damage(sql: &str) -> StoreError {
    let (_dir, path, store) = new_store().await;
    suite::insert(&store, &suite::key(1, None, 1_000)).await;
    raw_execute(&path, sql).await;

    let listed = store.list_keys(&KeyFilter::default()).await;
    assert!(matches!(listed, Err(StoreError::CorruptRow { .. })), "{listed:?}");
    store.get_key(&suite::key_id(1)).await.unwrap_err()
}

#[tokio::test]
async fn corrupt_row_names_key_and_column() {
    let id = suite::key_id(1);
    let cases = [
        ("UPDATE keys SET hash = x'0102'", "hash"),
        ("UPDATE keys SET scopes = 'not json'", "scopes"),
        ("UPDATE keys SET scopes = '[\"has space\"]'", "scopes"),
        ("UPDATE keys SET metadata = '[1, 2]'", "metadata"),
        ("UPDATE keys SET successor_id = 'short'", "successor_id"),
        ("UPDATE keys SET pepper_id = 'bad id!'", "pepper_id"),
        ("UPDATE keys SET grace_ms = -5", "grace_ms"),
        ("UPDATE keys SET created_at = 'yesterday'", "created_at"),
    ];
    for (sql, column) in cases {
        let error = read_after_damage(sql).await;
        match &error {
            StoreError::CorruptRow { key_id, reason } => {
                assert_eq!(key_id, id.as_str(), "{sql}");
                assert!(reason.contains(column), "{sql}: {reason}");
            }
            other => panic!("{sql}: expected CorruptRow, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn corrupt_row_never_quotes_hash() {
    let error = read_after_damage("UPDATE keys SET hash = x'DEADBEEFDEADBEEF'").await;

    let message = error.to_string().to_lowercase();
    assert!(!message.contains("deadbeef"), "{message}");
}

#[tokio::test]
async fn corrupt_audit_row_names_seq() {
    let (_dir, path, store) = new_store().await;
    suite::insert(&store, &suite::key(1, None, 1_000)).await;
    raw_execute(&path, "UPDATE audit_events SET details = '{broken'").await;

    let error = store.list_audit(&Default::default()).await.unwrap_err();

    assert!(
        matches!(&error, StoreError::CorruptAuditRow { seq: 1, reason } if reason.contains("details")),
        "{error:?}"
    );
}

#[tokio::test]
async fn corrupt_change_row_names_key() {
    let (_dir, path, store) = new_store().await;
    raw_execute(&path, "INSERT INTO changes (key_id, at) VALUES ('bad', 1)").await;

    let error = store.changes_since(0, 10).await.unwrap_err();

    assert!(matches!(&error, StoreError::CorruptRow { key_id, .. } if key_id == "bad"), "{error:?}");
}

#[tokio::test]
async fn new_database_files_private_to_owner() {
    use std::os::unix::fs::PermissionsExt;

    let (_dir, path, store) = new_store().await;
    store.get_key(&keyturn_core::KeyId::parse("abcdefABCDEF").unwrap()).await.unwrap();

    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }
}

#[tokio::test]
async fn migration_gives_old_keys_default_self_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyturn.db");
    let create = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
    let mut conn = create.connect().await.unwrap();
    sqlx::raw_sql(include_str!("../migrations/sqlite/0001_initial.sql")).execute(&mut conn).await.unwrap();
    sqlx::raw_sql(
        "PRAGMA user_version = 1; \
         INSERT INTO keys (key_id, name, scopes, metadata, hash, pepper_id, created_at, grace_ms, warn_before_ms, \
         chain_started_at) VALUES ('abcdefABCDEF', 'old', '[]', '{}', zeroblob(32), '1', 1000, 0, 0, 1000)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = SqliteStore::open(&url_for(&path), &SqliteOptions::default()).await.unwrap();
    let key = store.get_key(&KeyId::parse("abcdefABCDEF").unwrap()).await.unwrap().unwrap();

    assert!(key.self_rotation);
    assert_eq!(key.max_chain_lifetime, keyturn_core::Duration::from_days(365));
    assert_eq!(store.uses_since_rotation(&key.key_id).await.unwrap(), 0);
}

#[tokio::test]
async fn deleted_file_makes_store_unavailable() {
    use keyturn_core::{Actor, AuditEventType, Instant, KeyId, NewAuditEvent};
    use keyturn_store::Revocation;

    let (_dir, path, store) = new_store().await;
    assert_eq!(store.change_seq().await.unwrap(), 0);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }

    let error = store.change_seq().await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let key_id = KeyId::parse("abcdefABCDEF").unwrap();
    let event = NewAuditEvent::new(
        AuditEventType::AuthnTokenRevoked,
        Instant::from_millis(1),
        Some(key_id.clone()),
        Actor::System,
    );
    let revocation = Revocation { key_id, revoked_at: Instant::from_millis(1), reason: None, event };
    let error = store.revoke_key(&revocation).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlap_shortening_across_pools_recorded_once() {
    let (_dir, path, _store) = new_store().await;
    let stores = shared_stores(&path, 4).await;
    suite::policies::overlap_shortening_recorded_once(&stores).await;
}

/// The outbox's `once_key` is unique when set, so an event recorded once per key is guarded by
/// the database, while rows without one never conflict.
#[tokio::test]
async fn outbox_once_key_unique() {
    let (_dir, path, store) = new_store().await;
    suite::insert(&store, &suite::key(1, None, 1_000)).await;
    suite::insert(&store, &suite::key(2, None, 2_000)).await;
    store.close().await;
    let mut conn = raw_connection(&path).await;
    sqlx::raw_sql("UPDATE webhook_outbox SET once_key = 'expired:key000000001' WHERE audit_seq = 1")
        .execute(&mut conn)
        .await
        .unwrap();

    let duplicate = sqlx::raw_sql("UPDATE webhook_outbox SET once_key = 'expired:key000000001' WHERE audit_seq = 2")
        .execute(&mut conn)
        .await;

    let error = duplicate.unwrap_err();
    assert!(error.as_database_error().is_some_and(|error| error.is_unique_violation()), "{error}");
    conn.close().await.unwrap();
}

/// The scheduler's range queries search an index of the rotation-request migration instead of scanning every
/// key. The SQL repeats the boundary expressions of `queries::list_due`, which must match the
/// indexed expressions exactly for SQLite to use them.
#[tokio::test]
async fn due_queries_use_boundary_indexes() {
    let (_dir, path, _store) = new_store().await;
    let mut conn = raw_connection(&path).await;
    let cases = [
        ("expires_at", "(expires_at - warn_before_ms)", "keys_warning_starts_at"),
        ("expires_at", "expires_at", "keys_expires_at"),
        ("expires_at", "(expires_at + grace_ms)", "keys_grace_ends_at"),
        ("overlap_ends_at", "overlap_ends_at", "keys_overlap_ends_at"),
        ("rotation_deadline", "rotation_deadline", "keys_rotation_deadline"),
    ];

    for (column, boundary, index) in cases {
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT key_id FROM keys WHERE {column} IS NOT NULL AND revoked_at IS NULL \
             AND {boundary} > 1 AND {boundary} <= 2 ORDER BY {boundary}, key_id LIMIT 500"
        );
        let rows = sqlx::query(&sql).fetch_all(&mut conn).await.unwrap();
        let plan: Vec<String> = rows.iter().map(|row| row.get::<String, _>("detail")).collect();
        let plan = plan.join("; ");
        assert!(plan.contains(&format!("USING INDEX {index}")), "{boundary}: {plan}");
        assert!(!plan.contains("SCAN keys"), "{boundary}: {plan}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_rotation_request_concurrently_across_pools() {
    let (_dir, path, _store) = new_store().await;
    let stores = shared_stores(&path, 4).await;
    suite::first_rotation_request_concurrently_once(&stores).await;
}
