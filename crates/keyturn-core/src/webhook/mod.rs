//! Webhooks as the Standard Webhooks specification defines them: which audit events are sent
//! (the notifiable table), the message payload, signing secrets and their signatures, the key
//! that encrypts the secrets at rest, and the rules an endpoint URL and the addresses it resolves
//! to must follow. Delivery, storage and DNS resolution live in the other crates.
//!
//! No type here prints a signing secret or the webhook key through `Debug` or `Display`, and no
//! error message quotes one.

mod address;
mod secret;

use serde_json::{json, Value};

pub use self::address::{check_address, AddressRejected, WebhookUrl};
pub use self::secret::{signature_header, WebhookKey, WebhookSecret, SIGNATURE_VERSION};

use crate::{AuditEventType, Instant, KeyId, NewAuditEvent};

/// The audit event types that are written to the outbox and sent to webhook endpoints: every
/// key lifecycle event. Add a type here to notify it; nothing else needs to change.
pub const NOTIFIABLE_EVENTS: &[AuditEventType] = &[
    AuditEventType::AuthnTokenCreated,
    AuditEventType::AuthnTokenRotated,
    AuditEventType::AuthnTokenSelfRotated,
    AuditEventType::AuthnTokenRevoked,
    AuditEventType::AuthnTokenExposed,
    AuditEventType::AuthnTokenGraceEntered,
    AuditEventType::AuthnTokenExpired,
    AuditEventType::AuthnTokenSupersededUsed,
    AuditEventType::AuthnPepperRotated,
    AuditEventType::AuthnPepperRetired,
    AuditEventType::AuthnTokenLeakReported,
    AuditEventType::AuthnTokenOverlapShortened,
    AuditEventType::AuthnTokenRotationRequested,
    AuditEventType::AuthnTokenExpiringSoon,
    AuditEventType::AuthnTokenOverlapEnded,
    AuditEventType::AuthnTokenRotationDeadlineReached,
    AuditEventType::AuthzPolicyChanged,
];

/// The event type of the message that `keyturn webhooks test` sends. It is never in the outbox.
pub const TEST_EVENT: &str = "webhook_test";

impl AuditEventType {
    /// Returns whether rows of this type are written to the outbox.
    pub fn is_notifiable(self) -> bool {
        NOTIFIABLE_EVENTS.contains(&self)
    }
}

/// Facts about the key an event names, read in the transaction that appends the event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFacts {
    pub owner: Option<String>,
    pub name: Option<String>,
}

/// Builds the JSON body of the message for the audit row `seq`: `type`, `timestamp` (RFC 3339)
/// and `data`, as the Standard Webhooks payload format has it. `data` holds the key id, owner,
/// name, instant, actor, reason, audit sequence number and the row's details, which never hold a
/// token, secret, hash or pepper. The client address is left out.
pub fn event_payload(event: &NewAuditEvent, seq: i64, facts: &KeyFacts) -> Value {
    json!({
        "type": event.event.as_str(),
        "timestamp": event.at.to_rfc3339(),
        "data": {
            "key_id": event.key_id.as_ref().map(KeyId::as_str),
            "owner": facts.owner,
            "name": facts.name,
            "at": event.at.to_rfc3339(),
            "actor": event.actor.to_stored(),
            "reason": event.reason,
            "audit_seq": seq,
            "details": event.details,
        },
    })
}

/// Builds the body of a `webhook_test` message for endpoint `endpoint_id`.
pub fn test_payload(endpoint_id: &str, at: Instant) -> Value {
    json!({
        "type": TEST_EVENT,
        "timestamp": at.to_rfc3339(),
        "data": { "endpoint_id": endpoint_id },
    })
}

/// Returns whether an endpoint whose filter is `filter` receives `event`; an empty filter
/// receives every notifiable event.
pub fn filter_matches(filter: &[AuditEventType], event: AuditEventType) -> bool {
    filter.is_empty() || filter.contains(&event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Actor;

    #[test]
    fn notifiable_covers_lifecycle_only() {
        assert!(AuditEventType::AuthnTokenRevoked.is_notifiable());
        assert!(AuditEventType::AuthnPepperRotated.is_notifiable());
        assert!(!AuditEventType::AuthzAdmin.is_notifiable());
        assert!(!AuditEventType::AuthnTokenRehashed.is_notifiable());
        assert!(!AuditEventType::AuthnTokenFailMax.is_notifiable());
    }

    #[test]
    fn payload_holds_facts_not_client_addr() {
        let key_id = KeyId::parse("abcdefABCDEF").unwrap();
        let mut event = NewAuditEvent::new(
            AuditEventType::AuthnTokenRevoked,
            Instant::from_millis(1_000),
            Some(key_id),
            Actor::Cli("alice".into()),
        )
        .with_reason(Some("leaked".into()));
        event.client_addr = Some("192.0.2.7".into());
        let facts = KeyFacts { owner: Some("billing".into()), name: Some("sync".into()) };

        let payload = event_payload(&event, 7, &facts);

        assert_eq!(payload["type"], "authn_token_revoked");
        assert_eq!(payload["timestamp"], "1970-01-01T00:00:01Z");
        assert_eq!(payload["data"]["key_id"], "abcdefABCDEF");
        assert_eq!(payload["data"]["owner"], "billing");
        assert_eq!(payload["data"]["reason"], "leaked");
        assert_eq!(payload["data"]["audit_seq"], 7);
        assert!(!payload.to_string().contains("192.0.2.7"));
    }

    #[test]
    fn empty_filter_matches_every_event() {
        assert!(filter_matches(&[], AuditEventType::AuthnTokenCreated));
        assert!(filter_matches(&[AuditEventType::AuthnTokenCreated], AuditEventType::AuthnTokenCreated));
        assert!(!filter_matches(&[AuditEventType::AuthnTokenCreated], AuditEventType::AuthnTokenRevoked));
    }
}
