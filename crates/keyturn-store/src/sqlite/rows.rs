//! Conversion between stored rows and domain values. Decoding never panics. A value that does not
//! parse, such as a bad key id, malformed JSON, a hash that is not 32 bytes or a column of the
//! wrong type, becomes [`StoreError::CorruptRow`] naming the key id and the column. In an audit
//! row it becomes [`StoreError::CorruptAuditRow`] naming the sequence number. No error quotes a
//! hash.

use keyturn_core::{
    Actor, AuditEvent, AuditEventType, Duration, Instant, KeyId, KeyRecord, NewAuditEvent, Outcome, PepperId, Scopes,
    TokenHash,
};
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Decode, Row, Sqlite, Type};

use super::errors::classify;
use crate::{Change, StoreError};

/// The columns of `keys` that make up a [`KeyRecord`], in the order [`decode_key`] reads them by
/// name. `last_client_addr` is stored but not part of the record.
pub(super) const KEY_COLUMNS: &str = "key_id, name, owner, scopes, metadata, hash, pepper_id, created_at, \
     expires_at, grace_ms, warn_before_ms, revoked_at, revocation_reason, rotated_at, overlap_ends_at, \
     successor_id, predecessor_id, chain_started_at, self_rotation, max_chain_lifetime_ms, first_used_at, last_used_at";

/// Reads one key by id.
pub(super) async fn fetch_key(conn: &mut SqliteConnection, key_id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
    let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ?"))
        .bind(key_id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?;
    row.as_ref().map(decode_key).transpose()
}

/// Encodes scopes as the JSON array of strings stored in `keys.scopes`.
pub(super) fn scopes_json(scopes: &Scopes) -> String {
    Value::Array(scopes.iter().map(|scope| Value::String(scope.as_str().to_owned())).collect()).to_string()
}

/// Encodes metadata as the JSON object stored in `keys.metadata`.
pub(super) fn metadata_json(metadata: &Map<String, Value>) -> String {
    Value::Object(metadata.clone()).to_string()
}

/// Reads the columns of one `keys` row, attributing every failure to the row's key id.
struct KeyRow<'r> {
    row: &'r SqliteRow,
    key_id: String,
}

impl<'r> KeyRow<'r> {
    fn corrupt(&self, column: &str, problem: impl std::fmt::Display) -> StoreError {
        StoreError::CorruptRow { key_id: self.key_id.clone(), reason: format!("column {column}: {problem}") }
    }

    fn get<T>(&self, column: &str) -> Result<T, StoreError>
    where
        T: Decode<'r, Sqlite> + Type<Sqlite>,
    {
        self.row.try_get(column).map_err(|error| self.corrupt(column, error))
    }

    fn key_id(&self, column: &str) -> Result<Option<KeyId>, StoreError> {
        let value: Option<String> = self.get(column)?;
        value.map(|text| KeyId::parse(&text).map_err(|error| self.corrupt(column, error))).transpose()
    }

    fn instant(&self, column: &str) -> Result<Option<Instant>, StoreError> {
        Ok(self.get::<Option<i64>>(column)?.map(Instant::from_millis))
    }

    fn required_instant(&self, column: &str) -> Result<Instant, StoreError> {
        Ok(Instant::from_millis(self.get(column)?))
    }

    fn duration(&self, column: &str) -> Result<Duration, StoreError> {
        let millis: i64 = self.get(column)?;
        if millis < 0 {
            return Err(self.corrupt(column, format!("negative duration {millis} ms")));
        }
        Ok(Duration::from_millis(millis))
    }
}

