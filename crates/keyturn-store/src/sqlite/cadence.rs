//! The SQL of the rotation cadence on SQLite: the query that finds keys old enough for their
//! policy's cadence, and the request that a key receives only when it has none yet.

use keyturn_core::KeyRecord;
use sqlx::sqlite::Sqlite;

use super::errors::classify;
use super::{commit, writes, SqliteStore};
use crate::cadence::{self, CadenceFilter};
use crate::rows::decode_key;
use crate::{RotationRequest, StoreError};

impl SqliteStore {
    pub(super) async fn select_cadence_due(&self, filter: &CadenceFilter) -> Result<Vec<KeyRecord>, StoreError> {
        let mut query = cadence::list_cadence_due::<Sqlite>(filter);
        let rows = query.build().fetch_all(&self.pool).await.map_err(classify)?;
        rows.iter().map(decode_key).collect()
    }

    pub(super) async fn write_first_rotation_request(&self, request: &RotationRequest) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE keys SET \
               rotation_requested_at = ?1, \
               expires_before_request = expires_at, \
               rotation_deadline = ?2, \
               expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at < ?2 THEN expires_at ELSE ?2 END \
             WHERE key_id = ?3 AND revoked_at IS NULL AND successor_id IS NULL AND rotation_requested_at IS NULL",
        )
        .bind(request.requested_at.as_millis())
        .bind(request.deadline.as_millis())
        .bind(request.key_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }

        let mut audit = self.audit_writes();
        writes::insert_event(&mut tx, &request.event, &mut audit).await?;
        writes::insert_change(&mut tx, &request.key_id, request.requested_at).await?;
        commit(tx).await?;
        audit.announce();
        Ok(true)
    }
}
