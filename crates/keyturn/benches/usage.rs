//! What usage tracking adds to a verification served from the cache: the same token verified by
//! two keyrings on one SQLite file, one counting each use (the default), with and without a
//! client address, and one with `track_usage` off, with the HMAC of the token as the common floor.
//!
//! Run with `cargo bench -p keyturn --bench usage`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use keyturn::core::{Clock, PepperId, PepperRing, Scopes, SystemClock};
use keyturn::store::{DatabaseUrl, SqliteOptions, SqliteStore};
use keyturn::{Caller, Config, Keyring, NewKey};
use rand_core::OsRng;

fn bench_usage(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pepper = PepperRing::generate_entry(&PepperId::parse("1").unwrap(), &mut OsRng);
    let peppers = PepperRing::parse_list(&pepper).unwrap();
    let scopes = Scopes::default();
    let open = |config: Config| {
        runtime.block_on(async {
            let url = DatabaseUrl::parse(dir.path().join("bench.db").to_str().unwrap()).unwrap();
            let options = SqliteOptions { create_if_missing: true, ..SqliteOptions::default() };
            let store = Arc::new(SqliteStore::open(&url, &options).await.unwrap());
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            Keyring::new(store, peppers.clone(), clock, config)
        })
    };
    let tracked = open(Config::default());
    let untracked = open(Config { track_usage: false, ..Config::default() });
    let new = NewKey { name: "bench".into(), ..NewKey::default() };
    let token = runtime.block_on(tracked.create(new, &Caller::cli())).unwrap().token.expose().to_owned();
    for keyring in [&tracked, &untracked] {
        runtime.block_on(keyring.sync_cache()).unwrap();
        let _entered = runtime.enter();
        keyring.start_background();
    }

    c.bench_function("hmac_sha256_of_token", |b| b.iter(|| peppers.hash_current(std::hint::black_box(&token))));
    // Called as the Python binding calls verification, without the runtime on a cache hit, whose
    // block_on would add its own cost and noise to both sides. A cache that went stale because a
    // loaded machine delayed the change follower reads the store instead, as in the binding.
    let verify = |keyring: &Keyring, client_addr: Option<&str>| {
        let token = std::hint::black_box(token.as_str());
        keyring
            .verify_cached(token, &scopes, client_addr)
            .unwrap_or_else(|| runtime.block_on(keyring.verify(token, &scopes, client_addr)).unwrap())
    };
    c.bench_function("verify_cache_hit_tracked", |b| b.iter(|| verify(&tracked, None)));
    c.bench_function("verify_cache_hit_tracked_client_addr", |b| b.iter(|| verify(&tracked, Some("192.0.2.10"))));
    c.bench_function("verify_cache_hit_untracked", |b| b.iter(|| verify(&untracked, None)));
    runtime.block_on(tracked.shutdown());
    runtime.block_on(untracked.shutdown());
}

criterion_group!(benches, bench_usage);
criterion_main!(benches);