/// Decodes a row selected with [`KEY_COLUMNS`].
pub(super) fn decode_key(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    let raw_id = row.try_get::<String, _>("key_id").unwrap_or_else(|_| "<unreadable key_id>".to_owned());
    let reader = KeyRow { row, key_id: raw_id };

    let key_id = reader.key_id("key_id")?.ok_or_else(|| reader.corrupt("key_id", "missing"))?;
    let scopes_text: String = reader.get("scopes")?;
    let scopes: Scopes = serde_json::from_str(&scopes_text)
        .map_err(|error| reader.corrupt("scopes", format!("not a JSON array of valid scopes: {error}")))?;
    let metadata_text: String = reader.get("metadata")?;
    let metadata = match serde_json::from_str::<Value>(&metadata_text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(reader.corrupt("metadata", "not a JSON object")),
        Err(error) => return Err(reader.corrupt("metadata", format!("invalid JSON: {error}"))),
    };
    let hash_bytes: Vec<u8> = reader.get("hash")?;
    let hash = TokenHash::from_slice(&hash_bytes)
        .ok_or_else(|| reader.corrupt("hash", format!("expected 32 bytes, found {}", hash_bytes.len())))?;
    let pepper_text: String = reader.get("pepper_id")?;
    let pepper_id = PepperId::parse(&pepper_text).map_err(|error| reader.corrupt("pepper_id", error))?;

    Ok(KeyRecord {
        key_id,
        name: reader.get("name")?,
        owner: reader.get("owner")?,
        scopes,
        metadata,
        hash,
        pepper_id,
        created_at: reader.required_instant("created_at")?,
        expires_at: reader.instant("expires_at")?,
        grace: reader.duration("grace_ms")?,
        warn_before: reader.duration("warn_before_ms")?,
        revoked_at: reader.instant("revoked_at")?,
        revocation_reason: reader.get("revocation_reason")?,
        rotated_at: reader.instant("rotated_at")?,
        overlap_ends_at: reader.instant("overlap_ends_at")?,
        successor_id: reader.key_id("successor_id")?,
        predecessor_id: reader.key_id("predecessor_id")?,
        chain_started_at: reader.required_instant("chain_started_at")?,
        self_rotation: reader.get("self_rotation")?,
        max_chain_lifetime: reader.duration("max_chain_lifetime_ms")?,
        first_used_at: reader.instant("first_used_at")?,
        last_used_at: reader.instant("last_used_at")?,
    })
}

/// Decodes a row of `audit_events` with every column selected.
pub(super) fn decode_audit_event(row: &SqliteRow) -> Result<AuditEvent, StoreError> {
    let seq: i64 = row.try_get("seq").map_err(classify)?;
    let corrupt = |column: &str, problem: String| StoreError::CorruptAuditRow {
        seq,
        reason: format!("column {column}: {problem}"),
    };
    let get_text = |column: &str| -> Result<Option<String>, StoreError> {
        row.try_get::<Option<String>, _>(column).map_err(|error| corrupt(column, error.to_string()))
    };
    let required_text = |column: &str| get_text(column)?.ok_or_else(|| corrupt(column, "missing".to_owned()));

    let event_name = required_text("event")?;
    let event = AuditEventType::parse(&event_name)
        .ok_or_else(|| corrupt("event", format!("unknown event type {event_name:?}")))?;
    let actor_text = required_text("actor")?;
    let actor =
        Actor::from_stored(&actor_text).ok_or_else(|| corrupt("actor", format!("unknown actor {actor_text:?}")))?;
    let key_id = get_text("key_id")?
        .map(|text| KeyId::parse(&text).map_err(|error| corrupt("key_id", error.to_string())))
        .transpose()?;
    let details = serde_json::from_str(&required_text("details")?)
        .map_err(|error| corrupt("details", format!("invalid JSON: {error}")))?;
    let at: i64 = row.try_get("at").map_err(|error| corrupt("at", error.to_string()))?;
    let mac: Option<Vec<u8>> = row.try_get("mac").map_err(|error| corrupt("mac", error.to_string()))?;

    Ok(AuditEvent {
        seq,
        event: NewAuditEvent {
            event,
            at: Instant::from_millis(at),
            key_id,
            actor,
            client_addr: get_text("client_addr")?,
            reason: get_text("reason")?,
            details,
        },
        canonical: required_text("canonical")?,
        mac,
    })
}

/// Decodes a `key_usage` row selected as `key_id, outcome, count`.
pub(super) fn decode_usage_count(row: &SqliteRow) -> Result<(Outcome, u64), StoreError> {
    let key_id: String = row.try_get("key_id").map_err(classify)?;
    let corrupt = |column: &str, problem: String| StoreError::CorruptRow {
        key_id: key_id.clone(),
        reason: format!("key_usage column {column}: {problem}"),
    };

    let outcome_text: String = row.try_get("outcome").map_err(|error| corrupt("outcome", error.to_string()))?;
    let outcome = Outcome::ALL
        .into_iter()
        .find(|outcome| outcome.as_str() == outcome_text)
        .ok_or_else(|| corrupt("outcome", format!("unknown outcome {outcome_text:?}")))?;
    let count: i64 = row.try_get("count").map_err(|error| corrupt("count", error.to_string()))?;
    let count = u64::try_from(count).map_err(|_| corrupt("count", format!("negative count {count}")))?;
    Ok((outcome, count))
}

/// Decodes a `changes` row selected as `seq, key_id`.
pub(super) fn decode_change(row: &SqliteRow) -> Result<Change, StoreError> {
    let seq: i64 = row.try_get("seq").map_err(classify)?;
    let text: String = row.try_get("key_id").map_err(classify)?;
    let key_id = KeyId::parse(&text).map_err(|error| StoreError::CorruptRow {
        key_id: text.clone(),
        reason: format!("changes column key_id in change {seq}: {error}"),
    })?;
    Ok(Change { seq, key_id })
}
