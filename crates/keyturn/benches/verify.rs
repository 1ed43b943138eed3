//! Verification cost against its floor: one HMAC-SHA256 of a token is the least any keyed-hash
//! scheme must do, and a verification served from the cache should cost little more. Also
//! measures token parsing, a verification that reads the key from a SQLite file, and what the
//! brute-force guard adds to `authenticate` for a valid key and for a failure from a blocked
//! address.
//!
//! Run with `cargo bench -p keyturn --bench verify`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use keyturn::core::{Clock, KeyId, PepperId, PepperRing, Scopes, SystemClock, TokenFormat};
use keyturn::store::{DatabaseUrl, SqliteOptions, SqliteStore};
use keyturn::{AuthRequest, Caller, Config, Consistency, Keyring, NewKey};
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
    // The synchronous call that the Python binding makes, without the runtime. A cache that went
    // stale because a loaded machine delayed the change follower reads the store instead.
    c.bench_function("verify_cached", |b| {
        b.iter(|| {
            let token = std::hint::black_box(token.as_str());
            cached
                .verify_cached(token, &scopes, None)
                .unwrap_or_else(|| runtime.block_on(cached.verify(token, &scopes, None)).unwrap())
        })
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

    // authenticate from one client address, through block_on like verify_cache_hit. A valid key
    // never reaches the guard. An unknown key id from that address is blocked after the first 20
    // failures, so nearly every iteration takes the 429 path. The unguarded keyring gives the
    // same failure without the guard.
    let unguarded = open(Config { guard: None, ..Config::default() });
    runtime.block_on(unguarded.sync_cache()).unwrap();
    {
        let _entered = runtime.enter();
        unguarded.start_background();
    }
    let valid_header = format!("Bearer {token}");
    let unknown_header = format!("Bearer {}", unknown.expose());
    let request = |header: &str| -> Vec<String> { vec![header.to_owned()] };
    let (valid, failed) = (request(&valid_header), request(&unknown_header));
    let authenticate = |keyring: &Keyring, authorization: &[String]| {
        let authorization: Vec<&str> = authorization.iter().map(String::as_str).collect();
        let request = AuthRequest {
            authorization: &authorization,
            api_key: &[],
            query: &[],
            client_addr: Some("203.0.113.7:50312"),
        };
        runtime.block_on(keyring.authenticate(&request, &scopes)).is_allowed()
    };
    c.bench_function("authenticate_cache_hit", |b| b.iter(|| authenticate(&cached, std::hint::black_box(&valid))));
    c.bench_function("authenticate_unknown_id_blocked", |b| {
        b.iter(|| authenticate(&cached, std::hint::black_box(&failed)))
    });
    c.bench_function("authenticate_unknown_id_unguarded", |b| {
        b.iter(|| authenticate(&unguarded, std::hint::black_box(&failed)))
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
