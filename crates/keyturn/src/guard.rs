//! The brute-force guard: counts failed verifications per client address in this process. Once an
//! address fails more often than the limit within the failure window, its further failed
//! verifications are rejected with 429 until a cooldown ends. A request whose key verifies is never
//! throttled, because clients behind one NAT share an address, and a 178-bit secret cannot be
//! found by guessing whatever the rate. The guard never touches the store; the keyring turns the
//! start of each block into one audit event, written behind.
//!
//! IPv6 addresses are counted by their /64 prefix, which is what one subscriber or site usually
//! holds, so a client cannot escape the limit by changing the low 64 bits of its address.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration as StdDuration;

use keyturn_core::client_addr::parse_ip;
use keyturn_core::{Duration, Instant};

use crate::keyring::millis;
use crate::Error;

/// Limits of the brute-force guard. Every value is checked when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    max_failures: u32,
    window: StdDuration,
    cooldown: StdDuration,
    max_clients: usize,
}

/// The guard's counters since the keyring was created, and its state now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Failed verifications rejected with 429.
    pub throttled: u64,
    /// Client addresses blocked, counted once per block.
    pub blocks: u64,
    /// Client addresses blocked now.
    pub blocked_clients: usize,
    /// Client addresses with failures in memory, blocked or not.
    pub tracked_clients: usize,
}

const MIN_PERIOD: StdDuration = StdDuration::from_secs(1);
const MAX_PERIOD: StdDuration = StdDuration::from_secs(24 * 60 * 60);
const MAX_MAX_CLIENTS: usize = 1_000_000;
/// Stale elements the order of a few clients may hold before it is compacted.
const ORDER_SLACK: usize = 1024;

impl GuardConfig {
    /// Failures from one client address allowed within the window: 20.
    pub const DEFAULT_MAX_FAILURES: u32 = 20;
    /// The largest `max_failures` accepted.
    pub const MAX_FAILURES_LIMIT: u32 = 100_000;
    /// The failure window, counted from the first failure of an address: 60 s.
    pub const DEFAULT_WINDOW: StdDuration = StdDuration::from_secs(60);
    /// How long a blocked address stays blocked: 60 s.
    pub const DEFAULT_COOLDOWN: StdDuration = StdDuration::from_secs(60);
    /// Client addresses tracked at once before the oldest is forgotten: 100,000, about 12 MB at
    /// an estimated 120 bytes each.
    pub const DEFAULT_MAX_CLIENTS: usize = 100_000;

    /// Creates limits that allow `max_failures` failed verifications per client address within
    /// `window`, and block the address for `cooldown` at the next failure. `max_failures` must be
    /// 1 to 100,000, and both durations whole seconds from 1 s to 24 h.
    pub fn new(max_failures: u32, window: StdDuration, cooldown: StdDuration) -> Result<Self, Error> {
        if !(1..=Self::MAX_FAILURES_LIMIT).contains(&max_failures) {
            let limit = Self::MAX_FAILURES_LIMIT;
            return Err(invalid("guard max failures", format!("{max_failures} must be 1 to {limit}")));
        }
        check_period("guard window", window)?;
        check_period("guard cooldown", cooldown)?;
        Ok(GuardConfig { max_failures, window, cooldown, max_clients: Self::DEFAULT_MAX_CLIENTS })
    }

    /// Sets how many client addresses are tracked at once, 1 to 1,000,000. When a new address
    /// arrives at the limit, the address whose last failure is oldest is forgotten.
    pub fn with_max_clients(mut self, max_clients: usize) -> Result<Self, Error> {
        if !(1..=MAX_MAX_CLIENTS).contains(&max_clients) {
            return Err(invalid("guard max clients", format!("{max_clients} must be 1 to {MAX_MAX_CLIENTS}")));
        }
        self.max_clients = max_clients;
        Ok(self)
    }

    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    pub fn window(&self) -> StdDuration {
        self.window
    }

    pub fn cooldown(&self) -> StdDuration {
        self.cooldown
    }

