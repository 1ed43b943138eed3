//! The types of a named-policy update and the decoding of `policies` rows, shared by every
//! backend. Validation happens in `keyturn-core` and the service layer. The store checks only
//! that each change finds the version it was computed from and that a removed policy is unused.

use keyturn_core::{Duration, NamedPolicy, NewAuditEvent, PolicyName};

use crate::rows::StoredRow;
use crate::StoreError;

/// The columns of `policies` that [`decode_policy`] reads.
pub(crate) const POLICY_COLUMNS: &str = "name, max_lifetime_ms, grace_ms, warn_before_ms, default_overlap_ms, \
     self_rotation, max_chain_lifetime_ms, rotate_every_ms, overlap_after_first_use_ms";

/// Policy changes that [`crate::Store::apply_policy_update`] writes in one transaction.
#[derive(Debug, Clone)]
pub struct PolicyUpdate {
    /// The instant of the update: policies get it as `updated_at`, and a key past its grace
    /// period at this instant keeps its instants.
    pub at: keyturn_core::Instant,
    pub changes: Vec<PolicyChange>,
}

/// One added, changed or removed policy with its audit event.
#[derive(Debug, Clone)]
pub struct PolicyChange {
    pub name: PolicyName,
    /// The stored version this change was computed from; `None` when the policy is new.
    pub old: Option<NamedPolicy>,
    /// The version to store; `None` removes the policy.
    pub new: Option<NamedPolicy>,
    /// Whether every live key of the policy receives the new instants.
    pub apply_to_existing: bool,
    /// The `authz_policy_changed` event. The store sets `keys_updated` in its details.
    pub event: NewAuditEvent,
}

/// How many keys reference one policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyKeyCounts {
    /// Keys that applying the policy to existing keys would update: not revoked, not rotated,
    /// and not past their grace period.
    pub live: u64,
    /// Keys that are not revoked, which keep a policy from being removed.
    pub not_revoked: u64,
}

/// Decodes a row selected with [`POLICY_COLUMNS`].
pub(crate) fn decode_policy<R: StoredRow>(row: &R) -> Result<NamedPolicy, StoreError> {
    let raw_name = row.text("name").ok().flatten().unwrap_or_else(|| "<unreadable name>".to_owned());
    let corrupt = |column: &str, problem: String| {
        StoreError::Internal(format!("stored policy {raw_name:?} is invalid: column {column}: {problem}"))
    };
    let name = PolicyName::parse(&raw_name).map_err(|error| corrupt("name", error.to_string()))?;
    let optional = |column: &str| -> Result<Option<Duration>, StoreError> {
        match row.integer(column).map_err(|error| corrupt(column, error.to_string()))? {
            Some(millis) if millis < 0 => Err(corrupt(column, format!("negative duration {millis} ms"))),
            other => Ok(other.map(Duration::from_millis)),
        }
    };
    let required = |column: &str| optional(column)?.ok_or_else(|| corrupt(column, "missing".to_owned()));
    let self_rotation = row.boolean("self_rotation").map_err(|error| corrupt("self_rotation", error.to_string()))?;

    Ok(NamedPolicy {
        max_lifetime: required("max_lifetime_ms")?,
        grace: required("grace_ms")?,
        warn_before: required("warn_before_ms")?,
        default_overlap: required("default_overlap_ms")?,
        self_rotation: self_rotation.ok_or_else(|| corrupt("self_rotation", "missing".to_owned()))?,
        max_chain_lifetime: required("max_chain_lifetime_ms")?,
        rotate_every: optional("rotate_every_ms")?,
        overlap_after_first_use: optional("overlap_after_first_use_ms")?,
        name,
    })
}

/// Returns the audit event of `change` with `keys_updated` set in its details.
pub(crate) fn event_with_count(change: &PolicyChange, keys_updated: u64) -> NewAuditEvent {
    let mut event = change.event.clone();
    if let serde_json::Value::Object(details) = &mut event.details {
        details.insert("keys_updated".to_owned(), keys_updated.into());
    }
    event
}

/// Returns the error of a change whose `old` does not match the stored version, or `Ok` when it
/// matches.
pub(crate) fn check_unchanged(change: &PolicyChange, stored: Option<NamedPolicy>) -> Result<(), StoreError> {
    if stored == change.old {
        Ok(())
    } else {
        Err(StoreError::PolicyConflict { name: change.name.to_string() })
    }
}
