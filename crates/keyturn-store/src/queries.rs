//! The SQL of the filtered listings, written once for every backend. `QueryBuilder` writes each
//! backend's placeholders, so the same filter selects the same rows in the same order everywhere.

use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::rows::KEY_COLUMNS;
use crate::{AuditFilter, KeyFilter};

/// Builds the query of [`crate::Store::list_keys`]: keys ordered by creation instant, then key id.
pub(crate) fn list_keys<'a, DB>(filter: &'a KeyFilter) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!("SELECT {KEY_COLUMNS} FROM keys WHERE 1 = 1"));
    if let Some(owner) = &filter.owner {
        query.push(" AND owner = ").push_bind(owner.as_str());
    }
    if let Some(after) = &filter.after {
        // A row value compares column by column, so this is the position after the cursor key
        // in the listing order. An unknown key id makes the subquery NULL, which matches nothing.
        query
            .push(" AND (created_at, key_id) > (SELECT created_at, key_id FROM keys WHERE key_id = ")
            .push_bind(after.as_str())
            .push(")");
    }
    query.push(" ORDER BY created_at, key_id");
    if let Some(limit) = filter.limit {
        query.push(" LIMIT ").push_bind(i64::from(limit));
    }
    query
}

/// Builds the query of [`crate::Store::list_audit`]: events in sequence order.
pub(crate) fn list_audit<'a, DB>(filter: &'a AuditFilter) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(
        "SELECT seq, at, event, key_id, actor, client_addr, reason, details, canonical, mac \
         FROM audit_events WHERE 1 = 1",
    );
    if let Some(key_id) = &filter.key_id {
        query.push(" AND key_id = ").push_bind(key_id.as_str());
    }
    if let Some(event) = filter.event {
        query.push(" AND event = ").push_bind(event.as_str());
    }
    if let Some(since) = filter.since {
        query.push(" AND at >= ").push_bind(since.as_millis());
    }
    if let Some(until) = filter.until {
        query.push(" AND at < ").push_bind(until.as_millis());
    }
    if let Some(after_seq) = filter.after_seq {
        query.push(" AND seq > ").push_bind(after_seq);
    }
    query.push(" ORDER BY seq");
    if let Some(limit) = filter.limit {
        query.push(" LIMIT ").push_bind(i64::from(limit));
    }
    query
}
