//! The SQL of named policies and of the overlap window that a successor's first use shortens,
//! run on PostgreSQL. Writes run inside a transaction that the caller started holding the
//! write lock and commits.

use keyturn_core::{Duration, Instant, KeyId, NamedPolicy, PolicyName};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::Row;

use super::errors::{classify, is_unique_violation};
use super::fetch_key;
use super::writes::{insert_change, insert_event};
use crate::audit_log::AuditWrites;
use crate::overlap::{shortenable_predecessor_query, shortened_event};
use crate::policies::{check_unchanged, decode_policy, event_with_count, PolicyChange, POLICY_COLUMNS};
use crate::{PolicyKeyCounts, PolicyUpdate, StoreError, UsageRecord};

/// The latest expiry a key may have, as stored milliseconds.
const MAX_EXPIRY_MILLIS: i64 = keyturn_core::policy::MAX_EXPIRY.as_millis();

/// The condition on `keys` that selects the live keys of policy `$1` at instant `$2`.
const LIVE_KEYS: &str = "policy = $1 AND revoked_at IS NULL AND successor_id IS NULL \
     AND (expires_at IS NULL OR expires_at + grace_ms > $2)";

pub(super) async fn list(pool: &PgPool) -> Result<Vec<NamedPolicy>, StoreError> {
    let rows = sqlx::query(&format!("SELECT {POLICY_COLUMNS} FROM policies ORDER BY name"))
        .fetch_all(pool)
        .await
        .map_err(classify)?;
    rows.iter().map(decode_policy).collect()
}

pub(super) async fn get(conn: &mut PgConnection, name: &PolicyName) -> Result<Option<NamedPolicy>, StoreError> {
    let row = sqlx::query(&format!("SELECT {POLICY_COLUMNS} FROM policies WHERE name = $1"))
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?;
    row.as_ref().map(decode_policy).transpose()
}

pub(super) async fn count_keys(pool: &PgPool, name: &PolicyName, at: Instant) -> Result<PolicyKeyCounts, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT (SELECT COUNT(*) FROM keys WHERE {LIVE_KEYS}), \
                (SELECT COUNT(*) FROM keys WHERE policy = $1 AND revoked_at IS NULL)"
    ))
    .bind(name.as_str())
    .bind(at.as_millis())
    .fetch_one(pool)
    .await
    .map_err(classify)?;
    let live: i64 = row.try_get(0).map_err(classify)?;
    let not_revoked: i64 = row.try_get(1).map_err(classify)?;
    Ok(PolicyKeyCounts { live: live.unsigned_abs(), not_revoked: not_revoked.unsigned_abs() })
}

/// Writes every change of `update` and returns how many keys each one updated.
pub(super) async fn apply(
    conn: &mut PgConnection,
    update: &PolicyUpdate,
    audit: &mut AuditWrites,
) -> Result<Vec<u64>, StoreError> {
    let mut counts = Vec::with_capacity(update.changes.len());
    for change in &update.changes {
        check_unchanged(change, get(conn, &change.name).await?)?;
        let updated = match &change.new {
            Some(policy) => upsert(conn, policy, change, update.at).await?,
            None => remove(conn, &change.name).await?,
        };
        insert_event(conn, &event_with_count(change, updated.len() as u64), audit).await?;
        for key_id in &updated {
            insert_change(conn, key_id, update.at).await?;
        }
        counts.push(updated.len() as u64);
    }
    Ok(counts)
}

/// Stores a policy and, when the change asks for it, writes its instants into its live keys.
/// Returns the key ids it updated.
async fn upsert(
    conn: &mut PgConnection,
    policy: &NamedPolicy,
    change: &PolicyChange,
    at: Instant,
) -> Result<Vec<KeyId>, StoreError> {
    sqlx::query(
        "INSERT INTO policies (name, max_lifetime_ms, grace_ms, warn_before_ms, default_overlap_ms, self_rotation, \
         max_chain_lifetime_ms, rotate_every_ms, overlap_after_first_use_ms, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (name) DO UPDATE SET max_lifetime_ms = excluded.max_lifetime_ms, grace_ms = excluded.grace_ms, \
           warn_before_ms = excluded.warn_before_ms, default_overlap_ms = excluded.default_overlap_ms, \
           self_rotation = excluded.self_rotation, max_chain_lifetime_ms = excluded.max_chain_lifetime_ms, \
           rotate_every_ms = excluded.rotate_every_ms, \
           overlap_after_first_use_ms = excluded.overlap_after_first_use_ms, updated_at = excluded.updated_at",
    )
    .bind(policy.name.as_str())
    .bind(policy.max_lifetime.as_millis())
    .bind(policy.grace.as_millis())
    .bind(policy.warn_before.as_millis())
    .bind(policy.default_overlap.as_millis())
    .bind(policy.self_rotation)
    .bind(policy.max_chain_lifetime.as_millis())
    .bind(policy.rotate_every.map(Duration::as_millis))
    .bind(policy.overlap_after_first_use.map(Duration::as_millis))
    .bind(at.as_millis())
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    if !change.apply_to_existing {
        return Ok(Vec::new());
    }

    let rows = sqlx::query(&format!(
        "UPDATE keys SET expires_at = LEAST(created_at + $3, $4), grace_ms = $5, warn_before_ms = $6, \
           self_rotation = $7, max_chain_lifetime_ms = $8 \
         WHERE {LIVE_KEYS} RETURNING key_id"
    ))
    .bind(policy.name.as_str())
    .bind(at.as_millis())
    .bind(policy.max_lifetime.as_millis())
    .bind(MAX_EXPIRY_MILLIS)
    .bind(policy.grace.as_millis())
    .bind(policy.warn_before.as_millis())
    .bind(policy.self_rotation)
    .bind(policy.max_chain_lifetime.as_millis())
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?;
    rows.iter().map(|row| decoded_key_id(row.try_get::<String, _>(0).map_err(classify)?)).collect()
}

