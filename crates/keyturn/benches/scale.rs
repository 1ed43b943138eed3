//! Behaviour with many keys in one SQLite file. This measures how long creating them takes, the
//! latency of a verification whose key is not cached (cold), of one whose key is (warm) and of
//! the first verification of a key ever, and the memory that each cached key costs. It also compares the time from opening a keyring to its
//! first verification for a store of 1,000 keys and one of `--keys` keys.
//!
//! Keys are created one by one through `Keyring::create`, the path every front end takes, so each
//! key costs one transaction with its audit event and change-feed row. Tokens stay in memory and
//! are never printed or written; the database lives in a temporary directory that is deleted at
//! the end.
//!
//! Run with `cargo bench -p keyturn --bench scale -- --keys 1000000 --json scale.json`. Linux only,
//! because memory is read from `/proc/self/status`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyturn::core::{Clock, PepperId, PepperRing, Scopes, SystemClock, Token};
use keyturn::store::{DatabaseUrl, SqliteOptions, SqliteStore, Store};
use keyturn::{Caller, Config, Consistency, Keyring, NewKey};
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use tokio::runtime::Runtime;

/// Keys in the small store whose startup time is compared with the large one.
const SMALL_STORE_KEYS: usize = 1_000;
/// Most verifications timed one by one in each of the cold and warm passes.
const MAX_LATENCY_SAMPLES: usize = 10_000;
/// Times each store is opened to measure startup.
const STARTUP_RUNS: usize = 10;

/// Command-line options.
struct Options {
    keys: usize,
    json: Option<String>,
}

