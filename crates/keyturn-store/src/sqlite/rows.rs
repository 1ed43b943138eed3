//! Reading rows over a SQLite connection. Decoding is shared with the other backends in
//! `crate::rows`.

use keyturn_core::{KeyId, KeyRecord};
use sqlx::sqlite::SqliteConnection;

use super::errors::classify;
use crate::rows::{decode_key, KEY_COLUMNS};
use crate::StoreError;

/// Reads one key by id.
pub(super) async fn fetch_key(conn: &mut SqliteConnection, key_id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
    let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ?"))
        .bind(key_id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?;
    row.as_ref().map(decode_key).transpose()
}
