//! The self-rotation decision: whether a key may rotate itself with its own token at an instant,
//! which unused successor the new one replaces, and when the new one expires. The service layer
//! reads the key and its current successor, calls this decision and writes the result. This
//! module performs no I/O and does not authenticate the token.

use crate::policy::MAX_EXPIRY;
use crate::{Duration, Instant, KeyId, KeyRecord, Outcome};

/// The changes a permitted self-rotation writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfRotationPlan {
    /// The successor that was never used and is replaced, when the key was already rotated.
    pub replaced_successor: Option<KeyId>,
    /// The end of the old key's overlap window. A replacement keeps the original end.
    pub overlap_ends_at: Instant,
    /// The new key's expiry: the old key's lifetime counted from now, never after the end of the
    /// rotation chain.
    pub successor_expires_at: Instant,
}

/// The reason a key may not rotate itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelfRotationDenied {
    #[error("key {key_id} is {outcome} and cannot be rotated; ask an operator for a new key")]
    NotRotatable { key_id: KeyId, outcome: Outcome },
    #[error("self-rotation is disabled for key {key_id}; an operator must rotate it or issue a new key")]
    Disabled { key_id: KeyId },
    #[error(
        "the rotation chain of key {key_id} started at {chain_started_at} and reached its maximum lifetime \
         of {max_chain_lifetime} at {chain_ends_at}, so it cannot rotate itself; an operator must issue a new key"
    )]
    ChainEnded { key_id: KeyId, chain_started_at: Instant, max_chain_lifetime: Duration, chain_ends_at: Instant },
    #[error(
        "successor {successor_id} of key {key_id} has already been used or rotated, so it cannot be replaced; \
         rotate with the successor's token instead"
    )]
    SuccessorUsed { key_id: KeyId, successor_id: KeyId },
}

impl KeyRecord {
    /// Returns the instant from which no key of this rotation chain may rotate itself.
    pub fn chain_ends_at(&self) -> Instant {
        self.chain_started_at.saturating_add(self.max_chain_lifetime)
    }

    /// Decides a self-rotation at `now`. `successor` is the current record of this key's
    /// successor, when it has one. `overlap` is how long the old key keeps working after a first
    /// rotation. A key that is active, expiring or in grace may rotate. A superseded key may
    /// rotate again only to replace a successor that was never used, so that a client whose
    /// response was lost is not locked out. The chain end is exclusive, so at `chain_ends_at`
    /// the rotation is denied.
    pub fn plan_self_rotation(
        &self,
        successor: Option<&KeyRecord>,
        now: Instant,
        overlap: Duration,
    ) -> Result<SelfRotationPlan, SelfRotationDenied> {
        let key_id = self.key_id.clone();
        let outcome = self.state_at(now).outcome;
        if !outcome.is_allowed() {
            return Err(SelfRotationDenied::NotRotatable { key_id, outcome });
        }
        if !self.self_rotation {
            return Err(SelfRotationDenied::Disabled { key_id });
        }
        let chain_ends_at = self.chain_ends_at();
        if now >= chain_ends_at {
            return Err(SelfRotationDenied::ChainEnded {
                key_id,
                chain_started_at: self.chain_started_at,
                max_chain_lifetime: self.max_chain_lifetime,
                chain_ends_at,
            });
        }

        let (replaced_successor, overlap_ends_at) = match &self.successor_id {
            None => (None, self.overlap_end_for(now, overlap)),
            Some(successor_id) => {
                let used =
                    successor.is_some_and(|record| record.first_used_at.is_some() || record.successor_id.is_some());
                if used {
                    return Err(SelfRotationDenied::SuccessorUsed { key_id, successor_id: successor_id.clone() });
                }
                (Some(successor_id.clone()), self.overlap_ends_at.unwrap_or(now))
            }
        };

        let lifetime_end = self.successor_expires_at(now).unwrap_or(chain_ends_at);
        let successor_expires_at = lifetime_end.min(chain_ends_at).min(MAX_EXPIRY);
        Ok(SelfRotationPlan { replaced_successor, overlap_ends_at, successor_expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::tests::record;

    const DAY: i64 = 86_400_000;

    fn at(millis: i64) -> Instant {
        Instant::from_millis(millis)
    }

    #[test]
    fn active_key_gets_same_lifetime() {
        let key = record(0, Some(30 * DAY));
        let plan = key.plan_self_rotation(None, at(DAY), Duration::from_days(1)).unwrap();
        assert_eq!(plan.successor_expires_at, at(31 * DAY));
        assert_eq!(plan.overlap_ends_at, at(2 * DAY));
        assert_eq!(plan.replaced_successor, None);
    }

    #[test]
    fn successor_expiry_capped_by_chain_end() {
        let key = record(0, Some(400 * DAY));
        let plan = key.plan_self_rotation(None, at(300 * DAY), Duration::ZERO).unwrap();
        assert_eq!(plan.successor_expires_at, at(365 * DAY));
    }

    #[test]
    fn key_without_expiry_gets_chain_end() {
        let key = record(0, None);
        let plan = key.plan_self_rotation(None, at(DAY), Duration::ZERO).unwrap();
        assert_eq!(plan.successor_expires_at, at(365 * DAY));
    }

    #[test]
    fn chain_end_is_exclusive() {
        let mut key = record(0, None);
        key.max_chain_lifetime = Duration::from_days(10);
        assert!(key.plan_self_rotation(None, at(10 * DAY - 1), Duration::ZERO).is_ok());
        let denied = key.plan_self_rotation(None, at(10 * DAY), Duration::ZERO).unwrap_err();
        assert!(
            matches!(denied, SelfRotationDenied::ChainEnded { chain_ends_at, .. } if chain_ends_at == at(10 * DAY))
        );
    }

    #[test]
    fn disabled_policy_denies() {
        let mut key = record(0, Some(30 * DAY));
        key.self_rotation = false;
        let denied = key.plan_self_rotation(None, at(DAY), Duration::ZERO).unwrap_err();
        assert!(matches!(denied, SelfRotationDenied::Disabled { .. }));
    }

    #[test]
    fn rejected_states_deny() {
        let mut key = record(0, Some(DAY));
        key.revoked_at = Some(at(1));
        let denied = key.plan_self_rotation(None, at(2), Duration::ZERO).unwrap_err();
        assert!(matches!(denied, SelfRotationDenied::NotRotatable { outcome: Outcome::Revoked, .. }));
    }

    #[test]
    fn superseded_replaces_unused_successor_only() {
        let mut key = record(0, Some(30 * DAY));
        let mut successor = record(DAY, Some(31 * DAY));
        successor.key_id = KeyId::parse("successor00A").unwrap();
        key.successor_id = Some(successor.key_id.clone());
        key.rotated_at = Some(at(DAY));
        key.overlap_ends_at = Some(at(2 * DAY));

        let plan = key.plan_self_rotation(Some(&successor), at(DAY + 5), Duration::from_days(7)).unwrap();
        assert_eq!(plan.replaced_successor, Some(successor.key_id.clone()));
        assert_eq!(plan.overlap_ends_at, at(2 * DAY));

        successor.first_used_at = Some(at(DAY + 1));
        let denied = key.plan_self_rotation(Some(&successor), at(DAY + 5), Duration::ZERO).unwrap_err();
        assert!(matches!(denied, SelfRotationDenied::SuccessorUsed { .. }));
    }
}
