//! Change notifications: the listener behind [`Store::wait_for_change`](crate::Store) on
//! PostgreSQL. Every transaction that appends change rows sends `NOTIFY keyturn_changes` with the
//! sequence number of each row, and PostgreSQL delivers it to every listening session when the
//! transaction commits. This module owns one listening connection per store, in a pool of its own
//! so it never takes a connection from the store's pool. It connects lazily, on the first wait,
//! and again on the first wait after it lost its connection. It reads only the newest sequence
//! number of the change feed: to close the gap while it was not listening, and to check that a
//! number another wait was notified of is still in the feed.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use sqlx::Row;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{CHANGES_CHANNEL, TARGET};

/// The listener of one store and what it has learnt from notifications.
pub(super) struct ChangeListener {
    /// The one-connection pool the listener connects through.
    pool: PgPool,
    /// The listener, `None` until the first wait and after its connection was lost. The runtime
    /// handle is where it was created, because dropping a listener spawns a task there.
    listener: Mutex<Option<(PgListener, tokio::runtime::Handle)>>,
    /// The greatest sequence number any notification carried, so that a waiter queued behind
    /// another one returns for a change whose notification the other one received. It is lowered
    /// to the newest sequence number when the change feed no longer reaches it, because restoring
    /// a backup in place or a point-in-time recovery moves the feed backwards.
    notified_seq: AtomicI64,
    /// Whether the last attempt to listen failed, so a failure is logged once at warn level and
    /// its repeats at debug level.
    failing: AtomicBool,
}

/// The result of waiting on a connected listener.
enum ListenOutcome {
    /// A notification named this sequence number, greater than the one waited past.
    Change(i64),
    /// A notification on the channel carried no sequence number, so it may name any change.
    UnknownPayload,
    /// The connection was lost, and so were the notifications sent meanwhile.
    ConnectionLost(String),
}

/// How many times one wait connects a listener. The second attempt replaces a connection that was
/// lost while the store was idle. A server that stays away is not retried within the same wait.
const CONNECT_ATTEMPTS: usize = 2;

impl ChangeListener {
    pub(super) fn new(pool: PgPool) -> ChangeListener {
        ChangeListener {
            pool,
            listener: Mutex::new(None),
            notified_seq: AtomicI64::new(0),
            failing: AtomicBool::new(false),
        }
    }

    /// Waits until a change after `after_seq` may exist or `timeout` has passed; see
    /// [`Store::wait_for_change`](crate::Store::wait_for_change). `store_pool` reads the newest
    /// sequence number after connecting, so a change committed while no listener was connected
    /// is not missed.
    pub(super) async fn wait(&self, store_pool: &PgPool, after_seq: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if self.notified_past(store_pool, after_seq, deadline).await {
            return;
        }
        let Ok(mut slot) = tokio::time::timeout_at(deadline, self.listener.lock()).await else {
            return;
        };
        if self.notified_past(store_pool, after_seq, deadline).await {
            return;
        }

        for _ in 0..CONNECT_ATTEMPTS {
            if slot.is_none() {
                let Some((listener, newest_seq)) = self.connect_before(store_pool, deadline).await else {
                    break;
                };
                *slot = Some((listener, tokio::runtime::Handle::current()));
                if newest_seq > after_seq {
                    return;
                }
            }
            let Some((listener, _)) = slot.as_mut() else {
                break;
            };

            match tokio::time::timeout_at(deadline, next_change(listener, after_seq)).await {
                Err(_elapsed) => return,
                Ok(ListenOutcome::Change(seq)) => {
                    self.notified_seq.fetch_max(seq, Ordering::AcqRel);
                    return;
                }
                Ok(ListenOutcome::UnknownPayload) => return,
                Ok(ListenOutcome::ConnectionLost(reason)) => {
                    tracing::info!(target: TARGET, reason, "change listener lost its connection; reconnecting");
                    discard(slot.take());
                }
            }
        }

        // Without a listener, the wait degrades to polling.
        drop(slot);
        tokio::time::sleep_until(deadline).await;
    }

