//! The SQLite side of webhooks: the outbox row that the audit append path writes for a
//! notifiable event, with one delivery row per matching endpoint, and the [`Store`] methods that
//! manage endpoints and lease deliveries. Every write holds the write lock (`BEGIN IMMEDIATE`),
//! so a lease taken here is exclusive across processes.
//!
//! [`Store`]: crate::Store

use keyturn_core::webhook::{event_payload, KeyFacts};
use keyturn_core::{Instant, KeyId, NewAuditEvent};
use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

use super::errors::{classify, is_unique_violation};
use super::{commit, writes, SqliteStore};
use crate::webhooks::{
    attach_secrets, decode_claimed, decode_delivery, decode_endpoint, decode_outbox, decode_secret, event_needle,
    events_json, new_message_id, DELIVERY_COLUMNS, OUTBOX_COLUMNS,
};
use crate::{
    AttemptOutcome, AttemptReport, ClaimedDelivery, DeliveryClaim, DeliveryFilter, NewWebhookEndpoint, OutboxMessage,
    StoreError, WebhookDelivery, WebhookEndpoint,
};

const ENDPOINT_COLUMNS: &str = "endpoint_id, url, events, allow_private, enabled, disabled_reason, created_at";
const SECRET_COLUMNS: &str = "endpoint_id, secret_no, sealed, created_at, expires_at";

