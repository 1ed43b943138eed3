//! Audit event types and rows. Names follow the OWASP logging vocabulary (`authn_*`, `authz_*`). A
//! row's canonical serialisation is computed here so that every store writes the same text, and a
//! later chain MAC covers exactly that text.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{Instant, KeyId};

/// The kind of lifecycle event an audit row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEventType {
    AuthnTokenCreated,
    AuthnTokenRotated,
    AuthnTokenRevoked,
    /// A token was sent in a URL, where proxies and access logs keep it.
    AuthnTokenExposed,
    /// A key's hash was recomputed under the current pepper after it verified.
    AuthnTokenRehashed,
    /// A key rotated itself, authenticated with its own token.
    AuthnTokenSelfRotated,
    /// A verification first found the key in its grace period: expired, still accepted.
    AuthnTokenGraceEntered,
    /// A verification first found the key expired past its grace period, and rejected it.
    AuthnTokenExpired,
    /// A rotated key was first used during its overlap window, so its client has not moved yet.
    AuthnTokenSupersededUsed,
    /// A process first hashed new keys under a pepper that no earlier row names as current.
    AuthnPepperRotated,
    /// An admin key read keys or audit events through the admin API. Admin changes have rows
    /// of their own, with the admin key as the actor.
    AuthzAdmin,
    /// Verifications from one client address failed more often than the guard allows, so its
    /// failures are rejected with 429 until a cooldown ends. Written once per such episode, with
    /// no key id, after OWASP's `authn_login_fail_max`.
    AuthnTokenFailMax,
    /// Someone reported a key's token as leaked, and the report's token matched the key's hash.
    /// The key is revoked in the same transaction unless it already was. The row names the
    /// report's source and line, never the token.
    AuthnTokenLeakReported,
    /// A pepper was removed from the ring, after the keys still hashed under it were revoked.
    AuthnPepperRetired,
    /// A named policy was added, changed or removed. The details hold the old and new values
    /// and how many existing keys received the new instants.
    AuthzPolicyChanged,
    /// A rotated key's overlap window was shortened because its successor was first used.
    AuthnTokenOverlapShortened,
    /// A webhook endpoint was added; the details name its id and the origin of its URL.
    WebhookEndpointCreated,
    /// A webhook endpoint was removed with its pending deliveries.
    WebhookEndpointRemoved,
    /// A webhook endpoint was disabled because it answered 410 Gone.
    WebhookEndpointDisabled,
    /// A webhook endpoint received a new signing secret; the previous one signs until it expires.
    WebhookSecretRotated,
    /// Dead-lettered webhook deliveries were scheduled again.
    WebhookDeliveriesRetried,
    /// An operator asked for the key to be rotated by a deadline.
    AuthnTokenRotationRequested,
    /// The key entered its warning window before expiry. Recorded once per key by the scheduler.
    AuthnTokenExpiringSoon,
    /// The overlap window of a rotated key ended, so the key is now rejected as rotated.
    /// Recorded once per key by the scheduler.
    AuthnTokenOverlapEnded,
    /// The rotation deadline of a key passed before the key was rotated. Recorded once per key
    /// by the scheduler.
    AuthnTokenRotationDeadlineReached,
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Actor {
    /// The `keyturn` or `flask keys` command, run by this operating-system user.
    Cli(String),
    /// A request authenticated with this key.
    Key(KeyId),
    /// keyturn itself, such as a verification that observed an event.
    System,
}

/// An event to append, before the store assigns its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEvent {
    pub event: AuditEventType,
    pub at: Instant,
    pub key_id: Option<KeyId>,
    pub actor: Actor,
    pub client_addr: Option<String>,
    pub reason: Option<String>,
    /// Structured facts about the event; never a token, secret or pepper.
    pub details: Value,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub seq: i64,
    pub event: NewAuditEvent,
    /// The canonical serialisation that the row's chain MAC covers, stored as text.
    pub canonical: String,
    /// `HMAC-SHA256` chaining the row to the previous one; `None` until an audit key is set.
    pub mac: Option<Vec<u8>>,
}

