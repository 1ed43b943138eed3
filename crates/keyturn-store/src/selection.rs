//! Bulk revocation and pepper usage: the types of [`Store::revoke_selection`],
//! [`Store::select_keys`], [`Store::pepper_usage`] and [`Store::live_keys_under_pepper`], and the
//! SQL they share across backends. The transaction of a bulk revocation lives in each backend.
//!
//! [`Store::revoke_selection`]: crate::Store::revoke_selection
//! [`Store::select_keys`]: crate::Store::select_keys
//! [`Store::pepper_usage`]: crate::Store::pepper_usage
//! [`Store::live_keys_under_pepper`]: crate::Store::live_keys_under_pepper

use keyturn_core::{Instant, KeyId, KeyRecord, NewAuditEvent, PepperId, PolicyName};
use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::rows::KEY_COLUMNS;
use crate::StoreError;

/// The maximum number of keys one bulk revocation may select. They are revoked in one
/// transaction that holds the write lock throughout.
///
/// NOTE: in a debug build on 2 cores, revoking 10,000 keys took 5.1 s on SQLite and 6.2 s on
/// PostgreSQL (`revoke_selection_at_limit`). Other writers wait for the lock meanwhile, and fail
/// as unavailable once their busy timeout or statement timeout (5 s by default) runs out.
pub const MAX_BULK_KEYS: usize = 10_000;

/// The selector of the keys a bulk revocation revokes. More selectors may be added, so match
/// with a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySelection {
    /// Every key of this owner, in creation order.
    Owner(String),
    /// These keys, in the order given; a repeated id counts once. An id that no key has is
    /// reported in [`BulkReport::missing`].
    KeyIds(Vec<KeyId>),
    /// Every key that references this named policy, in creation order.
    Policy(PolicyName),
}

/// A bulk revocation to apply in one transaction.
#[derive(Debug, Clone)]
pub struct BulkRevocation {
    pub selection: KeySelection,
    pub revoked_at: Instant,
    pub reason: Option<String>,
    /// The revocation event of every key revoked now: each key gets a copy with its key id set.
    pub event: NewAuditEvent,
    /// Events appended first, whether or not the key they name was revoked before, such as the
    /// leak report of a key.
    pub leading_events: Vec<NewAuditEvent>,
    /// Events appended once, after the revocations, such as a pepper's retirement.
    pub closing_events: Vec<NewAuditEvent>,
    /// The maximum number of keys the selection may match; a larger selection fails with
    /// [`StoreError::SelectionTooLarge`] and writes nothing. At most [`MAX_BULK_KEYS`].
    pub limit: usize,
}

/// Whether a key of a bulk revocation was revoked by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkOutcome {
    Revoked,
    /// The key was revoked before, and keeps its original revocation instant and reason.
    AlreadyRevoked,
}

/// One selected key after a bulk revocation.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkRevokedKey {
    pub record: KeyRecord,
    pub outcome: BulkOutcome,
}

/// The result of a bulk revocation, key by key in selection order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BulkReport {
    pub keys: Vec<BulkRevokedKey>,
    /// The ids of a [`KeySelection::KeyIds`] selection that no key has.
    pub missing: Vec<KeyId>,
}

/// The number of live keys hashed under one pepper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepperUsage {
    pub pepper_id: PepperId,
    /// Keys that are not revoked, not expired past their grace period and not rotated past their
    /// overlap window.
    pub live_keys: u64,
}

impl KeySelection {
    /// Returns the selection with repeated key ids removed, keeping the first of each.
    pub(crate) fn deduplicated(&self) -> KeySelection {
        match self {
            KeySelection::KeyIds(ids) => {
                let mut seen = std::collections::HashSet::new();
                KeySelection::KeyIds(ids.iter().filter(|id| seen.insert(id.as_str())).cloned().collect())
            }
            other => other.clone(),
        }
    }
}

impl BulkRevocation {
    /// Returns the revocation event of one key.
    pub(crate) fn event_for(&self, key_id: &KeyId) -> NewAuditEvent {
        NewAuditEvent { key_id: Some(key_id.clone()), ..self.event.clone() }
    }
}

/// Orders selected records as the selection lists them and finds the ids no key has. Fails when
/// more than `limit` keys match.
pub(crate) fn arrange(
    selection: &KeySelection,
    mut records: Vec<KeyRecord>,
    limit: usize,
) -> Result<(Vec<KeyRecord>, Vec<KeyId>), StoreError> {
    if records.len() > limit {
        return Err(StoreError::SelectionTooLarge { limit });
    }
    match selection {
        KeySelection::KeyIds(ids) => {
            let mut ordered = Vec::with_capacity(records.len());
            let mut missing = Vec::new();
            for id in ids {
                match records.iter().position(|record| &record.key_id == id) {
                    Some(index) => ordered.push(records.swap_remove(index)),
                    None => missing.push(id.clone()),
                }
            }
            Ok((ordered, missing))
        }
        _ => Ok((records, Vec::new())),
    }
}

/// Builds the query that reads the keys of a selection, at most `limit + 1` of them so that a
/// larger selection is noticed. The caller removes repeated ids first.
pub(crate) fn select_keys<'a, DB>(selection: &'a KeySelection, limit: usize) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!("SELECT {KEY_COLUMNS} FROM keys WHERE "));
    match selection {
        KeySelection::Owner(owner) => {
            query.push("owner = ").push_bind(owner.as_str());
        }
        KeySelection::Policy(policy) => {
            query.push("policy = ").push_bind(policy.as_str());
        }
        KeySelection::KeyIds(ids) if ids.is_empty() => {
            query.push("1 = 0");
        }
        KeySelection::KeyIds(ids) => {
            query.push("key_id IN (");
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(id.as_str());
            }
            query.push(")");
        }
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    query.push(" ORDER BY created_at, key_id LIMIT ").push_bind(limit);
    query
}

/// The condition of a live key at the bound instant, shared by the pepper queries: not revoked,
/// before the end of its grace period, and before the end of its overlap window. Written with
/// subtractions from the instant, so no stored value can overflow.
const LIVE_AT: &str = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > {at} - grace_ms) \
     AND (overlap_ends_at IS NULL OR overlap_ends_at > {at})";

/// Builds the query of [`crate::Store::pepper_usage`]: `pepper_id` and `live_keys` per pepper
/// id that any key names, live or not, ordered by pepper id.
pub(crate) fn pepper_usage<'a, DB>(at: Instant) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new("SELECT pepper_id, COUNT(CASE WHEN ");
    push_live_at(&mut query, at);
    query.push(" THEN 1 END) AS live_keys FROM keys GROUP BY pepper_id ORDER BY pepper_id");
    query
}

/// Builds the query of [`crate::Store::live_keys_under_pepper`]: the ids of live keys under
/// one pepper in creation order, at most `limit`.
pub(crate) fn live_keys_under_pepper<'a, DB>(pepper_id: &'a PepperId, at: Instant, limit: u32) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new("SELECT key_id FROM keys WHERE pepper_id = ");
    query.push_bind(pepper_id.as_str()).push(" AND ");
    push_live_at(&mut query, at);
    query.push(" ORDER BY created_at, key_id LIMIT ").push_bind(i64::from(limit));
    query
}

/// Appends [`LIVE_AT`] with each `{at}` bound to the instant.
fn push_live_at<'a, DB>(query: &mut QueryBuilder<'a, DB>, at: Instant)
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut parts = LIVE_AT.split("{at}").peekable();
    while let Some(part) = parts.next() {
        query.push(part);
        if parts.peek().is_some() {
            query.push_bind(at.as_millis());
        }
    }
}
