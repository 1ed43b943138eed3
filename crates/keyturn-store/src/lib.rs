//! Storage for keyturn: the [`Store`] trait and its SQLite and PostgreSQL implementations.
//!
//! A store keeps key records (never a secret: only the keyed hash and its pepper id), the audit
//! events written in the same transaction as each change, the change feed that keeps verifier
//! caches coherent, and usage counters written behind the verify path. Lifecycle rules live in
//! `keyturn-core` and the service layer; a store only enforces the guards that make concurrent
//! changes safe (one successor per key, revocation is final).
//!
//! A [`DatabaseUrl`] selects the backend:
//!
//! - `sqlite:///var/lib/app/keyturn.db` (absolute), `sqlite:keyturn.db` or a plain path (relative
//!   to the working directory) open a [`SqliteStore`], for one machine.
//! - `postgres://user:password@host:port/database` (or `postgresql://`) opens a
//!   [`PostgresStore`], which instances on several hosts share. The query parameters `sslmode`,
//!   `sslrootcert`, `sslcert`, `sslkey`, `application_name`, `options`, `host`, `hostaddr`,
//!   `port`, `dbname`, `user` and `password` mean what they mean to libpq, and any other is
//!   rejected. The libpq environment variables (`PGHOST`, `PGUSER`, `PGPASSWORD`, ...) and
//!   `~/.pgpass` fill in what the URL leaves out, so the password can stay out of the URL. TLS
//!   uses rustls with the operating system's root certificates.
//!
//! No log line, error or `Debug` output of this crate contains a database password, a token or
//! hash bytes. URLs are shown with the password replaced by `***`. Of the query parameters, only
//! the connection settings above other than `password` show their values, and every other value
//! is shown as `***`. A PostgreSQL URL that gives one query parameter twice is rejected.

mod audit_log;
mod cadence;
mod conflicts;
mod error;
mod overlap;
mod policies;
mod postgres;
mod queries;
mod rows;
mod schedule;
mod selection;
mod sqlite;
mod url;
mod webhooks;

use async_trait::async_trait;
use keyturn_core::{
    AuditEvent, AuditEventType, Instant, KeyId, KeyRecord, NewAuditEvent, Outcome, PepperId, TimedEvent, TokenHash,
};

pub use crate::audit_log::AUDIT_TARGET;

/// A log filter directive that every keyturn log subscriber adds: sqlx warns about a malformed
/// `~/.pgpass` line by quoting the whole line, password included.
pub const SILENCE_PGPASS_WARNING: &str = "sqlx_postgres::options::pgpass=off";
pub use crate::cadence::CadenceFilter;
pub use crate::error::StoreError;
pub use crate::policies::{PolicyChange, PolicyKeyCounts, PolicyUpdate};
pub use crate::postgres::{PostgresOptions, PostgresStore};
pub use crate::selection::{
    BulkOutcome, BulkReport, BulkRevocation, BulkRevokedKey, KeySelection, PepperUsage, MAX_BULK_KEYS,
};
pub use crate::sqlite::{SqliteOptions, SqliteStore};
pub use crate::url::DatabaseUrl;
pub use crate::webhooks::{
    AttemptOutcome, AttemptReport, ClaimedDelivery, DeliveryClaim, DeliveryFilter, DeliveryState, NewWebhookEndpoint,
    OutboxMessage, StoredSecret, WebhookDelivery, WebhookEndpoint,
};

/// The filter of [`Store::list_keys`], whose results are ordered by creation instant, then key id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    pub owner: Option<String>,
    /// Only keys after this one in that order, for cursor pagination. A key id that does not
    /// exist matches no key.
    pub after: Option<KeyId>,
    pub limit: Option<u32>,
}

/// The filter of [`Store::list_audit`], whose results are in sequence order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub key_id: Option<KeyId>,
    pub event: Option<AuditEventType>,
    /// Only events at or after this instant.
    pub since: Option<Instant>,
    /// Only events before this instant.
    pub until: Option<Instant>,
    /// Only events with a sequence number greater than this, for cursor pagination.
    pub after_seq: Option<i64>,
    pub limit: Option<u32>,
}

