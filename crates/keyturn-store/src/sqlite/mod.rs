//! The SQLite implementation of [`Store`]. Every process of a deployment (the CLI, several web
//! workers, a server) shares one database file, so every mutation runs in a transaction started
//! with `BEGIN IMMEDIATE`. SQLite then takes the write lock up front and waits up to the busy
//! timeout for it, instead of failing later when a read lock cannot be upgraded. This module owns
//! the connection pool and the transaction boundaries. The SQL of each mutation lives in
//! `writes`, key reads in `rows`, the schema in `migrate`, and path checks in `open`. Row decoding
//! and the errors of a failed guard are shared with the other backends.

mod backup;
mod cadence;
mod errors;
mod incident;
mod inline;
mod migrate;
mod open;
mod policies;
mod rows;
mod schedule;
mod webhooks;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyturn_core::{
    AuditEvent, AuditKey, Instant, KeyId, KeyRecord, NamedPolicy, NewAuditEvent, Outcome, PepperId, PolicyName,
};
use sqlx::sqlite::{Sqlite, SqlitePool};
use sqlx::{Row, Transaction};

use self::errors::classify;
use crate::audit_log::AuditWrites;
use crate::queries;
use crate::rows::{
    decode_audit_event, decode_change, decode_key, decode_overlapping, decode_usage_count, decode_uses_since_rotation,
};
use crate::{
    AttemptReport, AuditFilter, BulkReport, BulkRevocation, Change, ClaimedDelivery, CopiedKey, DatabaseUrl,
    DeliveryClaim, DeliveryFilter, DueFilter, KeyFilter, NewWebhookEndpoint, OutboxMessage, OverlapFilter,
    OverlappingKey, PolicyKeyCounts, PolicyUpdate, Rehash, Revocation, Rotation, RotationRequest,
    RotationRequestResult, RowCounts, Store, StoreError, UsageRecord, WebhookDelivery, WebhookEndpoint,
};
use crate::{KeySelection, PepperUsage};

/// The tracing target of every store log line.
const TARGET: &str = "keyturn::store";

/// Connection settings of a [`SqliteStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Whether to create the database file when it does not exist. `keyturn init` sets it, and
    /// every other command leaves it off, so a mistyped path fails instead of starting empty.
    pub create_if_missing: bool,
    /// How long a connection waits for another process's write lock, and an operation waits for
    /// a free pooled connection, before it fails with [`StoreError::Unavailable`].
    pub busy_timeout: Duration,
    /// The maximum number of connections in this process's pool; at least 1.
    pub max_connections: u32,
    /// Whether to apply the schema migrations the database lacks, on by default. When off, the
    /// file must exist and already have this build's schema, or opening fails with
    /// [`StoreError::Open`] and leaves the file unchanged. `create_if_missing` is then ignored.
    /// `keyturn store copy` opens its source this way.
    pub migrate: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            create_if_missing: false,
            busy_timeout: Duration::from_secs(5),
            max_connections: 4,
            migrate: true,
        }
    }
}

/// A [`Store`] backed by one SQLite file in WAL mode.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    /// The device and inode of the file opened, to notice when it is deleted or replaced.
    identity: (u64, u64),
    /// The key that signs appended audit rows into the chain.
    audit_key: Option<Arc<AuditKey>>,
    /// Reads keys by id on the calling thread, skipping the hop to a pooled connection's thread.
    inline: Arc<inline::InlineReader>,
}

impl SqliteStore {
    /// Signs every audit row this store appends into the audit chain with `key`. Without a key,
    /// rows are written without a MAC, and `keyturn audit verify` reports them.
    pub fn with_audit_key(mut self, key: Option<AuditKey>) -> Self {
        self.audit_key = key.map(Arc::new);
        self
    }

    fn audit_writes(&self) -> AuditWrites {
        AuditWrites::new(self.audit_key.clone())
    }

