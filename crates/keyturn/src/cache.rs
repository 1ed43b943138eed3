//! The verification cache: key records by key id, kept coherent with the store by the change
//! follower. An entry is used only while the follower has synced within the configured maximum
//! staleness, so a revocation made anywhere is honoured within that bound, and a process whose
//! store is unreachable stops trusting its cache instead of serving stale answers forever.
//!
//! The cache holds records, never tokens: a hit still computes one HMAC to check the secret.
//! It counts its hits and misses with relaxed atomic increments, which take no lock and
//! allocate nothing on the verify path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant as MonotonicInstant;

use keyturn_core::{KeyId, KeyRecord};

use crate::usage::UsageCell;

/// A cached lookup: the record, or `None` for a key id the store does not know.
#[derive(Debug, Clone)]
struct Entry {
    record: Option<Arc<KeyRecord>>,
    /// The usage counters of a known key, when usage tracking is on.
    usage: Option<Arc<UsageCell>>,
    loaded_at_ms: i64,
}

/// The result of a cache lookup.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    /// A known key, with its usage counters when usage tracking is on.
    Known(Arc<KeyRecord>, Option<Arc<UsageCell>>),
    Unknown,
    Miss,
}

/// The cache's lookup counters and freshness at one instant, as [`crate::Keyring::cache_stats`]
/// returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served from the cache: a cached record or a remembered unknown key id.
    pub hits: u64,
    /// Lookups that read the store: the key id was not cached, or the cache was stale or
    /// disabled (strict mode). A read that failed counts too.
    pub misses: u64,
    /// Whether cached entries may serve lookups now: caching is on and the change follower
    /// synced within the maximum staleness.
    pub fresh: bool,
}

/// Hit and miss counters, on a cache line of their own: every verification increments one, and
/// sharing a line with `synced_at_ms`, which every lookup reads, would make the threads contend.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Cache {
    origin: MonotonicInstant,
    entries: RwLock<HashMap<KeyId, Entry>>,
    /// Increases whenever an entry is evicted, so a load that raced with an eviction is not cached.
    generation: AtomicU64,
    /// Monotonic milliseconds of the follower's last successful sync; -1 before the first.
    synced_at_ms: AtomicI64,
    /// The change sequence number the cache has applied.
    synced_seq: AtomicI64,
    enabled: AtomicBool,
    /// Whether known entries get usage counters.
    track_usage: bool,
    max_staleness_ms: i64,
    unknown_ttl_ms: i64,
    capacity: usize,
    counters: Counters,
}

impl Cache {
    pub(crate) fn new(max_staleness_ms: i64, unknown_ttl_ms: i64, capacity: usize, track_usage: bool) -> Self {
        Cache {
            origin: MonotonicInstant::now(),
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            synced_at_ms: AtomicI64::new(-1),
            synced_seq: AtomicI64::new(0),
            enabled: AtomicBool::new(true),
            track_usage,
            max_staleness_ms,
            unknown_ttl_ms,
            capacity,
            counters: Counters::default(),
        }
    }

    /// Turns caching off for strict mode: every verification reads through to the store.
    pub(crate) fn disable(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    /// Returns whether cached entries may be used now: caching is on and the follower synced
    /// within the maximum staleness.
    pub(crate) fn is_fresh(&self) -> bool {
        let synced = self.synced_at_ms.load(Ordering::Acquire);
        self.enabled.load(Ordering::Relaxed) && synced >= 0 && self.now_ms() - synced <= self.max_staleness_ms
    }

    /// Looks up a key id, given as the slice of the token that contains it.
    pub(crate) fn lookup(&self, key_id: &str) -> Cached {
        if !self.is_fresh() {
            return Cached::Miss;
        }
        let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        match entries.get(key_id) {
            Some(Entry { record: Some(record), usage, .. }) => Cached::Known(Arc::clone(record), usage.clone()),
            Some(Entry { record: None, loaded_at_ms, .. }) if self.now_ms() - loaded_at_ms < self.unknown_ttl_ms => {
                Cached::Unknown
            }
            _ => Cached::Miss,
        }
    }

    /// Returns the current generation, to pass to [`Cache::insert`] after a store read.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches a store read unless an eviction happened since `generation` was taken, because the
    /// read may then predate the change that caused the eviction.
    pub(crate) fn insert(&self, key_id: KeyId, record: Option<Arc<KeyRecord>>, generation: u64) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(&key_id) {
            // Unknown ids go first: they are cheap to look up again and are what a flood of
            // random ids fills the cache with.
            entries.retain(|_, entry| entry.record.is_some());
            if entries.len() >= self.capacity {
                return;
            }
        }
        let usage = record.as_ref().filter(|_| self.track_usage).map(|_| Arc::new(UsageCell::new(key_id.clone())));
        entries.insert(key_id, Entry { record, usage, loaded_at_ms: self.now_ms() });
    }

    pub(crate) fn evict<'a>(&self, key_ids: impl IntoIterator<Item = &'a KeyId>) {
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        for key_id in key_ids {
            entries.remove(key_id);
        }
    }

    pub(crate) fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Counts a lookup served from the cache.
    pub(crate) fn count_hit(&self) {
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a lookup that reads the store.
    pub(crate) fn count_miss(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the counters and the freshness. The two counters are read one after the other,
    /// so under load their sum can be off by the lookups made in between.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            fresh: self.is_fresh(),
        }
    }

    pub(crate) fn synced_seq(&self) -> i64 {
        self.synced_seq.load(Ordering::Acquire)
    }

    /// Records a successful sync up to `seq`, taken at monotonic instant `started_ms`.
    pub(crate) fn mark_synced(&self, seq: i64, started_ms: i64) {
        self.synced_seq.store(seq, Ordering::Release);
        self.synced_at_ms.store(started_ms, Ordering::Release);
    }

    pub(crate) fn now_ms(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}
