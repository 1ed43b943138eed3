//! The lifecycle events that time alone causes: a key entering its warning window, its grace
//! period, expiry, the end of its overlap window and its rotation deadline. Each event has a
//! boundary instant computed from the key record, and applies to a key only when the state
//! function at that instant agrees, so a revoked key, or a rotated key reaching its expiry,
//! records nothing. Finding due keys and recording each event once is the scheduler's work in
//! the service layer; this module decides only what is due.

use crate::{AuditEventType, Instant, KeyRecord, Outcome};

/// A lifecycle event that a key reaches by the passing of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimedEvent {
    /// The warning window before expiry starts: `expires_at - warn_before`.
    ExpiringSoon,
    /// The grace period starts: `expires_at`.
    GraceEntered,
    /// The grace period ends and the key is rejected: `expires_at + grace`.
    Expired,
    /// The overlap window of a rotated key ends: `overlap_ends_at`.
    OverlapEnded,
    /// The rotation deadline passes with the key not rotated: `rotation_deadline`.
    RotationDeadlineReached,
}

impl TimedEvent {
    pub const ALL: [TimedEvent; 5] = [
        TimedEvent::ExpiringSoon,
        TimedEvent::GraceEntered,
        TimedEvent::Expired,
        TimedEvent::OverlapEnded,
        TimedEvent::RotationDeadlineReached,
    ];

    /// Returns the audit event type that records this event.
    pub fn audit_event(self) -> AuditEventType {
        match self {
            TimedEvent::ExpiringSoon => AuditEventType::AuthnTokenExpiringSoon,
            TimedEvent::GraceEntered => AuditEventType::AuthnTokenGraceEntered,
            TimedEvent::Expired => AuditEventType::AuthnTokenExpired,
            TimedEvent::OverlapEnded => AuditEventType::AuthnTokenOverlapEnded,
            TimedEvent::RotationDeadlineReached => AuditEventType::AuthnTokenRotationDeadlineReached,
        }
    }

    /// Returns the instant at which `key` reaches this event, or `None` when the record has no
    /// such boundary (no expiry, never rotated, no rotation request).
    pub fn boundary(self, key: &KeyRecord) -> Option<Instant> {
        match self {
            TimedEvent::ExpiringSoon => key.expires_at.map(|expires_at| expires_at.saturating_sub(key.warn_before)),
            TimedEvent::GraceEntered => key.expires_at,
            TimedEvent::Expired => key.grace_ends_at(),
            TimedEvent::OverlapEnded => key.overlap_ends_at,
            TimedEvent::RotationDeadlineReached => key.rotation_deadline,
        }
    }

    /// Returns the boundary of this event for `key` when the key's state at that boundary is the
    /// one the event announces, which is when the event is to be recorded. A zero grace period
    /// makes expiry and grace share a boundary, so only `Expired` applies then.
    pub fn due_boundary(self, key: &KeyRecord) -> Option<Instant> {
        let boundary = self.boundary(key)?;
        let outcome = key.state_at(boundary).outcome;
        let applies = match self {
            TimedEvent::ExpiringSoon => outcome == Outcome::Expiring,
            TimedEvent::GraceEntered => outcome == Outcome::Grace,
            TimedEvent::Expired => outcome == Outcome::Expired,
            TimedEvent::OverlapEnded => outcome == Outcome::Rotated,
            TimedEvent::RotationDeadlineReached => {
                let rotated_in_time = key.rotated_at.is_some_and(|rotated_at| rotated_at <= boundary);
                key.revoked_at.is_none() && !rotated_in_time && outcome != Outcome::Rotated
            }
        };
        applies.then_some(boundary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::tests::record;
    use crate::Duration;

    const DAY: i64 = 86_400_000;

    #[test]
    fn boundaries_follow_the_record() {
        let mut key = record(0, Some(90 * DAY));
        key.rotation_deadline = Some(Instant::from_millis(40 * DAY));
        key.overlap_ends_at = Some(Instant::from_millis(50 * DAY));
        let boundary = |event: TimedEvent| event.boundary(&key).map(Instant::as_millis);

        assert_eq!(boundary(TimedEvent::ExpiringSoon), Some(76 * DAY));
        assert_eq!(boundary(TimedEvent::GraceEntered), Some(90 * DAY));
        assert_eq!(boundary(TimedEvent::Expired), Some(97 * DAY));
        assert_eq!(boundary(TimedEvent::OverlapEnded), Some(50 * DAY));
        assert_eq!(boundary(TimedEvent::RotationDeadlineReached), Some(40 * DAY));
    }

    #[test]
    fn revoked_key_has_no_due_event() {
        let mut key = record(0, Some(90 * DAY));
        key.revoked_at = Some(Instant::from_millis(DAY));
        for event in TimedEvent::ALL {
            assert_eq!(event.due_boundary(&key), None, "{event:?}");
        }
    }

    /// The state function reads the record as it is now, so a rotated key is superseded at every
    /// instant before the end of its overlap window, even at a warning boundary before the rotation.
    #[test]
    fn rotated_key_skips_expiry_events() {
        let mut key = record(0, Some(90 * DAY));
        key.rotated_at = Some(Instant::from_millis(80 * DAY));
        key.overlap_ends_at = Some(Instant::from_millis(81 * DAY));
        assert_eq!(TimedEvent::ExpiringSoon.due_boundary(&key), None);
        assert_eq!(TimedEvent::GraceEntered.due_boundary(&key), None);
        assert_eq!(TimedEvent::Expired.due_boundary(&key), None);
        assert_eq!(TimedEvent::OverlapEnded.due_boundary(&key), Some(Instant::from_millis(81 * DAY)));
    }

    #[test]
    fn zero_grace_records_only_expired() {
        let mut key = record(0, Some(DAY));
        key.grace = Duration::ZERO;
        assert_eq!(TimedEvent::GraceEntered.due_boundary(&key), None);
        assert_eq!(TimedEvent::Expired.due_boundary(&key), Some(Instant::from_millis(DAY)));
    }

    #[test]
    fn rotation_deadline_skipped_when_rotated_in_time() {
        let mut key = record(0, Some(30 * DAY));
        key.rotation_deadline = Some(Instant::from_millis(30 * DAY));
        assert_eq!(TimedEvent::RotationDeadlineReached.due_boundary(&key), Some(Instant::from_millis(30 * DAY)));

        key.rotated_at = Some(Instant::from_millis(29 * DAY));
        key.overlap_ends_at = Some(Instant::from_millis(31 * DAY));
        assert_eq!(TimedEvent::RotationDeadlineReached.due_boundary(&key), None);
    }

    #[test]
    fn rotation_request_suppresses_warning() {
        let mut key = record(0, Some(30 * DAY));
        key.rotation_deadline = Some(Instant::from_millis(30 * DAY));
        assert_eq!(TimedEvent::ExpiringSoon.due_boundary(&key), None);
        assert_eq!(TimedEvent::GraceEntered.due_boundary(&key), Some(Instant::from_millis(30 * DAY)));
    }
}
