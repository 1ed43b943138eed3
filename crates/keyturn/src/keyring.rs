//! The keyring: the one service every front end calls to create, list, rotate and revoke keys.
//! Each mutation writes its audit events in the same store transaction and updates this
//! process's cache at once. Verification lives in `verify.rs`, background work in
//! `background.rs`.

use std::sync::Arc;

use keyturn_core::{
    Actor, AuditEvent, AuditEventType, Clock, Duration, Expiry, Instant, KeyId, KeyRecord, KeyState, NewAuditEvent,
    Outcome, PepperRing, Policy, PolicyName, Scopes, Token,
};
use keyturn_store::{AuditFilter, KeyFilter, Revocation, Rotation, Store, StoreError};
use rand_core::OsRng;
use serde_json::{json, Map, Value};

use crate::background::Pending;
use crate::cache::Cache;
use crate::guard::Guard;
use crate::{Config, Error};

const MAX_TEXT_LEN: usize = 128;
const MAX_REASON_LEN: usize = 500;
const MAX_METADATA_BYTES: usize = 4096;
/// The scope that grants every reserved scope, and alone may grant reserved scopes to other keys.
const ADMIN_SCOPE: &str = "keyturn:admin";

/// The service layer over one store, one pepper ring and one clock.
pub struct Keyring {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) peppers: PepperRing,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: Config,
    pub(crate) cache: Cache,
    pub(crate) pending: Pending,
    /// Failure counts per client address; `None` when the guard is off.
    pub(crate) guard: Option<Guard>,
    pub(crate) lookups: tokio::sync::Semaphore,
    /// Wakes the background writer before its interval ends, on the first use of a key.
    pub(crate) flush_now: Arc<tokio::sync::Notify>,
    /// Serialises flushes, so `flush` returns only after everything queued before it is written,
    /// even when the background writer took part of the queue first.
    pub(crate) flush_lock: tokio::sync::Mutex<()>,
    pub(crate) background: std::sync::Mutex<Option<crate::background::Background>>,
}

/// The actor and client address of a change, recorded in its audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: Actor,
    /// The scopes of the acting key when the actor is a key; empty otherwise.
    pub scopes: Scopes,
    pub client_addr: Option<String>,
}

/// A request to create a key. Unset policy fields take the keyring's default policy.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub owner: Option<String>,
    pub scopes: Scopes,
    pub metadata: Map<String, Value>,
    pub expiry: Option<Expiry>,
    pub grace: Option<Duration>,
    pub warn_before: Option<Duration>,
    /// The named policy the key is created under; `default` when unset. Explicit values above
    /// override the policy's.
    pub policy: Option<PolicyName>,
}

/// The self-rotation policy of a new key. Unset fields take the keyring's default policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelfRotationOptions {
    /// Whether the key may rotate itself with its own token.
    pub allowed: Option<bool>,
    /// How long the key's rotation chain may last before self-rotation is rejected.
    pub max_chain_lifetime: Option<Duration>,
}

/// Options of a rotation.
#[derive(Debug, Clone, Default)]
pub struct RotateOptions {
    /// How long the old key keeps working; the policy's default overlap when unset.
    pub overlap: Option<Duration>,
    /// The successor's expiry; the old key's lifetime counted from now when unset.
    pub expiry: Option<Expiry>,
    /// Replace a successor that was never used instead of failing because one exists.
    pub replace_unused_successor: bool,
    /// How long the old key keeps working after the successor's first use, within the overlap;
    /// the policy's value when unset.
    pub overlap_after_first_use: Option<Duration>,
}

/// The filter of [`Keyring::list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub owner: Option<String>,
    pub state: Option<Outcome>,
    /// Only keys still accepted whose expiry falls within this time from now: the keys to rotate
    /// soon.
    pub expiring_within: Option<Duration>,
    /// Only keys still accepted that were not used for this long: last used before now minus
    /// this, or never used and created before it. Usage is written behind, so a use in the last
    /// flush interval may not count yet.
    pub unused_for: Option<Duration>,
}

impl ListFilter {
    /// Returns whether a key's record and state at `now` pass every filter except the owner,
    /// which the store applies.
    pub(crate) fn matches(&self, view: &KeyView, now: Instant) -> bool {
        if self.state.is_some_and(|state| view.state.outcome != state) {
            return false;
        }
        let accepted = view.state.outcome.is_allowed();
        if let Some(window) = self.expiring_within {
            let soon = view.record.expires_at.is_some_and(|expires_at| expires_at < now.saturating_add(window));
            if !accepted || !soon {
                return false;
            }
        }
        if let Some(idle) = self.unused_for {
            let since = view.record.last_used_at.unwrap_or(view.record.created_at);
            if !accepted || since >= now.saturating_sub(idle) {
                return false;
            }
        }
        true
    }

