//! Rotation requests: an operator asks a set of keys to be rotated by a deadline. Each key that
//! can still be rotated gets the request and, when its expiry is later, an expiry moved to the
//! deadline, so a key not rotated in time enters its grace period there and is rejected at the
//! deadline plus its grace period. Keys already rotated, revoked or expired are reported, not
//! treated as errors. The state function turns a request into the `rotation_requested` outcome.

use keyturn_core::{AuditEventType, Instant, KeyId, KeyRecord, Outcome, PolicyName};
use keyturn_store::{KeyFilter, KeySelection, RotationRequest, RotationRequestResult, StoreError};
use serde_json::json;

use crate::keyring::check_reason;
use crate::{Caller, Error, Keyring, MAX_PAGE_SIZE};

/// The most keys one rotation request may select, so one request stays one bounded transaction.
pub const MAX_REQUEST_KEYS: usize = 10_000;

/// Which keys a rotation request selects.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationSelector {
    /// Every key of this owner.
    Owner(String),
    /// These keys, each named once.
    Keys(Vec<KeyId>),
    /// Every key that references this named policy, in creation order. The policy must exist.
    Policy(PolicyName),
}

/// What a rotation request did, or would do in a dry run, to one key.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestStatus {
    /// The key must be rotated by `deadline`; `expires_at` is its expiry after the request.
    Requested {
        deadline: Instant,
        expires_at: Option<Instant>,
    },
    /// The key has a successor already.
    AlreadyRotated {
        successor_id: KeyId,
    },
    Revoked,
    /// The key is rejected already, past its grace period or its overlap window.
    Expired,
    NotFound,
}

/// One key of a rotation request's result.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestEntry {
    pub key_id: KeyId,
    pub status: RequestStatus,
}

/// Parses the deadline of a rotation request: an RFC 3339 instant, or a duration from `now` such
/// as `14d`. The error quotes the value and both accepted forms.
pub fn parse_deadline(value: &str, now: Instant) -> Result<Instant, Error> {
    let trimmed = value.trim();
    if let Ok(instant) = Instant::parse_rfc3339(trimmed) {
        return Ok(instant);
    }
    match keyturn_core::Duration::parse(trimmed) {
        Ok(duration) if !duration.is_zero() => Ok(now.saturating_add(duration)),
        _ => Err(Error::InvalidInput {
            field: "rotation deadline",
            reason: format!(
                "{} is neither an RFC 3339 instant such as 2027-01-31T12:00:00Z nor a positive duration from now \
                 such as 14d",
                keyturn_core::quote_value(value)
            ),
        }),
    }
}

impl RequestStatus {
    /// Returns the status name used in JSON output and the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestStatus::Requested { .. } => "requested",
            RequestStatus::AlreadyRotated { .. } => "already_rotated",
            RequestStatus::Revoked => "revoked",
            RequestStatus::Expired => "expired",
            RequestStatus::NotFound => "not_found",
        }
    }
}

impl Keyring {
    /// Asks the selected keys to be rotated by `deadline`, which must be after now. With
    /// `dry_run` nothing is written and the result shows what the request would do. Every key
    /// requested gets an `authn_token_rotation_requested` audit event and a change row in one
    /// transaction.
    pub async fn request_rotation(
        &self,
        selector: &RotationSelector,
        deadline: Instant,
        reason: Option<&str>,
        dry_run: bool,
        caller: &Caller,
    ) -> Result<Vec<RequestEntry>, Error> {
        let now = self.clock.now();
        if deadline <= now {
            return Err(Error::InvalidInput {
                field: "rotation deadline",
                reason: format!(
                    "{} is not after now ({}); give a later instant or a duration such as 14d",
                    deadline.to_rfc3339(),
                    now.to_rfc3339()
                ),
            });
        }
        let reason = reason.map(check_reason).transpose()?.filter(|reason| !reason.is_empty());
        let selected = self.select_rotation_keys(selector).await?;

        let mut entries = Vec::with_capacity(selected.len());
        let mut requests = Vec::new();
        // The position in `entries` of each request, since the store returns results in order.
        let mut positions = Vec::new();
        for (key_id, record) in selected {
            let status = planned_status(record.as_ref(), now, deadline);
            if matches!(status, RequestStatus::Requested { .. }) && !dry_run {
                let previous = record.as_ref().and_then(|record| record.expires_at);
                let event = self
                    .event(AuditEventType::AuthnTokenRotationRequested, now, &key_id, caller)
                    .with_reason(reason.clone())
                    .with_details(json!({
                        "deadline": deadline.to_rfc3339(),
                        "previous_expires_at": previous.map(Instant::to_rfc3339),
                    }));
                requests.push(RotationRequest { key_id: key_id.clone(), requested_at: now, deadline, event });
                positions.push(entries.len());
            }
            entries.push(RequestEntry { key_id, status });
        }
        if requests.is_empty() {
            return Ok(entries);
        }

        let results = self.store.request_rotation(&requests).await?;
        self.cache.evict(requests.iter().map(|request| &request.key_id));
        for ((request, result), position) in requests.iter().zip(results).zip(positions) {
            let entry = &mut entries[position];
            entry.status = stored_status(result, request.deadline);
            if let RequestStatus::Requested { deadline, .. } = &entry.status {
                tracing::info!(target: "keyturn::keyring", key_id = %entry.key_id, deadline = %deadline, actor = %caller.actor.to_stored(), "rotation requested");
            }
        }
        Ok(entries)
    }

