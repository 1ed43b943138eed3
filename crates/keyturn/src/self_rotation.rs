//! Self-rotation: a client rotates its own key, authenticated by that key's token. This module
//! checks the token against the stored record, reads the current successor and writes the
//! rotation that `KeyRecord::plan_self_rotation` in the core permits. It does not count usage:
//! the front end that authenticated the request already did.

use keyturn_core::{Actor, AuditEventType, Duration, Instant, KeyId, KeyRecord, SelfRotationDenied};
use keyturn_store::{AuditFilter, Rotation};
use serde_json::json;

use crate::{Caller, Error, Issued, Keyring};

/// How old an unused successor must be before a self-rotation may replace it. A client whose
/// response was lost retries after this long; requests sent at the same moment get one successor.
pub const REPLACE_AFTER: Duration = Duration::from_secs(10);

impl Keyring {
    /// Rotates the key that `token` identifies, on that key's own authority, and returns the
    /// successor with its token. The audit event `authn_token_self_rotated` names the key itself
    /// as the actor and `client_addr` as the client.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidToken`]: the token does not match a stored key.
    /// - [`Error::SelfRotationDenied`]: the key's policy or the age of its chain forbids it.
    /// - [`Error::NotRotatable`]: the key is revoked, rotated or expired.
    /// - [`Error::SuccessorUsed`]: the key was already rotated and its successor was used.
    /// - [`Error::AlreadyRotated`]: the key's successor was issued by an operator, was revoked, or
    ///   is younger than [`REPLACE_AFTER`].
    /// - [`Error::ReservedScope`]: the key has reserved scopes but not `keyturn:admin`.
    pub async fn self_rotate(&self, token: &str, client_addr: Option<&str>) -> Result<Issued, Error> {
        let now = self.clock.now();
        let old = self.match_token(token).await?;
        let caller = Caller::key(old.key_id.clone(), old.scopes.clone(), client_addr.map(str::to_owned));
        self.check_reserved_scopes(&old.scopes, &caller)?;

        let current_successor = match &old.successor_id {
            Some(successor_id) => self.store.get_key(successor_id).await?,
            None => None,
        };
        let key_policy = self.rotation_policy(&old.policy).await?;
        let plan =
            old.plan_self_rotation(current_successor.as_ref(), now, key_policy.default_overlap).map_err(denied)?;
        if let Some(successor) = current_successor.as_ref().filter(|_| plan.replaced_successor.is_some()) {
            self.check_replaceable(&old.key_id, successor, now).await?;
        }

        let (successor, new_token) = self.new_successor(&old, now, Some(plan.successor_expires_at));
        let successor_id = successor.key_id.clone();
        let replace = plan.replaced_successor.clone();

        let mut events =
            vec![self.event(AuditEventType::AuthnTokenSelfRotated, now, &old.key_id, &caller).with_details(json!({
                "successor_id": successor_id.as_str(),
                "overlap_ends_at": plan.overlap_ends_at.to_rfc3339(),
                "replaced_successor_id": replace.as_ref().map(KeyId::as_str),
                "chain_ends_at": old.chain_ends_at().to_rfc3339(),
                "overlap_after_first_use": key_policy.overlap_after_first_use.map(|d| d.to_string()),
            }))];
        events.push(
            self.event(AuditEventType::AuthnTokenCreated, now, &successor_id, &caller)
                .with_details(crate::keyring::creation_details(&successor)),
        );
        let replaced_is_revoked = current_successor.as_ref().is_some_and(|key| key.revoked_at.is_some());
        if let Some(replaced) = replace.as_ref().filter(|_| !replaced_is_revoked) {
            events.push(self.replacement_event(now, replaced, &successor_id, &caller));
        }

        let rotation = Rotation {
            old_key_id: old.key_id.clone(),
            rotated_at: now,
            overlap_ends_at: plan.overlap_ends_at,
            successor: successor.clone(),
            replace_unused_successor: replace.clone(),
            events,
            overlap_after_first_use: key_policy.overlap_after_first_use,
        };
        let result = self.store.rotate_key(&rotation).await;
        self.cache.evict([&old.key_id, &successor_id].into_iter().chain(replace.as_ref()));
        result?;

        tracing::info!(
            target: "keyturn::keyring", key_id = %old.key_id, successor_id = %successor_id,
            replaced_successor_id = replace.as_ref().map(KeyId::as_str), "key rotated itself"
        );
        Ok(Issued { record: successor, token: new_token })
    }

    /// Allows a self-rotation to replace the key's unused successor only when that successor came
    /// from an earlier self-rotation of the same key, is not revoked, and is at least
    /// [`REPLACE_AFTER`] old. So a client whose response was lost can retry, but a leaked key cannot
    /// replace a successor an operator issued or revoked, and concurrent requests get one successor.
    async fn check_replaceable(&self, key_id: &KeyId, successor: &KeyRecord, now: Instant) -> Result<(), Error> {
        let conflict = || Error::AlreadyRotated { key_id: key_id.clone(), successor_id: successor.key_id.clone() };
        if successor.revoked_at.is_some() || now.since(successor.created_at) < REPLACE_AFTER {
            return Err(conflict());
        }
        let filter = AuditFilter {
            key_id: Some(successor.key_id.clone()),
            event: Some(AuditEventType::AuthnTokenCreated),
            limit: Some(1),
            ..AuditFilter::default()
        };
        let created = self.store.list_audit(&filter).await?;
        let self_issued = created.first().is_some_and(|row| row.event.actor == Actor::Key(key_id.clone()));
        if self_issued {
            Ok(())
        } else {
            Err(conflict())
        }
    }

    /// Reads the key that `token` names from the store and checks the token against the stored
    /// hash. It bypasses the cache, so the decision uses the latest successor.
    async fn match_token(&self, token: &str) -> Result<KeyRecord, Error> {
        let parsed = self.config.format.parse(token).map_err(|_| Error::InvalidToken)?;
        let record = self.store.get_key(parsed.key_id()).await?.ok_or(Error::InvalidToken)?;
        match self.peppers.hash_with(&record.pepper_id, token) {
            Some(hash) if hash == record.hash => Ok(record),
            _ => Err(Error::InvalidToken),
        }
    }
}

fn denied(reason: SelfRotationDenied) -> Error {
    match reason {
        SelfRotationDenied::NotRotatable { key_id, outcome } => Error::NotRotatable { key_id, outcome },
        SelfRotationDenied::SuccessorUsed { key_id, successor_id } => Error::SuccessorUsed { key_id, successor_id },
        other => Error::SelfRotationDenied(other),
    }
}
