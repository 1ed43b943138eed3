//! Bulk revocation and pepper usage on SQLite. A bulk revocation reads its selection and revokes
//! it inside one `BEGIN IMMEDIATE` transaction, so no other process changes a selected key in
//! between.

use keyturn_core::{Instant, KeyId, KeyRecord, PepperId};
use sqlx::sqlite::{Sqlite, SqliteConnection};
use sqlx::Row;

use super::errors::classify;
use super::writes::{insert_change, insert_event};
use crate::audit_log::AuditWrites;
use crate::rows::decode_key;
use crate::selection::{self, BulkOutcome, BulkReport, BulkRevocation, BulkRevokedKey, KeySelection, PepperUsage};
use crate::StoreError;

/// Reads the keys of a selection, ordered as the selection lists them, with the ids no key has.
pub(super) async fn select(
    conn: &mut SqliteConnection,
    selection: &KeySelection,
    limit: usize,
) -> Result<(Vec<KeyRecord>, Vec<KeyId>), StoreError> {
    let selection = selection.deduplicated();
    let mut query = selection::select_keys::<Sqlite>(&selection, limit);
    let rows = query.build().fetch_all(&mut *conn).await.map_err(classify)?;
    let records = rows.iter().map(decode_key).collect::<Result<Vec<_>, _>>()?;
    selection::arrange(&selection, records, limit)
}

/// Applies a bulk revocation inside the caller's write transaction.
pub(super) async fn revoke_selection(
    conn: &mut SqliteConnection,
    revocation: &BulkRevocation,
    audit: &mut AuditWrites,
) -> Result<BulkReport, StoreError> {
    let (records, missing) = select(conn, &revocation.selection, revocation.limit).await?;
    for event in &revocation.leading_events {
        insert_event(conn, event, audit).await?;
    }

    let mut keys = Vec::with_capacity(records.len());
    for mut record in records {
        if record.revoked_at.is_some() {
            keys.push(BulkRevokedKey { record, outcome: BulkOutcome::AlreadyRevoked });
            continue;
        }
        // The write lock is held since the selection was read, so the key is still not revoked.
        sqlx::query("UPDATE keys SET revoked_at = ?, revocation_reason = ? WHERE key_id = ? AND revoked_at IS NULL")
            .bind(revocation.revoked_at.as_millis())
            .bind(revocation.reason.as_deref())
            .bind(record.key_id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
        insert_event(conn, &revocation.event_for(&record.key_id), audit).await?;
        insert_change(conn, &record.key_id, revocation.revoked_at).await?;
        record.revoked_at = Some(revocation.revoked_at);
        record.revocation_reason.clone_from(&revocation.reason);
        keys.push(BulkRevokedKey { record, outcome: BulkOutcome::Revoked });
    }

    for event in &revocation.closing_events {
        insert_event(conn, event, audit).await?;
    }
    Ok(BulkReport { keys, missing })
}

/// Counts live keys per pepper id.
pub(super) async fn pepper_usage(conn: &mut SqliteConnection, at: Instant) -> Result<Vec<PepperUsage>, StoreError> {
    let mut query = selection::pepper_usage::<Sqlite>(at);
    let rows = query.build().fetch_all(&mut *conn).await.map_err(classify)?;
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("pepper_id").map_err(classify)?;
            let live: i64 = row.try_get("live_keys").map_err(classify)?;
            let pepper_id = PepperId::parse(&id).map_err(|error| StoreError::CorruptRow {
                key_id: "<grouped by pepper id>".to_owned(),
                reason: format!("pepper_id: {error}"),
            })?;
            Ok(PepperUsage { pepper_id, live_keys: live.unsigned_abs() })
        })
        .collect()
}

/// Lists the ids of live keys under one pepper.
pub(super) async fn live_keys_under_pepper(
    conn: &mut SqliteConnection,
    pepper_id: &PepperId,
    at: Instant,
    limit: u32,
) -> Result<Vec<KeyId>, StoreError> {
    let mut query = selection::live_keys_under_pepper::<Sqlite>(pepper_id, at, limit);
    let rows = query.build().fetch_all(&mut *conn).await.map_err(classify)?;
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("key_id").map_err(classify)?;
            KeyId::parse(&id).map_err(|error| StoreError::CorruptRow { key_id: id, reason: error.to_string() })
        })
        .collect()
}
