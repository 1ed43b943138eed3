//! The error type of the store crate. Database errors are classified by kind, never by message
//! text: an unreachable or locked database is [`StoreError::Unavailable`], which front ends map
//! to 503, and everything unexpected is [`StoreError::Internal`], whose message names no secret.

use keyturn_core::KeyId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("key {0} not found")]
    NotFound(KeyId),
    #[error("key id {0} already exists")]
    DuplicateKeyId(KeyId),
    #[error("key {key_id} has already been rotated; its successor is {successor_id}")]
    AlreadyRotated { key_id: KeyId, successor_id: KeyId },
    #[error("key {0} has been revoked, and revocation is final")]
    Revoked(KeyId),
    #[error(
        "successor {successor_id} of key {key_id} has already been used or rotated, so it cannot be \
         replaced; rotate {successor_id} or its own successor instead"
    )]
    SuccessorUsed { key_id: KeyId, successor_id: KeyId },
    #[error(
        "the successor of key {key_id} changed while this rotation ran and is no longer {expected}; \
         show the key to see its current successor, then run the rotation again if it is still needed"
    )]
    SuccessorMismatch { key_id: KeyId, expected: KeyId },
    #[error("the selection matches more than {limit} keys, more than one bulk revocation may change; narrow it")]
    SelectionTooLarge { limit: usize },
    #[error(
        "policy {name} is still referenced by {keys} key(s) that are not revoked, so it cannot be removed; \
         keep it in the file, or revoke or rotate those keys under another policy first"
    )]
    PolicyInUse { name: String, keys: u64 },
    #[error("policy {name} changed while this update ran; read the policies again and retry")]
    PolicyConflict { name: String },

    #[error("invalid database URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot open database {location}: {reason}")]
    Open { location: String, reason: String },
    #[error("cannot write a backup to {target}: {reason}")]
    Backup { target: String, reason: String },
    #[error("the key store is unavailable: {0}")]
    Unavailable(String),
    #[error("stored row for key {key_id} is invalid: {reason}")]
    CorruptRow { key_id: String, reason: String },
    #[error("stored audit event {seq} is invalid: {reason}")]
    CorruptAuditRow { seq: i64, reason: String },
    #[error("internal store error: {0}")]
    Internal(String),
}

/// Checks the schema version of a database that is opened without migrating it: it must be the
/// version this build writes, `latest`. The error names `location` and what to do.
pub(crate) fn check_existing_schema(location: &str, current: i64, latest: i64) -> Result<(), StoreError> {
    let reason = if current == latest {
        return Ok(());
    } else if current == 0 {
        "it has no keyturn tables, so it is not a keyturn database; check the database URL. It was left \
         unchanged"
            .to_owned()
    } else if current < latest {
        format!(
            "its schema version is {current}, older than version {latest} of this build of keyturn; run any other \
             keyturn command on it once, which migrates it, and retry. It was left unchanged"
        )
    } else {
        format!(
            "its schema version is {current}, but this build of keyturn supports versions up to {latest}; a newer \
             keyturn wrote it, so upgrade keyturn"
        )
    };
    Err(StoreError::Open { location: location.to_owned(), reason })
}

impl StoreError {
    /// Returns whether the error means the store could not be reached or was too busy, so the
    /// caller may retry later (503) rather than report a wrong request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
