//! The SQL of each mutation, run inside a transaction that the caller started (holding the write
//! lock, for every mutation that appends audit events or change rows) and commits. Guards are
//! conditional UPDATEs: when one matches no row, the row is read inside the same transaction to
//! return the precise error, and the caller drops the transaction, which rolls everything back.
//! Every lifecycle change also appends one `changes` row per key it touched, and each such row
//! sends a notification that PostgreSQL delivers when the transaction commits.

use keyturn_core::{AuditEvent, Duration, Instant, KeyId, KeyRecord, NewAuditEvent};
use sqlx::postgres::PgConnection;
use sqlx::Row;

use super::errors::{classify, is_unique_violation};
use super::{fetch_key, CHANGES_CHANNEL};
use crate::audit_log::AuditWrites;
use crate::conflicts;
use crate::rows::{allowed_uses, metadata_json, scopes_json, stored_count};
use crate::{CopiedKey, Rehash, Revocation, Rotation, StoreError, UsageRecord};

/// Inserts a key row. A key id that exists fails with [`StoreError::DuplicateKeyId`].
pub(super) async fn insert_key(conn: &mut PgConnection, key: &KeyRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO keys (key_id, name, owner, scopes, metadata, hash, pepper_id, created_at, expires_at, \
         grace_ms, warn_before_ms, revoked_at, revocation_reason, rotated_at, overlap_ends_at, successor_id, \
         predecessor_id, chain_started_at, self_rotation, max_chain_lifetime_ms, rotation_requested_at, \
         rotation_deadline, expires_before_request, first_used_at, last_used_at, policy, overlap_after_first_use_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
         $23, $24, $25, $26, $27)",
    )
    .bind(key.key_id.as_str())
    .bind(&key.name)
    .bind(key.owner.as_deref())
    .bind(scopes_json(&key.scopes))
    .bind(metadata_json(&key.metadata))
    .bind(key.hash.as_bytes().as_slice())
    .bind(key.pepper_id.as_str())
    .bind(key.created_at.as_millis())
    .bind(key.expires_at.map(Instant::as_millis))
    .bind(key.grace.as_millis())
    .bind(key.warn_before.as_millis())
    .bind(key.revoked_at.map(Instant::as_millis))
    .bind(key.revocation_reason.as_deref())
    .bind(key.rotated_at.map(Instant::as_millis))
    .bind(key.overlap_ends_at.map(Instant::as_millis))
    .bind(key.successor_id.as_ref().map(KeyId::as_str))
    .bind(key.predecessor_id.as_ref().map(KeyId::as_str))
    .bind(key.chain_started_at.as_millis())
    .bind(key.self_rotation)
    .bind(key.max_chain_lifetime.as_millis())
    .bind(key.rotation_requested_at.map(Instant::as_millis))
    .bind(key.rotation_deadline.map(Instant::as_millis))
    .bind(key.expires_before_request.map(Instant::as_millis))
    .bind(key.first_used_at.map(Instant::as_millis))
    .bind(key.last_used_at.map(Instant::as_millis))
    .bind(key.policy.as_str())
    .bind(key.overlap_after_first_use.map(Duration::as_millis))
    .execute(&mut *conn)
    .await
    .map_err(|error| {
        if is_unique_violation(&error) {
            StoreError::DuplicateKeyId(key.key_id.clone())
        } else {
            classify(error)
        }
    })?;
    Ok(())
}

/// Appends an audit event and returns its sequence number. The caller holds the write lock, so
/// `MAX(seq) + 1` is unique and sequence numbers follow commit order.
pub(super) async fn insert_event(
    conn: &mut PgConnection,
    event: &NewAuditEvent,
    audit: &mut AuditWrites,
) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM audit_events")
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)?;
    let seq: i64 = row.try_get("seq").map_err(classify)?;
    let canonical = event.canonical(seq);
    let mac = if audit.is_signing() {
        let previous: Option<Vec<u8>> = sqlx::query("SELECT mac FROM audit_events WHERE seq = $1")
            .bind(seq - 1)
            .fetch_optional(&mut *conn)
            .await
            .map_err(classify)?
            .map(|row| row.try_get::<Option<Vec<u8>>, _>(0))
            .transpose()
            .map_err(classify)?
            .flatten();
        audit.sign(previous.as_deref(), &canonical)
    } else {
        None
    };

    sqlx::query(
        "INSERT INTO audit_events (seq, at, event, key_id, actor, client_addr, reason, details, canonical, mac) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(seq)
    .bind(event.at.as_millis())
    .bind(event.event.as_str())
    .bind(event.key_id.as_ref().map(KeyId::as_str))
    .bind(event.actor.to_stored())
    .bind(event.client_addr.as_deref())
    .bind(event.reason.as_deref())
    .bind(event.details.to_string())
    .bind(&canonical)
    .bind(mac.as_deref())
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    super::webhooks::append_outbox(conn, seq, event).await?;
    audit.record(seq, event);
    Ok(seq)
}