impl AuditEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEventType::AuthnTokenCreated => "authn_token_created",
            AuditEventType::AuthnTokenRotated => "authn_token_rotated",
            AuditEventType::AuthnTokenRevoked => "authn_token_revoked",
            AuditEventType::AuthnTokenExposed => "authn_token_exposed",
            AuditEventType::AuthnTokenRehashed => "authn_token_rehashed",
            AuditEventType::AuthnTokenSelfRotated => "authn_token_self_rotated",
            AuditEventType::AuthnTokenGraceEntered => "authn_token_grace_entered",
            AuditEventType::AuthnTokenExpired => "authn_token_expired",
            AuditEventType::AuthnTokenSupersededUsed => "authn_token_superseded_used",
            AuditEventType::AuthnPepperRotated => "authn_pepper_rotated",
            AuditEventType::AuthzAdmin => "authz_admin",
            AuditEventType::AuthnTokenFailMax => "authn_token_fail_max",
            AuditEventType::AuthnTokenLeakReported => "authn_token_leak_reported",
            AuditEventType::AuthnPepperRetired => "authn_pepper_retired",
            AuditEventType::AuthzPolicyChanged => "authz_policy_changed",
            AuditEventType::AuthnTokenOverlapShortened => "authn_token_overlap_shortened",
            AuditEventType::WebhookEndpointCreated => "webhook_endpoint_created",
            AuditEventType::WebhookEndpointRemoved => "webhook_endpoint_removed",
            AuditEventType::WebhookEndpointDisabled => "webhook_endpoint_disabled",
            AuditEventType::WebhookSecretRotated => "webhook_secret_rotated",
            AuditEventType::WebhookDeliveriesRetried => "webhook_deliveries_retried",
            AuditEventType::AuthnTokenRotationRequested => "authn_token_rotation_requested",
            AuditEventType::AuthnTokenExpiringSoon => "authn_token_expiring_soon",
            AuditEventType::AuthnTokenOverlapEnded => "authn_token_overlap_ended",
            AuditEventType::AuthnTokenRotationDeadlineReached => "authn_token_rotation_deadline_reached",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            AuditEventType::AuthnTokenCreated,
            AuditEventType::AuthnTokenRotated,
            AuditEventType::AuthnTokenRevoked,
            AuditEventType::AuthnTokenExposed,
            AuditEventType::AuthnTokenRehashed,
            AuditEventType::AuthnTokenSelfRotated,
            AuditEventType::AuthnTokenGraceEntered,
            AuditEventType::AuthnTokenExpired,
            AuditEventType::AuthnTokenSupersededUsed,
            AuditEventType::AuthnPepperRotated,
            AuditEventType::AuthzAdmin,
            AuditEventType::AuthnTokenFailMax,
            AuditEventType::AuthnTokenLeakReported,
            AuditEventType::AuthnPepperRetired,
            AuditEventType::AuthzPolicyChanged,
            AuditEventType::AuthnTokenOverlapShortened,
            AuditEventType::WebhookEndpointCreated,
            AuditEventType::WebhookEndpointRemoved,
            AuditEventType::WebhookEndpointDisabled,
            AuditEventType::WebhookSecretRotated,
            AuditEventType::WebhookDeliveriesRetried,
            AuditEventType::AuthnTokenRotationRequested,
            AuditEventType::AuthnTokenExpiringSoon,
            AuditEventType::AuthnTokenOverlapEnded,
            AuditEventType::AuthnTokenRotationDeadlineReached,
        ]
        .into_iter()
        .find(|event| event.as_str() == value)
    }
}

impl fmt::Display for AuditEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Actor {
    /// Formats the actor as stored: `cli:<user>`, `key:<key id>` or `system`.
    pub fn to_stored(&self) -> String {
        match self {
            Actor::Cli(user) => format!("cli:{user}"),
            Actor::Key(key_id) => format!("key:{key_id}"),
            Actor::System => "system".to_owned(),
        }
    }

    pub fn from_stored(value: &str) -> Option<Self> {
        match value.split_once(':') {
            Some(("cli", user)) => Some(Actor::Cli(user.to_owned())),
            Some(("key", key_id)) => KeyId::parse(key_id).ok().map(Actor::Key),
            None if value == "system" => Some(Actor::System),
            _ => None,
        }
    }
}

impl NewAuditEvent {
    pub fn new(event: AuditEventType, at: Instant, key_id: Option<KeyId>, actor: Actor) -> Self {
        NewAuditEvent { event, at, key_id, actor, client_addr: None, reason: None, details: json!({}) }
    }

    pub fn with_reason(mut self, reason: Option<String>) -> Self {
        self.reason = reason;
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// The canonical serialisation of the row with sequence number `seq`: JSON with keys in a
    /// fixed order and no insignificant white space. `details` keys are sorted.
    pub fn canonical(&self, seq: i64) -> String {
        let row = json!({
            "actor": self.actor.to_stored(),
            "at": self.at.as_millis(),
            "client_addr": self.client_addr,
            "details": self.details,
            "event": self.event.as_str(),
            "key_id": self.key_id.as_ref().map(KeyId::as_str),
            "reason": self.reason,
            "seq": seq,
        });
        // serde_json's default map is ordered by key, so this text is stable for equal rows.
        row.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_round_trips_through_storage() {
        for actor in [Actor::Cli("alice".into()), Actor::Key(KeyId::parse("abcdefABCDEF").unwrap()), Actor::System] {
            assert_eq!(Actor::from_stored(&actor.to_stored()), Some(actor));
        }
    }

    #[test]
    fn canonical_is_stable_and_sorted() {
        let event = NewAuditEvent::new(AuditEventType::AuthnTokenRevoked, Instant::from_millis(5), None, Actor::System)
            .with_reason(Some("leaked".into()))
            .with_details(json!({"b": 1, "a": 2}));
        let text = event.canonical(7);
        assert_eq!(
            text,
            r#"{"actor":"system","at":5,"client_addr":null,"details":{"a":2,"b":1},"event":"authn_token_revoked","key_id":null,"reason":"leaked","seq":7}"#
        );
    }

    #[test]
    fn event_type_names_round_trip() {
        for name in [
            "authn_token_created",
            "authn_token_rotated",
            "authn_token_revoked",
            "authn_token_exposed",
            "authn_token_rehashed",
            "authn_token_self_rotated",
            "authn_token_fail_max",
            "authn_token_leak_reported",
            "authn_pepper_retired",
            "webhook_endpoint_created",
            "webhook_endpoint_removed",
            "webhook_endpoint_disabled",
            "webhook_secret_rotated",
            "webhook_deliveries_retried",
            "authn_token_rotation_requested",
            "authn_token_expiring_soon",
            "authn_token_overlap_ended",
            "authn_token_rotation_deadline_reached",
        ] {
            assert_eq!(AuditEventType::parse(name).unwrap().as_str(), name);
        }
    }
}
