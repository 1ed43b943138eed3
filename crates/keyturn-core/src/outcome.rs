//! Verification outcomes and the decision a verification reaches. A decision determines whether
//! the request is allowed, which lifecycle headers an allowed response carries, and which problem
//! response a rejected one gets.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Instant, KeyRecord, KeyState, Scope, Scopes};

/// The state a key is found in, or `Invalid` when the token does not identify a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Active,
    Expiring,
    Grace,
    Superseded,
    /// An operator asked for the key to be rotated by a deadline, and it has not been yet.
    RotationRequested,
    Expired,
    Rotated,
    Revoked,
    /// Malformed, bad checksum, unknown key id or wrong secret, which the client cannot tell apart.
    Invalid,
}

/// The result of verifying one token against the scopes a route requires.
#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    /// The key, present only when the secret matched.
    pub key: Option<Arc<KeyRecord>>,
    pub deadline: Option<Instant>,
    /// The required scopes the key lacks; non-empty means `insufficient_scope`.
    pub missing_scopes: Vec<Scope>,
    pub required_scopes: Scopes,
    /// Whether an administration key (only reserved `keyturn:` scopes) is used on a route that
    /// requires none of them. Like missing scopes, this means `insufficient_scope`.
    pub administration_key: bool,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Active,
        Outcome::Expiring,
        Outcome::Grace,
        Outcome::Superseded,
        Outcome::RotationRequested,
        Outcome::Expired,
        Outcome::Rotated,
        Outcome::Revoked,
        Outcome::Invalid,
    ];

    pub fn is_allowed(self) -> bool {
        matches!(
            self,
            Outcome::Active | Outcome::Expiring | Outcome::Grace | Outcome::Superseded | Outcome::RotationRequested
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Active => "active",
            Outcome::Expiring => "expiring",
            Outcome::Grace => "grace",
            Outcome::Superseded => "superseded",
            Outcome::RotationRequested => "rotation_requested",
            Outcome::Expired => "expired",
            Outcome::Rotated => "rotated",
            Outcome::Revoked => "revoked",
            Outcome::Invalid => "invalid",
        }
    }

    /// Returns the value of `API-Key-Status` for an allowed outcome that carries one.
    pub fn status_header(self) -> Option<&'static str> {
        match self {
            Outcome::Expiring | Outcome::Grace | Outcome::Superseded => Some(self.as_str()),
            Outcome::RotationRequested => Some("rotation-requested"),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Decision {
    /// Returns the decision for a token that identifies no key or whose secret did not match.
    pub fn invalid(required_scopes: &Scopes) -> Self {
        Decision {
            outcome: Outcome::Invalid,
            key: None,
            deadline: None,
            missing_scopes: Vec::new(),
            required_scopes: required_scopes.clone(),
            administration_key: false,
        }
    }

    /// Evaluates `key`, whose secret matched, at `now` against the required scopes. Scopes are
    /// checked only for a key whose state allows use, so a revoked key is reported as revoked.
    pub fn evaluate(key: Arc<KeyRecord>, now: Instant, required_scopes: &Scopes) -> Self {
        let KeyState { outcome, deadline } = key.state_at(now);
        let missing_scopes = if outcome.is_allowed() {
            key.scopes.missing(required_scopes).into_iter().cloned().collect()
        } else {
            Vec::new()
        };
        let administration_only = !key.scopes.is_empty() && key.scopes.iter().all(Scope::is_reserved);
        let administration_key = outcome.is_allowed() && administration_only && !required_scopes.has_reserved();
        Decision {
            outcome,
            key: Some(key),
            deadline,
            missing_scopes,
            required_scopes: required_scopes.clone(),
            administration_key,
        }
    }

    pub fn allowed(&self) -> bool {
        self.outcome.is_allowed() && self.missing_scopes.is_empty() && !self.administration_key
    }

    /// Returns the outcome name, or `insufficient_scope` when the key lacks a required scope.
    pub fn code(&self) -> &'static str {
        if self.outcome.is_allowed() && (!self.missing_scopes.is_empty() || self.administration_key) {
            "insufficient_scope"
        } else {
            self.outcome.as_str()
        }
    }

    /// Returns the `API-Key-Status` and `API-Key-Expires` headers of an allowed response, or none
    /// for an active key and for every rejection.
    pub fn lifecycle_headers(&self) -> Vec<(&'static str, String)> {
        let (Some(status), Some(deadline)) = (self.outcome.status_header(), self.deadline) else {
            return Vec::new();
        };
        if !self.allowed() {
            return Vec::new();
        }
        vec![("API-Key-Status", status.to_owned()), ("API-Key-Expires", deadline.to_http_date())]
    }
}