/// The filter of [`Store::list_overlapping`]: keys in their overlap window at `at`, ordered by
/// the end of the overlap window, then key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlapFilter {
    /// The instant at which a key must be rotated, not revoked, and before `overlap_ends_at`.
    pub at: Instant,
    pub owner: Option<String>,
    /// Only keys after this one in that order, for cursor pagination. A key id that does not
    /// exist matches no key.
    pub after: Option<KeyId>,
    pub limit: Option<u32>,
}

/// A rotated key in its overlap window, with the usage that shows whether its clients moved to
/// the successor.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlappingKey {
    pub record: KeyRecord,
    /// The client address of the key's latest use that a usage flush recorded.
    pub last_client_addr: Option<String>,
    /// The allowed verifications of the key after its rotation; see [`Store::record_usage`].
    pub uses_since_rotation: u64,
    /// The `first_used_at` of the key's successor: `None` when the successor was never used.
    pub successor_first_used_at: Option<Instant>,
}

/// A rotation to apply atomically: the old key gains its successor and overlap, the successor is
/// inserted, and the audit events are appended.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub old_key_id: KeyId,
    pub rotated_at: Instant,
    pub overlap_ends_at: Instant,
    /// The new key, with `predecessor_id` set to `old_key_id`.
    pub successor: KeyRecord,
    /// When set, the old key must currently have this successor, which must never have been
    /// used; it is revoked and replaced by `successor`. When unset, the old key must have none.
    pub replace_unused_successor: Option<KeyId>,
    pub events: Vec<NewAuditEvent>,
    /// Written to the old key, unless the rotation replaces a successor: how long the old key
    /// keeps working after the successor's first use. See [`Store::record_usage`].
    pub overlap_after_first_use: Option<keyturn_core::Duration>,
}

/// A revocation to apply atomically with its audit event.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub key_id: KeyId,
    pub revoked_at: Instant,
    pub reason: Option<String>,
    pub event: NewAuditEvent,
}

/// A rehash: replace the key's hash under `from` with one under `to`.
#[derive(Debug, Clone)]
pub struct Rehash {
    pub key_id: KeyId,
    pub from: PepperId,
    pub to: PepperId,
    pub hash: TokenHash,
    pub event: NewAuditEvent,
}

/// Usage of one key observed by verifications since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub key_id: KeyId,
    pub first_used_at: Instant,
    pub last_used_at: Instant,
    pub last_client_addr: Option<String>,
    pub counts: Vec<(Outcome, u64)>,
}

/// One entry of the change feed: the key `key_id` changed, and `seq` orders the changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub key_id: KeyId,
}

/// One key with its usage, copied unchanged from another store.
#[derive(Debug, Clone, PartialEq)]
pub struct CopiedKey {
    pub record: KeyRecord,
    /// The client address of the key's latest use that a usage flush recorded.
    pub last_client_addr: Option<String>,
    /// The key's usage counters, per outcome.
    pub usage: Vec<(Outcome, u64)>,
    /// The allowed verifications of the key after its rotation.
    pub uses_since_rotation: u64,
}

/// A request that one key be rotated by a deadline, applied with its audit event.
#[derive(Debug, Clone)]
pub struct RotationRequest {
    pub key_id: KeyId,
    pub requested_at: Instant,
    /// The key's `expires_at` moves to this instant when it is later or unset.
    pub deadline: Instant,
    pub event: NewAuditEvent,
}

/// What [`Store::request_rotation`] did with one request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RotationRequestResult {
    /// The request was recorded; the key as it is now.
    Requested(Box<KeyRecord>),
    /// The key has a successor already, so it needs no request.
    AlreadyRotated {
        successor_id: KeyId,
    },
    /// The key is revoked, so it needs no request.
    Revoked,
    NotFound,
}

/// The filter of [`Store::list_due`]: keys whose boundary of `event` lies after `after` and at
/// or before `until`, ordered by that boundary, then key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueFilter {
    pub event: TimedEvent,
    pub after: Instant,
    pub until: Instant,
    /// Only keys after this boundary and key id in that order, for paging.
    pub cursor: Option<(Instant, KeyId)>,
    pub limit: u32,
}

/// How many rows of each kind a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub keys: u64,
    pub audit_events: u64,
    /// Rows of usage counters, one per key and outcome.
    pub usage_counters: u64,
}