    /// Opens the SQLite database that `url` names, creating the file only when
    /// `options.create_if_missing` is set, and applies the schema migrations it lacks unless
    /// `options.migrate` is off.
    ///
    /// Fails with [`StoreError::Open`] when the file is missing (run `keyturn init`), its
    /// directory is missing or not writable, or a newer keyturn wrote its schema. Without
    /// migrating, it also fails when the schema is missing or older than this build's.
    pub async fn open(url: &DatabaseUrl, options: &SqliteOptions) -> Result<SqliteStore, StoreError> {
        let path = open::resolve_path(url)?;
        let create_if_missing = options.create_if_missing && options.migrate;
        open::check_location(&path, create_if_missing)?;
        if create_if_missing {
            open::create_private_file(&path)?;
        }
        if !options.migrate {
            // Checked on a read-only connection first, because the pool switches the file to WAL,
            // which writes to a file that is not a keyturn database yet.
            migrate::check_existing(&path).await?;
        }
        let pool = open::connect(&path, &SqliteOptions { create_if_missing, ..options.clone() }).await?;
        if options.migrate {
            migrate::run(&pool, &path).await?;
        }

        tracing::info!(target: TARGET, path = %path.display(), "opened sqlite store");
        let identity = file_identity(&path).ok_or_else(|| StoreError::Open {
            location: path.display().to_string(),
            reason: "the file disappeared while it was being opened".to_owned(),
        })?;
        let inline = Arc::new(inline::InlineReader::new(&path, options.max_connections as usize));
        Ok(SqliteStore { pool, path, identity, audit_key: None, inline })
    }

    /// Returns the absolute path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection of the pool and waits until they are closed. Later calls fail
    /// with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.inline.close();
        self.pool.close().await;
    }

    /// Writes a new key, its creation event and its change row in `tx`, which holds the write
    /// lock. The returned audit writes are announced once the transaction commits.
    async fn write_new_key(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        key: &KeyRecord,
        event: &NewAuditEvent,
    ) -> Result<AuditWrites, StoreError> {
        writes::insert_key(tx, key).await?;
        let mut audit = self.audit_writes();
        writes::insert_event(tx, event, &mut audit).await?;
        writes::insert_change(tx, &key.key_id, key.created_at).await?;
        Ok(audit)
    }

    /// Starts a write transaction that holds the database's write lock from its first statement.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.check_file()?;
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(classify)
    }

    /// Fails when the database file was deleted or replaced since it was opened: this process's
    /// connections still reach the old file, so a write would be lost to every other process and
    /// a read would miss their changes.
    fn check_file(&self) -> Result<(), StoreError> {
        if file_identity(&self.path) == Some(self.identity) {
            return Ok(());
        }
        tracing::error!(target: TARGET, path = %self.path.display(), "database file was deleted or replaced");
        Err(StoreError::Unavailable(format!(
            "database file {} was deleted or replaced after this process opened it; restore it and restart",
            self.path.display()
        )))
    }
}

