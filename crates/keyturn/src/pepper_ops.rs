//! Pepper rotation in the keyring: how many live keys each pepper still hashes, and the store
//! side of retiring a pepper, which revokes the keys still under it when forced and records an
//! `authn_pepper_retired` audit event in the same transaction. Editing the pepper file lives in
//! `pepper_file.rs`; the ring itself lives outside the database.

use keyturn_core::{AuditEventType, KeyId, NewAuditEvent, PepperId, PepperRing};
use keyturn_store::{BulkOutcome, BulkRevocation, KeySelection, MAX_BULK_KEYS};
use serde_json::json;

use crate::pepper_file::unknown_pepper;
use crate::{Caller, Error, Keyring};

/// The revocation reason of the keys revoked because their pepper was retired.
pub const PEPPER_RETIRED_REASON: &str = "pepper retired";

/// How many key ids an error about a pepper in use lists before it only counts the rest.
const LISTED_KEY_IDS: usize = 20;

/// The ring and how many live keys each pepper hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepperStatus {
    pub current: PepperId,
    /// The peppers of the ring in ring order, then the pepper ids that stored keys name but the
    /// ring lacks.
    pub peppers: Vec<PepperEntry>,
    /// Live keys under any pepper.
    pub live_keys: u64,
    /// Live keys under the current pepper: the rehash progress is this out of `live_keys`.
    pub live_under_current: u64,
}

/// One pepper id with its live keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepperEntry {
    pub pepper_id: PepperId,
    pub in_ring: bool,
    pub current: bool,
    pub live_keys: u64,
}

/// The result of retiring a pepper in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepperRetirement {
    pub pepper_id: PepperId,
    /// Keys revoked because they were still under the pepper.
    pub revoked: Vec<KeyId>,
}

impl Keyring {
    /// Returns the pepper ring this keyring hashes and verifies with.
    pub fn pepper_ring(&self) -> &PepperRing {
        &self.peppers
    }

    /// Counts the live keys under each pepper now.
    pub async fn pepper_status(&self) -> Result<PepperStatus, Error> {
        let usage = self.store.pepper_usage(self.clock.now()).await?;
        let current = self.peppers.current_id().clone();
        let live = |id: &PepperId| usage.iter().find(|entry| &entry.pepper_id == id).map_or(0, |entry| entry.live_keys);

        let mut peppers: Vec<PepperEntry> = self
            .peppers
            .ids()
            .map(|id| PepperEntry {
                pepper_id: id.clone(),
                in_ring: true,
                current: *id == current,
                live_keys: live(id),
            })
            .collect();
        for entry in usage.iter().filter(|entry| !self.peppers.contains(&entry.pepper_id)) {
            peppers.push(PepperEntry {
                pepper_id: entry.pepper_id.clone(),
                in_ring: false,
                current: false,
                live_keys: entry.live_keys,
            });
        }
        let live_keys = usage.iter().map(|entry| entry.live_keys).sum();
        Ok(PepperStatus { live_under_current: live(&current), current, peppers, live_keys })
    }

    /// Lists the ids of up to `limit` keys live now under `pepper_id`, in creation order.
    pub async fn live_keys_under_pepper(&self, pepper_id: &PepperId, limit: u32) -> Result<Vec<KeyId>, Error> {
        Ok(self.store.live_keys_under_pepper(pepper_id, self.clock.now(), limit).await?)
    }

    /// Records the retirement of a pepper of the ring that is not current. Live keys still under
    /// it make this fail with [`Error::PepperInUse`], unless `force` is set: then they are
    /// revoked with the reason "pepper retired" in the transaction that appends the
    /// `authn_pepper_retired` event. The caller removes the pepper from the ring afterwards.
    pub async fn retire_pepper(
        &self,
        pepper_id: &PepperId,
        force: bool,
        caller: &Caller,
    ) -> Result<PepperRetirement, Error> {
        self.check_retirable(pepper_id)?;
        let now = self.clock.now();
        let live = self.live_keys_under_pepper(pepper_id, MAX_BULK_KEYS as u32 + 1).await?;
        if live.len() > MAX_BULK_KEYS {
            return Err(Error::InvalidInput {
                field: "pepper",
                reason: format!(
                    "more than {MAX_BULK_KEYS} live keys are under pepper {pepper_id}, more than one retirement \
                     revokes; revoke some by owner first"
                ),
            });
        }
        if !live.is_empty() && !force {
            return Err(in_use(pepper_id, &live));
        }

        let mut retired = NewAuditEvent::new(AuditEventType::AuthnPepperRetired, now, None, caller.actor.clone())
            .with_details(json!({ "pepper_id": pepper_id.as_str(), "revoked_keys": live.len(), "forced": force }));
        retired.client_addr = caller.client_addr.clone();
        if live.is_empty() {
            self.store.append_audit(&retired).await?;
            tracing::info!(target: "keyturn::keyring", pepper_id = %pepper_id, actor = %caller.actor.to_stored(), "pepper retired");
            return Ok(PepperRetirement { pepper_id: pepper_id.clone(), revoked: Vec::new() });
        }

        let mut event = NewAuditEvent::new(AuditEventType::AuthnTokenRevoked, now, None, caller.actor.clone())
            .with_reason(Some(PEPPER_RETIRED_REASON.to_owned()))
            .with_details(json!({ "pepper_retired": pepper_id.as_str() }));
        event.client_addr = caller.client_addr.clone();
        let revocation = BulkRevocation {
            selection: KeySelection::KeyIds(live),
            revoked_at: now,
            reason: Some(PEPPER_RETIRED_REASON.to_owned()),
            event,
            leading_events: Vec::new(),
            closing_events: vec![retired],
            limit: MAX_BULK_KEYS,
        };
        let report = self.store.revoke_selection(&revocation).await?;
        self.cache.evict(report.keys.iter().map(|key| &key.record.key_id));
        let revoked: Vec<KeyId> = report
            .keys
            .into_iter()
            .filter(|key| key.outcome == BulkOutcome::Revoked)
            .map(|key| key.record.key_id)
            .collect();
        tracing::info!(
            target: "keyturn::keyring",
            pepper_id = %pepper_id,
            revoked = revoked.len(),
            actor = %caller.actor.to_stored(),
            "pepper retired; its live keys were revoked"
        );
        Ok(PepperRetirement { pepper_id: pepper_id.clone(), revoked })
    }

    /// Rejects retiring a pepper missing from the ring or the current one.
    pub fn check_retirable(&self, pepper_id: &PepperId) -> Result<(), Error> {
        if !self.peppers.contains(pepper_id) {
            return Err(unknown_pepper(pepper_id, &self.peppers));
        }
        if self.peppers.current_id() == pepper_id {
            return Err(Error::CurrentPepper(pepper_id.clone()));
        }
        Ok(())
    }
}

/// Builds the error of a pepper that live keys still use, listing the first of them.
fn in_use(pepper_id: &PepperId, live: &[KeyId]) -> Error {
    let mut listed: Vec<&str> = live.iter().take(LISTED_KEY_IDS).map(KeyId::as_str).collect();
    let more = live.len().saturating_sub(LISTED_KEY_IDS);
    let more_text = format!("and {more} more");
    if more > 0 {
        listed.push(&more_text);
    }
    Error::PepperInUse { pepper_id: pepper_id.clone(), count: live.len(), listed: listed.join(", ") }
}