    /// Reads the keys a selector names, in the selector's order (creation order for an owner or a
    /// policy).
    async fn select_rotation_keys(
        &self,
        selector: &RotationSelector,
    ) -> Result<Vec<(KeyId, Option<KeyRecord>)>, Error> {
        match selector {
            RotationSelector::Keys(key_ids) => {
                if key_ids.is_empty() {
                    return Err(Error::InvalidInput {
                        field: "key ids",
                        reason: "no key id given; name at least one key, an owner or a policy".to_owned(),
                    });
                }
                if key_ids.len() > MAX_REQUEST_KEYS {
                    return Err(too_many(key_ids.len()));
                }
                let mut selected = Vec::with_capacity(key_ids.len());
                for key_id in key_ids {
                    if selected.iter().any(|(seen, _)| seen == key_id) {
                        continue;
                    }
                    selected.push((key_id.clone(), self.store.get_key(key_id).await?));
                }
                Ok(selected)
            }
            RotationSelector::Owner(owner) => {
                let mut selected = Vec::new();
                let mut after = None;
                loop {
                    let filter = KeyFilter { owner: Some(owner.clone()), after, limit: Some(MAX_PAGE_SIZE) };
                    let page = self.store.list_keys(&filter).await?;
                    let full = page.len() == MAX_PAGE_SIZE as usize;
                    after = page.last().map(|record| record.key_id.clone());
                    selected.extend(page.into_iter().map(|record| (record.key_id.clone(), Some(record))));
                    if selected.len() > MAX_REQUEST_KEYS {
                        return Err(too_many(selected.len()));
                    }
                    if !full {
                        return Ok(selected);
                    }
                }
            }
            RotationSelector::Policy(name) => {
                self.policy(name).await?;
                let selection = KeySelection::Policy(name.clone());
                let records = match self.store.select_keys(&selection, MAX_REQUEST_KEYS).await {
                    Ok((records, _)) => records,
                    Err(StoreError::SelectionTooLarge { .. }) => return Err(too_many_of_policy(name)),
                    Err(error) => return Err(error.into()),
                };
                Ok(records.into_iter().map(|record| (record.key_id.clone(), Some(record))).collect())
            }
        }
    }
}

fn too_many(count: usize) -> Error {
    Error::InvalidInput {
        field: "key selection",
        reason: format!("it selects {count} keys, more than the {MAX_REQUEST_KEYS} one request may change; split it"),
    }
}

fn too_many_of_policy(name: &PolicyName) -> Error {
    Error::InvalidInput {
        field: "key selection",
        reason: format!(
            "policy {name} has more than the {MAX_REQUEST_KEYS} keys one request may change; select its keys by \
             owner or by key id in several requests"
        ),
    }
}

/// Decides what a request does to a key as read now.
fn planned_status(record: Option<&KeyRecord>, now: Instant, deadline: Instant) -> RequestStatus {
    let Some(record) = record else { return RequestStatus::NotFound };
    if record.revoked_at.is_some() {
        return RequestStatus::Revoked;
    }
    if let Some(successor_id) = &record.successor_id {
        return RequestStatus::AlreadyRotated { successor_id: successor_id.clone() };
    }
    let outcome = record.state_at(now).outcome;
    if !outcome.is_allowed() || outcome == Outcome::Grace {
        return RequestStatus::Expired;
    }
    let deadline = record.rotation_deadline.map_or(deadline, |current| current.min(deadline));
    let expires_at = Some(record.expires_at.map_or(deadline, |expires_at| expires_at.min(deadline)));
    RequestStatus::Requested { deadline, expires_at }
}

fn stored_status(result: RotationRequestResult, requested: Instant) -> RequestStatus {
    match result {
        RotationRequestResult::Requested(record) => RequestStatus::Requested {
            // The store sets the deadline of every key it reports as requested.
            deadline: record.rotation_deadline.unwrap_or(requested),
            expires_at: record.expires_at,
        },
        RotationRequestResult::AlreadyRotated { successor_id } => RequestStatus::AlreadyRotated { successor_id },
        RotationRequestResult::Revoked => RequestStatus::Revoked,
        _ => RequestStatus::NotFound,
    }
}
