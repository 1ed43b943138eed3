//! The scheduler: records the lifecycle events that time alone causes (warning window entered,
//! grace entered, expired, overlap window ended, rotation deadline reached) once per key and
//! event, whichever instance or verification notices first. Each run reads the keys whose
//! boundary lies between the store's high-water mark and now with one indexed range query per
//! event, so it never scans every key, and then moves the mark to now. After downtime the next
//! run catches up: an event whose boundary passed while nothing ran is recorded once, with its
//! boundary in the details and the run's instant as `at`. Every decision uses the injected clock.

use std::sync::Weak;
use std::time::Duration as StdDuration;

use keyturn_core::{Actor, Instant, KeyId, NewAuditEvent, TimedEvent};
use keyturn_store::DueFilter;
use serde_json::json;
use tokio::sync::watch;

use crate::{CadenceRequest, Error, Keyring};

/// How many keys one range query reads.
const PAGE_SIZE: u32 = 500;
/// How many pages of one event one run reads at most; the rest waits for the next run.
const MAX_PAGES_PER_RUN: usize = 200;

/// One event a scheduler run recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub key_id: KeyId,
    pub event: TimedEvent,
    /// The instant the key reached the event.
    pub boundary: Instant,
    /// The sequence number of the audit row.
    pub seq: i64,
}

/// What one scheduler run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRun {
    /// The high-water mark before the run; `None` on the store's first run, which looks at every
    /// boundary up to now.
    pub from: Option<Instant>,
    /// The mark after the run: every boundary at or before it has been looked at.
    pub to: Instant,
    /// The events this run recorded; events recorded before, by a verification or another
    /// instance, are not repeated.
    pub recorded: Vec<RecordedEvent>,
    /// The rotations this run requested because of a policy's `rotate_every`.
    pub rotations_requested: Vec<CadenceRequest>,
}

impl Keyring {
    /// Records every time-caused lifecycle event whose boundary lies after the store's
    /// high-water mark and at or before now, once per key and event, then moves the mark.
    /// Then it requests the rotation of every key that its policy's `rotate_every` makes due
    /// (see [`CadenceRequest`]). Several instances may run it at once: each event and each
    /// cadence request is still recorded once.
    pub async fn run_scheduler(&self) -> Result<ScheduleRun, Error> {
        let now = self.clock.now();
        let from = self.store.scheduler_high_water().await?;
        // NOTE: the first run on a store, such as after an upgrade, records every past event of
        // every key that is not revoked, up to 100,000 per event and run; later runs go on.
        // NOTE: a boundary that a policy applied to existing keys moves before the high-water
        // mark is never visited, so that key's expiry events come only from its verifications.
        let after = from.unwrap_or(Instant::from_millis(i64::MIN));
        let mut to = now;
        let mut recorded = Vec::new();

        for event in TimedEvent::ALL {
            if let Some(unfinished) = self.record_due(event, after, now, &mut recorded).await? {
                // Boundaries at this instant may remain, so the mark stays just before it.
                to = to.min(Instant::from_millis(unfinished.as_millis().saturating_sub(1)));
            }
        }
        if to > after {
            self.store.advance_scheduler_high_water(to).await?;
        }
        let rotations_requested = self.request_cadence_rotations(now).await?;
        Ok(ScheduleRun { from, to, recorded, rotations_requested })
    }

    /// Records the due events of one kind with boundaries in `(after, now]`. Returns the last
    /// boundary read when the page limit stopped it early.
    async fn record_due(
        &self,
        event: TimedEvent,
        after: Instant,
        now: Instant,
        recorded: &mut Vec<RecordedEvent>,
    ) -> Result<Option<Instant>, Error> {
        let mut cursor = None;
        for _ in 0..MAX_PAGES_PER_RUN {
            let filter = DueFilter { event, after, until: now, cursor: cursor.clone(), limit: PAGE_SIZE };
            let keys = self.store.list_due(&filter).await?;
            for key in &keys {
                let Some(boundary) = event.due_boundary(key) else { continue };
                if boundary <= after || boundary > now {
                    continue;
                }
                let audit = NewAuditEvent::new(event.audit_event(), now, Some(key.key_id.clone()), Actor::System)
                    .with_details(json!({ "boundary": boundary.to_rfc3339() }));
                if let Some(seq) = self.store.append_audit_once(&audit, false).await? {
                    tracing::info!(target: "keyturn::audit", key_id = %key.key_id, event = audit.event.as_str(), boundary = %boundary, "scheduler recorded event");
                    recorded.push(RecordedEvent { key_id: key.key_id.clone(), event, boundary, seq });
                }
            }
            let last = keys.last().and_then(|key| event.boundary(key).map(|boundary| (boundary, key.key_id.clone())));
            if keys.len() < PAGE_SIZE as usize {
                return Ok(None);
            }
            cursor = last;
        }
        Ok(cursor.map(|(boundary, _)| boundary))
    }
}

/// Runs the scheduler every `interval` until `stopped` changes or the keyring is dropped.
pub(crate) async fn run_periodically(
    keyring: Weak<Keyring>,
    interval: StdDuration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut failures: u64 = 0;
    loop {
        let Some(strong) = keyring.upgrade() else { return };
        match strong.run_scheduler().await {
            Ok(run) => {
                if failures > 0 {
                    tracing::info!(target: "keyturn::store", failures, "scheduler recovered");
                }
                failures = 0;
                tracing::debug!(target: "keyturn::store", recorded = run.recorded.len(), "scheduler run finished");
            }
            Err(error) => {
                failures += 1;
                // Log the first failure and then one in every 20.
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(target: "keyturn::store", error = %error, failures, "scheduler run failed; retrying at the next interval");
                }
            }
        }
        drop(strong);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.changed() => return,
        }
    }
}