    pub fn max_clients(&self) -> usize {
        self.max_clients
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_failures: Self::DEFAULT_MAX_FAILURES,
            window: Self::DEFAULT_WINDOW,
            cooldown: Self::DEFAULT_COOLDOWN,
            max_clients: Self::DEFAULT_MAX_CLIENTS,
        }
    }
}

fn check_period(field: &'static str, value: StdDuration) -> Result<(), Error> {
    let whole_seconds = value.subsec_nanos() == 0;
    if value < MIN_PERIOD || value > MAX_PERIOD || !whole_seconds {
        let duration = Duration::from_millis(millis(value));
        return Err(invalid(field, format!("{duration} must be whole seconds from 1s to 24h, such as 60s")));
    }
    Ok(())
}

fn invalid(field: &'static str, reason: String) -> Error {
    Error::InvalidInput { field, reason }
}

/// The unit the guard counts by: an IPv4 address, or the /64 prefix of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ClientKey {
    V4(Ipv4Addr),
    V6Prefix(u64),
}

impl ClientKey {
    fn of(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            // The upper 64 bits of the address, which `>> 64` leaves in range of u64.
            IpAddr::V6(v6) => ClientKey::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(v4) => write!(f, "{v4}"),
            ClientKey::V6Prefix(prefix) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*prefix) << 64)),
        }
    }
}

/// The response to one failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send the rejection the decision calls for.
    Counted,
    /// Send 429 with `Retry-After: retry_after_secs`. `block` is set on the failure that
    /// started the block.
    Throttled { retry_after_secs: u64, block: Option<Block> },
}

/// The facts of a block, for its audit event and log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    pub client: ClientKey,
    /// Failures within the window, the one that started the block included.
    pub failures: u32,
    pub first_failure_at: Instant,
    pub blocked_until: Instant,
}

/// The per-process failure counts.
pub(crate) struct Guard {
    config: GuardConfig,
    clients: Mutex<Clients>,
    throttled: AtomicU64,
    blocks: AtomicU64,
}

#[derive(Default)]
struct Clients {
    entries: HashMap<ClientKey, Entry>,
    /// Client keys in the order of their last failure, oldest first. An element whose serial
    /// differs from its entry's is stale: that client failed again since and sits further back.
    order: VecDeque<(ClientKey, u64)>,
    next_serial: u64,
}

struct Entry {
    serial: u64,
    window_started: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

impl Guard {
    pub(crate) fn new(config: GuardConfig) -> Self {
        Guard { config, clients: Mutex::default(), throttled: AtomicU64::new(0), blocks: AtomicU64::new(0) }
    }

    pub(crate) fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// Counts a failed verification from `client_addr` at `now` and returns the response to send. An
    /// address that does not parse is not counted.
    pub(crate) fn record_failure(&self, client_addr: &str, now: Instant) -> Verdict {
        let Some(address) = parse_ip(client_addr) else { return Verdict::Counted };
        let client = ClientKey::of(address);
        let window = millis(self.config.window);
        let cooldown = millis(self.config.cooldown);

        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = clients.touch(client, now, self.config.max_clients);

        if let Some(until) = entry.blocked_until {
            if now < until {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                return Verdict::Throttled { retry_after_secs: retry_after_secs(now, until, cooldown), block: None };
            }
            entry.blocked_until = None;
            entry.failures = 0;
        }
        // A window that ended, or an instant before it started because the clock moved back,
        // starts a new window at this failure.
        let window_ended = now.as_millis() >= entry.window_started.as_millis().saturating_add(window);
        if entry.failures == 0 || window_ended || now < entry.window_started {
            entry.window_started = now;
            entry.failures = 0;
        }

        entry.failures = entry.failures.saturating_add(1);
        if entry.failures <= self.config.max_failures {
            return Verdict::Counted;
        }
        let blocked_until = now.saturating_add(Duration::from_millis(cooldown));
        entry.blocked_until = Some(blocked_until);
        let block = Block { client, failures: entry.failures, first_failure_at: entry.window_started, blocked_until };
        self.throttled.fetch_add(1, Ordering::Relaxed);
        self.blocks.fetch_add(1, Ordering::Relaxed);
        Verdict::Throttled { retry_after_secs: retry_after_secs(now, blocked_until, cooldown), block: Some(block) }
    }

