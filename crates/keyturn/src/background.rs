//! Work kept off the verify path: the change follower that keeps the cache coherent, and the
//! writer that flushes usage counters, rehashes keys under the current pepper, records tokens
//! exposed in URLs and writes the guard's audit events. Both run as tasks on the caller's tokio runtime and hold only a weak
//! reference, so dropping the keyring stops them.
//!
//! A crash loses at most one flush interval of usage counters; lifecycle events never pass
//! through here, since they are written in the same transaction as their change.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use keyturn_core::{Actor, AuditEventType, Decision, Instant, KeyId, NewAuditEvent, Outcome, PepperId, Token};
use keyturn_store::{Rehash, UsageRecord};
use serde_json::json;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::usage::UsageCells;
use crate::{Error, Keyring};

const MAX_QUEUED_REHASHES: usize = 10_000;
const MAX_QUEUED_EXPOSURES: usize = 1_000;
const MAX_QUEUED_GUARD_EVENTS: usize = 1_000;
const MAX_TRACKED_FIRST_USES: usize = 100_000;
const MAX_QUEUED_OBSERVATIONS: usize = 10_000;
const MAX_TRACKED_OBSERVATIONS: usize = 100_000;
const CHANGES_PER_READ: u32 = 1_000;

/// Usage, rehash, exposure and guard work queued by verifications.
#[derive(Default)]
pub(crate) struct Pending {
    inner: Mutex<PendingInner>,
    /// The usage counters of cached keys, which verifications update without taking `inner`.
    pub(crate) cells: UsageCells,
}

#[derive(Default)]
struct PendingInner {
    usage: HashMap<KeyId, UsageRecord>,
    rehash: HashMap<KeyId, (PepperId, Token)>,
    exposures: Vec<Exposure>,
    reported_exposures: HashSet<KeyId>,
    /// Keys whose first use this process has already flushed ahead of the interval.
    first_uses: HashSet<KeyId>,
    /// Lifecycle events that verifications observed, to be recorded once per key and event.
    observations: Vec<NewAuditEvent>,
    /// The observations this process has already queued or recorded.
    observed: HashSet<(KeyId, AuditEventType)>,
    /// Whether this process has recorded the current pepper of a ring with several.
    pepper_recorded: bool,
    /// Audit events of the brute-force guard, each complete and written as it is.
    guard_events: Vec<NewAuditEvent>,
    /// Guard events dropped since the last flush because the queue was full.
    dropped_guard_events: u64,
}

/// A key queued for rehashing under the current pepper, with the pepper it is hashed under now.
type RehashJob = (KeyId, PepperId, Token);

/// Everything one flush writes.
struct Queued {
    usage: Vec<UsageRecord>,
    rehash: Vec<RehashJob>,
    exposures: Vec<Exposure>,
    observations: Vec<NewAuditEvent>,
}

struct Exposure {
    parameter: String,
    token: Token,
    client_addr: Option<String>,
}