/// Writes the outbox row of the audit row `seq` when its type is notifiable, and one pending
/// delivery for each enabled endpoint whose filter matches, due at once. Runs inside the
/// transaction that appends the audit row.
pub(super) async fn append_outbox(
    conn: &mut SqliteConnection,
    seq: i64,
    event: &NewAuditEvent,
) -> Result<(), StoreError> {
    if !event.event.is_notifiable() {
        return Ok(());
    }
    let facts = match &event.key_id {
        Some(key_id) => key_facts(conn, key_id).await?,
        None => KeyFacts::default(),
    };
    let msg_id = new_message_id();
    let payload = event_payload(event, seq, &facts).to_string();

    sqlx::query("INSERT INTO webhook_outbox (msg_id, audit_seq, event, key_id, at, payload) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(&msg_id)
        .bind(seq)
        .bind(event.event.as_str())
        .bind(event.key_id.as_ref().map(KeyId::as_str))
        .bind(event.at.as_millis())
        .bind(&payload)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (endpoint_id, msg_id, audit_seq, state, attempts, next_attempt_at) \
         SELECT endpoint_id, ?, ?, 'pending', 0, ? FROM webhook_endpoints \
         WHERE enabled AND (events = '[]' OR instr(events, ?) > 0)",
    )
    .bind(&msg_id)
    .bind(seq)
    .bind(event.at.as_millis())
    .bind(event_needle(event.event))
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

async fn key_facts(conn: &mut SqliteConnection, key_id: &KeyId) -> Result<KeyFacts, StoreError> {
    let row = sqlx::query("SELECT owner, name FROM keys WHERE key_id = ?")
        .bind(key_id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?;
    let Some(row) = row else { return Ok(KeyFacts::default()) };
    Ok(KeyFacts { owner: row.try_get("owner").map_err(classify)?, name: row.try_get("name").map_err(classify)? })
}

pub(super) async fn insert_endpoint(
    store: &SqliteStore,
    endpoint: &NewWebhookEndpoint,
    event: &NewAuditEvent,
) -> Result<(), StoreError> {
    let mut tx = store.begin_write().await?;
    sqlx::query(
        "INSERT INTO webhook_endpoints (endpoint_id, url, events, allow_private, enabled, disabled_reason, created_at) \
         VALUES (?, ?, ?, ?, 1, NULL, ?)",
    )
    .bind(&endpoint.endpoint_id)
    .bind(&endpoint.url)
    .bind(events_json(&endpoint.events))
    .bind(endpoint.allow_private)
    .bind(endpoint.created_at.as_millis())
    .execute(&mut *tx)
    .await
    .map_err(|error| {
        if is_unique_violation(&error) {
            StoreError::Internal(format!("webhook endpoint id {} already exists", endpoint.endpoint_id))
        } else {
            classify(error)
        }
    })?;
    insert_secret(&mut tx, &endpoint.endpoint_id, 1, &endpoint.sealed_secret, endpoint.created_at).await?;
    let mut audit = store.audit_writes();
    writes::insert_event(&mut tx, event, &mut audit).await?;
    commit(tx).await?;
    audit.announce();
    Ok(())
}

async fn insert_secret(
    conn: &mut SqliteConnection,
    endpoint_id: &str,
    secret_no: i64,
    sealed: &[u8],
    at: Instant,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO webhook_secrets (endpoint_id, secret_no, sealed, created_at) VALUES (?, ?, ?, ?)")
        .bind(endpoint_id)
        .bind(secret_no)
        .bind(sealed)
        .bind(at.as_millis())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    Ok(())
}

pub(super) async fn list_endpoints(
    store: &SqliteStore,
    endpoint_id: Option<&str>,
) -> Result<Vec<WebhookEndpoint>, StoreError> {
    let mut conn = store.pool.acquire().await.map_err(classify)?;
    let rows = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE (?1 IS NULL OR endpoint_id = ?1) ORDER BY endpoint_id"
    ))
    .bind(endpoint_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?;
    let mut endpoints = rows.iter().map(decode_endpoint).collect::<Result<Vec<_>, _>>()?;
    let rows = sqlx::query(&format!(
        "SELECT {SECRET_COLUMNS} FROM webhook_secrets WHERE (?1 IS NULL OR endpoint_id = ?1) \
         ORDER BY endpoint_id, secret_no"
    ))
    .bind(endpoint_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?;
    let secrets = rows.iter().map(decode_secret).collect::<Result<Vec<_>, _>>()?;
    attach_secrets(&mut endpoints, secrets);
    Ok(endpoints)
}

pub(super) async fn remove_endpoint(
    store: &SqliteStore,
    endpoint_id: &str,
    event: &NewAuditEvent,
) -> Result<bool, StoreError> {
    let mut tx = store.begin_write().await?;
    for table in ["webhook_deliveries", "webhook_secrets"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE endpoint_id = ?"))
            .bind(endpoint_id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
    }
    let removed = sqlx::query("DELETE FROM webhook_endpoints WHERE endpoint_id = ?")
        .bind(endpoint_id)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    if removed.rows_affected() == 0 {
        return Ok(false);
    }
    let mut audit = store.audit_writes();
    writes::insert_event(&mut tx, event, &mut audit).await?;
    commit(tx).await?;
    audit.announce();
    Ok(true)
}

pub(super) async fn add_secret(
    store: &SqliteStore,
    endpoint_id: &str,
    sealed: &[u8],
    old_expires_at: Instant,
    event: &NewAuditEvent,
) -> Result<bool, StoreError> {
    let mut tx = store.begin_write().await?;
    let row = sqlx::query(
        "SELECT COALESCE(MAX(s.secret_no), 0) + 1 FROM webhook_endpoints e \
         LEFT JOIN webhook_secrets s ON s.endpoint_id = e.endpoint_id WHERE e.endpoint_id = ? GROUP BY e.endpoint_id",
    )
    .bind(endpoint_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(classify)?;
    let Some(row) = row else { return Ok(false) };
    let secret_no: i64 = row.try_get(0).map_err(classify)?;

    // Every older secret stops signing by the new deadline at the latest, so a rotation with a
    // short overlap also cuts off the secrets that earlier rotations left signing.
    sqlx::query(
        "UPDATE webhook_secrets SET expires_at = ? WHERE endpoint_id = ? AND (expires_at IS NULL OR expires_at > ?)",
    )
    .bind(old_expires_at.as_millis())
    .bind(endpoint_id)
    .bind(old_expires_at.as_millis())
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    insert_secret(&mut tx, endpoint_id, secret_no, sealed, event.at).await?;
    let mut audit = store.audit_writes();
    writes::insert_event(&mut tx, event, &mut audit).await?;
    commit(tx).await?;
    audit.announce();
    Ok(true)
}

pub(super) async fn disable_endpoint(
    store: &SqliteStore,
    endpoint_id: &str,
    reason: &str,
    event: &NewAuditEvent,
) -> Result<bool, StoreError> {
    let mut tx = store.begin_write().await?;
    let updated =
        sqlx::query("UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ? WHERE endpoint_id = ? AND enabled")
            .bind(reason)
            .bind(endpoint_id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    let mut audit = store.audit_writes();
    writes::insert_event(&mut tx, event, &mut audit).await?;
    commit(tx).await?;
    audit.announce();
    Ok(true)
}

pub(super) async fn claim(store: &SqliteStore, claim: &DeliveryClaim) -> Result<Vec<ClaimedDelivery>, StoreError> {
    // A read first, so a worker polling an idle outbox never takes the write lock.
    let due = sqlx::query(
        "SELECT 1 FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= ? \
           AND (lease_until IS NULL OR lease_until <= ?) LIMIT 1",
    )
    .bind(claim.now.as_millis())
    .bind(claim.now.as_millis())
    .fetch_optional(&store.pool)
    .await
    .map_err(classify)?;
    if due.is_none() {
        return Ok(Vec::new());
    }

    let mut tx = store.begin_write().await?;
    let rows = sqlx::query(
        "SELECT d.endpoint_id, d.msg_id, d.audit_seq, d.attempts, o.payload FROM webhook_deliveries d \
         JOIN webhook_outbox o ON o.msg_id = d.msg_id \
         JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id \
         WHERE d.state = 'pending' AND e.enabled AND d.next_attempt_at <= ?1 \
           AND (d.lease_until IS NULL OR d.lease_until <= ?1) \
           AND d.audit_seq = (SELECT MIN(p.audit_seq) FROM webhook_deliveries p \
                              WHERE p.endpoint_id = d.endpoint_id AND p.state = 'pending') \
         ORDER BY d.audit_seq, d.endpoint_id LIMIT ?2",
    )
    .bind(claim.now.as_millis())
    .bind(i64::from(claim.limit))
    .fetch_all(&mut *tx)
    .await
    .map_err(classify)?;
    let claimed = rows.iter().map(decode_claimed).collect::<Result<Vec<_>, _>>()?;

    for delivery in &claimed {
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_owner = ?, lease_until = ? WHERE endpoint_id = ? AND msg_id = ?",
        )
        .bind(&claim.owner)
        .bind(claim.lease_until.as_millis())
        .bind(&delivery.endpoint_id)
        .bind(&delivery.msg_id)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    }
    commit(tx).await?;
    Ok(claimed)
}

pub(super) async fn finish(store: &SqliteStore, report: &AttemptReport) -> Result<bool, StoreError> {
    let (state, next_attempt_at) = match report.outcome {
        AttemptOutcome::Delivered => ("delivered", None),
        AttemptOutcome::Retry { next_attempt_at } => ("pending", Some(next_attempt_at)),
        AttemptOutcome::Dead => ("dead", None),
    };
    let mut tx = store.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, \
           next_attempt_at = COALESCE(?, next_attempt_at), last_attempt_at = ?, last_result = ?, \
           lease_owner = NULL, lease_until = NULL \
         WHERE endpoint_id = ? AND msg_id = ? AND state = 'pending' AND lease_owner = ?",
    )
    .bind(state)
    .bind(next_attempt_at.map(Instant::as_millis))
    .bind(report.at.as_millis())
    .bind(&report.result)
    .bind(&report.endpoint_id)
    .bind(&report.msg_id)
    .bind(&report.owner)
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    commit(tx).await?;
    Ok(updated.rows_affected() == 1)
}

pub(super) async fn list_deliveries(
    store: &SqliteStore,
    filter: &DeliveryFilter,
) -> Result<Vec<WebhookDelivery>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_outbox o ON o.msg_id = d.msg_id \
         WHERE (?1 IS NULL OR d.endpoint_id = ?1) AND (?2 IS NULL OR d.state = ?2) \
         ORDER BY d.audit_seq, d.endpoint_id LIMIT ?3"
    ))
    .bind(filter.endpoint_id.as_deref())
    .bind(filter.state.map(|state| state.as_str()))
    .bind(filter.limit.map_or(-1, i64::from))
    .fetch_all(&store.pool)
    .await
    .map_err(classify)?;
    rows.iter().map(decode_delivery).collect()
}

pub(super) async fn retry_dead(
    store: &SqliteStore,
    endpoint_id: Option<&str>,
    event: &NewAuditEvent,
) -> Result<u64, StoreError> {
    let mut tx = store.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, \
           lease_owner = NULL, lease_until = NULL \
         WHERE state = 'dead' AND (? IS NULL OR endpoint_id = ?)",
    )
    .bind(event.at.as_millis())
    .bind(endpoint_id)
    .bind(endpoint_id)
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    let count = updated.rows_affected();
    if count == 0 {
        return Ok(0);
    }
    let mut event = event.clone();
    if let Some(details) = event.details.as_object_mut() {
        details.insert("deliveries".to_owned(), count.into());
    }
    let mut audit = store.audit_writes();
    writes::insert_event(&mut tx, &event, &mut audit).await?;
    commit(tx).await?;
    audit.announce();
    Ok(count)
}

pub(super) async fn list_outbox(
    store: &SqliteStore,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<OutboxMessage>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {OUTBOX_COLUMNS} FROM webhook_outbox WHERE audit_seq > ? ORDER BY audit_seq LIMIT ?"
    ))
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await
    .map_err(classify)?;
    rows.iter().map(decode_outbox).collect()
}