    /// Returns the counters, and counts the addresses blocked at `now` by reading every tracked
    /// entry once.
    pub(crate) fn stats(&self, now: Instant) -> GuardStats {
        let clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let blocked_clients =
            clients.entries.values().filter(|entry| entry.blocked_until.is_some_and(|until| now < until)).count();
        GuardStats {
            throttled: self.throttled.load(Ordering::Relaxed),
            blocks: self.blocks.load(Ordering::Relaxed),
            blocked_clients,
            tracked_clients: clients.entries.len(),
        }
    }
}

impl Clients {
    /// Returns the entry of `client`, creating it when absent and forgetting the client with the
    /// oldest last failure when `max_clients` are tracked already. Moves `client` to the back of
    /// the order.
    fn touch(&mut self, client: ClientKey, now: Instant, max_clients: usize) -> &mut Entry {
        let serial = self.next_serial;
        self.next_serial += 1;
        if self.entries.len() >= max_clients && !self.entries.contains_key(&client) {
            while self.entries.len() >= max_clients {
                self.evict_oldest();
            }
        }
        self.compact();
        self.order.push_back((client, serial));

        let entry = self.entries.entry(client).or_insert(Entry {
            serial,
            window_started: now,
            failures: 0,
            blocked_until: None,
        });
        entry.serial = serial;
        entry
    }

    fn evict_oldest(&mut self) {
        while let Some((client, serial)) = self.order.pop_front() {
            if self.entries.get(&client).is_some_and(|entry| entry.serial == serial) {
                self.entries.remove(&client);
                return;
            }
        }
    }

