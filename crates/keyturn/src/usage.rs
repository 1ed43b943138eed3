//! Usage counters of cached keys, updated without a lock on the verify path.
//!
//! Each cache entry of a known key owns a [`UsageCell`]: one atomic counter per outcome, the
//! first and last use in milliseconds, and the last client address. A verification served from
//! the cache adds to the cell with atomic operations. The first use of a cell since the last
//! flush also queues the cell in [`UsageCells`], behind a mutex taken once per key and flush
//! interval. The background writer takes the queued cells, swaps their counters to zero and
//! writes the counts.
//!
//! No count is lost to a race with the writer: a verification adds its count before it checks
//! whether the cell is queued, and the writer marks the cell as not queued before it swaps the
//! counters. So a count that the swap misses belongs to a verification that then finds the cell
//! not queued and queues it again. Every one of these operations is sequentially consistent.
//! The times and the client address are never reset: the store keeps the minimum of the first
//! uses and the maximum of the last uses it receives, so sending them again changes nothing.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keyturn_core::{Instant, KeyId, Outcome};
use keyturn_store::UsageRecord;

/// Every outcome a verification can count, in the order of [`outcome_index`].
const OUTCOMES: [Outcome; 9] = [
    Outcome::Active,
    Outcome::Expiring,
    Outcome::Grace,
    Outcome::Superseded,
    Outcome::Expired,
    Outcome::Rotated,
    Outcome::Revoked,
    Outcome::Invalid,
    Outcome::RotationRequested,
];

fn outcome_index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Active => 0,
        Outcome::Expiring => 1,
        Outcome::Grace => 2,
        Outcome::Superseded => 3,
        Outcome::Expired => 4,
        Outcome::Rotated => 5,
        Outcome::Revoked => 6,
        Outcome::Invalid => 7,
        Outcome::RotationRequested => 8,
    }
}

/// The usage of one cached key since the writer last took it.
#[derive(Debug)]
pub(crate) struct UsageCell {
    key_id: KeyId,
    counts: [AtomicU64; OUTCOMES.len()],
    /// Milliseconds since the Unix epoch; `i64::MAX` until the first use.
    first_used_ms: AtomicI64,
    /// Milliseconds since the Unix epoch; `i64::MIN` until the first use.
    last_used_ms: AtomicI64,
    /// A keyed hash of `client_addr`, so a verification from the same address as the last one
    /// compares two integers instead of taking the mutex; 0 while no address was seen.
    client_fingerprint: AtomicU64,
    client_addr: Mutex<Option<Box<str>>>,
    /// Whether the cell is in the writer's queue.
    queued: AtomicBool,
    /// Whether a verification already reported this cell's key as used for the first time.
    first_use_noted: AtomicBool,
}

/// The cells with usage that the writer has not taken yet.
#[derive(Debug, Default)]
pub(crate) struct UsageCells {
    queued: Mutex<Vec<Arc<UsageCell>>>,
    /// Keys the client address fingerprints, so a client cannot choose an address whose
    /// fingerprint equals another's and hide its own.
    hasher: std::collections::hash_map::RandomState,
}

impl UsageCell {
    pub(crate) fn new(key_id: KeyId) -> Self {
        UsageCell {
            key_id,
            counts: Default::default(),
            first_used_ms: AtomicI64::new(i64::MAX),
            last_used_ms: AtomicI64::new(i64::MIN),
            client_fingerprint: AtomicU64::new(0),
            client_addr: Mutex::new(None),
            queued: AtomicBool::new(false),
            first_use_noted: AtomicBool::new(false),
        }
    }

    /// Returns `true` the first time it is called for this cell, so that the first use of a key
    /// that the store shows as never used is reported once per cached entry.
    pub(crate) fn note_first_use(&self) -> bool {
        !self.first_use_noted.load(Ordering::Relaxed) && !self.first_use_noted.swap(true, Ordering::Relaxed)
    }
}

impl UsageCells {
    /// Counts one verification of the cell's key with `outcome` at `now` from `client_addr`.
    /// Takes a lock only for the first use of the cell since the last flush and when the client
    /// address differs from the last one.
    pub(crate) fn note(&self, cell: &Arc<UsageCell>, outcome: Outcome, now: Instant, client_addr: Option<&str>) {
        let now_ms = now.as_millis();
        // Most verifications fall in a millisecond that is already recorded, so a plain load
        // avoids the locked read-modify-write.
        if now_ms > cell.last_used_ms.load(Ordering::Relaxed) {
            cell.last_used_ms.fetch_max(now_ms, Ordering::Relaxed);
        }
        if now_ms < cell.first_used_ms.load(Ordering::Relaxed) {
            cell.first_used_ms.fetch_min(now_ms, Ordering::Relaxed);
        }
        if let Some(client_addr) = client_addr {
            self.note_client(cell, client_addr);
        }

        cell.counts[outcome_index(outcome)].fetch_add(1, Ordering::SeqCst);
        if !cell.queued.load(Ordering::SeqCst) && !cell.queued.swap(true, Ordering::SeqCst) {
            self.queued.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(Arc::clone(cell));
        }
    }