/// Commits `tx`, classifying a failure like any other database error.
async fn commit(tx: Transaction<'static, Sqlite>) -> Result<(), StoreError> {
    tx.commit().await.map_err(classify)
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_key(&self, key: &KeyRecord, event: &NewAuditEvent) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let audit = self.write_new_key(&mut tx, key, event).await?;
        commit(tx).await?;
        audit.announce();

        tracing::debug!(target: TARGET, key_id = %key.key_id, "inserted key");
        Ok(())
    }

    async fn insert_key_if_empty(&self, key: &KeyRecord, event: &NewAuditEvent) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query("SELECT 1 FROM keys LIMIT 1").fetch_optional(&mut *tx).await.map_err(classify)?;
        if existing.is_some() {
            // Dropping the transaction rolls it back; nothing was written.
            return Ok(false);
        }
        let audit = self.write_new_key(&mut tx, key, event).await?;
        commit(tx).await?;
        audit.announce();

        tracing::debug!(target: TARGET, key_id = %key.key_id, "inserted key into empty store");
        Ok(true)
    }

    async fn get_key(&self, key_id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        if let Ok(read) = self.inline.read(key_id) {
            return read;
        }
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        rows::fetch_key(&mut conn, key_id).await
    }

    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError> {
        let mut query = queries::list_keys::<Sqlite>(filter);
        let rows = query.build().fetch_all(&self.pool).await.map_err(classify)?;
        rows.iter().map(decode_key).collect()
    }

    async fn list_overlapping(&self, filter: &OverlapFilter) -> Result<Vec<OverlappingKey>, StoreError> {
        let mut query = queries::list_overlapping::<Sqlite>(filter);
        let rows = query.build().fetch_all(&self.pool).await.map_err(classify)?;
        rows.iter().map(decode_overlapping).collect()
    }

    async fn rotate_key(&self, rotation: &Rotation) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let mut audit = self.audit_writes();
        writes::rotate(&mut tx, rotation, &mut audit).await?;
        commit(tx).await?;
        audit.announce();

        tracing::debug!(
            target: TARGET,
            key_id = %rotation.old_key_id,
            successor_id = %rotation.successor.key_id,
            replaced_id = rotation.replace_unused_successor.as_ref().map(tracing::field::display),
            "rotated key"
        );
        Ok(())
    }

    async fn revoke_key(&self, revocation: &Revocation) -> Result<KeyRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut audit = self.audit_writes();
        let record = writes::revoke(&mut tx, revocation, &mut audit).await?;
        commit(tx).await?;
        audit.announce();

        tracing::debug!(target: TARGET, key_id = %revocation.key_id, "revoked key");
        Ok(record)
    }

    async fn rehash_key(&self, rehash: &Rehash) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut audit = self.audit_writes();
        let changed = writes::rehash(&mut tx, rehash, &mut audit).await?;
        if !changed {
            // Dropping the transaction rolls it back; nothing was written.
            return Ok(false);
        }
        commit(tx).await?;
        audit.announce();

        tracing::debug!(target: TARGET, key_id = %rehash.key_id, from = %rehash.from, to = %rehash.to, "rehashed key");
        Ok(true)
    }

    async fn record_usage(&self, usage: &[UsageRecord]) -> Result<(), StoreError> {
        if usage.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let mut audit = self.audit_writes();
        for record in usage {
            writes::record_usage(&mut tx, record).await?;
            policies::shorten_overlap(&mut tx, record, &mut audit).await?;
        }
        commit(tx).await?;
        audit.announce();
        Ok(())
    }

    async fn append_audit(&self, event: &NewAuditEvent) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut audit = self.audit_writes();
        let seq = writes::insert_event(&mut tx, event, &mut audit).await?;
        commit(tx).await?;
        audit.announce();
        Ok(seq)
    }

    async fn append_audit_once(&self, event: &NewAuditEvent, same_details: bool) -> Result<Option<i64>, StoreError> {
        if let (Some(key_id), false) = (&event.key_id, same_details) {
            return self.append_once_per_key(event, key_id).await;
        }
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query(
            "SELECT 1 FROM audit_events WHERE event = ? AND key_id IS ? AND (? = 0 OR details = ?) LIMIT 1",
        )
        .bind(event.event.as_str())
        .bind(event.key_id.as_ref().map(KeyId::as_str))
        .bind(i64::from(same_details))
        .bind(event.details.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        if existing.is_some() {
            return Ok(None);
        }
        let mut audit = self.audit_writes();
        let seq = writes::insert_event(&mut tx, event, &mut audit).await?;
        commit(tx).await?;
        audit.announce();
        Ok(Some(seq))
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let mut query = queries::list_audit::<Sqlite>(filter);
        let rows = query.build().fetch_all(&self.pool).await.map_err(classify)?;
        rows.iter().map(decode_audit_event).collect()
    }

    async fn usage_counts(&self, key_id: &KeyId) -> Result<Vec<(Outcome, u64)>, StoreError> {
        let rows = sqlx::query("SELECT key_id, outcome, count FROM key_usage WHERE key_id = ? ORDER BY outcome")
            .bind(key_id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter().map(decode_usage_count).collect()
    }

    async fn last_client_addr(&self, key_id: &KeyId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT last_client_addr FROM keys WHERE key_id = ?")
            .bind(key_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.map(|row| row.try_get::<Option<String>, _>(0)).transpose().map_err(classify).map(Option::flatten)
    }

    async fn uses_since_rotation(&self, key_id: &KeyId) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT key_id, uses_since_rotation FROM keys WHERE key_id = ?")
            .bind(key_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref().map(decode_uses_since_rotation).transpose().map(Option::unwrap_or_default)
    }

    async fn row_counts(&self) -> Result<RowCounts, StoreError> {
        self.check_file()?;
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM keys), (SELECT COUNT(*) FROM audit_events), (SELECT COUNT(*) FROM key_usage)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        let count = |index: usize| -> Result<u64, StoreError> {
            let value: i64 = row.try_get(index).map_err(classify)?;
            Ok(value.unsigned_abs())
        };
        Ok(RowCounts { keys: count(0)?, audit_events: count(1)?, usage_counters: count(2)? })
    }

    async fn import(&self, keys: &[CopiedKey], events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for key in keys {
            writes::import_key(&mut tx, key).await?;
        }
        for event in events {
            writes::import_event(&mut tx, event).await?;
        }
        sqlx::query(crate::schedule::REBUILD_RECORDED_EVENTS).execute(&mut *tx).await.map_err(classify)?;
        commit(tx).await?;
        tracing::debug!(target: TARGET, keys = keys.len(), events = events.len(), "imported copied rows");
        Ok(())
    }

    async fn change_seq(&self) -> Result<i64, StoreError> {
        self.check_file()?;
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM changes")
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        row.try_get::<i64, _>("seq").map_err(classify)
    }

    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let rows = sqlx::query("SELECT seq, key_id FROM changes WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter().map(decode_change).collect()
    }

    async fn select_keys(
        &self,
        selection: &KeySelection,
        limit: usize,
    ) -> Result<(Vec<KeyRecord>, Vec<KeyId>), StoreError> {
        self.check_file()?;
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        incident::select(&mut conn, selection, limit).await
    }

    async fn revoke_selection(&self, revocation: &BulkRevocation) -> Result<BulkReport, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut audit = self.audit_writes();
        let report = incident::revoke_selection(&mut tx, revocation, &mut audit).await?;
        commit(tx).await?;
        audit.announce();

        let revoked = report.keys.iter().filter(|key| key.outcome == crate::BulkOutcome::Revoked).count();
        tracing::debug!(target: TARGET, selected = report.keys.len(), revoked, "revoked selected keys");
        Ok(report)
    }

    async fn pepper_usage(&self, at: Instant) -> Result<Vec<PepperUsage>, StoreError> {
        self.check_file()?;
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        incident::pepper_usage(&mut conn, at).await
    }

    async fn live_keys_under_pepper(
        &self,
        pepper_id: &PepperId,
        at: Instant,
        limit: u32,
    ) -> Result<Vec<KeyId>, StoreError> {
        self.check_file()?;
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        incident::live_keys_under_pepper(&mut conn, pepper_id, at, limit).await
    }

    async fn list_policies(&self) -> Result<Vec<NamedPolicy>, StoreError> {
        policies::list(&self.pool).await
    }

    async fn get_policy(&self, name: &PolicyName) -> Result<Option<NamedPolicy>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        policies::get(&mut conn, name).await
    }

    async fn count_policy_keys(&self, name: &PolicyName, at: Instant) -> Result<PolicyKeyCounts, StoreError> {
        policies::count_keys(&self.pool, name, at).await
    }

    async fn apply_policy_update(&self, update: &PolicyUpdate) -> Result<Vec<u64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut audit = self.audit_writes();
        let counts = policies::apply(&mut tx, update, &mut audit).await?;
        commit(tx).await?;
        audit.announce();

        tracing::debug!(target: TARGET, changes = update.changes.len(), "applied policy update");
        Ok(counts)
    }

    async fn import_policies(&self, policies: &[NamedPolicy], at: keyturn_core::Instant) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        policies::import(&mut tx, policies, at).await?;
        commit(tx).await
    }

    async fn insert_webhook_endpoint(
        &self,
        endpoint: &NewWebhookEndpoint,
        event: &NewAuditEvent,
    ) -> Result<(), StoreError> {
        webhooks::insert_endpoint(self, endpoint, event).await
    }

    async fn list_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        webhooks::list_endpoints(self, None).await
    }

    async fn get_webhook_endpoint(&self, endpoint_id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        Ok(webhooks::list_endpoints(self, Some(endpoint_id)).await?.pop())
    }

    async fn remove_webhook_endpoint(&self, endpoint_id: &str, event: &NewAuditEvent) -> Result<bool, StoreError> {
        webhooks::remove_endpoint(self, endpoint_id, event).await
    }

    async fn add_webhook_secret(
        &self,
        endpoint_id: &str,
        sealed: &[u8],
        old_expires_at: Instant,
        event: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        webhooks::add_secret(self, endpoint_id, sealed, old_expires_at, event).await
    }

    async fn disable_webhook_endpoint(
        &self,
        endpoint_id: &str,
        reason: &str,
        event: &NewAuditEvent,
    ) -> Result<bool, StoreError> {
        webhooks::disable_endpoint(self, endpoint_id, reason, event).await
    }

    async fn claim_webhook_deliveries(&self, claim: &DeliveryClaim) -> Result<Vec<ClaimedDelivery>, StoreError> {
        webhooks::claim(self, claim).await
    }

    async fn finish_webhook_delivery(&self, report: &AttemptReport) -> Result<bool, StoreError> {
        webhooks::finish(self, report).await
    }

    async fn list_webhook_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<WebhookDelivery>, StoreError> {
        webhooks::list_deliveries(self, filter).await
    }

    async fn retry_webhook_deliveries(
        &self,
        endpoint_id: Option<&str>,
        event: &NewAuditEvent,
    ) -> Result<u64, StoreError> {
        webhooks::retry_dead(self, endpoint_id, event).await
    }

    async fn list_outbox(&self, after_seq: i64, limit: u32) -> Result<Vec<OutboxMessage>, StoreError> {
        webhooks::list_outbox(self, after_seq, limit).await
    }

    async fn request_rotation(&self, requests: &[RotationRequest]) -> Result<Vec<RotationRequestResult>, StoreError> {
        self.write_rotation_requests(requests).await
    }

    async fn list_due(&self, filter: &DueFilter) -> Result<Vec<KeyRecord>, StoreError> {
        self.select_due(filter).await
    }

    async fn scheduler_high_water(&self) -> Result<Option<keyturn_core::Instant>, StoreError> {
        self.read_high_water().await
    }

    async fn advance_scheduler_high_water(&self, to: keyturn_core::Instant) -> Result<(), StoreError> {
        self.write_high_water(to).await
    }

    async fn list_cadence_due(&self, filter: &crate::CadenceFilter) -> Result<Vec<KeyRecord>, StoreError> {
        self.select_cadence_due(filter).await
    }

    async fn request_first_rotation(&self, request: &RotationRequest) -> Result<bool, StoreError> {
        self.write_first_rotation_request(request).await
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// Returns the device and inode of `path`, or `None` when it does not exist.
fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;

    std::fs::metadata(path).ok().map(|metadata| (metadata.dev(), metadata.ino()))
}