    /// Drops stale elements of the order once they outnumber the live ones, so the order contains
    /// at most twice the tracked clients or twice [`ORDER_SLACK`], and each failure pays
    /// for its share of the cleanup.
    fn compact(&mut self) {
        if self.order.len() < 2 * self.entries.len().max(ORDER_SLACK) {
            return;
        }
        let entries = &self.entries;
        self.order.retain(|(client, serial)| entries.get(client).is_some_and(|entry| entry.serial == *serial));
    }
}

/// Returns the whole seconds from `now` until `until`, rounded up, at least 1 and at most the
/// cooldown, so a clock moved back cannot make a client wait longer than one cooldown.
fn retry_after_secs(now: Instant, until: Instant, cooldown_ms: i64) -> u64 {
    let remaining = until.as_millis().saturating_sub(now.as_millis()).clamp(1, cooldown_ms.max(1));
    u64::try_from(remaining).unwrap_or(1).div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const SECOND: i64 = 1000;

    fn guard(max_failures: u32, window_secs: u64, cooldown_secs: u64) -> Guard {
        let config =
            GuardConfig::new(max_failures, StdDuration::from_secs(window_secs), StdDuration::from_secs(cooldown_secs))
                .unwrap();
        Guard::new(config)
    }

    fn at(offset_ms: i64) -> Instant {
        Instant::from_millis(T0 + offset_ms)
    }

    fn fail_times(guard: &Guard, address: &str, count: u32, now: Instant) -> Vec<Verdict> {
        (0..count).map(|_| guard.record_failure(address, now)).collect()
    }

    fn retry_after(verdict: &Verdict) -> Option<u64> {
        match verdict {
            Verdict::Throttled { retry_after_secs, .. } => Some(*retry_after_secs),
            Verdict::Counted => None,
        }
    }

    #[test]
    fn failures_up_to_limit_counted() {
        let guard = guard(3, 60, 60);
        let verdicts = fail_times(&guard, "203.0.113.7", 3, at(0));
        assert!(verdicts.iter().all(|verdict| *verdict == Verdict::Counted));
        assert_eq!(guard.stats(at(0)).blocked_clients, 0);
    }

    #[test]
    fn failure_past_limit_starts_block() {
        let guard = guard(3, 60, 60);
        fail_times(&guard, "203.0.113.7:5000", 3, at(0));
        let verdict = guard.record_failure("203.0.113.7:5001", at(2 * SECOND));
        let Verdict::Throttled { retry_after_secs, block: Some(block) } = verdict else {
            panic!("expected the fourth failure to start a block, got {verdict:?}");
        };
        assert_eq!(retry_after_secs, 60);
        assert_eq!(block.client.to_string(), "203.0.113.7");
        assert_eq!(block.failures, 4);
        assert_eq!(block.first_failure_at, at(0));
        assert_eq!(block.blocked_until, at(62 * SECOND));

        let stats = guard.stats(at(2 * SECOND));
        assert_eq!((stats.throttled, stats.blocks, stats.blocked_clients), (1, 1, 1));
    }

    #[test]
    fn blocked_failures_throttled_without_new_block() {
        let guard = guard(2, 60, 60);
        fail_times(&guard, "203.0.113.7", 3, at(0));
        let verdict = guard.record_failure("203.0.113.7", at(59_500));
        assert_eq!(verdict, Verdict::Throttled { retry_after_secs: 1, block: None });
        let verdict = guard.record_failure("203.0.113.7", at(10 * SECOND));
        assert_eq!(verdict, Verdict::Throttled { retry_after_secs: 50, block: None });
        assert_eq!(guard.stats(at(10 * SECOND)).blocks, 1);
        assert_eq!(guard.stats(at(10 * SECOND)).throttled, 3);
    }

    #[test]
    fn window_end_resets_count() {
        let guard = guard(2, 60, 60);
        fail_times(&guard, "203.0.113.7", 2, at(0));
        assert_eq!(guard.record_failure("203.0.113.7", at(60 * SECOND)), Verdict::Counted);
        assert_eq!(guard.record_failure("203.0.113.7", at(61 * SECOND)), Verdict::Counted);
        assert!(retry_after(&guard.record_failure("203.0.113.7", at(62 * SECOND))).is_some());
    }

    #[test]
    fn cooldown_end_starts_new_episode() {
        let guard = guard(1, 60, 30);
        fail_times(&guard, "203.0.113.7", 2, at(0));
        assert_eq!(guard.stats(at(30 * SECOND - 1)).blocked_clients, 1);
        assert_eq!(guard.stats(at(30 * SECOND)).blocked_clients, 0);

        assert_eq!(guard.record_failure("203.0.113.7", at(30 * SECOND)), Verdict::Counted);
        let verdict = guard.record_failure("203.0.113.7", at(31 * SECOND));
        assert!(matches!(verdict, Verdict::Throttled { block: Some(_), .. }), "{verdict:?}");
        assert_eq!(guard.stats(at(31 * SECOND)).blocks, 2);
    }

    #[test]
    fn other_addresses_unaffected() {
        let guard = guard(1, 60, 60);
        fail_times(&guard, "203.0.113.7", 2, at(0));
        assert_eq!(guard.record_failure("203.0.113.8", at(0)), Verdict::Counted);
        assert_eq!(guard.record_failure("2001:db8:1:2::1", at(0)), Verdict::Counted);
    }

    #[test]
    fn ipv6_counted_by_64_prefix() {
        let guard = guard(2, 60, 60);
        guard.record_failure("2001:db8:1:2::1", at(0));
        guard.record_failure("[2001:db8:1:2:ffff::9]:443", at(0));
        let verdict = guard.record_failure("2001:db8:1:2:abcd::1", at(0));
        let Verdict::Throttled { block: Some(block), .. } = verdict else {
            panic!("expected a block, got {verdict:?}")
        };
        assert_eq!(block.client.to_string(), "2001:db8:1:2::/64");
        assert_eq!(guard.record_failure("2001:db8:1:3::1", at(0)), Verdict::Counted);
    }

    #[test]
    fn ipv4_mapped_counts_as_ipv4() {
        let guard = guard(1, 60, 60);
        guard.record_failure("::ffff:203.0.113.7", at(0));
        assert!(retry_after(&guard.record_failure("203.0.113.7", at(0))).is_some());
    }

    #[test]
    fn unparsable_address_not_counted() {
        let guard = guard(1, 60, 60);
        let verdicts = fail_times(&guard, "unknown", 5, at(0));
        assert!(verdicts.iter().all(|verdict| *verdict == Verdict::Counted));
        assert_eq!(guard.stats(at(0)).tracked_clients, 0);
    }

    #[test]
    fn clock_moved_back_caps_retry_after() {
        let guard = guard(1, 60, 60);
        fail_times(&guard, "203.0.113.7", 2, at(0));
        let verdict = guard.record_failure("203.0.113.7", at(-3_600 * SECOND));
        assert_eq!(retry_after(&verdict), Some(60));
    }

    #[test]
    fn eviction_keeps_cap_and_forgets_oldest() {
        let config = GuardConfig::new(1, StdDuration::from_secs(60), StdDuration::from_secs(60))
            .unwrap()
            .with_max_clients(3)
            .unwrap();
        let guard = Guard::new(config);
        for (index, address) in ["192.0.2.1", "192.0.2.2", "192.0.2.3"].into_iter().enumerate() {
            guard.record_failure(address, at(index as i64));
        }
        // 192.0.2.1 fails again, so 192.0.2.2 now has the oldest last failure.
        assert!(retry_after(&guard.record_failure("192.0.2.1", at(10))).is_some());
        guard.record_failure("192.0.2.4", at(11));

        assert_eq!(guard.stats(at(11)).tracked_clients, 3);
        assert!(retry_after(&guard.record_failure("192.0.2.1", at(12))).is_some(), "192.0.2.1 was forgotten");
        assert_eq!(guard.record_failure("192.0.2.2", at(13)), Verdict::Counted, "192.0.2.2 was kept");
    }

    #[test]
    fn flood_of_addresses_stays_bounded() {
        let config = GuardConfig::default().with_max_clients(1_000).unwrap();
        let guard = Guard::new(config);
        for index in 0..20_000u32 {
            let address = Ipv4Addr::from(0xC633_0000 + index).to_string();
            guard.record_failure(&address, at(i64::from(index)));
        }
        let clients = guard.clients.lock().unwrap();
        assert_eq!(clients.entries.len(), 1_000);
        assert!(clients.order.len() <= 2 * ORDER_SLACK, "order holds {} elements", clients.order.len());
    }

    #[test]
    fn repeated_failures_keep_order_bounded() {
        let guard = guard(100_000, 60, 60);
        for index in 0..10_000 {
            guard.record_failure("203.0.113.7", at(index));
        }
        let clients = guard.clients.lock().unwrap();
        assert_eq!(clients.entries.len(), 1);
        assert!(clients.order.len() <= 2 * ORDER_SLACK, "order holds {} elements", clients.order.len());
    }

    #[test]
    fn config_rejects_out_of_range_values() {
        let minute = StdDuration::from_secs(60);
        let cases = [
            (0, minute, minute, "guard max failures"),
            (100_001, minute, minute, "guard max failures"),
            (20, StdDuration::ZERO, minute, "guard window"),
            (20, StdDuration::from_millis(1500), minute, "guard window"),
            (20, StdDuration::from_secs(86_401), minute, "guard window"),
            (20, minute, StdDuration::from_millis(500), "guard cooldown"),
            (20, minute, StdDuration::from_secs(7 * 86_400), "guard cooldown"),
        ];
        for (max_failures, window, cooldown, field) in cases {
            let message = GuardConfig::new(max_failures, window, cooldown).unwrap_err().to_string();
            assert!(message.starts_with(&format!("invalid {field}: ")), "{message}");
        }
        assert!(GuardConfig::default().with_max_clients(0).is_err());
        assert!(GuardConfig::default().with_max_clients(2_000_000).is_err());
        assert_eq!(GuardConfig::new(20, minute, minute).unwrap(), GuardConfig::default());
    }
}
