//! The audit chain under concurrent writers: four keyrings, each with its own store instance and
//! pool as separate processes or hosts would have, create, rotate and revoke keys at once on one
//! database. The chain must come out with no gap and no fork, every row signed, on SQLite and,
//! when `KEYTURN_TEST_POSTGRES_URL` names a server, on PostgreSQL. Without that variable the
//! PostgreSQL case prints a notice and passes, unless `CI` is set, where it fails.

mod common;

use std::sync::Arc;

use common::*;
use keyturn::core::{AuditKey, ChainVerifier, PepperRing, SystemClock};
use keyturn::store::{AuditFilter, DatabaseUrl, PostgresOptions, PostgresStore, SqliteOptions, SqliteStore, Store};
use keyturn::{Caller, Config, Keyring, RotateOptions};
use rand_core::OsRng;
use sqlx::{Connection, PgConnection};

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 10;

fn audit_key() -> AuditKey {
    AuditKey::parse(&AuditKey::generate(&mut OsRng), "test").unwrap()
}

/// Runs the concurrent workload through one keyring per store, then walks the chain.
async fn concurrent_writers_keep_chain(stores: Vec<Arc<dyn Store>>, key: &AuditKey) {
    let pepper = pepper_entry("1");
    let keyrings: Vec<Arc<Keyring>> = stores
        .iter()
        .map(|store| {
            let ring = PepperRing::parse_list(&pepper).unwrap();
            Keyring::new(Arc::clone(store), ring, Arc::new(SystemClock), Config::default())
        })
        .collect();
    let shared = keyrings[0].create(new_key("contended"), &Caller::cli()).await.unwrap();

    let mut tasks = Vec::new();
    for (writer, keyring) in keyrings.iter().enumerate() {
        let keyring = Arc::clone(keyring);
        let shared_id = shared.record.key_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut rotated = 0;
            for n in 0..KEYS_PER_WRITER {
                let issued =
                    keyring.create(new_key(&format!("writer {writer} key {n}")), &Caller::cli()).await.unwrap();
                if n % 3 == 0 {
                    keyring.revoke(&issued.record.key_id, Some("test"), &Caller::cli()).await.unwrap();
                }
                if n == KEYS_PER_WRITER / 2
                    && keyring.rotate(&shared_id, &RotateOptions::default(), &Caller::cli()).await.is_ok()
                {
                    rotated += 1;
                }
            }
            rotated
        }));
    }
    let mut rotations = 0;
    for task in tasks {
        rotations += task.await.unwrap();
    }
    assert_eq!(rotations, 1, "exactly one rotation of the shared key succeeds");

    let rows = stores[0].list_audit(&AuditFilter::default()).await.unwrap();
    let revocations = WRITERS * KEYS_PER_WRITER.div_ceil(3);
    // One creation per key, one revocation per third key, and the rotation's two rows.
    let expected = 1 + WRITERS * KEYS_PER_WRITER + revocations + 2;
    assert_eq!(rows.len(), expected);
    let mut verifier = ChainVerifier::new(key, None);
    for row in &rows {
        verifier.push(row).unwrap_or_else(|broken| panic!("{broken}"));
    }
    let summary = verifier.finish().unwrap();
    assert_eq!(summary.rows as usize, expected);
    assert_eq!(summary.unsigned_prefix, 0);
    for keyring in keyrings {
        keyring.shutdown().await;
    }
}

#[tokio::test]
async fn sqlite_chain_has_no_gap_or_fork() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::parse(dir.path().join("keyturn.db").to_str().unwrap()).unwrap();
    let key = audit_key();
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for writer in 0..WRITERS {
        let options = SqliteOptions { create_if_missing: writer == 0, ..SqliteOptions::default() };
        let store = SqliteStore::open(&url, &options).await.unwrap().with_audit_key(Some(key.clone()));
        stores.push(Arc::new(store));
    }
    concurrent_writers_keep_chain(stores, &key).await;
}

#[tokio::test]
async fn postgres_chain_has_no_gap_or_fork() {
    let Ok(server) = std::env::var("KEYTURN_TEST_POSTGRES_URL") else {
        assert!(std::env::var_os("CI").is_none(), "CI must set KEYTURN_TEST_POSTGRES_URL");
        eprintln!("skipping: KEYTURN_TEST_POSTGRES_URL is not set; run `scripts/with-postgres cargo test`");
        return;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let name = format!("kt_chain_{}_{nanos}", std::process::id());
    let mut admin = PgConnection::connect(&server).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.unwrap();
    let (base, _) = server.rsplit_once('/').expect("the server URL names a database");
    let url = DatabaseUrl::parse(&format!("{base}/{name}")).unwrap();

    let key = audit_key();
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..WRITERS {
        let store = PostgresStore::open(&url, &PostgresOptions::default()).await.unwrap();
        stores.push(Arc::new(store.with_audit_key(Some(key.clone()))));
    }
    concurrent_writers_keep_chain(stores, &key).await;

    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
}
