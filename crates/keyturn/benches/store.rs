//! Costs that reach the store: a verification whose key is not in this process's cache (a cold
//! miss), and the mutations create, rotate and revoke, each one transaction that also writes its
//! audit events and change-feed rows. The benchmarks run against a SQLite file in a temporary
//! directory, and also against PostgreSQL when `KEYTURN_BENCH_POSTGRES_URL` names a database
//! URL. That database gains one key per iteration, so point it at a throwaway database, as
//! `make bench` does.
//!
//! Run with `cargo bench -p keyturn --bench store`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use keyturn::core::{Clock, KeyId, PepperId, PepperRing, Scopes, SystemClock, Token};
use keyturn::store::{DatabaseUrl, Store};
use keyturn::{Caller, Config, Keyring, NewKey, RotateOptions};
use rand_core::OsRng;
use tokio::runtime::Runtime;

/// The variable that names a PostgreSQL database for these benchmarks.
const POSTGRES_URL_VAR: &str = "KEYTURN_BENCH_POSTGRES_URL";
/// Keys verified by one fresh keyring before the next one replaces it. Each of them is a cold
/// miss, because a fresh keyring's cache is empty.
const COLD_POOL_KEYS: usize = 1_000;

/// A store to measure, with the temporary directory that contains it, if any.
struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn bench_store(c: &mut Criterion) {
    // One worker thread, as in the Python binding, where every call goes through `block_on`.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let pepper = PepperRing::generate_entry(&PepperId::parse("1").unwrap(), &mut OsRng);
    let peppers = PepperRing::parse_list(&pepper).unwrap();

    for backend in backends(&runtime) {
        let keyring = || Keyring::new(Arc::clone(&backend.store), peppers.clone(), clock(), Config::default());
        let mut group = c.benchmark_group(backend.name);
        bench_cold_miss(&mut group, &runtime, keyring);
        bench_mutations(&mut group, &runtime, &keyring());
        group.finish();
    }
}

/// Verifies keys that this process has not cached: each iteration parses the token, misses the
/// cache, reads one key from the store, computes the HMAC and caches the record.
fn bench_cold_miss(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &Runtime,
    keyring: impl Fn() -> Arc<Keyring>,
) {
    let creator = keyring();
    let tokens: Vec<Token> = (0..COLD_POOL_KEYS)
        .map(|_| runtime.block_on(creator.create(new_key(), &Caller::cli())).unwrap().token)
        .collect();
    let scopes = Scopes::default();

    group.bench_function("verify_cold_miss", |b| {
        b.iter_custom(|iterations| {
            let mut measured = Duration::ZERO;
            let mut remaining = iterations;
            while remaining > 0 {
                let fresh = keyring();
                runtime.block_on(fresh.sync_cache()).unwrap();
                let batch = remaining.min(tokens.len() as u64);

                let started = Instant::now();
                for token in &tokens[..batch as usize] {
                    let decision = runtime.block_on(fresh.verify(std::hint::black_box(token.expose()), &scopes, None));
                    std::hint::black_box(decision.unwrap());
                }
                measured += started.elapsed();

                assert_eq!(fresh.cache_stats().misses, batch, "every verification must read the store");
                remaining -= batch;
            }
            measured
        })
    });
}

/// Creates, rotates and revokes keys; rotate and revoke act on a key created outside the timing.
fn bench_mutations(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &Runtime,
    keyring: &Keyring,
) {
    let caller = Caller::cli();
    let create = || runtime.block_on(keyring.create(new_key(), &caller)).unwrap().record.key_id;

    group.bench_function("create", |b| {
        b.iter(|| runtime.block_on(keyring.create(new_key(), &caller)).unwrap());
    });
    group.bench_function("rotate", |b| {
        b.iter_batched(
            create,
            |key_id: KeyId| runtime.block_on(keyring.rotate(&key_id, &RotateOptions::default(), &caller)).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("revoke", |b| {
        b.iter_batched(
            create,
            |key_id: KeyId| runtime.block_on(keyring.revoke(&key_id, Some("benchmark"), &caller)).unwrap(),
            BatchSize::SmallInput,
        );
    });
}

/// Returns the stores to measure: a new SQLite file, and the PostgreSQL database named by
/// `KEYTURN_BENCH_POSTGRES_URL` when it is set and opens.
fn backends(runtime: &Runtime) -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::parse(dir.path().join("bench.db").to_str().unwrap()).unwrap();
    let sqlite = runtime.block_on(keyturn::open_store(&url, true)).unwrap();
    let mut backends = vec![Backend { name: "sqlite", store: sqlite, _dir: Some(dir) }];

    let text = std::env::var(POSTGRES_URL_VAR).unwrap_or_default();
    if text.trim().is_empty() {
        eprintln!("{POSTGRES_URL_VAR} is not set; skipping the PostgreSQL benchmarks");
        return backends;
    }
    let opened = DatabaseUrl::parse(&text)
        .map_err(keyturn::Error::from)
        .and_then(|url| runtime.block_on(keyturn::open_store(&url, false)));
    match opened {
        Ok(store) => backends.push(Backend { name: "postgres", store, _dir: None }),
        // The error names the database with its password replaced, never the password.
        Err(error) => eprintln!("skipping the PostgreSQL benchmarks: {error}"),
    }
    backends
}

fn new_key() -> NewKey {
    NewKey { name: "bench".into(), owner: Some("benchmarks".into()), ..NewKey::default() }
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
