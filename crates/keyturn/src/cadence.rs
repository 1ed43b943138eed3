//! The rotation cadence of named policies: on each run the scheduler requests the rotation of
//! every key whose policy sets `rotate_every` once the key is that old, that is when
//! `created_at + rotate_every <= now`. Keys revoked, rotated or with a rotation request already
//! are left alone, so each key receives at most one cadence request, even with several instances
//! running. The deadline is the key's current expiry, so the request warns the client without
//! shortening the key's life. A key without an expiry gets the deadline
//! `created_at + rotate_every + warn_before` of its policy, or now plus `warn_before` when the
//! scheduler catches up after that instant has passed.

use keyturn_core::{Actor, AuditEventType, Instant, KeyId, KeyRecord, NamedPolicy, NewAuditEvent, Outcome, PolicyName};
use keyturn_store::{CadenceFilter, RotationRequest};
use serde_json::json;

use crate::{Error, Keyring};

/// How many keys one cadence query reads.
const PAGE_SIZE: u32 = 500;
/// How many pages of one policy one run reads at most; the rest waits for the next run.
const MAX_PAGES_PER_RUN: usize = 20;

/// One rotation that a scheduler run requested because of a policy's cadence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CadenceRequest {
    pub key_id: KeyId,
    pub policy: PolicyName,
    /// The instant by which the key must be rotated; its expiry after the request.
    pub deadline: Instant,
}

impl Keyring {
    /// Requests the rotation of every key that the cadence of its policy makes due at `now`, at
    /// most `PAGE_SIZE * MAX_PAGES_PER_RUN` keys read per policy.
    pub(crate) async fn request_cadence_rotations(&self, now: Instant) -> Result<Vec<CadenceRequest>, Error> {
        let mut requested = Vec::new();
        for policy in self.store.list_policies().await? {
            let Some(every) = policy.rotate_every else { continue };
            let created_until = now.saturating_sub(every);
            let mut cursor = None;
            for _ in 0..MAX_PAGES_PER_RUN {
                let filter = CadenceFilter {
                    policy: policy.name.clone(),
                    created_until,
                    cursor: cursor.take(),
                    limit: PAGE_SIZE,
                };
                let keys = self.store.list_cadence_due(&filter).await?;
                for key in &keys {
                    if let Some(request) = self.request_one(&policy, key, now).await? {
                        requested.push(request);
                    }
                }
                if keys.len() < PAGE_SIZE as usize {
                    break;
                }
                cursor = keys.last().map(|key| (key.created_at, key.key_id.clone()));
            }
        }
        Ok(requested)
    }

    /// Requests the rotation of one key read as due, unless it is in its grace period or
    /// rejected already. Returns `None` when the key needs no request or another writer recorded
    /// one first.
    async fn request_one(
        &self,
        policy: &NamedPolicy,
        key: &KeyRecord,
        now: Instant,
    ) -> Result<Option<CadenceRequest>, Error> {
        // NOTE: a key past its expiry that is neither revoked nor rotated gets no request, so it
        // stays a candidate and is read again on every run, within the page limit.
        let outcome = key.state_at(now).outcome;
        if !outcome.is_allowed() || outcome == Outcome::Grace {
            return Ok(None);
        }
        let Some(deadline) = cadence_deadline(policy, key, now) else { return Ok(None) };
        let event = NewAuditEvent::new(
            AuditEventType::AuthnTokenRotationRequested,
            now,
            Some(key.key_id.clone()),
            Actor::System,
        )
        .with_reason(Some(format!("rotation cadence of policy {}", policy.name)))
        .with_details(json!({
            "deadline": deadline.to_rfc3339(),
            "previous_expires_at": key.expires_at.map(Instant::to_rfc3339),
            "policy": policy.name.as_str(),
        }));
        let request = RotationRequest { key_id: key.key_id.clone(), requested_at: now, deadline, event };
        if !self.store.request_first_rotation(&request).await? {
            return Ok(None);
        }
        self.cache.evict([&key.key_id]);
        tracing::info!(target: "keyturn::keyring", key_id = %key.key_id, policy = %policy.name, deadline = %deadline, actor = "system", "rotation requested by policy cadence");
        Ok(Some(CadenceRequest { key_id: key.key_id.clone(), policy: policy.name.clone(), deadline }))
    }
}

/// Returns the deadline of a cadence request: the key's expiry, or for a key without one the
/// later of `created_at + rotate_every + warn_before` and `now + warn_before`. `None` when the
/// policy has no cadence.
fn cadence_deadline(policy: &NamedPolicy, key: &KeyRecord, now: Instant) -> Option<Instant> {
    let every = policy.rotate_every?;
    if let Some(expires_at) = key.expires_at {
        return Some(expires_at);
    }
    let on_time = key.created_at.saturating_add(every).saturating_add(policy.warn_before);
    Some(on_time.max(now.saturating_add(policy.warn_before)))
}