/// The running background tasks of one keyring.
pub(crate) struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pending {
    /// Counts one verification of a key that was not served from the cache.
    pub(crate) fn note_usage(&self, key_id: &KeyId, outcome: Outcome, now: Instant, client_addr: Option<&str>) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let record = match inner.usage.get_mut(key_id) {
            Some(record) => record,
            None => inner.usage.entry(key_id.clone()).or_insert_with(|| UsageRecord {
                key_id: key_id.clone(),
                first_used_at: now,
                last_used_at: now,
                last_client_addr: None,
                counts: Vec::new(),
            }),
        };
        record.first_used_at = record.first_used_at.min(now);
        record.last_used_at = record.last_used_at.max(now);
        if client_addr.is_some() && record.last_client_addr.as_deref() != client_addr {
            record.last_client_addr = client_addr.map(str::to_owned);
        }
        match record.counts.iter_mut().find(|(counted, _)| *counted == outcome) {
            Some((_, count)) => *count += 1,
            None => record.counts.push((outcome, 1)),
        }
    }

    /// Records the first use of a key that the store shows as never used; returns `true` once per
    /// key, when the writer should flush at once. `--replace-unused-successor` reads
    /// `first_used_at`, so it must not wait a whole flush interval.
    pub(crate) fn note_first_use(&self, key_id: &KeyId) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.first_uses.len() >= MAX_TRACKED_FIRST_USES {
            inner.first_uses.clear();
        }
        inner.first_uses.insert(key_id.clone())
    }

    /// Queues an event that a verification observed, such as a key found in its grace period,
    /// unless this process queued the same event for the key before. The writer records it in
    /// the store once per key and event, whichever process observes it first.
    pub(crate) fn note_observation(
        &self,
        key_id: &KeyId,
        decision: &Decision,
        now: Instant,
        client_addr: Option<&str>,
    ) {
        let event_type = match decision.outcome {
            Outcome::Grace => AuditEventType::AuthnTokenGraceEntered,
            Outcome::Expired => AuditEventType::AuthnTokenExpired,
            Outcome::Superseded => AuditEventType::AuthnTokenSupersededUsed,
            _ => return,
        };
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.observed.len() >= MAX_TRACKED_OBSERVATIONS {
            inner.observed.clear();
        }
        if inner.observations.len() >= MAX_QUEUED_OBSERVATIONS || !inner.observed.insert((key_id.clone(), event_type)) {
            return;
        }
        let deadline = decision.deadline.map(|deadline| deadline.to_rfc3339());
        let mut event = NewAuditEvent::new(event_type, now, Some(key_id.clone()), Actor::System)
            .with_details(json!({ "state_deadline": deadline }));
        event.client_addr = client_addr.map(str::to_owned);
        inner.observations.push(event);
    }

    /// Forgets an observation whose write failed, so the next verification queues it again.
    fn forget_observation(&self, event: &NewAuditEvent) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(key_id) = &event.key_id {
            inner.observed.remove(&(key_id.clone(), event.event));
        }
    }

    pub(crate) fn queue_rehash(&self, key_id: &KeyId, from: &PepperId, token: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.rehash.len() < MAX_QUEUED_REHASHES && !inner.rehash.contains_key(key_id) {
            inner.rehash.insert(key_id.clone(), (from.clone(), Token::new(token.to_owned())));
        }
    }

    pub(crate) fn queue_exposure(&self, parameter: &str, token: &str, client_addr: Option<&str>) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.exposures.len() < MAX_QUEUED_EXPOSURES {
            inner.exposures.push(Exposure {
                parameter: parameter.to_owned(),
                token: Token::new(token.trim().to_owned()),
                client_addr: client_addr.map(str::to_owned),
            });
        }
    }

    /// Queues an audit event of the brute-force guard. When the queue is full because the store
    /// has not kept up, counts the event as dropped and returns `false`.
    pub(crate) fn queue_guard_event(&self, event: NewAuditEvent) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.guard_events.len() >= MAX_QUEUED_GUARD_EVENTS {
            inner.dropped_guard_events += 1;
            return false;
        }
        inner.guard_events.push(event);
        true
    }

    /// Takes the queued guard events and the count of those dropped since the last call.
    fn take_guard_events(&self) -> (Vec<NewAuditEvent>, u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dropped = std::mem::take(&mut inner.dropped_guard_events);
        (std::mem::take(&mut inner.guard_events), dropped)
    }

    /// Puts guard events back at the front after a failed write, keeping the queue's bound.
    fn restore_guard_events(&self, mut events: Vec<NewAuditEvent>) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        events.append(&mut inner.guard_events);
        let excess = events.len().saturating_sub(MAX_QUEUED_GUARD_EVENTS);
        events.truncate(MAX_QUEUED_GUARD_EVENTS);
        inner.dropped_guard_events += excess as u64;
        inner.guard_events = events;
    }

    fn take(&self) -> Queued {
        let cached_usage = self.cells.take();
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        merge_usage(&mut inner.usage, cached_usage);
        Queued {
            usage: inner.usage.drain().map(|(_, record)| record).collect(),
            rehash: inner.rehash.drain().map(|(key_id, (from, token))| (key_id, from, token)).collect(),
            exposures: std::mem::take(&mut inner.exposures),
            observations: std::mem::take(&mut inner.observations),
        }
    }

    /// Returns `true` once, the first time this process should record its current pepper.
    fn take_pepper_record(&self) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        !std::mem::replace(&mut inner.pepper_recorded, true)
    }

    fn retry_pepper_record(&self) {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pepper_recorded = false;
    }

    /// Puts usage back after a failed write, merging with what arrived meanwhile.
    fn restore_usage(&self, records: Vec<UsageRecord>) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        merge_usage(&mut inner.usage, records);
    }

    fn first_exposure_report(&self, key_id: &KeyId) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.reported_exposures.insert(key_id.clone())
    }
}

