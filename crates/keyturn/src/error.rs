//! The error type of the service layer. Variants carry key ids and instants, never a token, a
//! hash or a pepper, so every message is safe to log and to show an operator.

use std::path::PathBuf;

use keyturn_core::{Instant, KeyId, Outcome, PepperId, SelfRotationDenied};
use keyturn_store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] keyturn_core::Error),
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },

    #[error("key {0} not found; run `keyturn keys list` to see existing key ids")]
    NotFound(KeyId),
    #[error("key {key_id} is {outcome} and cannot be rotated; create a new key instead")]
    NotRotatable { key_id: KeyId, outcome: Outcome },
    #[error(
        "key {key_id} has already been rotated; its successor is {successor_id} (to replace a successor \
         that was never used, rotate again with --replace-unused-successor)"
    )]
    AlreadyRotated { key_id: KeyId, successor_id: KeyId },
    #[error(
        "successor {successor_id} of key {key_id} has already been used or rotated, so it cannot be \
         replaced; rotate {successor_id} or its own successor instead"
    )]
    SuccessorUsed { key_id: KeyId, successor_id: KeyId },
    #[error("key {key_id} was already revoked at {revoked_at}; revocation is final")]
    AlreadyRevoked { key_id: KeyId, revoked_at: Instant },
    #[error("policy {0:?} does not exist; run `keyturn policies list` to see the policies, or apply one first")]
    UnknownPolicy(String),
    #[error("only a key with the keyturn:admin scope may grant reserved keyturn: scopes")]
    ReservedScope,
    /// The key's policy or the age of its rotation chain forbids self-rotation.
    #[error(transparent)]
    SelfRotationDenied(SelfRotationDenied),
    /// A token given for self-rotation is malformed, unknown or has the wrong secret.
    #[error("the API key is not valid; send the key's current token")]
    InvalidToken,

    #[error(
        "more than {limit} keys are in their overlap window, more than one migration report lists; filter the \
         report by owner, or page through GET /v1/keys/migration-report"
    )]
    ReportTooLarge { limit: usize },

    #[error("{0}")]
    Pepper(String),
    #[error(
        "pepper {pepper_id} is not in the ring, whose peppers are {ring}; check the id with `keyturn pepper status`"
    )]
    UnknownPepper { pepper_id: PepperId, ring: String },
    #[error(
        "pepper {0} is the current pepper, which hashes every new key, so it cannot be retired; add a new current \
         pepper with `keyturn pepper add --make-current`, restart every process, then retire this one"
    )]
    CurrentPepper(PepperId),
    #[error(
        "pepper {pepper_id} still hashes {count} live key(s) ({listed}); wait until they are rehashed under the \
         current pepper, which happens when each is next verified, or expire, or retire it with --force to \
         revoke them"
    )]
    PepperInUse { pepper_id: PepperId, count: usize, listed: String },
    #[error("cannot read pepper file {path}: {reason}")]
    PepperFile { path: PathBuf, reason: String },
    #[error("{0}")]
    AuditKey(String),
    #[error("cannot read audit key file {path}: {reason}")]
    AuditKeyFile { path: PathBuf, reason: String },

    #[error("webhook endpoint {0} not found; run `keyturn webhooks list` to see endpoint ids")]
    WebhookNotFound(String),

    #[error("the key store is unavailable: {0}")]
    StoreUnavailable(String),
    /// A store copy failed its check or stopped part-way. The message names what the target contains.
    #[error("store copy failed: {0}")]
    CopyCheck(String),
    #[error(transparent)]
    Store(StoreError),
}

impl Error {
    /// Returns whether the error means the store could not be reached, which front ends report
    /// as 503 with `Retry-After` (and the CLI as exit code 2), never as a rejected key.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::StoreUnavailable(_))
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(reason) => Error::StoreUnavailable(reason),
            StoreError::NotFound(key_id) => Error::NotFound(key_id),
            StoreError::AlreadyRotated { key_id, successor_id } => Error::AlreadyRotated { key_id, successor_id },
            StoreError::SuccessorUsed { key_id, successor_id } => Error::SuccessorUsed { key_id, successor_id },
            // A rotation that lost a race with a revocation: the key is revoked now, which is a
            // conflict for the caller, not a store failure.
            StoreError::Revoked(key_id) => Error::NotRotatable { key_id, outcome: Outcome::Revoked },
            StoreError::SelectionTooLarge { limit } => Error::InvalidInput {
                field: "selection",
                reason: format!("it matches more than {limit} keys, more than one bulk revocation changes; narrow it"),
            },
            other => Error::Store(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_during_rotation_is_a_conflict() {
        let key_id = KeyId::parse("key000000001").unwrap();
        let error = Error::from(StoreError::Revoked(key_id.clone()));
        assert!(matches!(error, Error::NotRotatable { key_id: id, outcome: Outcome::Revoked } if id == key_id));
    }
}