impl RowCounts {
    pub fn is_empty(&self) -> bool {
        *self == RowCounts::default()
    }
}

/// The persistence interface of keyturn. Every mutation writes its audit events and change-feed
/// entries in the same transaction, so a reader never sees a change without its audit row.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new key with its creation event. Fails with [`StoreError::DuplicateKeyId`] when
    /// the key id exists.
    ///
    /// PostgreSQL cannot store the character U+0000 in text, so on [`PostgresStore`] a name,
    /// owner, reason or client address containing it fails with [`StoreError::Internal`], while
    /// SQLite stores it. The service layer rejects control characters before they get here.
    async fn insert_key(&self, key: &KeyRecord, event: &NewAuditEvent) -> Result<(), StoreError>;

    /// Inserts a new key with its creation event like [`Store::insert_key`], but only when the
    /// store holds no key, and returns whether it did. The check and the insert hold the write
    /// lock together, so of concurrent callers on one empty database, in any process, exactly one
    /// inserts its key. `keyturn init` creates the bootstrap admin key this way.
    async fn insert_key_if_empty(&self, key: &KeyRecord, event: &NewAuditEvent) -> Result<bool, StoreError>;

    async fn get_key(&self, key_id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;

    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError>;

    /// Lists the keys that are in their overlap window at `filter.at`: rotated, not revoked, and
    /// with `filter.at` before `overlap_ends_at`. Each comes with its usage and its successor's
    /// first use, read in one statement. The end of grace is not checked here, because a
    /// rotation never sets `overlap_ends_at` past it.
    async fn list_overlapping(&self, filter: &OverlapFilter) -> Result<Vec<OverlappingKey>, StoreError>;

    /// Applies a rotation. Only one rotation of a key can succeed: a second one fails with
    /// [`StoreError::AlreadyRotated`] naming the successor, a revoked key with
    /// [`StoreError::Revoked`], and a replacement whose successor was used with
    /// [`StoreError::SuccessorUsed`]. Nothing is written when it fails.
    async fn rotate_key(&self, rotation: &Rotation) -> Result<(), StoreError>;

    /// Revokes a key and returns the updated record. A key that is already revoked fails with
    /// [`StoreError::Revoked`] and keeps its original revocation instant and reason.
    async fn revoke_key(&self, revocation: &Revocation) -> Result<KeyRecord, StoreError>;

    /// Replaces a key's hash when it is still under `from`; returns `false` when another process
    /// already rehashed it or the key is gone.
    async fn rehash_key(&self, rehash: &Rehash) -> Result<bool, StoreError>;

    /// Adds usage counters and advances `first_used_at` and `last_used_at`. Usage is not a
    /// lifecycle change, so it writes no audit event and no change-feed entry.
    ///
    /// A record whose `last_used_at` is at or after the key's `rotated_at` also adds its counts
    /// of allowed outcomes (active, expiring, grace, superseded) to `uses_since_rotation`. The
    /// counts are attributed per record, that is per flush interval of one process: a record
    /// that spans the rotation instant is counted whole, and one whose last use came before it
    /// is not counted at all. A record written before the rotation commits is not counted
    /// either, because the key has no `rotated_at` yet.
    ///
    /// When a record is the first use of a successor whose old key was rotated with an overlap
    /// after first use, the same transaction lowers the old key's `overlap_ends_at` to
    /// [`KeyRecord::shortened_overlap_end`] of the successor's stored `first_used_at`, and
    /// appends an `authn_token_overlap_shortened` event (actor `system`, at the record's
    /// `last_used_at`) and a change row for the old key. A later flush of the same first use
    /// finds nothing to shorten, so concurrent processes record one shortening.
    ///
    /// On [`PostgresStore`] it takes no write lock, unless a record may shorten an overlap window,
    /// so it rarely waits for a lifecycle change to commit, but it may wait for the row lock of a
    /// key that a change is updating. When the
    /// server breaks a deadlock with a concurrent rotation, it fails with
    /// [`StoreError::Unavailable`] and can be retried. On SQLite it waits for the write lock
    /// like every write.
    async fn record_usage(&self, usage: &[UsageRecord]) -> Result<(), StoreError>;

    /// Appends an audit event that accompanies no key change, such as a token exposed in a URL.
    async fn append_audit(&self, event: &NewAuditEvent) -> Result<i64, StoreError>;

    /// Appends an audit event unless a row of the same event type and key id exists (and, with
    /// `same_details`, the same details), and returns its sequence number, or `None` when such a
    /// row exists. The check and the insert hold the write lock together, so concurrent processes
    /// that observe the same event record it once. An event of one key without `same_details`
    /// is also guarded by a row of `recorded_events`, whose UNIQUE (key id, event type)
    /// constraint is written in the same transaction, so the guard holds even without the lock.
    async fn append_audit_once(&self, event: &NewAuditEvent, same_details: bool) -> Result<Option<i64>, StoreError>;

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;

    /// Returns usage counts per outcome for one key.
    async fn usage_counts(&self, key_id: &KeyId) -> Result<Vec<(Outcome, u64)>, StoreError>;

    /// Returns the client address of the key's latest use that a usage flush recorded, `None`
    /// when the key was never used from a known address or does not exist.
    async fn last_client_addr(&self, key_id: &KeyId) -> Result<Option<String>, StoreError>;

    /// Returns the allowed verifications of the key after its rotation, 0 when the key was
    /// never rotated or does not exist.
    async fn uses_since_rotation(&self, key_id: &KeyId) -> Result<u64, StoreError>;

    /// Counts the keys, audit events and usage counter rows.
    async fn row_counts(&self) -> Result<RowCounts, StoreError>;

    /// Writes keys and audit events copied from another store exactly as they were. A key keeps
    /// every column, its usage counters and its uses since rotation. An audit event keeps its
    /// sequence number, canonical text and MAC, so the audit chain stays verifiable. Everything
    /// is written in one transaction that appends no audit event and no change row. A key id
    /// that exists fails with [`StoreError::DuplicateKeyId`], an audit sequence number that
    /// exists with [`StoreError::Internal`], and nothing is written then.
    async fn import(&self, keys: &[CopiedKey], events: &[AuditEvent]) -> Result<(), StoreError>;

    /// Returns the newest change sequence number, 0 when nothing has changed yet.
    async fn change_seq(&self) -> Result<i64, StoreError>;

    /// Returns up to `limit` changes with a sequence number greater than `after`, in order.
    ///
    /// Sequence numbers are committed in increasing order on both backends, so reading past the
    /// last one seen never skips a change. On PostgreSQL they may skip values, because a
    /// transaction that rolls back after adding a change row still consumes its number. On
    /// SQLite a rolled-back transaction leaves no gap.
    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>, StoreError>;

    /// Waits until the change feed may hold a change with a sequence number greater than
    /// `after_seq`, or until `timeout` has passed, whichever comes first. A cache follower calls
    /// it between reads of [`Store::changes_since`] and reads the feed after it returns either
    /// way, so an early return is a hint and never replaces that read.
    ///
    /// The default implementation sleeps for `timeout` and returns `Ok(())`, which makes the
    /// follower poll; [`SqliteStore`] uses it, because SQLite has no notifications.
    /// [`PostgresStore`] listens for the notification that every transaction adding change rows
    /// sends on commit, and returns as soon as one names a sequence number greater than
    /// `after_seq`, or when it finds such a change right after (re)connecting its listener. A
    /// notification received before the feed moved backwards, as restoring a backup in place
    /// does, ends no wait once the newest sequence number is `after_seq` or less. A
    /// listener that cannot connect, or loses its connection, makes the call sleep out the rest of
    /// `timeout` instead of failing, and the next call connects it again, so a lost listener only
    /// degrades to polling. Neither implementation returns an error.
    async fn wait_for_change(&self, after_seq: i64, timeout: std::time::Duration) -> Result<(), StoreError> {
        // The argument matters only to stores that are notified of changes.
        let _ = after_seq;
        tokio::time::sleep(timeout).await;
        Ok(())
    }

    /// Reads the keys of a selection, in the order [`Store::revoke_selection`] reports them, and
    /// the ids of a [`KeySelection::KeyIds`] selection that no key has. Fails with
    /// [`StoreError::SelectionTooLarge`] when more than `limit` keys match. Writes nothing, so a
    /// dry run of a bulk revocation calls it.
    async fn select_keys(
        &self,
        selection: &KeySelection,
        limit: usize,
    ) -> Result<(Vec<KeyRecord>, Vec<KeyId>), StoreError>;

    /// Revokes every key of a selection that is not revoked yet, in one transaction that holds
    /// the write lock from the read of the selection to the commit. It appends the leading
    /// events, then per key revoked now one revocation event and one change row, then the
    /// closing events. A key revoked before keeps its revocation and is reported as
    /// [`BulkOutcome::AlreadyRevoked`]. A selection larger than `revocation.limit` fails with
    /// [`StoreError::SelectionTooLarge`], and nothing is written then.
    async fn revoke_selection(&self, revocation: &BulkRevocation) -> Result<BulkReport, StoreError>;

    /// Counts the live keys at `at` per pepper id, for every pepper id that a stored key names,
    /// ordered by pepper id. A pepper id whose keys are all dead is listed with 0.
    async fn pepper_usage(&self, at: Instant) -> Result<Vec<PepperUsage>, StoreError>;

    /// Lists the ids of up to `limit` keys live at `at` and hashed under `pepper_id`, in creation
    /// order.
    async fn live_keys_under_pepper(
        &self,
        pepper_id: &PepperId,
        at: Instant,
        limit: u32,
    ) -> Result<Vec<KeyId>, StoreError>;

    /// Lists the stored named policies by name. The built-in `default` policy is listed only
    /// when the store holds a version of it.
    async fn list_policies(&self) -> Result<Vec<keyturn_core::NamedPolicy>, StoreError>;

    async fn get_policy(
        &self,
        name: &keyturn_core::PolicyName,
    ) -> Result<Option<keyturn_core::NamedPolicy>, StoreError>;

    /// Counts the keys of a policy that applying it to existing keys would update at `at`, and
    /// the keys that still reference it. See [`PolicyKeyCounts`].
    async fn count_policy_keys(
        &self,
        name: &keyturn_core::PolicyName,
        at: Instant,
    ) -> Result<PolicyKeyCounts, StoreError>;

    /// Applies every change of `update` in one transaction and returns, per change, how many
    /// keys received new instants. Each change must find the policy as its `old` says, or
    /// nothing is written and it fails with [`StoreError::PolicyConflict`]. A removal of a
    /// policy that a key which is not revoked still references fails with
    /// [`StoreError::PolicyInUse`]. With `apply_to_existing`, every live key of the policy (not
    /// revoked, not rotated, and not past its grace period at `update.at`) gets the expiry
    /// `created_at + max_lifetime` (at most the latest RFC 3339 instant) and the policy's grace
    /// period, warning window, self-rotation and maximum chain lifetime, and a change row. The
    /// store adds `keys_updated` to each change's audit event before writing it.
    async fn apply_policy_update(&self, update: &PolicyUpdate) -> Result<Vec<u64>, StoreError>;

    /// Writes policies copied from another store, with `at` as their `updated_at`, in one
    /// transaction that appends no audit event. A name that exists fails with
    /// [`StoreError::Internal`], and nothing is written then.
    async fn import_policies(&self, policies: &[keyturn_core::NamedPolicy], at: Instant) -> Result<(), StoreError>;

    /// Inserts a webhook endpoint with its first sealed signing secret and its audit event. It
    /// receives the notifiable events appended after it, never earlier ones.
    async fn insert_webhook_endpoint(
        &self,
        endpoint: &NewWebhookEndpoint,
        event: &NewAuditEvent,
    ) -> Result<(), StoreError>;

    /// Lists every webhook endpoint with its sealed secrets, ordered by endpoint id.
    async fn list_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError>;

    async fn get_webhook_endpoint(&self, endpoint_id: &str) -> Result<Option<WebhookEndpoint>, StoreError>;

    /// Removes an endpoint with its secrets and deliveries, and appends `event`. Returns `false`,
    /// writing nothing, when the endpoint does not exist.
    async fn remove_webhook_endpoint(&self, endpoint_id: &str, event: &NewAuditEvent) -> Result<bool, StoreError>;

    /// Adds a sealed secret as the endpoint's newest, created at `event.at`, and makes every
    /// older secret that has no expiry expire at `old_expires_at`. Returns `false`, writing
    /// nothing, when the endpoint does not exist.
    async fn add_webhook_secret(
        &self,
        endpoint_id: &str,
        sealed: &[u8],
        old_expires_at: Instant,
        event: &NewAuditEvent,
    ) -> Result<bool, StoreError>;

    /// Disables an enabled endpoint, records `reason`, and appends `event`. Its pending
    /// deliveries stay pending. Returns `false`, writing nothing, when the endpoint does not
    /// exist or is already disabled.
    async fn disable_webhook_endpoint(
        &self,
        endpoint_id: &str,
        reason: &str,
        event: &NewAuditEvent,
    ) -> Result<bool, StoreError>;

    /// Leases up to `claim.limit` deliveries that are due at `claim.now`. Of each enabled
    /// endpoint only the pending delivery with the lowest audit sequence number can be leased,
    /// and only when its next attempt is due and no unexpired lease holds it. So one endpoint
    /// receives one message at a time, in outbox order, and a failing message holds back the
    /// later ones until it is delivered or dead-lettered. Concurrent workers, in any process,
    /// never lease the same delivery while the lease lasts.
    async fn claim_webhook_deliveries(&self, claim: &DeliveryClaim) -> Result<Vec<ClaimedDelivery>, StoreError>;

    /// Records the result of an attempt and releases the lease. Returns `false`, writing
    /// nothing, when `report.owner` no longer holds the lease (it expired and another worker
    /// took it) or the delivery is gone.
    async fn finish_webhook_delivery(&self, report: &AttemptReport) -> Result<bool, StoreError>;

    async fn list_webhook_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<WebhookDelivery>, StoreError>;

    /// Makes the dead-lettered deliveries of one endpoint, or of every endpoint, pending again
    /// with no attempts made and due at `event.at`, and returns how many. When there were any,
    /// it appends `event` with their number added to its details as `deliveries`.
    async fn retry_webhook_deliveries(
        &self,
        endpoint_id: Option<&str>,
        event: &NewAuditEvent,
    ) -> Result<u64, StoreError>;

    /// Lists outbox messages with an audit sequence number above `after_seq`, in that order.
    async fn list_outbox(&self, after_seq: i64, limit: u32) -> Result<Vec<OutboxMessage>, StoreError>;

    /// Records rotation requests in one transaction. A key that is not revoked and has no
    /// successor gets `rotation_requested_at` (unless it has one already), the earlier of its
    /// current and the requested deadline, and `expires_at` moved to that deadline when it is
    /// later or unset; its audit event and a change row are written with it. Any other key is
    /// reported in the result, in the order of `requests`, and nothing is written for it.
    async fn request_rotation(&self, requests: &[RotationRequest]) -> Result<Vec<RotationRequestResult>, StoreError>;

    /// Lists the keys that are not revoked and whose boundary of `filter.event` lies in the
    /// filter's range, with an indexed range query over that boundary.
    async fn list_due(&self, filter: &DueFilter) -> Result<Vec<KeyRecord>, StoreError>;

    /// Returns the scheduler's high-water mark: every boundary at or before it has been looked
    /// at. `None` before the scheduler first ran on this store.
    async fn scheduler_high_water(&self) -> Result<Option<Instant>, StoreError>;

    /// Moves the scheduler's high-water mark to `to` unless it is already later, so instances
    /// with slightly different clocks never move it back.
    async fn advance_scheduler_high_water(&self, to: Instant) -> Result<(), StoreError>;

    /// Lists up to `filter.limit` keys of one policy created at or before
    /// `filter.created_until` that are not revoked, not rotated and have no rotation request,
    /// with an indexed range query, for the scheduler to request their rotation.
    async fn list_cadence_due(&self, filter: &CadenceFilter) -> Result<Vec<KeyRecord>, StoreError>;

    /// Records a rotation request of a key that has none yet, in one transaction with its audit
    /// event and a change row. The key gets `rotation_requested_at`, the deadline, and
    /// `expires_at` moved to the deadline when it is later or unset. Returns `false`, writing
    /// nothing, when the key is gone, revoked, rotated or already has a rotation request, so two
    /// writers racing on one key record one request.
    async fn request_first_rotation(&self, request: &RotationRequest) -> Result<bool, StoreError>;

    /// Returns where the data lives: the absolute path of a SQLite file, or the URL of a
    /// PostgreSQL database with its password replaced by `***`.
    fn location(&self) -> String;
}