    fn note_client(&self, cell: &UsageCell, client_addr: &str) {
        // Zero marks "no address yet", so a hash of zero is moved to one.
        let fingerprint = self.hasher.hash_one(client_addr).max(1);
        if cell.client_fingerprint.load(Ordering::Relaxed) == fingerprint {
            return;
        }
        let mut stored = cell.client_addr.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if stored.as_deref() != Some(client_addr) {
            *stored = Some(client_addr.into());
        }
        cell.client_fingerprint.store(fingerprint, Ordering::Relaxed);
    }

    /// Takes the usage of every queued cell, as one record per cell with a count. Cells that a
    /// cache eviction dropped are still taken, so their counts reach the store.
    pub(crate) fn take(&self) -> Vec<UsageRecord> {
        let cells = std::mem::take(&mut *self.queued.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        cells.iter().filter_map(|cell| Self::take_cell(cell)).collect()
    }

    fn take_cell(cell: &UsageCell) -> Option<UsageRecord> {
        // The order matters: see the module documentation.
        cell.queued.store(false, Ordering::SeqCst);
        let counts: Vec<(Outcome, u64)> = OUTCOMES
            .iter()
            .zip(&cell.counts)
            .filter_map(|(outcome, count)| Some((*outcome, count.swap(0, Ordering::SeqCst))).filter(|(_, n)| *n > 0))
            .collect();
        if counts.is_empty() {
            return None;
        }
        let first_used_ms = cell.first_used_ms.load(Ordering::SeqCst);
        let last_used_ms = cell.last_used_ms.load(Ordering::SeqCst);
        Some(UsageRecord {
            key_id: cell.key_id.clone(),
            first_used_at: Instant::from_millis(first_used_ms.min(last_used_ms)),
            last_used_at: Instant::from_millis(last_used_ms.max(first_used_ms)),
            last_client_addr: cell
                .client_addr
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .as_deref()
                .map(str::to_owned),
            counts,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn total(records: &[UsageRecord]) -> u64 {
        records.iter().flat_map(|record| record.counts.iter().map(|(_, count)| count)).sum()
    }

    /// Takes the counters in a tight loop while four threads count uses, far more often than the
    /// writer would, so that takes land between every step of a verification's update.
    #[test]
    fn take_loses_no_count_under_contention() {
        const THREADS: u64 = 4;
        const USES_PER_THREAD: u64 = 200_000;
        let cells = Arc::new(UsageCells::default());
        let cell = Arc::new(UsageCell::new(KeyId::parse("abcdefABCDEF").unwrap()));
        let done = Arc::new(AtomicBool::new(false));

        let taker = {
            let (cells, done) = (Arc::clone(&cells), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut taken = 0;
                let mut takes = 0u64;
                while !done.load(Ordering::SeqCst) && takes < 100_000_000 {
                    taken += total(&cells.take());
                    takes += 1;
                }
                taken
            })
        };
        let verifiers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (cells, cell) = (Arc::clone(&cells), Arc::clone(&cell));
                std::thread::spawn(move || {
                    let client_addr = format!("192.0.2.{thread}");
                    for use_number in 0..USES_PER_THREAD {
                        let outcome = if use_number % 2 == 0 { Outcome::Active } else { Outcome::Grace };
                        cells.note(&cell, outcome, Instant::from_millis(1_000 + use_number as i64), Some(&client_addr));
                    }
                })
            })
            .collect();
        for verifier in verifiers {
            verifier.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        let taken = taker.join().unwrap() + total(&cells.take());

        assert_eq!(taken, THREADS * USES_PER_THREAD);
        assert!(cells.take().is_empty(), "nothing is queued after the last take");
    }

    #[test]
    fn take_reports_times_and_last_client() {
        let cells = UsageCells::default();
        let cell = Arc::new(UsageCell::new(KeyId::parse("abcdefABCDEF").unwrap()));
        cells.note(&cell, Outcome::Active, Instant::from_millis(2_000), Some("192.0.2.1"));
        cells.note(&cell, Outcome::Active, Instant::from_millis(1_000), None);
        cells.note(&cell, Outcome::Expiring, Instant::from_millis(3_000), Some("192.0.2.2"));

        let records = cells.take();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.first_used_at, Instant::from_millis(1_000));
        assert_eq!(record.last_used_at, Instant::from_millis(3_000));
        assert_eq!(record.last_client_addr.as_deref(), Some("192.0.2.2"));
        assert_eq!(record.counts, vec![(Outcome::Active, 2), (Outcome::Expiring, 1)]);
        assert!(cells.take().is_empty(), "a cell without new uses is not queued");
    }
}
