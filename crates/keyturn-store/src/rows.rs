//! Conversion between stored rows and domain values, shared by every backend. Each backend's row
//! type implements [`StoredRow`], and the decoders here turn its columns into records. Decoding
//! never panics. A value that does not parse, such as a bad key id, malformed JSON, a hash that is
//! not 32 bytes or a column of the wrong type, becomes [`StoreError::CorruptRow`] naming the key
//! id and the column. In an audit row it becomes [`StoreError::CorruptAuditRow`] naming the
//! sequence number. No error quotes a hash. The SQL that selects the rows lives in each backend.

use keyturn_core::{
    Actor, AuditEvent, AuditEventType, Duration, Instant, KeyId, KeyRecord, NewAuditEvent, Outcome, PepperId,
    PolicyName, Scopes, TokenHash,
};
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{Change, OverlappingKey, StoreError, UsageRecord};

/// The columns of `keys` that make up a [`KeyRecord`], in the order [`decode_key`] reads them by
/// name. `last_client_addr` is stored but not part of the record.
pub(crate) const KEY_COLUMNS: &str = "key_id, name, owner, scopes, metadata, hash, pepper_id, created_at, \
     expires_at, grace_ms, warn_before_ms, revoked_at, revocation_reason, rotated_at, overlap_ends_at, \
     successor_id, predecessor_id, chain_started_at, self_rotation, max_chain_lifetime_ms, rotation_requested_at, \
     rotation_deadline, expires_before_request, first_used_at, last_used_at, policy, overlap_after_first_use_ms";

/// Typed access to the columns of one row, by name. A NULL column reads as `None`, and a column
/// of another type is an error.
pub(crate) trait StoredRow {
    fn text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn integer(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error>;
    fn boolean(&self, column: &str) -> Result<Option<bool>, sqlx::Error>;
}

macro_rules! impl_stored_row {
    ($row:ty) => {
        impl StoredRow for $row {
            fn text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(column)
            }

            fn integer(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(column)
            }

            fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
                self.try_get(column)
            }

            fn boolean(&self, column: &str) -> Result<Option<bool>, sqlx::Error> {
                self.try_get(column)
            }
        }
    };
}

impl_stored_row!(SqliteRow);
impl_stored_row!(PgRow);

/// Encodes scopes as the JSON array of strings stored in `keys.scopes`.
pub(crate) fn scopes_json(scopes: &Scopes) -> String {
    Value::Array(scopes.iter().map(|scope| Value::String(scope.as_str().to_owned())).collect()).to_string()
}

/// Converts a copied count to the signed 64-bit integer both backends store. A count that does
/// not fit fails with [`StoreError::CorruptRow`], because no store could have written it.
pub(crate) fn stored_count(key_id: &KeyId, count: u64) -> Result<i64, StoreError> {
    i64::try_from(count).map_err(|_| StoreError::CorruptRow {
        key_id: key_id.to_string(),
        reason: format!("usage count {count} does not fit in a 64-bit integer"),
    })
}

/// Sums the counts of a usage record's allowed outcomes, saturating at `i64::MAX`, the value
/// that `record_usage` adds to `uses_since_rotation`.
pub(crate) fn allowed_uses(usage: &UsageRecord) -> i64 {
    let allowed = usage.counts.iter().filter(|(outcome, _)| outcome.is_allowed());
    let sum = allowed.fold(0_u64, |sum, (_, count)| sum.saturating_add(*count));
    i64::try_from(sum).unwrap_or(i64::MAX)
}

/// Encodes metadata as the JSON object stored in `keys.metadata`.
pub(crate) fn metadata_json(metadata: &Map<String, Value>) -> String {
    Value::Object(metadata.clone()).to_string()
}

/// Reads the columns of one `keys` row, attributing every failure to the row's key id.
struct KeyRow<'r, R> {
    row: &'r R,
    key_id: String,
}