fn main() {
    let options = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let pepper = PepperRing::generate_entry(&PepperId::parse("1").unwrap(), &mut OsRng);
    let peppers = PepperRing::parse_list(&pepper).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let large = StoreFixture::open(&runtime, &dir.path().join("large.db"));
    let (tokens, create_elapsed) = large.create_keys(&runtime, &peppers, options.keys);
    let create_rate = options.keys as f64 / create_elapsed.as_secs_f64();
    println!("created {} keys in {:.1} s ({create_rate:.0} keys/s)", options.keys, create_elapsed.as_secs_f64());

    // Memory first, before other keyrings leave freed memory that the allocator would reuse.
    let memory = measure_memory(&runtime, &large, &peppers, &tokens);
    let latency = measure_latency(&runtime, &large, &peppers, &tokens);

    let small = StoreFixture::open(&runtime, &dir.path().join("small.db"));
    let (small_tokens, _) = small.create_keys(&runtime, &peppers, SMALL_STORE_KEYS);
    let startup = measure_startup(&runtime, &peppers, &[(&small, &small_tokens), (&large, &tokens)]);

    let report = json!({
        "keys": options.keys,
        "create_seconds": round(create_elapsed.as_secs_f64(), 2),
        "create_keys_per_second": round(create_rate, 0),
        "database_megabytes": round(database_bytes(&large.path) as f64 / 1e6, 1),
        "cold_verify_us": latency.cold,
        "warm_verify_us": latency.warm,
        "first_use_verify_us": latency.first_use,
        "memory": memory,
        "startup_ms": { "small": startup[0], "large": startup[1] },
        "small_store_keys": SMALL_STORE_KEYS,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    if let Some(path) = options.json {
        std::fs::write(&path, format!("{report}\n")).unwrap_or_else(|error| panic!("cannot write {path}: {error}"));
    }
}

/// A SQLite file and its open store.
struct StoreFixture {
    path: std::path::PathBuf,
    store: Arc<dyn Store>,
}

impl StoreFixture {
    fn open(runtime: &Runtime, path: &Path) -> StoreFixture {
        let store = runtime.block_on(keyturn::open_store(&database_url(path), true)).unwrap();
        StoreFixture { path: path.to_owned(), store }
    }

    fn keyring(&self, peppers: &PepperRing) -> Arc<Keyring> {
        self.keyring_with(peppers, Config::default())
    }

    fn keyring_with(&self, peppers: &PepperRing, config: Config) -> Arc<Keyring> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Keyring::new(Arc::clone(&self.store), peppers.clone(), clock, config)
    }

    /// Creates `count` keys one by one and returns their tokens and the time taken.
    fn create_keys(&self, runtime: &Runtime, peppers: &PepperRing, count: usize) -> (Vec<Token>, Duration) {
        let keyring = self.keyring(peppers);
        let caller = Caller::cli();
        let mut tokens = Vec::with_capacity(count);
        let started = Instant::now();
        for index in 0..count {
            let new = NewKey { name: format!("scale {index}"), owner: Some("scale".into()), ..NewKey::default() };
            tokens.push(runtime.block_on(keyring.create(new, &caller)).unwrap().token);
            if (index + 1) % 100_000 == 0 {
                eprintln!("created {} keys in {:.0} s", index + 1, started.elapsed().as_secs_f64());
            }
        }
        (tokens, started.elapsed())
    }
}

/// Measures resident memory per cached key: the growth of the resident set between caching a
/// tenth of the keys and caching all of them (up to the cache capacity), divided by the number of
/// keys added. Measuring a slope leaves out fixed costs such as SQLite's page cache. Usage
/// counters are flushed after every tenth, so they never cover more keys than that. The keys were
/// verified once before, so their first use is already stored.
fn measure_memory(runtime: &Runtime, fixture: &StoreFixture, peppers: &PepperRing, tokens: &[Token]) -> Value {
    let cached = tokens.len().min(Config::default().cache_capacity);
    let step = (cached / 10).max(1);
    let scopes = Scopes::default();

    // Strict mode caches nothing, so this pass frees no cache memory for the measured one to reuse.
    let strict = Config { consistency: Consistency { strict: true, ..Consistency::default() }, ..Config::default() };
    let first_use = fixture.keyring_with(peppers, strict);
    for chunk in tokens[..cached].chunks(step) {
        for token in chunk {
            runtime.block_on(first_use.verify(token.expose(), &scopes, None)).unwrap();
        }
        runtime.block_on(first_use.flush()).unwrap();
    }
    drop(first_use);

    let keyring = fixture.keyring(peppers);
    runtime.block_on(keyring.sync_cache()).unwrap();
    let mut rss_after_first_step = 0;
    for (index, chunk) in tokens[..cached].chunks(step).enumerate() {
        // The cache serves entries only while the last sync is recent, so sync before each chunk.
        runtime.block_on(keyring.sync_cache()).unwrap();
        for token in chunk {
            let decision = runtime.block_on(keyring.verify(token.expose(), &scopes, None)).unwrap();
            assert!(decision.allowed(), "a created key must verify");
        }
        runtime.block_on(keyring.flush()).unwrap();
        if index == 0 {
            rss_after_first_step = resident_bytes();
        }
    }
    let rss_end = resident_bytes();
    assert_eq!(keyring.cache_stats().misses as usize, cached, "every key must be loaded once");

    let added = cached - step.min(cached);
    let per_key = if added == 0 { 0.0 } else { rss_end.saturating_sub(rss_after_first_step) as f64 / added as f64 };
    println!("memory: {per_key:.0} bytes per cached key ({added} keys added to {step} cached)");
    json!({
        "bytes_per_cached_key": round(per_key, 0),
        "cached_keys": cached,
        "first_step_keys": step,
        "resident_megabytes": round(rss_end as f64 / 1e6, 1),
    })
}

/// Times verifications one by one: first of random keys that this keyring has not cached (each
/// reads the store), then of the same keys again, now cached, and last of random keys that were
/// never verified before. The change follower and the usage writer run, as in a server.
///
/// The keys of the first two passes were verified once before, through another store, as the
/// keys of a running service are. The first use of a key is written at once rather than after
/// the flush interval, so a pass of keys never used before also times those writes. That is
/// the third pass, left out when `measure_memory` used every key.
fn measure_latency(runtime: &Runtime, fixture: &StoreFixture, peppers: &PepperRing, tokens: &[Token]) -> Latency {
    let count = MAX_LATENCY_SAMPLES.min(tokens.len());
    let used = random_indices(tokens.len(), count, &HashSet::new());
    record_first_use(runtime, fixture, peppers, tokens, &used);
    // measure_memory verified the keys before the cache capacity, so they are not first uses.
    let verified: HashSet<usize> =
        (0..Config::default().cache_capacity.min(tokens.len())).chain(used.iter().copied()).collect();
    let never_used = random_indices(tokens.len(), count.min(tokens.len() - verified.len()), &verified);

    let keyring = fixture.keyring(peppers);
    runtime.block_on(keyring.sync_cache()).unwrap();
    {
        let _entered = runtime.enter();
        keyring.start_background();
    }
    let scopes = Scopes::default();
    let timed_pass = |sample: &[usize]| {
        let mut latencies = Vec::with_capacity(sample.len());
        for &index in sample {
            let started = Instant::now();
            let decision = runtime.block_on(keyring.verify(tokens[index].expose(), &scopes, None)).unwrap();
            latencies.push(started.elapsed());
            assert!(decision.allowed(), "a created key must verify");
        }
        latencies
    };
    let before = keyring.cache_stats();
    let cold = timed_pass(&used);
    let after_cold = keyring.cache_stats();
    let warm = timed_pass(&used);
    let after_warm = keyring.cache_stats();
    let first_use = timed_pass(&never_used);
    runtime.block_on(keyring.shutdown());

    assert_eq!(after_cold.misses - before.misses, used.len() as u64, "the cold pass must read every key");
    assert_eq!(after_warm.hits - after_cold.hits, used.len() as u64, "the warm pass must hit the cache");
    let latency = Latency {
        cold: percentiles(cold),
        warm: percentiles(warm),
        first_use: (!never_used.is_empty()).then(|| percentiles(first_use)),
    };
    println!("cold verify: {}", latency.cold);
    println!("warm verify: {}", latency.warm);
    println!("cold verify, first use: {}", latency.first_use.as_ref().unwrap_or(&Value::Null));
    latency
}

/// Verifies the keys at `indices` once and writes their first use, over a store of its own, so
/// that the measured keyring's connections start with nothing of them in SQLite's page cache.
fn record_first_use(
    runtime: &Runtime,
    fixture: &StoreFixture,
    peppers: &PepperRing,
    tokens: &[Token],
    indices: &[usize],
) {
    let store =
        Arc::new(runtime.block_on(SqliteStore::open(&database_url(&fixture.path), &SqliteOptions::default())).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let strict = Config { consistency: Consistency { strict: true, ..Consistency::default() }, ..Config::default() };
    let keyring = Keyring::new(store.clone(), peppers.clone(), clock, strict);
    let scopes = Scopes::default();
    for &index in indices {
        runtime.block_on(keyring.verify(tokens[index].expose(), &scopes, None)).unwrap();
    }
    runtime.block_on(keyring.flush()).unwrap();
    drop(keyring);
    runtime.block_on(store.close());
}

/// The percentiles of the three passes of [`measure_latency`].
struct Latency {
    cold: Value,
    warm: Value,
    first_use: Option<Value>,
}

/// Times opening the store, creating a keyring, its first cache sync and one verification of a
/// random key: what a new process does before it serves its first request. The stores take turns,
/// so that background work left by earlier steps slows both alike, and each run closes its store
/// before the next one starts. The files are in the operating system's page cache, since they were
/// just written.
fn measure_startup(runtime: &Runtime, peppers: &PepperRing, stores: &[(&StoreFixture, &[Token])]) -> Vec<Value> {
    let scopes = Scopes::default();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut runs = vec![Vec::with_capacity(STARTUP_RUNS); stores.len()];
    let samples: Vec<Vec<usize>> = stores
        .iter()
        .map(|(_, tokens)| random_indices(tokens.len(), STARTUP_RUNS.min(tokens.len()), &HashSet::new()))
        .collect();

    for run in 0..STARTUP_RUNS {
        for (store_index, (fixture, tokens)) in stores.iter().enumerate() {
            let Some(&token_index) = samples[store_index].get(run) else { continue };
            let url = database_url(&fixture.path);
            let started = Instant::now();
            let store = Arc::new(runtime.block_on(SqliteStore::open(&url, &SqliteOptions::default())).unwrap());
            let keyring = Keyring::new(store.clone(), peppers.clone(), Arc::clone(&clock), Config::default());
            runtime.block_on(keyring.sync_cache()).unwrap();
            let decision = runtime.block_on(keyring.verify(tokens[token_index].expose(), &scopes, None)).unwrap();
            runs[store_index].push(started.elapsed());
            assert!(decision.allowed(), "a created key must verify");

            // Closing waits for SQLite's checkpoint when the last connection to a file closes,
            // which would otherwise run in the background during the next run.
            drop(keyring);
            runtime.block_on(store.close());
        }
    }

    let millis = |duration: Duration| round(duration.as_secs_f64() * 1e3, 2);
    let mut results = Vec::with_capacity(stores.len());
    for ((_, tokens), mut durations) in stores.iter().zip(runs) {
        durations.sort();
        let startup = json!({
            "keys": tokens.len(),
            "median": millis(durations[durations.len() / 2]),
            "max": millis(durations[durations.len() - 1]),
            "runs": durations.len(),
        });
        println!("startup with {} keys: {startup}", tokens.len());
        results.push(startup);
    }
    results
}

/// Returns `count` distinct indices below `len` and outside `excluded`, drawn at random. The
/// caller leaves at least `count` indices to draw.
fn random_indices(len: usize, count: usize, excluded: &HashSet<usize>) -> Vec<usize> {
    let mut seen = excluded.clone();
    let mut indices = Vec::with_capacity(count);
    while indices.len() < count {
        let index = (OsRng.next_u64() % len as u64) as usize;
        if seen.insert(index) {
            indices.push(index);
        }
    }
    indices
}

/// Returns p50, p99 and the maximum of the latencies in microseconds.
fn percentiles(mut latencies: Vec<Duration>) -> Value {
    latencies.sort();
    let at = |fraction: f64| {
        let index = ((latencies.len() as f64 * fraction) as usize).min(latencies.len() - 1);
        round(latencies[index].as_secs_f64() * 1e6, 1)
    };
    json!({ "p50": at(0.50), "p99": at(0.99), "max": at(1.0), "samples": latencies.len() })
}

/// Returns this process's resident set size in bytes, from `VmRSS` in `/proc/self/status`.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable on Linux");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("/proc/self/status has VmRSS");
    let kilobytes: u64 = line.split_whitespace().nth(1).and_then(|value| value.parse().ok()).expect("VmRSS in kB");
    kilobytes * 1024
}

/// Returns the size of the database file with its WAL file.
fn database_bytes(path: &Path) -> u64 {
    let wal = path.with_extension("db-wal");
    [path, wal.as_path()].iter().filter_map(|file| std::fs::metadata(file).ok()).map(|metadata| metadata.len()).sum()
}

fn database_url(path: &Path) -> DatabaseUrl {
    DatabaseUrl::parse(path.to_str().expect("the temporary directory has a UTF-8 path")).unwrap()
}

fn round(value: f64, digits: i32) -> f64 {
    let factor = 10f64.powi(digits);
    (value * factor).round() / factor
}

/// Parses `--keys N` and `--json PATH`, and ignores the `--bench` flag that `cargo bench` adds.
fn parse_args() -> Options {
    let mut options = Options { keys: SMALL_STORE_KEYS, json: None };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--keys" => {
                let value = args.next().unwrap_or_default();
                options.keys = value.parse().ok().filter(|keys| *keys > 0).unwrap_or_else(|| {
                    panic!("--keys {value:?}: expected a number of keys greater than 0, such as 1000000")
                });
            }
            "--json" => options.json = args.next(),
            "--bench" => {}
            other => panic!("unknown argument {other:?}; expected --keys N and --json PATH"),
        }
    }
    options
}