    pub(crate) fn needs_scan(&self) -> bool {
        self.state.is_some() || self.expiring_within.is_some() || self.unused_for.is_some()
    }
}

/// A newly issued key and its token, which is shown this once and never stored.
#[derive(Debug)]
pub struct Issued {
    pub record: KeyRecord,
    pub token: Token,
}

/// A key with its state at the instant it was read.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub record: KeyRecord,
    pub state: KeyState,
}

impl Caller {
    pub fn new(actor: Actor) -> Self {
        Caller { actor, scopes: Scopes::default(), client_addr: None }
    }

    /// A request from `client_addr` authenticated with the key `key_id` and its `scopes`.
    pub fn key(key_id: KeyId, scopes: Scopes, client_addr: Option<String>) -> Self {
        Caller { actor: Actor::Key(key_id), scopes, client_addr }
    }

    /// The operating-system user running this process, for commands run from a terminal.
    pub fn cli() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()));
        Caller::new(Actor::Cli(user))
    }
}

impl Keyring {
    /// Creates a keyring over an open store. Background work starts with
    /// [`Keyring::start_background`]; until then every verification reads through to the store.
    pub fn new(store: Arc<dyn Store>, peppers: PepperRing, clock: Arc<dyn Clock>, config: Config) -> Arc<Self> {
        let cache = Cache::new(
            millis(config.consistency.max_staleness),
            millis(config.unknown_key_ttl),
            config.cache_capacity,
            config.track_usage,
        );
        if config.consistency.strict {
            cache.disable();
        }
        let lookups = tokio::sync::Semaphore::new(config.max_concurrent_lookups.max(1));
        let guard = config.guard.map(Guard::new);
        Arc::new(Keyring {
            store,
            peppers,
            clock,
            config,
            cache,
            pending: Pending::default(),
            guard,
            lookups,
            flush_now: Arc::new(tokio::sync::Notify::new()),
            flush_lock: tokio::sync::Mutex::new(()),
            background: std::sync::Mutex::new(None),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Creates a key with the default self-rotation policy and returns it with its token.
    pub async fn create(&self, new: NewKey, caller: &Caller) -> Result<Issued, Error> {
        self.create_with(new, SelfRotationOptions::default(), caller).await
    }

    /// Creates a key with its own self-rotation policy and returns it with its token.
    pub async fn create_with(
        &self,
        new: NewKey,
        self_rotation: SelfRotationOptions,
        caller: &Caller,
    ) -> Result<Issued, Error> {
        match self.create_key(new, self_rotation, caller, false).await? {
            Some(issued) => Ok(issued),
            None => Err(Error::Store(StoreError::Internal("the store inserted no key and reported no error".into()))),
        }
    }

    /// Creates a key with the default self-rotation policy, like [`Keyring::create`], but only
    /// when the store contains no key, and returns `None` otherwise. Of concurrent calls on one
    /// empty database, from any process, exactly one creates its key, so `keyturn init` run on
    /// several hosts at once issues one bootstrap admin key.
    pub async fn create_if_empty(&self, new: NewKey, caller: &Caller) -> Result<Option<Issued>, Error> {
        self.create_key(new, SelfRotationOptions::default(), caller, true).await
    }

    /// Validates `new`, builds its record and inserts it. With `only_if_empty`, returns `None`
    /// when the store already contains a key. Otherwise it always returns a key or an error.
    async fn create_key(
        &self,
        new: NewKey,
        self_rotation: SelfRotationOptions,
        caller: &Caller,
        only_if_empty: bool,
    ) -> Result<Option<Issued>, Error> {
        let now = self.clock.now();
        let name = check_text("name", &new.name)?;
        let owner = new.owner.as_deref().map(|owner| check_text("owner", owner)).transpose()?;
        check_metadata(&new.metadata)?;
        self.check_reserved_scopes(&new.scopes, caller)?;

        let policy_name = new.policy.clone().unwrap_or_default();
        let base = self.policy(&policy_name).await?.to_policy();
        let policy = Policy {
            expiry: new.expiry.unwrap_or(base.expiry),
            grace: new.grace.unwrap_or(base.grace),
            warn_before: new.warn_before.unwrap_or(base.warn_before),
            default_overlap: base.default_overlap,
            self_rotation: self_rotation.allowed.unwrap_or(base.self_rotation),
            max_chain_lifetime: self_rotation.max_chain_lifetime.unwrap_or(base.max_chain_lifetime),
        };
        let expires_at = policy.expires_at(now)?;
        if policy.max_chain_lifetime.is_zero() {
            return Err(Error::InvalidInput {
                field: "max_chain_lifetime",
                reason: "it must be greater than zero; to forbid self-rotation, disable it instead".to_owned(),
            });
        }

        for _ in 0..3 {
            let key_id = KeyId::generate(&mut OsRng);
            let token = self.config.format.generate(&key_id, &mut OsRng);
            let (pepper_id, hash) = self.peppers.hash_current(token.expose());
            let record = KeyRecord {
                key_id: key_id.clone(),
                name: name.clone(),
                owner: owner.clone(),
                scopes: new.scopes.clone(),
                metadata: new.metadata.clone(),
                hash,
                pepper_id,
                created_at: now,
                expires_at,
                grace: policy.grace,
                warn_before: policy.warn_before,
                revoked_at: None,
                revocation_reason: None,
                rotated_at: None,
                overlap_ends_at: None,
                successor_id: None,
                predecessor_id: None,
                chain_started_at: now,
                self_rotation: policy.self_rotation,
                max_chain_lifetime: policy.max_chain_lifetime,
                rotation_requested_at: None,
                rotation_deadline: None,
                expires_before_request: None,
                first_used_at: None,
                last_used_at: None,
                policy: policy_name.clone(),
                overlap_after_first_use: None,
            };
            let event = self
                .event(AuditEventType::AuthnTokenCreated, now, &key_id, caller)
                .with_details(creation_details(&record));
            let inserted = if only_if_empty {
                self.store.insert_key_if_empty(&record, &event).await
            } else {
                self.store.insert_key(&record, &event).await.map(|()| true)
            };
            match inserted {
                Ok(true) => {
                    self.cache.evict([&key_id]);
                    tracing::info!(target: "keyturn::keyring", key_id = %key_id, actor = %caller.actor.to_stored(), "key created");
                    return Ok(Some(Issued { record, token }));
                }
                Ok(false) => {
                    tracing::info!(target: "keyturn::keyring", actor = %caller.actor.to_stored(), "store already contains keys, so no key was created");
                    return Ok(None);
                }
                Err(StoreError::DuplicateKeyId(_)) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Store(StoreError::Internal("three generated key ids collided; retry the request".into())))
    }

    /// Returns a key with its state now.
    pub async fn get(&self, key_id: &KeyId) -> Result<KeyView, Error> {
        let record = self.store.get_key(key_id).await?.ok_or_else(|| Error::NotFound(key_id.clone()))?;
        let state = record.state_at(self.clock.now());
        Ok(KeyView { record, state })
    }

    /// Lists keys, optionally by owner and by state now.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<KeyView>, Error> {
        let now = self.clock.now();
        let store_filter = KeyFilter { owner: filter.owner.clone(), ..KeyFilter::default() };
        let records = self.store.list_keys(&store_filter).await?;
        let views = records
            .into_iter()
            .map(|record| KeyView { state: record.state_at(now), record })
            .filter(|view| filter.matches(view, now))
            .collect();
        Ok(views)
    }

    /// Rotates a key: issues a successor with the same owner, name, scopes, policy and metadata,
    /// and lets the old key work until the end of its overlap window.
    pub async fn rotate(&self, key_id: &KeyId, options: &RotateOptions, caller: &Caller) -> Result<Issued, Error> {
        let now = self.clock.now();
        let old = self.store.get_key(key_id).await?.ok_or_else(|| Error::NotFound(key_id.clone()))?;
        self.check_reserved_scopes(&old.scopes, caller)?;
        let outcome = old.state_at(now).outcome;
        let replace = match (outcome, &old.successor_id) {
            (Outcome::Superseded, Some(successor)) if options.replace_unused_successor => Some(successor.clone()),
            (Outcome::Superseded, Some(successor)) => {
                return Err(Error::AlreadyRotated { key_id: key_id.clone(), successor_id: successor.clone() })
            }
            (Outcome::Active | Outcome::Expiring | Outcome::Grace | Outcome::RotationRequested, _) => None,
            (outcome, _) => return Err(Error::NotRotatable { key_id: key_id.clone(), outcome }),
        };

        let expires_at = match options.expiry {
            Some(expiry) => Policy { expiry, ..self.config.policy }.expires_at(now)?,
            None => old.successor_expires_at(now),
        };
        let key_policy = self.rotation_policy(&old.policy).await?;
        let overlap = options.overlap.unwrap_or(key_policy.default_overlap);
        if let Some(after) = options.overlap_after_first_use {
            keyturn_core::named_policy::check_overlap_after_first_use(after, overlap)
                .map_err(|reason| Error::InvalidInput { field: "overlap_after_first_use", reason })?;
        }
        let overlap_after_first_use = options.overlap_after_first_use.or(key_policy.overlap_after_first_use);
        let overlap_ends_at = old.overlap_end_for(now, overlap);

        let (successor, token) = self.new_successor(&old, now, expires_at);
        let successor_id = successor.key_id.clone();

        let mut events = vec![self.event(AuditEventType::AuthnTokenRotated, now, key_id, caller).with_details(json!({
            "successor_id": successor_id.as_str(),
            "overlap_ends_at": if replace.is_some() { old.overlap_ends_at } else { Some(overlap_ends_at) }.map(Instant::to_rfc3339),
            "replaced_successor_id": replace.as_ref().map(KeyId::as_str),
            "overlap_after_first_use": overlap_after_first_use.filter(|_| replace.is_none()).map(|d| d.to_string()),
        }))];
        events.push(
            self.event(AuditEventType::AuthnTokenCreated, now, &successor_id, caller)
                .with_details(creation_details(&successor)),
        );
        let replaced_is_revoked = match &replace {
            Some(replaced) => self.store.get_key(replaced).await?.is_some_and(|key| key.revoked_at.is_some()),
            None => false,
        };
        if let Some(replaced) = replace.as_ref().filter(|_| !replaced_is_revoked) {
            events.push(self.replacement_event(now, replaced, &successor_id, caller));
        }

        let rotation = Rotation {
            old_key_id: key_id.clone(),
            rotated_at: now,
            overlap_ends_at,
            successor: successor.clone(),
            replace_unused_successor: replace.clone(),
            events,
            overlap_after_first_use,
        };
        self.store.rotate_key(&rotation).await?;
        self.cache.evict([key_id, &successor_id].into_iter().chain(replace.as_ref()));
        tracing::info!(target: "keyturn::keyring", key_id = %key_id, successor_id = %successor_id, actor = %caller.actor.to_stored(), "key rotated");
        Ok(Issued { record: successor, token })
    }

    /// Revokes a key. Revocation is final and takes effect in this process at once.
    pub async fn revoke(&self, key_id: &KeyId, reason: Option<&str>, caller: &Caller) -> Result<KeyRecord, Error> {
        let now = self.clock.now();
        let reason = reason.map(check_reason).transpose()?;
        let event = self.event(AuditEventType::AuthnTokenRevoked, now, key_id, caller).with_reason(reason.clone());
        let revocation = Revocation { key_id: key_id.clone(), revoked_at: now, reason, event };
        let result = self.store.revoke_key(&revocation).await;
        self.cache.evict([key_id]);
        match result {
            Ok(record) => {
                tracing::info!(target: "keyturn::keyring", key_id = %key_id, actor = %caller.actor.to_stored(), "key revoked");
                Ok(record)
            }
            Err(StoreError::Revoked(_)) => {
                let record = self.store.get_key(key_id).await?.ok_or_else(|| Error::NotFound(key_id.clone()))?;
                let revoked_at = record.revoked_at.unwrap_or(now);
                Err(Error::AlreadyRevoked { key_id: key_id.clone(), revoked_at })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Lists audit events in sequence order.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, Error> {
        Ok(self.store.list_audit(filter).await?)
    }

    /// Builds the successor of `old` created at `now`: the same owner, name, scopes, policy,
    /// metadata and chain, a new key id and token, and the given expiry.
    pub(crate) fn new_successor(
        &self,
        old: &KeyRecord,
        now: Instant,
        expires_at: Option<Instant>,
    ) -> (KeyRecord, Token) {
        let successor_id = KeyId::generate(&mut OsRng);
        let token = self.config.format.generate(&successor_id, &mut OsRng);
        let (pepper_id, hash) = self.peppers.hash_current(token.expose());
        let successor = KeyRecord {
            key_id: successor_id,
            hash,
            pepper_id,
            created_at: now,
            expires_at,
            revoked_at: None,
            revocation_reason: None,
            rotated_at: None,
            overlap_ends_at: None,
            successor_id: None,
            predecessor_id: Some(old.key_id.clone()),
            rotation_requested_at: None,
            rotation_deadline: None,
            expires_before_request: None,
            first_used_at: None,
            last_used_at: None,
            overlap_after_first_use: None,
            ..old.clone()
        };
        (successor, token)
    }

    /// Builds the audit event of an unused successor revoked because a new successor replaces it.
    pub(crate) fn replacement_event(
        &self,
        now: Instant,
        replaced: &KeyId,
        successor_id: &KeyId,
        caller: &Caller,
    ) -> NewAuditEvent {
        self.event(AuditEventType::AuthnTokenRevoked, now, replaced, caller)
            .with_reason(Some(format!("replaced by {successor_id}")))
            .with_details(json!({ "replaced_by": successor_id.as_str() }))
    }

    /// Rejects creating or rotating a key with reserved scopes unless the caller is a
    /// terminal command, which runs with the operator's rights, or a key with `keyturn:admin`.
    pub(crate) fn check_reserved_scopes(&self, scopes: &Scopes, caller: &Caller) -> Result<(), Error> {
        let admin_key =
            matches!(caller.actor, Actor::Key(_)) && caller.scopes.iter().any(|s| s.as_str() == ADMIN_SCOPE);
        match caller.actor {
            Actor::Cli(_) => Ok(()),
            _ if admin_key => Ok(()),
            _ if scopes.has_reserved() => Err(Error::ReservedScope),
            _ => Ok(()),
        }
    }

    /// Records that an admin key read keys or audit events, as `authz_admin` with the operation
    /// and its parameters. Changes made through the admin API have rows of their own. The row is
    /// written before the response is sent, so a read that cannot be audited fails.
    pub async fn record_admin_read(
        &self,
        caller: &Caller,
        operation: &str,
        key_id: Option<&KeyId>,
        parameters: Value,
    ) -> Result<(), Error> {
        let mut event =
            NewAuditEvent::new(AuditEventType::AuthzAdmin, self.clock.now(), key_id.cloned(), caller.actor.clone())
                .with_details(serde_json::json!({ "operation": operation, "parameters": parameters }));
        event.client_addr = caller.client_addr.clone();
        self.store.append_audit(&event).await?;
        Ok(())
    }

    pub(crate) fn event(&self, event: AuditEventType, at: Instant, key_id: &KeyId, caller: &Caller) -> NewAuditEvent {
        let mut event = NewAuditEvent::new(event, at, Some(key_id.clone()), caller.actor.clone());
        event.client_addr = caller.client_addr.clone();
        event
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("store", &self.store.location())
            .field("peppers", &self.peppers)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn creation_details(record: &KeyRecord) -> Value {
    json!({
        "name": record.name,
        "owner": record.owner,
        "scopes": record.scopes,
        "expires_at": record.expires_at.map(Instant::to_rfc3339),
        "no_expiry": record.expires_at.is_none(),
        "grace": record.grace.to_string(),
        "warn_before": record.warn_before.to_string(),
        "predecessor_id": record.predecessor_id.as_ref().map(KeyId::as_str),
        "pepper_id": record.pepper_id.as_str(),
        "self_rotation": record.self_rotation,
        "max_chain_lifetime": record.max_chain_lifetime.to_string(),
        "policy": record.policy.as_str(),
    })
}

pub(crate) fn check_text(field: &'static str, value: &str) -> Result<String, Error> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > MAX_TEXT_LEN || trimmed.chars().any(char::is_control) {
        return Err(Error::InvalidInput {
            field,
            reason: format!(
                "{} must be 1 to {MAX_TEXT_LEN} characters without control characters",
                keyturn_core::quote_value(value)
            ),
        });
    }
    Ok(trimmed.to_owned())
}

pub(crate) fn check_reason(value: &str) -> Result<String, Error> {
    let trimmed = value.trim();
    if trimmed.chars().count() > MAX_REASON_LEN || trimmed.chars().any(char::is_control) {
        return Err(Error::InvalidInput {
            field: "reason",
            reason: format!(
                "{} must be at most {MAX_REASON_LEN} characters on one line, without control characters",
                keyturn_core::quote_value(value)
            ),
        });
    }
    Ok(trimmed.to_owned())
}

fn check_metadata(metadata: &Map<String, Value>) -> Result<(), Error> {
    let size = serde_json::to_vec(metadata).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(Error::InvalidInput {
            field: "metadata",
            reason: format!("it is {size} bytes as JSON; keep it under {MAX_METADATA_BYTES} bytes"),
        });
    }
    Ok(())
}

pub(crate) fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
