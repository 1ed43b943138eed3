//! Key records and their state at an instant. The state is a pure function of the record and the
//! instant, evaluated in the precedence order of the outcome table: revoked, rotated, expired,
//! superseded, grace, rotation requested, expiring, active. Every interval is half-open, so a key is usable at `t`
//! exactly when `t` is before the deadline.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Duration, Instant, KeyId, Outcome, PepperId, PolicyName, Scopes, TokenHash};

/// Everything the store keeps about one key. The secret itself is never part of it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub key_id: KeyId,
    pub name: String,
    pub owner: Option<String>,
    pub scopes: Scopes,
    pub metadata: Map<String, Value>,
    pub hash: TokenHash,
    pub pepper_id: PepperId,
    pub created_at: Instant,
    /// `None` only for a key created with an explicit request for no expiry.
    pub expires_at: Option<Instant>,
    pub grace: Duration,
    pub warn_before: Duration,
    pub revoked_at: Option<Instant>,
    pub revocation_reason: Option<String>,
    pub rotated_at: Option<Instant>,
    /// The end of the overlap window, set when the key is rotated; capped by the end of grace.
    pub overlap_ends_at: Option<Instant>,
    pub successor_id: Option<KeyId>,
    pub predecessor_id: Option<KeyId>,
    /// When the first key of this rotation chain was created.
    pub chain_started_at: Instant,
    /// Whether the key may rotate itself with its own token; successors inherit it.
    pub self_rotation: bool,
    /// How long the rotation chain may last from `chain_started_at` before self-rotation is
    /// rejected; successors inherit it.
    pub max_chain_lifetime: Duration,
    /// When an operator first asked for this key to be rotated; `None` when nobody did.
    pub rotation_requested_at: Option<Instant>,
    /// The instant by which the key must be rotated. A rotation request also moves `expires_at`
    /// to this deadline when it is later, so a key not rotated by then enters its grace period.
    pub rotation_deadline: Option<Instant>,
    /// The expiry the key had before its first rotation request moved it, which a successor's
    /// lifetime is computed from. Meaningful only when `rotation_requested_at` is set.
    pub expires_before_request: Option<Instant>,
    /// Usage, written behind the verify path; it may lag by one flush interval.
    pub first_used_at: Option<Instant>,
    pub last_used_at: Option<Instant>,
    /// The name of the policy the key was created under; successors keep it.
    pub policy: PolicyName,
    /// Set by a rotation that asked for it: how long the old key keeps working after its
    /// successor's first use, within the overlap window. See [`KeyRecord::shortened_overlap_end`].
    pub overlap_after_first_use: Option<Duration>,
}

/// The state of a key at one instant: its outcome and the next deadline the client must act
/// before, which is what `API-Key-Expires` advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyState {
    pub outcome: Outcome,
    pub deadline: Option<Instant>,
}

impl KeyRecord {
    /// Returns the instant from which the key is rejected as expired: the end of its grace period.
    pub fn grace_ends_at(&self) -> Option<Instant> {
        self.expires_at.map(|expires_at| expires_at.saturating_add(self.grace))
    }

    /// Returns the key's lifetime as created, which a successor receives too. A rotation
    /// request that moved the expiry does not shorten it.
    pub fn lifetime(&self) -> Option<Duration> {
        let expires_at =
            if self.rotation_requested_at.is_some() { self.expires_before_request } else { self.expires_at };
        expires_at.map(|expires_at| expires_at.since(self.created_at))
    }