    /// Returns whether an earlier notification named a sequence number greater than `after_seq`
    /// that the change feed still contains. When the newest sequence number is `after_seq` or
    /// less, the feed moved backwards since that notification, so the remembered number is
    /// lowered to the newest one. Otherwise every wait would end at once until new changes pass
    /// the old number. A failed or late read returns `false`, and the wait goes on listening.
    async fn notified_past(&self, store_pool: &PgPool, after_seq: i64, deadline: Instant) -> bool {
        let notified = self.notified_seq.load(Ordering::Acquire);
        if notified <= after_seq {
            return false;
        }
        let newest_seq = match tokio::time::timeout_at(deadline, newest_seq(store_pool)).await {
            Ok(Ok(newest_seq)) => newest_seq,
            Ok(Err(error)) => {
                tracing::debug!(target: TARGET, error, "failed to read the newest change sequence number");
                return false;
            }
            Err(_elapsed) => return false,
        };
        if newest_seq > after_seq {
            return true;
        }

        // When a notification received meanwhile raised the value, the exchange fails and the
        // newer value stays.
        let lowered =
            self.notified_seq.compare_exchange(notified, newest_seq, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if lowered {
            tracing::info!(
                target: TARGET,
                notified_seq = notified,
                newest_seq,
                "newest change sequence number is below one notified earlier, as after a restore or \
                 point-in-time recovery; ignoring that notification"
            );
        }
        false
    }

    /// Connects a listener before `deadline` and returns it with the newest change sequence
    /// number, or `None` when that failed or took too long. A failure is logged.
    async fn connect_before(&self, store_pool: &PgPool, deadline: Instant) -> Option<(PgListener, i64)> {
        match tokio::time::timeout_at(deadline, self.connect(store_pool)).await {
            Err(_elapsed) => None,
            Ok(Err(error)) => {
                self.report_failure(&error);
                None
            }
            Ok(Ok(connected)) => {
                self.report_recovery();
                Some(connected)
            }
        }
    }

    /// Connects a listener to the channel and then reads the newest change sequence number.
    async fn connect(&self, store_pool: &PgPool) -> Result<(PgListener, i64), String> {
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(|error| error.to_string())?;
        // A lost connection ends the wait, which drops this listener. The next wait connects a new
        // one and reads the newest sequence number again, which a silent reconnect would skip.
        listener.eager_reconnect(false);
        listener.listen(CHANGES_CHANNEL).await.map_err(|error| error.to_string())?;

        let newest_seq = newest_seq(store_pool).await?;
        Ok((listener, newest_seq))
    }

    fn report_failure(&self, error: &str) {
        if self.failing.swap(true, Ordering::AcqRel) {
            tracing::debug!(target: TARGET, error, "change listener still cannot connect; polling");
        } else {
            tracing::warn!(target: TARGET, error, "change listener cannot connect; polling until it can");
        }
    }

    fn report_recovery(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::info!(target: TARGET, "change listener connected again");
        }
    }

    /// Drops the listener inside the runtime it was created in, which its drop needs.
    pub(super) async fn close(&self) {
        discard(self.listener.lock().await.take());
        self.pool.close().await;
    }
}

impl Drop for ChangeListener {
    fn drop(&mut self) {
        discard(self.listener.get_mut().take());
    }
}

/// Reads the newest change sequence number, 0 when the feed is empty.
async fn newest_seq(store_pool: &PgPool) -> Result<i64, String> {
    let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM changes")
        .fetch_one(store_pool)
        .await
        .map_err(|error| error.to_string())?;
    row.try_get("seq").map_err(|error| error.to_string())
}

/// Receives notifications until one names a sequence number greater than `after_seq`. Older ones
/// arrived between waits and are skipped.
async fn next_change(listener: &mut PgListener, after_seq: i64) -> ListenOutcome {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => match notification.payload().parse::<i64>() {
                Ok(seq) if seq > after_seq => return ListenOutcome::Change(seq),
                Ok(_) => continue,
                Err(_) => return ListenOutcome::UnknownPayload,
            },
            Ok(None) => return ListenOutcome::ConnectionLost("the connection closed".to_owned()),
            Err(error) => return ListenOutcome::ConnectionLost(error.to_string()),
        }
    }
}

/// Drops a listener inside the runtime it was created in. Its drop returns the connection to its
/// pool by spawning a task, which panics outside a Tokio runtime. A runtime that has shut down
/// drops the task instead, and the connection closes with it.
fn discard(listener: Option<(PgListener, tokio::runtime::Handle)>) {
    if let Some((listener, handle)) = listener {
        let _entered = handle.enter();
        drop(listener);
    }
}
