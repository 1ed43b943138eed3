//! The result of a rotation request whose conditional UPDATE matched no row, shared by every
//! backend like the errors of `conflicts`.

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
