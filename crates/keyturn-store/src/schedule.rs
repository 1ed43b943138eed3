//! What every backend shares for rotation requests and the scheduler: the result of a request
//! whose conditional UPDATE matched no row, and the SQL that rebuilds the guard of events
//! recorded once per key from the audit log.

use keyturn_core::KeyRecord;

use crate::RotationRequestResult;

/// Explains why a rotation request matched no row.
pub(crate) fn rotation_skipped(current: Option<KeyRecord>) -> RotationRequestResult {
    match current {
        None => RotationRequestResult::NotFound,
        Some(key) if key.revoked_at.is_some() => RotationRequestResult::Revoked,
        Some(key) => match key.successor_id {
            Some(successor_id) => RotationRequestResult::AlreadyRotated { successor_id },
            None => RotationRequestResult::NotFound,
        },
    }
}

/// Adds to `recorded_events` the first audit row of each key and event type that is recorded
/// once per key, unless the guard has it. Schema version 6 runs the same statement for older
/// rows, and an import runs it for copied rows, so no copied event is recorded a second time.
pub(crate) const REBUILD_RECORDED_EVENTS: &str = "INSERT INTO recorded_events (key_id, event, seq) \
     SELECT key_id, event, MIN(seq) FROM audit_events \
     WHERE key_id IS NOT NULL AND event IN ('authn_token_grace_entered', 'authn_token_expired', \
       'authn_token_superseded_used', 'authn_token_expiring_soon', 'authn_token_overlap_ended', \
       'authn_token_rotation_deadline_reached') \
     GROUP BY key_id, event \
     ON CONFLICT (key_id, event) DO NOTHING";