impl<R: StoredRow> KeyRow<'_, R> {
    fn corrupt(&self, column: &str, problem: impl std::fmt::Display) -> StoreError {
        StoreError::CorruptRow { key_id: self.key_id.clone(), reason: format!("column {column}: {problem}") }
    }

    fn required<T>(&self, column: &str, value: Option<T>) -> Result<T, StoreError> {
        value.ok_or_else(|| self.corrupt(column, "missing"))
    }

    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.row.text(column).map_err(|error| self.corrupt(column, error))
    }

    fn required_text(&self, column: &str) -> Result<String, StoreError> {
        self.required(column, self.text(column)?)
    }

    fn key_id(&self, column: &str) -> Result<Option<KeyId>, StoreError> {
        let value = self.text(column)?;
        value.map(|text| KeyId::parse(&text).map_err(|error| self.corrupt(column, error))).transpose()
    }

    fn instant(&self, column: &str) -> Result<Option<Instant>, StoreError> {
        let millis = self.row.integer(column).map_err(|error| self.corrupt(column, error))?;
        Ok(millis.map(Instant::from_millis))
    }

    fn required_instant(&self, column: &str) -> Result<Instant, StoreError> {
        self.required(column, self.instant(column)?)
    }

    fn duration(&self, column: &str) -> Result<Duration, StoreError> {
        let millis = self.row.integer(column).map_err(|error| self.corrupt(column, error))?;
        let millis = self.required(column, millis)?;
        if millis < 0 {
            return Err(self.corrupt(column, format!("negative duration {millis} ms")));
        }
        Ok(Duration::from_millis(millis))
    }

    fn optional_duration(&self, column: &str) -> Result<Option<Duration>, StoreError> {
        let millis = self.row.integer(column).map_err(|error| self.corrupt(column, error))?;
        match millis {
            Some(millis) if millis < 0 => Err(self.corrupt(column, format!("negative duration {millis} ms"))),
            other => Ok(other.map(Duration::from_millis)),
        }
    }

    fn policy_name(&self, column: &str) -> Result<PolicyName, StoreError> {
        let text = self.required_text(column)?;
        PolicyName::parse(&text).map_err(|error| self.corrupt(column, error))
    }

    fn count(&self, column: &str) -> Result<u64, StoreError> {
        let value = self.row.integer(column).map_err(|error| self.corrupt(column, error))?;
        let value = self.required(column, value)?;
        u64::try_from(value).map_err(|_| self.corrupt(column, format!("negative count {value}")))
    }

    fn boolean(&self, column: &str) -> Result<bool, StoreError> {
        let value = self.row.boolean(column).map_err(|error| self.corrupt(column, error))?;
        self.required(column, value)
    }

    /// Reads the hash. A decoding error is reported without the driver's text, and a wrong length
    /// by the length only, so no error quotes hash bytes.
    fn hash(&self) -> Result<TokenHash, StoreError> {
        let bytes = self.row.bytes("hash").map_err(|_| self.corrupt("hash", "not a byte string"))?;
        let bytes = self.required("hash", bytes)?;
        TokenHash::from_slice(&bytes)
            .ok_or_else(|| self.corrupt("hash", format!("expected 32 bytes, found {}", bytes.len())))
    }
}

/// Decodes a row selected with [`KEY_COLUMNS`].
pub(crate) fn decode_key<R: StoredRow>(row: &R) -> Result<KeyRecord, StoreError> {
    let raw_id = row.text("key_id").ok().flatten().unwrap_or_else(|| "<unreadable key_id>".to_owned());
    let reader = KeyRow { row, key_id: raw_id };

    let key_id = reader.key_id("key_id")?.ok_or_else(|| reader.corrupt("key_id", "missing"))?;
    let scopes_text = reader.required_text("scopes")?;
    let scopes: Scopes = serde_json::from_str(&scopes_text)
        .map_err(|error| reader.corrupt("scopes", format!("not a JSON array of valid scopes: {error}")))?;
    let metadata_text = reader.required_text("metadata")?;
    let metadata = match serde_json::from_str::<Value>(&metadata_text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(reader.corrupt("metadata", "not a JSON object")),
        Err(error) => return Err(reader.corrupt("metadata", format!("invalid JSON: {error}"))),
    };
    let hash = reader.hash()?;
    let pepper_text = reader.required_text("pepper_id")?;
    let pepper_id = PepperId::parse(&pepper_text).map_err(|error| reader.corrupt("pepper_id", error))?;

    Ok(KeyRecord {
        key_id,
        name: reader.required_text("name")?,
        owner: reader.text("owner")?,
        scopes,
        metadata,
        hash,
        pepper_id,
        created_at: reader.required_instant("created_at")?,
        expires_at: reader.instant("expires_at")?,
        grace: reader.duration("grace_ms")?,
        warn_before: reader.duration("warn_before_ms")?,
        revoked_at: reader.instant("revoked_at")?,
        revocation_reason: reader.text("revocation_reason")?,
        rotated_at: reader.instant("rotated_at")?,
        overlap_ends_at: reader.instant("overlap_ends_at")?,
        successor_id: reader.key_id("successor_id")?,
        predecessor_id: reader.key_id("predecessor_id")?,
        chain_started_at: reader.required_instant("chain_started_at")?,
        self_rotation: reader.boolean("self_rotation")?,
        max_chain_lifetime: reader.duration("max_chain_lifetime_ms")?,
        rotation_requested_at: reader.instant("rotation_requested_at")?,
        rotation_deadline: reader.instant("rotation_deadline")?,
        expires_before_request: reader.instant("expires_before_request")?,
        first_used_at: reader.instant("first_used_at")?,
        last_used_at: reader.instant("last_used_at")?,
        policy: reader.policy_name("policy")?,
        overlap_after_first_use: reader.optional_duration("overlap_after_first_use_ms")?,
    })
}

