//! The rotation cadence of named policies: the filter of [`Store::list_cadence_due`] and the
//! query it builds, shared by both backends. [`Store::request_first_rotation`] lives in each
//! backend.
//!
//! [`Store::list_cadence_due`]: crate::Store::list_cadence_due
//! [`Store::request_first_rotation`]: crate::Store::request_first_rotation

use keyturn_core::{Instant, KeyId, PolicyName};
use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::rows::KEY_COLUMNS;

/// The filter of [`crate::Store::list_cadence_due`]: keys of `policy` created at or before
/// `created_until` that are not revoked, not rotated and have no rotation request, ordered by
/// creation instant, then key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CadenceFilter {
    pub policy: PolicyName,
    pub created_until: Instant,
    /// Only keys after this creation instant and key id in that order, for paging.
    pub cursor: Option<(Instant, KeyId)>,
    pub limit: u32,
}

/// Builds the query of [`crate::Store::list_cadence_due`]. Its conditions repeat those of the
/// partial index `keys_rotation_cadence` exactly, so both backends serve it from that index.
pub(crate) fn list_cadence_due<'a, DB>(filter: &'a CadenceFilter) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {KEY_COLUMNS} FROM keys WHERE revoked_at IS NULL AND successor_id IS NULL \
         AND rotation_requested_at IS NULL AND policy = "
    ));
    query.push_bind(filter.policy.as_str());
    query.push(" AND created_at <= ").push_bind(filter.created_until.as_millis());
    if let Some((instant, key_id)) = &filter.cursor {
        query.push(" AND (created_at > ").push_bind(instant.as_millis());
        query.push(" OR (created_at = ").push_bind(instant.as_millis());
        query.push(" AND key_id > ").push_bind(key_id.as_str()).push("))");
    }
    query.push(" ORDER BY created_at, key_id LIMIT ").push_bind(i64::from(filter.limit));
    query
}
