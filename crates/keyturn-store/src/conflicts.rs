//! The errors a guarded write reports when its guard matched no row. Every backend runs the same
//! conditional updates, reads the rows involved when one matches nothing, and asks this module
//! which rule was broken, so both backends report the same error for the same state.

use keyturn_core::{KeyId, KeyRecord};

use crate::StoreError;

/// Explains why the old key's rotation guard matched no row: it is missing, revoked, already
/// rotated, or (when replacing, `expected` is set) its successor is not the expected one. `old` is
/// the old key as read inside the failed transaction.
pub(crate) fn rotation_conflict(old_id: &KeyId, expected: Option<&KeyId>, old: Option<KeyRecord>) -> StoreError {
    let Some(old) = old else {
        return StoreError::NotFound(old_id.clone());
    };
    if old.revoked_at.is_some() {
        return StoreError::Revoked(old_id.clone());
    }
    match (expected, old.successor_id) {
        (None, Some(successor_id)) => StoreError::AlreadyRotated { key_id: old_id.clone(), successor_id },
        (Some(expected), _) => StoreError::SuccessorMismatch { key_id: old_id.clone(), expected: expected.clone() },
        // Only a concurrent writer could make the guard miss a key that is neither revoked nor
        // rotated, and every backend serialises its writers.
        (None, None) => StoreError::Internal(format!(
            "rotation of key {old_id} matched no row although the key is neither revoked nor rotated"
        )),
    }
}

/// Explains why the successor to replace could not be revoked: it was used or rotated itself, or
/// it is missing. A successor that is already revoked and has no successor of its own needs no
/// revocation, so replacing it is not a conflict. Replacing a successor that was rotated would
/// leave two live keys descending from one.
pub(crate) fn replacement_conflict(
    old_id: &KeyId,
    replaced_id: &KeyId,
    successor: Option<KeyRecord>,
) -> Result<(), StoreError> {
    match successor {
        Some(successor) if successor.revoked_at.is_some() && successor.successor_id.is_none() => Ok(()),
        Some(_) => Err(StoreError::SuccessorUsed { key_id: old_id.clone(), successor_id: replaced_id.clone() }),
        None => Err(StoreError::NotFound(replaced_id.clone())),
    }
}

/// Explains why a revocation matched no row: the key is already revoked, or it does not exist.
pub(crate) fn revocation_conflict(key_id: &KeyId, existing: Option<KeyRecord>) -> StoreError {
    match existing {
        Some(_) => StoreError::Revoked(key_id.clone()),
        None => StoreError::NotFound(key_id.clone()),
    }
}
