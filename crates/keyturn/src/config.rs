//! Service settings with their defaults. Front ends build a [`Config`] from their own option
//! names (`KEYTURN_*` variables, Flask config keys, CLI flags) and pass it here.

use std::time::Duration as StdDuration;

use keyturn_core::{CredentialConfig, Policy, ResponseConfig, TokenFormat, TrustedProxies};

use crate::GuardConfig;

/// The bounds on how quickly changes made elsewhere reach this process's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consistency {
    /// The longest a cached answer is trusted after the follower's last successful sync. A
    /// revocation made by another process is honoured here within this bound. Default 1 s.
    pub max_staleness: StdDuration,
    /// How often the follower polls the store's change sequence. Default 250 ms.
    pub poll_interval: StdDuration,
    /// Read through to the store on every verification. Default off.
    pub strict: bool,
}

/// Settings of a [`crate::Keyring`].
#[derive(Debug, Clone)]
pub struct Config {
    pub format: TokenFormat,
    pub responses: ResponseConfig,
    pub credentials: CredentialConfig,
    /// The policy of new keys that do not set their own expiry, grace or warning window.
    pub policy: Policy,
    pub consistency: Consistency,
    /// How long an unknown key id is remembered, so a flood of random ids is answered from memory.
    /// Default 1 s.
    pub unknown_key_ttl: StdDuration,
    /// Maximum number of cached key ids. Default 100,000.
    pub cache_capacity: usize,
    /// Maximum number of concurrent store reads for cache misses. Default 16.
    pub max_concurrent_lookups: usize,
    /// How long a verification waits for a store read, including the wait for a lookup slot,
    /// before it fails as unavailable (503). Default 500 ms, so an unreachable store ties up no
    /// web worker for the store's own connect and acquire timeouts.
    pub lookup_timeout: StdDuration,
    /// How often usage counters, rehashes, exposure reports and guard audit events are written.
    /// Default 1 s.
    pub flush_interval: StdDuration,
    /// Count verifications per key and outcome, with each key's first and last use and last
    /// client address. Default on. Without it the migration report and the stale-key listing see
    /// no use; lifecycle events that verifications observe are still recorded.
    pub track_usage: bool,
    /// The brute-force guard's limits, or `None` to count no failures. Default on, with
    /// [`GuardConfig::default`].
    pub guard: Option<GuardConfig>,
    /// The proxies whose `X-Forwarded-For` names the client, read by
    /// [`crate::Keyring::client_addr`]. Default none.
    pub trusted_proxies: TrustedProxies,
    /// How often the background tasks run the scheduler, which records the lifecycle events
    /// that time alone causes, or `None` not to run it in this process. Default `None`;
    /// `keyturn serve` runs it every 30 s.
    pub schedule_interval: Option<StdDuration>,
}

impl Default for Consistency {
    fn default() -> Self {
        Consistency {
            max_staleness: StdDuration::from_secs(1),
            poll_interval: StdDuration::from_millis(250),
            strict: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format: TokenFormat::default(),
            responses: ResponseConfig::default(),
            credentials: CredentialConfig::default(),
            policy: Policy::default(),
            consistency: Consistency::default(),
            unknown_key_ttl: StdDuration::from_secs(1),
            cache_capacity: 100_000,
            max_concurrent_lookups: 16,
            lookup_timeout: StdDuration::from_millis(500),
            flush_interval: StdDuration::from_secs(1),
            track_usage: true,
            guard: Some(GuardConfig::default()),
            trusted_proxies: TrustedProxies::default(),
            schedule_interval: None,
        }
    }
}
