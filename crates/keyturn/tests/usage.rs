//! Usage counters of keys served from the cache: exact under concurrent verifiers and flushes,
//! the last client address, and counts that survive an eviction of the cached entry.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use common::*;
use keyturn::core::Outcome;
use keyturn::store::Store;
use keyturn::{Config, Consistency};

const THREADS: usize = 4;
const VERIFICATIONS_PER_THREAD: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_exact_under_concurrent_flushes() {
    // No follower runs, so the cache must stay fresh for the whole test without one.
    let consistency = Consistency { max_staleness: StdDuration::from_secs(3_600), ..Consistency::default() };
    let fixture = Fixture::with_config(Config { consistency, ..Config::default() }).await;
    let issued = fixture.keyring.create(new_key("concurrent"), &cli()).await.unwrap();
    let key_id = issued.record.key_id.clone();
    fixture.keyring.sync_cache().await.unwrap();
    // The first verification reads the store and caches the key; every later one is a hit.
    fixture.keyring.verify(issued.token.expose(), &scopes(&[]), Some("10.0.0.1")).await.unwrap();
    let hits_before = fixture.keyring.cache_stats().hits;

    let token = Arc::new(issued.token.expose().to_owned());
    let done = Arc::new(AtomicBool::new(false));
    let verifiers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let keyring = Arc::clone(&fixture.keyring);
            let token = Arc::clone(&token);
            std::thread::spawn(move || {
                let client_addr = format!("10.0.1.{thread}");
                for _ in 0..VERIFICATIONS_PER_THREAD {
                    let decision = keyring.verify_cached(&token, &scopes(&[]), Some(&client_addr));
                    assert_eq!(decision.expect("served from the cache").outcome, Outcome::Active);
                }
            })
        })
        .collect();
    let waiter = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            for verifier in verifiers {
                verifier.join().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    // Flush as often as the store allows while the verifiers run, bounded in count.
    let mut flushes = 0;
    while !done.load(Ordering::SeqCst) && flushes < 10_000 {
        fixture.keyring.flush().await.unwrap();
        flushes += 1;
    }
    waiter.join().unwrap();
    fixture.keyring.flush().await.unwrap();

    let expected = 1 + THREADS as u64 * VERIFICATIONS_PER_THREAD;
    let counts = fixture.store.usage_counts(&key_id).await.unwrap();
    assert_eq!(counts, vec![(Outcome::Active, expected)], "after {flushes} flushes during verification");
    assert_eq!(fixture.keyring.cache_stats().hits - hits_before, THREADS as u64 * VERIFICATIONS_PER_THREAD);
    let last_client = fixture.store.last_client_addr(&key_id).await.unwrap().unwrap();
    assert!(last_client.starts_with("10.0.1."), "last client {last_client:?} is one of the verifiers");
}

#[tokio::test]
async fn cached_use_records_last_client_address() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("client"), &cli()).await.unwrap();
    let key_id = issued.record.key_id.clone();
    fixture.keyring.sync_cache().await.unwrap();
    let token = issued.token.expose();

    fixture.keyring.verify(token, &scopes(&[]), Some("192.0.2.1")).await.unwrap();
    fixture.keyring.verify(token, &scopes(&[]), Some("192.0.2.2")).await.unwrap();
    fixture.at(T0 + 1_000);
    fixture.keyring.verify(token, &scopes(&[]), Some("192.0.2.3")).await.unwrap();
    fixture.keyring.verify(token, &scopes(&[]), None).await.unwrap();
    fixture.keyring.flush().await.unwrap();

    assert_eq!(fixture.store.last_client_addr(&key_id).await.unwrap().as_deref(), Some("192.0.2.3"));
    assert_eq!(fixture.store.usage_counts(&key_id).await.unwrap(), vec![(Outcome::Active, 4)]);
    let record = fixture.store.get_key(&key_id).await.unwrap().unwrap();
    assert_eq!(record.first_used_at.map(|at| at.as_millis()), Some(T0));
    assert_eq!(record.last_used_at.map(|at| at.as_millis()), Some(T0 + 1_000));

    // A later use from an address seen before still replaces the last one.
    fixture.at(T0 + 2_000);
    fixture.keyring.verify(token, &scopes(&[]), Some("192.0.2.1")).await.unwrap();
    fixture.keyring.flush().await.unwrap();
    assert_eq!(fixture.store.last_client_addr(&key_id).await.unwrap().as_deref(), Some("192.0.2.1"));
}

#[tokio::test]
async fn counts_survive_cache_eviction() {
    let fixture = Fixture::new().await;
    let issued = fixture.keyring.create(new_key("evicted"), &cli()).await.unwrap();
    let key_id = issued.record.key_id.clone();
    fixture.keyring.sync_cache().await.unwrap();
    let token = issued.token.expose();

    for _ in 0..3 {
        fixture.keyring.verify(token, &scopes(&[]), None).await.unwrap();
    }
    // The rotation evicts the cached entry, and its counters with it, before any flush. The
    // next verification reads the store and caches the key again with new counters.
    fixture.keyring.rotate(&key_id, &keyturn::RotateOptions::default(), &cli()).await.unwrap();
    for _ in 0..2 {
        let decision = fixture.keyring.verify(token, &scopes(&[]), None).await.unwrap();
        assert_eq!(decision.outcome, Outcome::Superseded);
    }
    fixture.keyring.flush().await.unwrap();

    let mut counts = fixture.store.usage_counts(&key_id).await.unwrap();
    counts.sort_by_key(|(outcome, _)| outcome.as_str());
    assert_eq!(counts, vec![(Outcome::Active, 3), (Outcome::Superseded, 2)]);
}
