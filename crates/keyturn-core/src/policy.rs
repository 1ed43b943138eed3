//! Expiry policy: how long a key lives, its grace period and its warning window. A policy is
//! materialised into each key record when the key is created, so a key's state never depends on a
//! policy that changed later.

use serde::{Deserialize, Serialize};

use crate::{Duration, Error, Instant};

/// The maximum grace period. Grace is a safety net for a late rotation, and a longer one would
/// let a key that looks expired keep working indefinitely.
pub const MAX_GRACE: Duration = Duration::from_days(90);
/// The maximum warning window.
pub const MAX_WARN_BEFORE: Duration = Duration::from_days(365);

/// The latest expiry a key may have: the end of year 9999, the last instant RFC 3339 can write.
pub const MAX_EXPIRY: Instant = Instant::from_millis(253_402_300_799_999);

/// When a new key expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Expiry {
    /// A lifetime counted from the creation instant.
    After(Duration),
    /// A fixed instant.
    At(Instant),
    /// No expiry: allowed only when asked for explicitly, and audited as such.
    Never,
}

/// The lifetime, grace period and warning window that a new key receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub expiry: Expiry,
    pub grace: Duration,
    pub warn_before: Duration,
    /// The overlap window of a rotation that does not set its own.
    pub default_overlap: Duration,
    /// Whether a key may rotate itself with its own token.
    #[serde(default = "default_self_rotation")]
    pub self_rotation: bool,
    /// How long a chain of rotations may last, counted from the creation of its first key,
    /// before self-rotation is rejected and an operator must issue a new key.
    #[serde(default = "default_max_chain_lifetime")]
    pub max_chain_lifetime: Duration,
}

/// The maximum chain lifetime of the default policy: 365 days.
pub const DEFAULT_MAX_CHAIN_LIFETIME: Duration = Duration::from_days(365);

fn default_self_rotation() -> bool {
    true
}

fn default_max_chain_lifetime() -> Duration {
    DEFAULT_MAX_CHAIN_LIFETIME
}

impl Default for Policy {
    /// 90 days of lifetime, 7 days of grace, a 14-day warning window, a 1-day overlap, and
    /// self-rotation allowed for chains up to 365 days old.
    fn default() -> Self {
        Policy {
            expiry: Expiry::After(Duration::from_days(90)),
            grace: Duration::from_days(7),
            warn_before: Duration::from_days(14),
            default_overlap: Duration::from_days(1),
            self_rotation: default_self_rotation(),
            max_chain_lifetime: DEFAULT_MAX_CHAIN_LIFETIME,
        }
    }
}

impl Policy {
    /// Resolves the expiry into an instant for a key created at `now`, checking that a lifetime
    /// is positive, a fixed instant lies in the future, and the grace period and warning window
    /// are at most [`MAX_GRACE`] and [`MAX_WARN_BEFORE`], so no key outlives its expiry by years.
    pub fn expires_at(&self, now: Instant) -> Result<Option<Instant>, Error> {
        if self.grace > MAX_GRACE {
            return Err(Error::InvalidField {
                field: "grace",
                reason: format!("{} is longer than the maximum grace period of {MAX_GRACE}", self.grace),
            });
        }
        if self.warn_before > MAX_WARN_BEFORE {
            return Err(Error::InvalidField {
                field: "warn_before",
                reason: format!("{} is longer than the maximum warning window of {MAX_WARN_BEFORE}", self.warn_before),
            });
        }
        match self.expiry {
            Expiry::After(lifetime) if lifetime.is_zero() => Err(Error::InvalidField {
                field: "expires_in",
                reason: "a lifetime must be greater than zero; use --no-expiry for a key that never expires".to_owned(),
            }),
            Expiry::After(lifetime) if now.saturating_add(lifetime) > MAX_EXPIRY => Err(Error::InvalidField {
                field: "expires_in",
                reason: format!(
                    "a lifetime of {lifetime} would end after {MAX_EXPIRY}; choose a shorter one, or use \
                     --no-expiry for a key that never expires"
                ),
            }),
            Expiry::After(lifetime) => Ok(Some(now.saturating_add(lifetime))),
            Expiry::At(instant) if instant > MAX_EXPIRY => Err(Error::InvalidField {
                field: "expires_at",
                reason: format!("{instant} is after {MAX_EXPIRY}, the latest expiry a key may have"),
            }),
            Expiry::At(instant) if instant <= now => Err(Error::InvalidField {
                field: "expires_at",
                reason: format!("{instant} is not in the future (now is {now}); choose a later instant"),
            }),
            Expiry::At(instant) => Ok(Some(instant)),
            Expiry::Never => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_matches_documented_values() {
        let policy = Policy::default();
        assert_eq!(policy.expiry, Expiry::After(Duration::from_days(90)));
        assert_eq!(policy.grace, Duration::from_days(7));
        assert_eq!(policy.warn_before, Duration::from_days(14));
        assert!(policy.self_rotation);
        assert_eq!(policy.max_chain_lifetime, Duration::from_days(365));
    }

    #[test]
    fn expiry_rejects_zero_lifetime_and_past_instant() {
        let now = Instant::from_millis(10_000);
        let zero = Policy { expiry: Expiry::After(Duration::ZERO), ..Policy::default() };
        assert!(zero.expires_at(now).is_err());
        let past = Policy { expiry: Expiry::At(now), ..Policy::default() };
        assert!(past.expires_at(now).is_err());
        let long_grace = Policy { grace: Duration::from_days(91), ..Policy::default() };
        assert!(long_grace.expires_at(now).is_err());
        let long_warning = Policy { warn_before: Duration::from_days(366), ..Policy::default() };
        assert!(long_warning.expires_at(now).is_err());
        let far = Policy { expiry: Expiry::After(Duration::from_days(99_999_999)), ..Policy::default() };
        assert!(far.expires_at(now).is_err());
        let never = Policy { expiry: Expiry::Never, ..Policy::default() };
        assert_eq!(never.expires_at(now).unwrap(), None);
    }
}