impl Keyring {
    /// Starts the change follower (unless in strict mode), the background writer and, when
    /// `schedule_interval` is set, the scheduler on the current tokio runtime. Calling it again does nothing.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime.
    pub fn start_background(self: &Arc<Self>) {
        let mut background = self.background.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if background.is_some() {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let flush_now = Arc::clone(&self.flush_now);
        let mut tasks = vec![tokio::spawn(run_writer(Arc::downgrade(self), flush_now, stopped.clone()))];
        if let Some(interval) = self.config.schedule_interval {
            let scheduler = crate::scheduler::run_periodically(Arc::downgrade(self), interval, stopped.clone());
            tasks.push(tokio::spawn(scheduler));
        }
        if !self.config.consistency.strict {
            tasks.push(tokio::spawn(run_follower(Arc::downgrade(self), stopped)));
        }
        *background = Some(Background { stop, tasks });
    }

    /// Stops the background tasks and writes what is queued.
    pub async fn shutdown(&self) {
        let background = self.background.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(background) = background {
            let _ = background.stop.send(true);
            for task in background.tasks {
                let _ = task.await;
            }
        }
        if let Err(error) = self.flush().await {
            tracing::warn!(target: "keyturn::store", error = %error, "final flush failed; queued usage is lost");
        }
    }

    /// Writes queued usage counters, rehashes, exposure reports and guard audit events now.
    pub async fn flush(&self) -> Result<(), Error> {
        let _flushing = self.flush_lock.lock().await;
        let Queued { usage, rehash, exposures, observations } = self.pending.take();
        let mut result = Ok(());
        if !usage.is_empty() {
            if let Err(error) = self.store.record_usage(&usage).await {
                self.pending.restore_usage(usage);
                result = Err(error.into());
            }
        }
        for (key_id, from, token) in rehash {
            if let Err(error) = self.rehash(&key_id, &from, &token).await {
                tracing::warn!(target: "keyturn::store", key_id = %key_id, error = %error, "rehash failed; retried at next use");
            }
        }
        for exposure in exposures {
            if let Err(error) = self.report_exposure(&exposure).await {
                tracing::warn!(target: "keyturn::store", error = %error, "recording an exposed token failed");
            }
        }
        for event in observations {
            if let Err(error) = self.store.append_audit_once(&event, false).await {
                self.pending.forget_observation(&event);
                tracing::warn!(target: "keyturn::store", event = event.event.as_str(), error = %error, "recording an observed event failed; retried at next verification");
            }
        }
        if self.peppers.ids().count() > 1 && self.pending.take_pepper_record() {
            if let Err(error) = self.record_current_pepper().await {
                self.pending.retry_pepper_record();
                tracing::warn!(target: "keyturn::store", error = %error, "recording the current pepper failed; retried at next flush");
            }
        }
        if let Err(error) = self.write_guard_events().await {
            tracing::warn!(target: "keyturn::store", error = %error, "writing guard audit events failed; retrying");
        }
        result
    }

    /// Records once per pepper id that new keys are hashed under the ring's current pepper, when
    /// the ring holds older ones too: the trace of a pepper rotation.
    async fn record_current_pepper(&self) -> Result<(), Error> {
        let current = self.peppers.current_id();
        let older: Vec<&str> = self.peppers.ids().skip(1).map(PepperId::as_str).collect();
        let event = NewAuditEvent::new(AuditEventType::AuthnPepperRotated, self.clock.now(), None, Actor::System)
            .with_details(json!({ "pepper_id": current.as_str() }))
            .with_reason(Some(format!("older peppers still accepted: {}", older.join(", "))));
        self.store.append_audit_once(&event, true).await?;
        Ok(())
    }

    /// Appends the queued guard events in order. On a store error the unwritten ones go back to
    /// the queue for the next flush.
    async fn write_guard_events(&self) -> Result<(), Error> {
        let (events, dropped) = self.pending.take_guard_events();
        if dropped > 0 {
            tracing::warn!(target: "keyturn::store", dropped, "guard audit events dropped because the queue was full");
        }
        let mut remaining = events.into_iter();
        while let Some(event) = remaining.next() {
            if let Err(error) = self.store.append_audit(&event).await {
                self.pending.restore_guard_events(std::iter::once(event).chain(remaining).collect());
                return Err(error.into());
            }
        }
        Ok(())
    }

    /// Applies the store's changes since the last sync to the cache. The follower calls this on
    /// every poll; tests call it to sync without waiting.
    pub async fn sync_cache(&self) -> Result<(), Error> {
        let started = self.cache.now_ms();
        let latest = self.store.change_seq().await?;
        let mut applied = self.cache.synced_seq();
        let first_sync = !self.cache.is_fresh() && applied == 0;

        if first_sync || latest < applied {
            self.cache.clear();
            applied = latest;
        }
        while applied < latest {
            let changes = self.store.changes_since(applied, CHANGES_PER_READ).await?;
            let Some(last) = changes.last() else { break };
            applied = last.seq;
            self.cache.evict(changes.iter().map(|change| &change.key_id));
        }
        self.cache.mark_synced(applied, started);
        Ok(())
    }

    async fn rehash(&self, key_id: &KeyId, from: &PepperId, token: &Token) -> Result<(), Error> {
        let (to, hash) = self.peppers.hash_current(token.expose());
        let now = self.clock.now();
        let event = NewAuditEvent::new(AuditEventType::AuthnTokenRehashed, now, Some(key_id.clone()), Actor::System)
            .with_details(json!({ "from_pepper_id": from.as_str(), "to_pepper_id": to.as_str() }));
        let rehash = Rehash { key_id: key_id.clone(), from: from.clone(), to, hash, event };
        if self.store.rehash_key(&rehash).await? {
            self.cache.evict([key_id]);
            tracing::info!(target: "keyturn::store", key_id = %key_id, from_pepper_id = %from, "key rehashed under current pepper");
        }
        Ok(())
    }

    async fn report_exposure(&self, exposure: &Exposure) -> Result<(), Error> {
        let Ok(parsed) = self.config.format.parse(exposure.token.expose()) else { return Ok(()) };
        let Some(record) = self.store.get_key(parsed.key_id()).await? else { return Ok(()) };
        let matches = self.peppers.hash_with(&record.pepper_id, exposure.token.expose()) == Some(record.hash);
        if !matches || !self.pending.first_exposure_report(&record.key_id) {
            return Ok(());
        }
        let mut event = NewAuditEvent::new(
            AuditEventType::AuthnTokenExposed,
            self.clock.now(),
            Some(record.key_id.clone()),
            Actor::System,
        )
        .with_details(json!({ "query_parameter": exposure.parameter }));
        event.client_addr = exposure.client_addr.clone();
        self.store.append_audit(&event).await?;
        tracing::warn!(target: "keyturn::verify", key_id = %record.key_id, parameter = %exposure.parameter, "token exposed in url query; rotate the key");
        Ok(())
    }
}

/// Adds `records` to the queued usage, one record per key. Two records of one key keep the
/// client address of the later last use.
fn merge_usage(usage: &mut HashMap<KeyId, UsageRecord>, records: Vec<UsageRecord>) {
    for record in records {
        let Some(current) = usage.get_mut(&record.key_id) else {
            usage.insert(record.key_id.clone(), record);
            continue;
        };
        let newer = record.last_used_at > current.last_used_at;
        current.first_used_at = current.first_used_at.min(record.first_used_at);
        current.last_used_at = current.last_used_at.max(record.last_used_at);
        current.last_client_addr = if newer {
            record.last_client_addr.or(current.last_client_addr.take())
        } else {
            current.last_client_addr.take().or(record.last_client_addr)
        };
        for (outcome, count) in record.counts {
            match current.counts.iter_mut().find(|(counted, _)| *counted == outcome) {
                Some((_, existing)) => *existing += count,
                None => current.counts.push((outcome, count)),
            }
        }
    }
}

async fn run_follower(keyring: Weak<Keyring>, mut stopped: watch::Receiver<bool>) {
    let mut failures: u64 = 0;
    loop {
        let Some(strong) = keyring.upgrade() else { return };
        let interval = strong.config.consistency.poll_interval;
        match strong.sync_cache().await {
            Ok(()) if failures > 0 => {
                tracing::info!(target: "keyturn::store", failures, "change follower recovered");
                failures = 0;
            }
            Ok(()) => {}
            Err(error) => {
                failures += 1;
                // Log the first failure and then one in every 40 (about every 10 s at the default poll).
                if failures == 1 || failures % 40 == 0 {
                    tracing::warn!(target: "keyturn::store", error = %error, failures, "change follower cannot reach the store");
                }
            }
        }
        let store = Arc::clone(&strong.store);
        let applied = strong.cache.synced_seq();
        drop(strong);
        // PostgreSQL wakes the follower as soon as another instance commits a change; every store
        // also returns after the poll interval, so a lost notification costs at most one interval.
        tokio::select! {
            _ = store.wait_for_change(applied, interval) => {}
            _ = stopped.changed() => return,
        }
    }
}

async fn run_writer(keyring: Weak<Keyring>, flush_now: Arc<Notify>, mut stopped: watch::Receiver<bool>) {
    loop {
        let Some(strong) = keyring.upgrade() else { return };
        let interval = strong.config.flush_interval;
        if let Err(error) = strong.flush().await {
            tracing::warn!(target: "keyturn::store", error = %error, "writing usage counters failed; retrying");
        }
        drop(strong);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = flush_now.notified() => {}
            _ = stopped.changed() => return,
        }
    }
}