/// Decodes a row selected by the query of [`crate::Store::list_overlapping`]: [`KEY_COLUMNS`],
/// then `last_client_addr`, `uses_since_rotation` and `successor_first_used_at`.
pub(crate) fn decode_overlapping<R: StoredRow>(row: &R) -> Result<OverlappingKey, StoreError> {
    let record = decode_key(row)?;
    let reader = KeyRow { row, key_id: record.key_id.to_string() };

    Ok(OverlappingKey {
        last_client_addr: reader.text("last_client_addr")?,
        uses_since_rotation: reader.count("uses_since_rotation")?,
        successor_first_used_at: reader.instant("successor_first_used_at")?,
        record,
    })
}

/// Decodes a `keys` row selected as `key_id, uses_since_rotation`.
pub(crate) fn decode_uses_since_rotation<R: StoredRow>(row: &R) -> Result<u64, StoreError> {
    let reader = KeyRow { row, key_id: required_key_text(row, "keys")? };
    reader.count("uses_since_rotation")
}

/// Decodes a row of `audit_events` with every column selected.
pub(crate) fn decode_audit_event<R: StoredRow>(row: &R) -> Result<AuditEvent, StoreError> {
    let seq = required_integer(row, "seq", "audit_events")?;
    let corrupt = |column: &str, problem: String| StoreError::CorruptAuditRow {
        seq,
        reason: format!("column {column}: {problem}"),
    };
    let get_text = |column: &str| -> Result<Option<String>, StoreError> {
        row.text(column).map_err(|error| corrupt(column, error.to_string()))
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
    let at = row.integer("at").map_err(|error| corrupt("at", error.to_string()))?;
    let at = at.ok_or_else(|| corrupt("at", "missing".to_owned()))?;
    let mac = row.bytes("mac").map_err(|_| corrupt("mac", "not a byte string".to_owned()))?;

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
pub(crate) fn decode_usage_count<R: StoredRow>(row: &R) -> Result<(Outcome, u64), StoreError> {
    let key_id = required_key_text(row, "key_usage")?;
    let corrupt = |column: &str, problem: String| StoreError::CorruptRow {
        key_id: key_id.clone(),
        reason: format!("key_usage column {column}: {problem}"),
    };

    let outcome_text = row.text("outcome").map_err(|error| corrupt("outcome", error.to_string()))?;
    let outcome_text = outcome_text.ok_or_else(|| corrupt("outcome", "missing".to_owned()))?;
    let outcome = Outcome::ALL
        .into_iter()
        .find(|outcome| outcome.as_str() == outcome_text)
        .ok_or_else(|| corrupt("outcome", format!("unknown outcome {outcome_text:?}")))?;
    let count = row.integer("count").map_err(|error| corrupt("count", error.to_string()))?;
    let count = count.ok_or_else(|| corrupt("count", "missing".to_owned()))?;
    let count = u64::try_from(count).map_err(|_| corrupt("count", format!("negative count {count}")))?;
    Ok((outcome, count))
}

/// Decodes a `changes` row selected as `seq, key_id`.
pub(crate) fn decode_change<R: StoredRow>(row: &R) -> Result<Change, StoreError> {
    let seq = required_integer(row, "seq", "changes")?;
    let text = required_key_text(row, "changes")?;
    let key_id = KeyId::parse(&text).map_err(|error| StoreError::CorruptRow {
        key_id: text.clone(),
        reason: format!("changes column key_id in change {seq}: {error}"),
    })?;
    Ok(Change { seq, key_id })
}

/// Reads an integer column that identifies the row, such as `seq`. Without it no better error
/// than [`StoreError::Internal`] can name the row.
fn required_integer<R: StoredRow>(row: &R, column: &str, table: &str) -> Result<i64, StoreError> {
    match row.integer(column) {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(StoreError::Internal(format!("a row of {table} has no {column}"))),
        Err(error) => Err(StoreError::Internal(format!("failed to read {column} of a row of {table}: {error}"))),
    }
}

/// Reads the `key_id` text that names the row in later errors.
fn required_key_text<R: StoredRow>(row: &R, table: &str) -> Result<String, StoreError> {
    match row.text("key_id") {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(StoreError::Internal(format!("a row of {table} has no key_id"))),
        Err(error) => Err(StoreError::Internal(format!("failed to read key_id of a row of {table}: {error}"))),
    }
}
