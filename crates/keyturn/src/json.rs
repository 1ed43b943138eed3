//! The JSON forms of keys, audit events, migration report entries, bulk revocations and leak
//! report results that every front end prints: the `keyturn` CLI, the Python `to_dict()`
//! methods and the HTTP API. Instants are RFC 3339 strings in UTC and durations use the notation
//! that `Duration::parse` reads. No form contains a token or a hash.

use keyturn_core::{AuditEvent, Instant, KeyId, KeyRecord, KeyState};
use keyturn_store::BulkOutcome;
use serde_json::{json, Value};

use crate::{CampaignEntry, LeakResult, MigrationEntry, RequestEntry, RequestStatus, ScheduleRun};

/// Renders a key with its state at the instant the state was computed.
pub fn key_json(record: &KeyRecord, state: &KeyState) -> Value {
    json!({
        "key_id": record.key_id.as_str(),
        "name": record.name,
        "owner": record.owner,
        "scopes": record.scopes,
        "state": state.outcome.as_str(),
        "state_deadline": rfc3339(state.deadline),
        "created_at": rfc3339(Some(record.created_at)),
        "expires_at": rfc3339(record.expires_at),
        "grace": record.grace.to_string(),
        "grace_ends_at": rfc3339(record.grace_ends_at()),
        "warn_before": record.warn_before.to_string(),
        "self_rotation": record.self_rotation,
        "max_chain_lifetime": record.max_chain_lifetime.to_string(),
        "chain_ends_at": rfc3339(Some(record.chain_ends_at())),
        "revoked_at": rfc3339(record.revoked_at),
        "revocation_reason": record.revocation_reason,
        "rotated_at": rfc3339(record.rotated_at),
        "overlap_ends_at": rfc3339(record.overlap_ends_at),
        "rotation_requested_at": rfc3339(record.rotation_requested_at),
        "rotation_deadline": rfc3339(record.rotation_deadline),
        "successor_id": record.successor_id.as_ref().map(KeyId::as_str),
        "predecessor_id": record.predecessor_id.as_ref().map(KeyId::as_str),
        "first_used_at": rfc3339(record.first_used_at),
        "last_used_at": rfc3339(record.last_used_at),
        "metadata": record.metadata,
        "policy": record.policy.as_str(),
        "overlap_after_first_use": record.overlap_after_first_use.map(|after| after.to_string()),
    })
}

/// Renders one audit row.
pub fn audit_event_json(row: &AuditEvent) -> Value {
    let event = &row.event;
    json!({
        "seq": row.seq,
        "at": event.at.to_rfc3339(),
        "event": event.event.as_str(),
        "key_id": event.key_id.as_ref().map(KeyId::as_str),
        "actor": event.actor.to_stored(),
        "client_addr": event.client_addr,
        "reason": event.reason,
        "details": event.details,
    })
}

/// Renders what a rotation request did, or would do, to one key.
pub fn request_entry_json(entry: &RequestEntry) -> Value {
    let (deadline, expires_at, successor_id) = match &entry.status {
        RequestStatus::Requested { deadline, expires_at } => (Some(*deadline), *expires_at, None),
        RequestStatus::AlreadyRotated { successor_id } => (None, None, Some(successor_id.as_str())),
        _ => (None, None, None),
    };
    json!({
        "key_id": entry.key_id.as_str(),
        "status": entry.status.as_str(),
        "rotation_deadline": rfc3339(deadline),
        "expires_at": rfc3339(expires_at),
        "successor_id": successor_id,
    })
}

/// Renders one key of the rotation request report.
pub fn campaign_entry_json(entry: &CampaignEntry) -> Value {
    json!({
        "key_id": entry.key_id.as_str(),
        "name": entry.name,
        "owner": entry.owner,
        "state": entry.state.outcome.as_str(),
        "rotation_requested_at": entry.requested_at.to_rfc3339(),
        "rotation_deadline": entry.deadline.to_rfc3339(),
        "rotated": entry.successor_id.is_some(),
        "successor_id": entry.successor_id.as_ref().map(KeyId::as_str),
        "successor_used": entry.successor_first_used_at.is_some(),
        "successor_first_used_at": rfc3339(entry.successor_first_used_at),
    })
}