/// Writes a key copied from another store with its last client address and usage counters.
pub(super) async fn import_key(conn: &mut PgConnection, key: &CopiedKey) -> Result<(), StoreError> {
    insert_key(conn, &key.record).await?;
    sqlx::query("UPDATE keys SET last_client_addr = $1, uses_since_rotation = $2 WHERE key_id = $3")
        .bind(key.last_client_addr.as_deref())
        .bind(stored_count(&key.record.key_id, key.uses_since_rotation)?)
        .bind(key.record.key_id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    for (outcome, count) in &key.usage {
        sqlx::query("INSERT INTO key_usage (key_id, outcome, count) VALUES ($1, $2, $3)")
            .bind(key.record.key_id.as_str())
            .bind(outcome.as_str())
            .bind(stored_count(&key.record.key_id, *count)?)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

/// Writes an audit event copied from another store with its sequence number, canonical text
/// and MAC unchanged.
pub(super) async fn import_event(conn: &mut PgConnection, event: &AuditEvent) -> Result<(), StoreError> {
    let row = &event.event;
    sqlx::query(
        "INSERT INTO audit_events (seq, at, event, key_id, actor, client_addr, reason, details, canonical, mac) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(event.seq)
    .bind(row.at.as_millis())
    .bind(row.event.as_str())
    .bind(row.key_id.as_ref().map(KeyId::as_str))
    .bind(row.actor.to_stored())
    .bind(row.client_addr.as_deref())
    .bind(row.reason.as_deref())
    .bind(row.details.to_string())
    .bind(&event.canonical)
    .bind(event.mac.as_deref())
    .execute(&mut *conn)
    .await
    .map_err(|error| {
        if is_unique_violation(&error) {
            StoreError::Internal(format!("audit event {} already exists in the target store", event.seq))
        } else {
            classify(error)
        }
    })?;
    Ok(())
}

/// Appends one entry to the change feed and queues a notification carrying its sequence number,
/// which PostgreSQL sends to every listener when the transaction commits.
pub(super) async fn insert_change(conn: &mut PgConnection, key_id: &KeyId, at: Instant) -> Result<(), StoreError> {
    sqlx::query(
        "WITH inserted AS (INSERT INTO changes (key_id, at) VALUES ($1, $2) RETURNING seq) \
         SELECT pg_notify($3, seq::text) FROM inserted",
    )
    .bind(key_id.as_str())
    .bind(at.as_millis())
    .bind(CHANGES_CHANNEL)
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Links the old key to its successor, inserts the successor, and appends the events and change
/// rows. With `replace_unused_successor`, the current successor is revoked (unless it already is)
/// and the old key keeps its original `rotated_at` and `overlap_ends_at`, so a replacement never
/// extends the overlap.
pub(super) async fn rotate(
    conn: &mut PgConnection,
    rotation: &Rotation,
    audit: &mut AuditWrites,
) -> Result<(), StoreError> {
    let old_id = &rotation.old_key_id;
    let new_id = &rotation.successor.key_id;

    match &rotation.replace_unused_successor {
        None => {
            let linked = sqlx::query(
                "UPDATE keys SET successor_id = $1, rotated_at = $2, overlap_ends_at = $3, \
                 overlap_after_first_use_ms = $5 WHERE key_id = $4 AND revoked_at IS NULL AND successor_id IS NULL",
            )
            .bind(new_id.as_str())
            .bind(rotation.rotated_at.as_millis())
            .bind(rotation.overlap_ends_at.as_millis())
            .bind(old_id.as_str())
            .bind(rotation.overlap_after_first_use.map(Duration::as_millis))
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
            if linked.rows_affected() == 0 {
                return Err(rotation_conflict(conn, old_id, None).await);
            }
        }
        Some(replaced_id) => {
            let relinked = sqlx::query(
                "UPDATE keys SET successor_id = $1 WHERE key_id = $2 AND revoked_at IS NULL AND successor_id = $3",
            )
            .bind(new_id.as_str())
            .bind(old_id.as_str())
            .bind(replaced_id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
            if relinked.rows_affected() == 0 {
                return Err(rotation_conflict(conn, old_id, Some(replaced_id)).await);
            }

            let revoked = sqlx::query(
                "UPDATE keys SET revoked_at = $1, revocation_reason = $2 \
                 WHERE key_id = $3 AND first_used_at IS NULL AND revoked_at IS NULL AND successor_id IS NULL",
            )
            .bind(rotation.rotated_at.as_millis())
            .bind(format!("replaced by {new_id}"))
            .bind(replaced_id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
            if revoked.rows_affected() == 0 {
                let successor = fetch_key(conn, replaced_id).await?;
                conflicts::replacement_conflict(old_id, replaced_id, successor)?;
            }
        }
    }

    insert_key(conn, &rotation.successor).await?;
    for event in &rotation.events {
        insert_event(conn, event, audit).await?;
    }
    insert_change(conn, old_id, rotation.rotated_at).await?;
    insert_change(conn, new_id, rotation.rotated_at).await?;
    if let Some(replaced_id) = &rotation.replace_unused_successor {
        insert_change(conn, replaced_id, rotation.rotated_at).await?;
    }
    Ok(())
}

/// Reads the old key inside the failed transaction and explains why the rotation guard matched
/// no row.
async fn rotation_conflict(conn: &mut PgConnection, old_id: &KeyId, expected: Option<&KeyId>) -> StoreError {
    match fetch_key(conn, old_id).await {
        Ok(old) => conflicts::rotation_conflict(old_id, expected, old),
        Err(error) => error,
    }
}

/// Revokes a key that is not yet revoked and returns the updated record.
pub(super) async fn revoke(
    conn: &mut PgConnection,
    revocation: &Revocation,
    audit: &mut AuditWrites,
) -> Result<KeyRecord, StoreError> {
    let key_id = &revocation.key_id;
    let revoked =
        sqlx::query("UPDATE keys SET revoked_at = $1, revocation_reason = $2 WHERE key_id = $3 AND revoked_at IS NULL")
            .bind(revocation.revoked_at.as_millis())
            .bind(revocation.reason.as_deref())
            .bind(key_id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(classify)?;

    if revoked.rows_affected() == 0 {
        let existing = fetch_key(conn, key_id).await?;
        return Err(conflicts::revocation_conflict(key_id, existing));
    }

    insert_event(conn, &revocation.event, audit).await?;
    insert_change(conn, key_id, revocation.revoked_at).await?;
    // The UPDATE above matched the row inside this transaction, so it is still there.
    fetch_key(conn, key_id).await?.ok_or_else(|| StoreError::NotFound(key_id.clone()))
}

/// Replaces the hash when the key is still under `rehash.from`; returns whether it did.
pub(super) async fn rehash(
    conn: &mut PgConnection,
    rehash: &Rehash,
    audit: &mut AuditWrites,
) -> Result<bool, StoreError> {
    let updated = sqlx::query("UPDATE keys SET hash = $1, pepper_id = $2 WHERE key_id = $3 AND pepper_id = $4")
        .bind(rehash.hash.as_bytes().as_slice())
        .bind(rehash.to.as_str())
        .bind(rehash.key_id.as_str())
        .bind(rehash.from.as_str())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }

    insert_event(conn, &rehash.event, audit).await?;
    insert_change(conn, &rehash.key_id, rehash.event.at).await?;
    Ok(true)
}

/// Merges one usage record into its key: the earliest first use, the latest last use with its
/// client address, the allowed uses since rotation when the record's last use is at or after
/// `rotated_at`, and the counts added. A key that does not exist is skipped.
pub(super) async fn record_usage(conn: &mut PgConnection, usage: &UsageRecord) -> Result<(), StoreError> {
    // LEAST and GREATEST ignore NULL arguments, so a key that was never used takes the new value.
    // Every SET expression reads the old row, so last_client_addr compares against the previous
    // last_used_at. uses_since_rotation saturates at i64::MAX like the counters below.
    let updated = sqlx::query(
        "UPDATE keys SET \
           first_used_at = LEAST(first_used_at, $1), \
           last_used_at = GREATEST(last_used_at, $2), \
           last_client_addr = CASE WHEN last_used_at IS NULL OR $2 >= last_used_at \
                                   THEN COALESCE($3, last_client_addr) ELSE last_client_addr END, \
           uses_since_rotation = CASE \
             WHEN rotated_at IS NULL OR $2 < rotated_at THEN uses_since_rotation \
             WHEN uses_since_rotation > 9223372036854775807 - $5 THEN 9223372036854775807 \
             ELSE uses_since_rotation + $5 END \
         WHERE key_id = $4",
    )
    .bind(usage.first_used_at.as_millis())
    .bind(usage.last_used_at.as_millis())
    .bind(usage.last_client_addr.as_deref())
    .bind(usage.key_id.as_str())
    .bind(allowed_uses(usage))
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    if updated.rows_affected() == 0 {
        return Ok(());
    }

    for (outcome, count) in &usage.counts {
        // A BIGINT sum that overflows is an error in PostgreSQL, so the sum saturates at
        // i64::MAX instead, as on SQLite.
        let count = i64::try_from(*count).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO key_usage (key_id, outcome, count) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id, outcome) DO UPDATE SET count = \
               CASE WHEN key_usage.count > 9223372036854775807 - excluded.count THEN 9223372036854775807 \
                    ELSE key_usage.count + excluded.count END",
        )
        .bind(usage.key_id.as_str())
        .bind(outcome.as_str())
        .bind(count)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    }
    Ok(())
}