/// Inserts policies copied from another store. A name that exists fails.
pub(super) async fn import(conn: &mut PgConnection, policies: &[NamedPolicy], at: Instant) -> Result<(), StoreError> {
    for policy in policies {
        sqlx::query(
            "INSERT INTO policies (name, max_lifetime_ms, grace_ms, warn_before_ms, default_overlap_ms, self_rotation, \
             max_chain_lifetime_ms, rotate_every_ms, overlap_after_first_use_ms, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(policy.name.as_str())
        .bind(policy.max_lifetime.as_millis())
        .bind(policy.grace.as_millis())
        .bind(policy.warn_before.as_millis())
        .bind(policy.default_overlap.as_millis())
        .bind(policy.self_rotation)
        .bind(policy.max_chain_lifetime.as_millis())
        .bind(policy.rotate_every.map(Duration::as_millis))
        .bind(policy.overlap_after_first_use.map(Duration::as_millis))
        .bind(at.as_millis())
        .execute(&mut *conn)
        .await
        .map_err(|error| {
            if is_unique_violation(&error) {
                StoreError::Internal(format!("policy {} already exists in the target store", policy.name))
            } else {
                classify(error)
            }
        })?;
    }
    Ok(())
}

/// Removes a policy that no key which is not revoked references. Returns no key ids.
async fn remove(conn: &mut PgConnection, name: &PolicyName) -> Result<Vec<KeyId>, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) FROM keys WHERE policy = $1 AND revoked_at IS NULL")
        .bind(name.as_str())
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)?;
    let keys: i64 = row.try_get(0).map_err(classify)?;
    if keys > 0 {
        return Err(StoreError::PolicyInUse { name: name.to_string(), keys: keys.unsigned_abs() });
    }
    sqlx::query("DELETE FROM policies WHERE name = $1")
        .bind(name.as_str())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    Ok(Vec::new())
}

/// Returns whether any record of `usage` may shorten an overlap window, so the flush must hold
/// the write lock before it touches a row.
pub(super) async fn may_shorten_overlap(pool: &PgPool, usage: &[UsageRecord]) -> Result<bool, StoreError> {
    let key_ids: Vec<&str> = usage.iter().map(|record| record.key_id.as_str()).collect();
    let query = format!("{} LIMIT 1", shortenable_predecessor_query("ANY($1)"));
    let row = sqlx::query(&query).bind(&key_ids).fetch_optional(pool).await.map_err(classify)?;
    Ok(row.is_some())
}

/// Shortens the overlap window of the old key whose successor `usage` names, after the usage
/// was merged into the successor's row. Appends the audit event and the change row when it did.
pub(super) async fn shorten_overlap(
    conn: &mut PgConnection,
    usage: &UsageRecord,
    audit: &mut AuditWrites,
) -> Result<(), StoreError> {
    let old_id = sqlx::query(&shortenable_predecessor_query("$1"))
        .bind(usage.key_id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?;
    let Some(old_id) = old_id else { return Ok(()) };
    let old_id = decoded_key_id(old_id.try_get::<String, _>(0).map_err(classify)?)?;

    let (Some(old), Some(successor)) = (fetch_key(conn, &old_id).await?, fetch_key(conn, &usage.key_id).await?) else {
        return Ok(());
    };
    let Some(first_used_at) = successor.first_used_at else { return Ok(()) };
    let Some(new_end) = old.shortened_overlap_end(first_used_at) else { return Ok(()) };

    sqlx::query("UPDATE keys SET overlap_ends_at = $1 WHERE key_id = $2")
        .bind(new_end.as_millis())
        .bind(old_id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    insert_event(conn, &shortened_event(&old, first_used_at, new_end, usage.last_used_at), audit).await?;
    insert_change(conn, &old_id, usage.last_used_at).await?;
    Ok(())
}

fn decoded_key_id(text: String) -> Result<KeyId, StoreError> {
    KeyId::parse(&text).map_err(|error| StoreError::CorruptRow { key_id: text.clone(), reason: error.to_string() })
}