    /// Evaluates the key's state at `now`.
    pub fn state_at(&self, now: Instant) -> KeyState {
        let rejected = |outcome| KeyState { outcome, deadline: None };
        if self.revoked_at.is_some() {
            return rejected(Outcome::Revoked);
        }
        if matches!(self.overlap_ends_at, Some(end) if now >= end) {
            return rejected(Outcome::Rotated);
        }
        if matches!(self.grace_ends_at(), Some(end) if now >= end) {
            return rejected(Outcome::Expired);
        }

        let in_grace = matches!(self.expires_at, Some(expires_at) if now >= expires_at);
        let expiry_deadline = if in_grace { self.grace_ends_at() } else { self.expires_at };
        if let Some(overlap_end) = self.overlap_ends_at {
            let deadline = expiry_deadline.map_or(overlap_end, |expiry| expiry.min(overlap_end));
            return KeyState { outcome: Outcome::Superseded, deadline: Some(deadline) };
        }
        if in_grace {
            return KeyState { outcome: Outcome::Grace, deadline: expiry_deadline };
        }
        if let Some(rotation_deadline) = self.rotation_deadline {
            let deadline = expiry_deadline.map_or(rotation_deadline, |expiry| expiry.min(rotation_deadline));
            return KeyState { outcome: Outcome::RotationRequested, deadline: Some(deadline) };
        }
        match self.expires_at {
            Some(expires_at) if now >= expires_at.saturating_sub(self.warn_before) => {
                KeyState { outcome: Outcome::Expiring, deadline: Some(expires_at) }
            }
            _ => KeyState { outcome: Outcome::Active, deadline: None },
        }
    }

    /// Returns the end of the overlap window for a rotation at `now`: `now + overlap`, never later than
    /// the key's own end of grace.
    pub fn overlap_end_for(&self, now: Instant, overlap: Duration) -> Instant {
        let requested = now.saturating_add(overlap);
        self.grace_ends_at().map_or(requested, |hard| requested.min(hard))
    }

    /// Returns the end of the overlap window once the successor was first used at
    /// `successor_first_used_at`: `min(overlap_ends_at, successor_first_used_at +
    /// overlap_after_first_use)`, never before `rotated_at`. Returns `None` when the key has no
    /// overlap after first use, is not in an overlap window, or the window would not get shorter.
    pub fn shortened_overlap_end(&self, successor_first_used_at: Instant) -> Option<Instant> {
        let after = self.overlap_after_first_use?;
        let current = self.overlap_ends_at?;
        let rotated_at = self.rotated_at?;
        let shortened = current.min(successor_first_used_at.saturating_add(after)).max(rotated_at);
        (shortened < current).then_some(shortened)
    }