/// Renders one scheduler run: the range of boundaries it looked at, the events it recorded and
/// the rotations it requested because of a policy's cadence.
pub fn schedule_run_json(run: &ScheduleRun) -> Value {
    let recorded: Vec<Value> = run
        .recorded
        .iter()
        .map(|event| {
            json!({
                "seq": event.seq,
                "event": event.event.audit_event().as_str(),
                "key_id": event.key_id.as_str(),
                "boundary": event.boundary.to_rfc3339(),
            })
        })
        .collect();
    let rotations_requested: Vec<Value> = run
        .rotations_requested
        .iter()
        .map(|request| {
            json!({
                "key_id": request.key_id.as_str(),
                "policy": request.policy.as_str(),
                "deadline": request.deadline.to_rfc3339(),
            })
        })
        .collect();
    json!({
        "from": rfc3339(run.from),
        "to": run.to.to_rfc3339(),
        "recorded": recorded,
        "rotations_requested": rotations_requested,
    })
}

/// Renders one key of the migration report.
pub fn migration_entry_json(entry: &MigrationEntry) -> Value {
    json!({
        "key_id": entry.key_id.as_str(),
        "name": entry.name,
        "owner": entry.owner,
        "rotated_at": entry.rotated_at.to_rfc3339(),
        "overlap_ends_at": entry.overlap_ends_at.to_rfc3339(),
        "last_used_at": rfc3339(entry.last_used_at),
        "last_client_addr": entry.last_client_addr,
        "uses_since_rotation": entry.uses_since_rotation,
        "successor_id": entry.successor_id.as_str(),
        "successor_first_used_at": rfc3339(entry.successor_first_used_at),
        "status": entry.status.as_str(),
    })
}

fn rfc3339(instant: Option<Instant>) -> Value {
    instant.map_or(Value::Null, |instant| Value::String(instant.to_rfc3339()))
}

/// Renders the keys of a bulk revocation, or of its dry run when `dry_run` is set, with their
/// state at `now` and, for a real run, whether each was revoked now or before.
pub fn bulk_revocation_json(
    keys: &[(KeyRecord, Option<BulkOutcome>)],
    missing: &[KeyId],
    dry_run: bool,
    now: Instant,
) -> Value {
    let count = |outcome| keys.iter().filter(|(_, result)| *result == Some(outcome)).count();
    let rows: Vec<Value> = keys
        .iter()
        .map(|(record, outcome)| {
            json!({
                "key_id": record.key_id.as_str(),
                "name": record.name,
                "owner": record.owner,
                "state": record.state_at(now).outcome.as_str(),
                "result": outcome.map(|outcome| match outcome {
                    BulkOutcome::Revoked => "revoked",
                    BulkOutcome::AlreadyRevoked => "already_revoked",
                }),
            })
        })
        .collect();
    json!({
        "dry_run": dry_run,
        "keys": rows,
        "missing_key_ids": missing.iter().map(KeyId::as_str).collect::<Vec<_>>(),
        "revoked": count(BulkOutcome::Revoked),
        "already_revoked": count(BulkOutcome::AlreadyRevoked),
    })
}

/// Renders the per-token results of a leak report. They hold no token.
pub fn leak_results_json(results: &[LeakResult]) -> Value {
    Value::Array(
        results
            .iter()
            .map(|result| {
                json!({
                    "line": result.line,
                    "key_id": result.key_id.as_ref().map(KeyId::as_str),
                    "status": result.status.as_str(),
                    "detail": result.status.describe(),
                })
            })
            .collect(),
    )
}
