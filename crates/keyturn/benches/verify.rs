//! Verification cost against its floor: one HMAC-SHA256 of a token is the least any keyed-hash
//! scheme must do, and a verification served from the cache should cost little more. Also
//! measures token parsing and a verification that reads the key from a SQLite file.
//!
//! Run with `cargo bench -p keyturn --bench verify`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use keyturn::core::{Clock, KeyId, PepperId, PepperRing, Scopes, SystemClock, TokenFormat};
use keyturn::store::{DatabaseUrl, SqliteOptions, SqliteStore};
use keyturn::{Caller, Config, Consistency, Keyring, NewKey};
use rand_core::OsRng;

fn bench_verify(c: &mut Criterion) {
    // One worker thread runs the change follower, which keeps the cache fresh between iterations.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pepper = PepperRing::generate_entry(&PepperId::parse("1").unwrap(), &mut OsRng);
    let peppers = PepperRing::parse_list(&pepper).unwrap();
    let format = TokenFormat::default();
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
    let cached = open(Config::default());
    let strict =
        open(Config { consistency: Consistency { strict: true, ..Consistency::default() }, ..Config::default() });
    let new = NewKey { name: "bench".into(), ..NewKey::default() };
    let issued = runtime.block_on(cached.create(new, &Caller::cli())).unwrap();
    let token = issued.token.expose().to_owned();
    runtime.block_on(cached.sync_cache()).unwrap();
    {
        let _entered = runtime.enter();
        cached.start_background();
    }

    c.bench_function("token_parse", |b| b.iter(|| format.parse(std::hint::black_box(&token)).is_ok()));
    c.bench_function("hmac_sha256_of_token", |b| b.iter(|| peppers.hash_current(std::hint::black_box(&token))));
    c.bench_function("verify_cache_hit", |b| {
        b.iter(|| runtime.block_on(cached.verify(std::hint::black_box(&token), &scopes, None)).unwrap())
    });
    // The same call polled once, as it completes without waiting on a cache hit: the cost of
    // verification without the runtime's block_on.
    c.bench_function("verify_cache_hit_polled", |b| {
        b.iter(|| poll_once(cached.verify(std::hint::black_box(&token), &scopes, None)).unwrap())
    });
    c.bench_function("verify_sqlite_read", |b| {
        b.iter(|| runtime.block_on(strict.verify(std::hint::black_box(&token), &scopes, None)).unwrap())
    });
    let unknown = format.generate(&KeyId::generate(&mut OsRng), &mut OsRng);
    c.bench_function("verify_malformed", |b| {
        b.iter(|| runtime.block_on(cached.verify("kt_live_short", &scopes, None)))
    });
    c.bench_function("verify_unknown_id_cached", |b| {
        b.iter(|| runtime.block_on(cached.verify(unknown.expose(), &scopes, None)).unwrap())
    });
}

/// Polls a future once and returns its output; panics when it would wait.
fn poll_once<F: std::future::Future>(future: F) -> F::Output {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("verification waited on a cache hit"),
    }
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
