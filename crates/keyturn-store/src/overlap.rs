//! The audit event of an overlap window shortened by a successor's first use, shared by every
//! backend. The decision itself is [`keyturn_core::KeyRecord::shortened_overlap_end`].

use keyturn_core::{Actor, AuditEventType, Duration, Instant, KeyId, KeyRecord, NewAuditEvent};
use serde_json::json;

/// Builds the query that finds the old key whose overlap window the first use of the successor
/// `placeholder` may shorten. That key is linked to the successor, not revoked, rotated with an
/// overlap after first use, and its overlap window still ends after its rotation.
pub(crate) fn shortenable_predecessor_query(placeholder: &str) -> String {
    format!(
        "SELECT old.key_id FROM keys AS successor JOIN keys AS old \
           ON old.key_id = successor.predecessor_id AND old.successor_id = successor.key_id \
         WHERE successor.key_id = {placeholder} AND old.revoked_at IS NULL \
           AND old.overlap_after_first_use_ms IS NOT NULL AND old.overlap_ends_at > old.rotated_at"
    )
}

/// Builds the `authn_token_overlap_shortened` event of `old`, whose overlap window now ends at
/// `new_end` because its successor was first used at `first_used_at`.
pub(crate) fn shortened_event(old: &KeyRecord, first_used_at: Instant, new_end: Instant, at: Instant) -> NewAuditEvent {
    let after = old.overlap_after_first_use.unwrap_or(Duration::ZERO);
    NewAuditEvent::new(AuditEventType::AuthnTokenOverlapShortened, at, Some(old.key_id.clone()), Actor::System)
        .with_details(json!({
            "successor_id": old.successor_id.as_ref().map(KeyId::as_str),
            "successor_first_used_at": first_used_at.to_rfc3339(),
            "overlap_after_first_use": after.to_string(),
            "previous_overlap_ends_at": old.overlap_ends_at.map(Instant::to_rfc3339),
            "overlap_ends_at": new_end.to_rfc3339(),
        }))
}
