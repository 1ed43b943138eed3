//! The SQL of rotation requests and of the scheduler on PostgreSQL: recording a request with its
//! audit event, the range queries that find keys with a boundary due, the scheduler's high-water
//! mark, and the `recorded_events` guard of events recorded once per key.

use keyturn_core::{Instant, KeyId, NewAuditEvent};
use sqlx::postgres::{PgConnection, Postgres};
use sqlx::Row;

use super::errors::classify;
use super::fetch_key;
use super::{commit, writes, PostgresStore};
use crate::audit_log::AuditWrites;
use crate::queries;
use crate::rows::decode_key;
use crate::schedule::rotation_skipped;
use crate::{DueFilter, RotationRequest, RotationRequestResult, StoreError};

/// The name of the scheduler's row in `scheduler_state`.
const SCHEDULER: &str = "lifecycle";

impl PostgresStore {
    pub(super) async fn write_rotation_requests(
        &self,
        requests: &[RotationRequest],
    ) -> Result<Vec<RotationRequestResult>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut audit = self.audit_writes();
        let mut results = Vec::with_capacity(requests.len());
        for request in requests {
            results.push(request_one(&mut tx, request, &mut audit).await?);
        }
        commit(tx).await?;
        audit.announce();
        Ok(results)
    }

    pub(super) async fn select_due(&self, filter: &DueFilter) -> Result<Vec<keyturn_core::KeyRecord>, StoreError> {
        let mut query = queries::list_due::<Postgres>(filter);
        let rows = query.build().fetch_all(&self.pool).await.map_err(classify)?;
        rows.iter().map(decode_key).collect()
    }

    pub(super) async fn read_high_water(&self) -> Result<Option<Instant>, StoreError> {
        let row = sqlx::query("SELECT high_water FROM scheduler_state WHERE name = $1")
            .bind(SCHEDULER)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        let millis = row.map(|row| row.try_get::<i64, _>(0)).transpose().map_err(classify)?;
        Ok(millis.map(Instant::from_millis))
    }

    pub(super) async fn write_high_water(&self, to: Instant) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO scheduler_state (name, high_water) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET high_water = GREATEST(scheduler_state.high_water, excluded.high_water)",
        )
        .bind(SCHEDULER)
        .bind(to.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        commit(tx).await
    }

    /// Appends `event` of one key unless `recorded_events` has it already; see
    /// [`crate::Store::append_audit_once`].
    pub(super) async fn append_once_per_key(
        &self,
        event: &NewAuditEvent,
        key_id: &KeyId,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let recorded = sqlx::query("SELECT 1 FROM recorded_events WHERE key_id = $1 AND event = $2")
            .bind(key_id.as_str())
            .bind(event.event.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
        if recorded.is_some() {
            return Ok(None);
        }

        let mut audit = self.audit_writes();
        let seq = writes::insert_event(&mut tx, event, &mut audit).await?;
        let guarded = sqlx::query(
            "INSERT INTO recorded_events (key_id, event, seq) VALUES ($1, $2, $3) ON CONFLICT (key_id, event) DO NOTHING",
        )
        .bind(key_id.as_str())
        .bind(event.event.as_str())
        .bind(seq)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        if guarded.rows_affected() == 0 {
            // Dropping the transaction rolls the audit row back.
            return Ok(None);
        }
        commit(tx).await?;
        audit.announce();
        Ok(Some(seq))
    }
}

/// Applies one rotation request inside the caller's transaction.
async fn request_one(
    conn: &mut PgConnection,
    request: &RotationRequest,
    audit: &mut AuditWrites,
) -> Result<RotationRequestResult, StoreError> {
    let deadline = request.deadline.as_millis();
    let updated = sqlx::query(
        "UPDATE keys SET \
           rotation_requested_at = COALESCE(rotation_requested_at, $1), \
           expires_before_request = CASE WHEN rotation_requested_at IS NULL THEN expires_at \
                                         ELSE expires_before_request END, \
           rotation_deadline = CASE WHEN rotation_deadline IS NOT NULL AND rotation_deadline < $2 \
                                    THEN rotation_deadline ELSE $2 END, \
           expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at < $2 THEN expires_at ELSE $2 END \
         WHERE key_id = $3 AND revoked_at IS NULL AND successor_id IS NULL",
    )
    .bind(request.requested_at.as_millis())
    .bind(deadline)
    .bind(request.key_id.as_str())
    .execute(&mut *conn)
    .await
    .map_err(classify)?;

    let current = fetch_key(conn, &request.key_id).await?;
    if updated.rows_affected() == 0 {
        return Ok(rotation_skipped(current));
    }
    writes::insert_event(conn, &request.event, audit).await?;
    writes::insert_change(conn, &request.key_id, request.requested_at).await?;
    // The UPDATE above matched the row inside this transaction, so it is still there.
    current
        .map(|record| RotationRequestResult::Requested(Box::new(record)))
        .ok_or_else(|| StoreError::NotFound(request.key_id.clone()))
}