    /// Returns the expiry of a successor created at `now`: the same lifetime as this key, counted from
    /// `now`, or no expiry when this key has none.
    pub fn successor_expires_at(&self, now: Instant) -> Option<Instant> {
        self.lifetime().map(|lifetime| now.saturating_add(lifetime))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    pub(crate) fn record(created: i64, expires: Option<i64>) -> KeyRecord {
        KeyRecord {
            key_id: KeyId::parse("abcdefABCDEF").unwrap(),
            name: "test".into(),
            owner: Some("team".into()),
            scopes: Scopes::default(),
            metadata: Map::new(),
            hash: TokenHash::from_bytes([0; 32]),
            pepper_id: PepperId::parse("1").unwrap(),
            created_at: Instant::from_millis(created),
            expires_at: expires.map(Instant::from_millis),
            grace: Duration::from_days(7),
            warn_before: Duration::from_days(14),
            revoked_at: None,
            revocation_reason: None,
            rotated_at: None,
            overlap_ends_at: None,
            successor_id: None,
            predecessor_id: None,
            chain_started_at: Instant::from_millis(created),
            self_rotation: true,
            max_chain_lifetime: Duration::from_days(365),
            rotation_requested_at: None,
            rotation_deadline: None,
            expires_before_request: None,
            first_used_at: None,
            last_used_at: None,
            policy: PolicyName::default_name(),
            overlap_after_first_use: None,
        }
    }

    fn at(key: &KeyRecord, millis: i64) -> KeyState {
        key.state_at(Instant::from_millis(millis))
    }

    #[test]
    fn expiry_boundaries_are_half_open() {
        let key = record(0, Some(90 * DAY));
        let expires = 90 * DAY;
        let warn_start = expires - 14 * DAY;
        let grace_end = expires + 7 * DAY;

        assert_eq!(at(&key, warn_start - 1).outcome, Outcome::Active);
        assert_eq!(
            at(&key, warn_start),
            KeyState { outcome: Outcome::Expiring, deadline: Some(Instant::from_millis(expires)) }
        );
        assert_eq!(at(&key, expires - 1).outcome, Outcome::Expiring);
        assert_eq!(
            at(&key, expires),
            KeyState { outcome: Outcome::Grace, deadline: Some(Instant::from_millis(grace_end)) }
        );
        assert_eq!(at(&key, grace_end - 1).outcome, Outcome::Grace);
        assert_eq!(at(&key, grace_end), KeyState { outcome: Outcome::Expired, deadline: None });
    }

    #[test]
    fn zero_grace_expires_at_expiry() {
        let mut key = record(0, Some(DAY));
        key.grace = Duration::ZERO;
        assert_eq!(at(&key, DAY - 1).outcome, Outcome::Expiring);
        assert_eq!(at(&key, DAY).outcome, Outcome::Expired);
    }

    #[test]
    fn no_expiry_stays_active() {
        let key = record(0, None);
        assert_eq!(at(&key, i64::MAX / 2).outcome, Outcome::Active);
    }

    #[test]
    fn overlap_boundaries_are_half_open() {
        let mut key = record(0, Some(90 * DAY));
        key.rotated_at = Some(Instant::from_millis(DAY));
        key.overlap_ends_at = Some(Instant::from_millis(2 * DAY));
        assert_eq!(
            at(&key, DAY),
            KeyState { outcome: Outcome::Superseded, deadline: Some(Instant::from_millis(2 * DAY)) }
        );
        assert_eq!(at(&key, 2 * DAY - 1).outcome, Outcome::Superseded);
        assert_eq!(at(&key, 2 * DAY).outcome, Outcome::Rotated);
    }

    #[test]
    fn superseded_advertises_earliest_deadline() {
        let mut key = record(0, Some(10 * DAY));
        key.overlap_ends_at = Some(key.overlap_end_for(Instant::from_millis(9 * DAY), Duration::from_days(30)));
        assert_eq!(key.overlap_ends_at, Some(Instant::from_millis(17 * DAY)));
        assert_eq!(at(&key, 9 * DAY).deadline, Some(Instant::from_millis(10 * DAY)));
        assert_eq!(at(&key, 10 * DAY).deadline, Some(Instant::from_millis(17 * DAY)));
        assert_eq!(at(&key, 17 * DAY).outcome, Outcome::Rotated);
    }

    #[test]
    fn revocation_wins_over_everything() {
        let mut key = record(0, Some(DAY));
        key.revoked_at = Some(Instant::from_millis(10));
        key.overlap_ends_at = Some(Instant::from_millis(20));
        assert_eq!(at(&key, 0).outcome, Outcome::Revoked);
        assert_eq!(at(&key, 5).outcome, Outcome::Revoked);
        assert_eq!(at(&key, 100 * DAY).outcome, Outcome::Revoked);
    }

    #[test]
    fn rotated_wins_over_expired() {
        let mut key = record(0, Some(DAY));
        key.grace = Duration::ZERO;
        key.overlap_ends_at = Some(Instant::from_millis(DAY));
        assert_eq!(at(&key, DAY).outcome, Outcome::Rotated);
    }

    #[test]
    fn successor_gets_same_lifetime_from_rotation() {
        let key = record(1_000, Some(1_000 + 30 * DAY));
        assert_eq!(key.successor_expires_at(Instant::from_millis(5 * DAY)), Some(Instant::from_millis(35 * DAY)));
        assert_eq!(record(0, None).successor_expires_at(Instant::from_millis(5)), None);
    }

    #[test]
    fn overlap_shortens_after_first_use() {
        let mut key = record(0, Some(90 * DAY));
        key.rotated_at = Some(Instant::from_millis(DAY));
        key.overlap_ends_at = Some(Instant::from_millis(8 * DAY));
        assert_eq!(key.shortened_overlap_end(Instant::from_millis(2 * DAY)), None);

        key.overlap_after_first_use = Some(Duration::from_days(1));
        let first_use = Instant::from_millis(2 * DAY);
        let end = key.shortened_overlap_end(first_use).unwrap();
        assert_eq!(end, Instant::from_millis(3 * DAY));
        key.overlap_ends_at = Some(end);
        assert_eq!(at(&key, 3 * DAY - 1).outcome, Outcome::Superseded);
        assert_eq!(at(&key, 3 * DAY).outcome, Outcome::Rotated);
        assert_eq!(key.shortened_overlap_end(first_use), None, "a second flush shortens nothing");
    }

    #[test]
    fn shortened_overlap_keeps_cap_and_floor() {
        let mut key = record(0, Some(90 * DAY));
        key.rotated_at = Some(Instant::from_millis(DAY));
        key.overlap_ends_at = Some(Instant::from_millis(2 * DAY));
        key.overlap_after_first_use = Some(Duration::from_days(5));
        assert_eq!(key.shortened_overlap_end(Instant::from_millis(DAY)), None, "the hard maximum holds");

        key.overlap_after_first_use = Some(Duration::ZERO);
        let before_rotation = Instant::from_millis(DAY - 10);
        assert_eq!(key.shortened_overlap_end(before_rotation), Some(Instant::from_millis(DAY)));
    }

    #[test]
    fn rotation_request_boundaries_are_half_open() {
        let mut key = record(0, Some(90 * DAY));
        let deadline = 30 * DAY;
        key.rotation_requested_at = Some(Instant::from_millis(10 * DAY));
        key.rotation_deadline = Some(Instant::from_millis(deadline));
        key.expires_at = Some(Instant::from_millis(deadline));
        let grace_end = deadline + 7 * DAY;

        assert_eq!(
            at(&key, 10 * DAY),
            KeyState { outcome: Outcome::RotationRequested, deadline: Some(Instant::from_millis(deadline)) }
        );
        assert_eq!(at(&key, deadline - 1).outcome, Outcome::RotationRequested);
        assert_eq!(
            at(&key, deadline),
            KeyState { outcome: Outcome::Grace, deadline: Some(Instant::from_millis(grace_end)) }
        );
        assert_eq!(at(&key, grace_end - 1).outcome, Outcome::Grace);
        assert_eq!(at(&key, grace_end), KeyState { outcome: Outcome::Expired, deadline: None });
    }

    #[test]
    fn rotation_request_advertises_earlier_expiry() {
        let mut key = record(0, Some(20 * DAY));
        key.rotation_deadline = Some(Instant::from_millis(30 * DAY));
        assert_eq!(
            at(&key, DAY),
            KeyState { outcome: Outcome::RotationRequested, deadline: Some(Instant::from_millis(20 * DAY)) }
        );
    }

    #[test]
    fn rotation_request_keeps_successor_lifetime() {
        let mut key = record(0, Some(90 * DAY));
        key.rotation_requested_at = Some(Instant::from_millis(DAY));
        key.rotation_deadline = Some(Instant::from_millis(10 * DAY));
        key.expires_before_request = key.expires_at;
        key.expires_at = Some(Instant::from_millis(10 * DAY));
        assert_eq!(key.lifetime(), Some(Duration::from_days(90)));

        let mut unbounded = record(0, None);
        unbounded.rotation_requested_at = Some(Instant::from_millis(DAY));
        unbounded.expires_at = Some(Instant::from_millis(10 * DAY));
        assert_eq!(unbounded.lifetime(), None);
    }

    #[test]
    fn superseded_wins_over_rotation_request() {
        let mut key = record(0, Some(90 * DAY));
        key.rotation_deadline = Some(Instant::from_millis(30 * DAY));
        key.expires_at = Some(Instant::from_millis(30 * DAY));
        key.rotated_at = Some(Instant::from_millis(DAY));
        key.overlap_ends_at = Some(Instant::from_millis(2 * DAY));
        assert_eq!(at(&key, DAY).outcome, Outcome::Superseded);
        assert_eq!(at(&key, 2 * DAY).outcome, Outcome::Rotated);
    }

    #[test]
    fn overlap_capped_by_end_of_grace() {
        let key = record(0, Some(DAY));
        let end = key.overlap_end_for(Instant::from_millis(0), Duration::from_days(365));
        assert_eq!(end, Instant::from_millis(8 * DAY));
        assert_eq!(key.overlap_end_for(Instant::from_millis(0), Duration::ZERO), Instant::from_millis(0));
    }
}
