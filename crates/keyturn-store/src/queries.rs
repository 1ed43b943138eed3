//! The SQL of the filtered listings, written once for every backend. `QueryBuilder` writes each
//! backend's placeholders, so the same filter selects the same rows in the same order everywhere.

use sqlx::{Database, Encode, QueryBuilder, Type};

use keyturn_core::TimedEvent;

use crate::rows::KEY_COLUMNS;
use crate::{AuditFilter, DueFilter, KeyFilter, OverlapFilter};

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

/// Builds the query of [`crate::Store::list_overlapping`]: keys in their overlap window, ordered
/// by the end of the window, then key id, each with its usage and its successor's first use.
pub(crate) fn list_overlapping<'a, DB>(filter: &'a OverlapFilter) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    // Inside the subquery the alias hides the table name, so `keys.successor_id` is the outer row's.
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {KEY_COLUMNS}, last_client_addr, uses_since_rotation, \
           (SELECT successor.first_used_at FROM keys AS successor WHERE successor.key_id = keys.successor_id) \
             AS successor_first_used_at \
         FROM keys WHERE revoked_at IS NULL AND overlap_ends_at > "
    ));
    query.push_bind(filter.at.as_millis());
    if let Some(owner) = &filter.owner {
        query.push(" AND owner = ").push_bind(owner.as_str());
    }
    if let Some(after) = &filter.after {
        query
            .push(" AND (overlap_ends_at, key_id) > (SELECT overlap_ends_at, key_id FROM keys WHERE key_id = ")
            .push_bind(after.as_str())
            .push(")");
    }
    query.push(" ORDER BY overlap_ends_at, key_id");
    if let Some(limit) = filter.limit {
        query.push(" LIMIT ").push_bind(i64::from(limit));
    }
    query
}

/// Returns the SQL expression of an event's boundary. Each is exactly the expression of an index
/// of schema version 6 (or of `keys_overlap_ends_at`), so the range query uses that index.
fn boundary_expression(event: TimedEvent) -> &'static str {
    match event {
        TimedEvent::ExpiringSoon => "(expires_at - warn_before_ms)",
        TimedEvent::GraceEntered => "expires_at",
        TimedEvent::Expired => "(expires_at + grace_ms)",
        TimedEvent::OverlapEnded => "overlap_ends_at",
        TimedEvent::RotationDeadlineReached => "rotation_deadline",
    }
}

/// Returns the column that a partial index of the event's boundary requires to be set.
fn boundary_column(event: TimedEvent) -> &'static str {
    match event {
        TimedEvent::ExpiringSoon | TimedEvent::GraceEntered | TimedEvent::Expired => "expires_at",
        TimedEvent::OverlapEnded => "overlap_ends_at",
        TimedEvent::RotationDeadlineReached => "rotation_deadline",
    }
}

/// Builds the query of [`crate::Store::list_due`]: keys not revoked whose boundary lies in
/// `(after, until]`, ordered by the boundary, then key id.
pub(crate) fn list_due<'a, DB>(filter: &'a DueFilter) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let boundary = boundary_expression(filter.event);
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {KEY_COLUMNS} FROM keys WHERE {} IS NOT NULL AND revoked_at IS NULL AND {boundary} > ",
        boundary_column(filter.event)
    ));
    query.push_bind(filter.after.as_millis());
    query.push(format!(" AND {boundary} <= ")).push_bind(filter.until.as_millis());
    if let Some((instant, key_id)) = &filter.cursor {
        query.push(format!(" AND ({boundary} > ")).push_bind(instant.as_millis());
        query.push(format!(" OR ({boundary} = ")).push_bind(instant.as_millis());
        query.push(" AND key_id > ").push_bind(key_id.as_str()).push("))");
    }
    query.push(format!(" ORDER BY {boundary}, key_id LIMIT ")).push_bind(i64::from(filter.limit));
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
