//! The webhook behaviour every store must show: the outbox row that each notifiable audit event
//! writes, fan-out to endpoints, leases that keep each endpoint's messages in order, dead
//! letters, secret rotation, disabling and removal.

use keyturn_core::{Actor, AuditEventType, Instant, NewAuditEvent};
use keyturn_store::{
    AttemptOutcome, AttemptReport, AuditFilter, DeliveryClaim, DeliveryFilter, DeliveryState, NewWebhookEndpoint, Store,
};
use serde_json::{json, Value};

use super::{insert, key, key_id, revocation};

fn endpoint(id: &str, events: Vec<AuditEventType>, at: i64) -> NewWebhookEndpoint {
    NewWebhookEndpoint {
        endpoint_id: id.to_owned(),
        url: format!("https://hooks.example.com/{id}"),
        events,
        allow_private: false,
        created_at: Instant::from_millis(at),
        sealed_secret: vec![7; 72],
    }
}

fn admin_event(event: AuditEventType, at: i64, endpoint_id: &str) -> NewAuditEvent {
    NewAuditEvent::new(event, Instant::from_millis(at), None, Actor::Cli("alice".into()))
        .with_details(json!({ "endpoint_id": endpoint_id }))
}

async fn add_endpoint(store: &dyn Store, id: &str, events: Vec<AuditEventType>, at: i64) {
    let event = admin_event(AuditEventType::WebhookEndpointCreated, at, id);
    store.insert_webhook_endpoint(&endpoint(id, events, at), &event).await.unwrap();
}

fn claim(owner: &str, now: i64) -> DeliveryClaim {
    DeliveryClaim {
        owner: owner.to_owned(),
        now: Instant::from_millis(now),
        lease_until: Instant::from_millis(now + 30_000),
        limit: 10,
    }
}

fn report(endpoint_id: &str, msg_id: &str, owner: &str, at: i64, outcome: AttemptOutcome) -> AttemptReport {
    AttemptReport {
        endpoint_id: endpoint_id.to_owned(),
        msg_id: msg_id.to_owned(),
        owner: owner.to_owned(),
        at: Instant::from_millis(at),
        outcome,
        result: "HTTP 500".to_owned(),
    }
}

pub async fn outbox_written_for_notifiable_events(store: &dyn Store) {
    let record = key(1, Some("billing"), 1_000);
    insert(store, &record).await;
    store.revoke_key(&revocation(1, 2_000, "test")).await.unwrap();
    let admin = NewAuditEvent::new(AuditEventType::AuthzAdmin, Instant::from_millis(3_000), None, Actor::System);
    store.append_audit(&admin).await.unwrap();

    let outbox = store.list_outbox(0, 100).await.unwrap();
    let audit = store.list_audit(&AuditFilter::default()).await.unwrap();

    assert_eq!(audit.len(), 3);
    assert_eq!(outbox.len(), 2);
    assert_eq!(outbox[0].event, "authn_token_created");
    assert_eq!(outbox[0].audit_seq, audit[0].seq);
    assert_eq!(outbox[1].event, "authn_token_revoked");
    assert_eq!(outbox[1].audit_seq, audit[1].seq);
    assert_eq!(outbox[1].key_id.as_deref(), Some(key_id(1).as_str()));
    assert!(outbox[0].msg_id.starts_with("msg_"), "{}", outbox[0].msg_id);
    assert_ne!(outbox[0].msg_id, outbox[1].msg_id);
    assert_eq!(outbox[0].once_key, None);
    let payload: Value = serde_json::from_str(&outbox[1].payload).unwrap();
    assert_eq!(payload["type"], "authn_token_revoked");
    assert_eq!(payload["data"]["owner"], "billing");
    assert_eq!(payload["data"]["name"], "key 1");
    assert_eq!(payload["data"]["reason"], "test");
    assert!(!outbox[1].payload.contains("hash"), "{}", outbox[1].payload);
}

pub async fn outbox_rolls_back_with_change(store: &dyn Store) {
    let record = key(1, None, 1_000);
    insert(store, &record).await;
    store.revoke_key(&revocation(1, 2_000, "test")).await.unwrap();

    store.revoke_key(&revocation(1, 3_000, "test")).await.unwrap_err();

    assert_eq!(store.list_outbox(0, 100).await.unwrap().len(), 2);
    assert_eq!(store.list_audit(&AuditFilter::default()).await.unwrap().len(), 2);
}

pub async fn endpoints_filter_fan_out(store: &dyn Store) {
    add_endpoint(store, "wh_all", vec![], 500).await;
    add_endpoint(store, "wh_revoked", vec![AuditEventType::AuthnTokenRevoked], 500).await;
    insert(store, &key(1, None, 1_000)).await;
    store.revoke_key(&revocation(1, 2_000, "test")).await.unwrap();

    let all = DeliveryFilter { endpoint_id: Some("wh_all".into()), ..DeliveryFilter::default() };
    let revoked = DeliveryFilter { endpoint_id: Some("wh_revoked".into()), ..DeliveryFilter::default() };
    let to_all = store.list_webhook_deliveries(&all).await.unwrap();
    let to_revoked = store.list_webhook_deliveries(&revoked).await.unwrap();

    assert_eq!(to_all.len(), 2);
    assert_eq!(to_all[0].event, "authn_token_created");
    assert_eq!(to_all[1].event, "authn_token_revoked");
    assert!(to_all.iter().all(|delivery| delivery.state == DeliveryState::Pending && delivery.attempts == 0));
    assert_eq!(to_revoked.len(), 1);
    assert_eq!(to_revoked[0].event, "authn_token_revoked");
    assert_eq!(to_revoked[0].msg_id, to_all[1].msg_id);
    let listed = store.list_webhook_endpoints().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].events, vec![AuditEventType::AuthnTokenRevoked]);
    assert_eq!(listed[0].secrets.len(), 1);
    assert_eq!(listed[0].secrets[0].sealed, vec![7; 72]);
    assert!(listed[0].enabled);
    let created = AuditFilter { event: Some(AuditEventType::WebhookEndpointCreated), ..AuditFilter::default() };
    assert_eq!(store.list_audit(&created).await.unwrap().len(), 2);
}

pub async fn claim_keeps_endpoint_order(store: &dyn Store) {
    add_endpoint(store, "wh_one", vec![], 500).await;
    insert(store, &key(1, None, 1_000)).await;
    insert(store, &key(2, None, 1_100)).await;

    let first = store.claim_webhook_deliveries(&claim("worker-a", 2_000)).await.unwrap();
    let leased = store.claim_webhook_deliveries(&claim("worker-b", 2_000)).await.unwrap();

    assert_eq!(first.len(), 1, "only the oldest pending delivery of an endpoint is leased");
    assert!(first[0].payload.contains(key_id(1).as_str()));
    assert!(leased.is_empty(), "{leased:?}");
    let stolen = report("wh_one", &first[0].msg_id, "worker-b", 2_100, AttemptOutcome::Delivered);
    assert!(!store.finish_webhook_delivery(&stolen).await.unwrap());

    let retry = AttemptOutcome::Retry { next_attempt_at: Instant::from_millis(10_000) };
    assert!(store
        .finish_webhook_delivery(&report("wh_one", &first[0].msg_id, "worker-a", 2_100, retry))
        .await
        .unwrap());
    assert!(store.claim_webhook_deliveries(&claim("worker-b", 3_000)).await.unwrap().is_empty());

    let again = store.claim_webhook_deliveries(&claim("worker-b", 10_000)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].msg_id, first[0].msg_id);
    assert_eq!(again[0].attempts, 1);
    let done = report("wh_one", &again[0].msg_id, "worker-b", 10_100, AttemptOutcome::Delivered);
    assert!(store.finish_webhook_delivery(&done).await.unwrap());

    let second = store.claim_webhook_deliveries(&claim("worker-a", 10_200)).await.unwrap();
    assert_eq!(second.len(), 1);
    assert!(second[0].payload.contains(key_id(2).as_str()));
    assert!(second[0].audit_seq > again[0].audit_seq);
}

pub async fn expired_lease_claimed_again(store: &dyn Store) {
    add_endpoint(store, "wh_one", vec![], 500).await;
    insert(store, &key(1, None, 1_000)).await;
    let first = store.claim_webhook_deliveries(&claim("worker-a", 2_000)).await.unwrap();

    let taken = store.claim_webhook_deliveries(&claim("worker-b", 32_000)).await.unwrap();

    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].msg_id, first[0].msg_id);
    let late = report("wh_one", &first[0].msg_id, "worker-a", 32_100, AttemptOutcome::Delivered);
    assert!(!store.finish_webhook_delivery(&late).await.unwrap());
}

pub async fn dead_letter_and_retry(store: &dyn Store) {
    add_endpoint(store, "wh_one", vec![], 500).await;
    insert(store, &key(1, None, 1_000)).await;
    insert(store, &key(2, None, 1_100)).await;
    let first = store.claim_webhook_deliveries(&claim("worker-a", 2_000)).await.unwrap();
    store
        .finish_webhook_delivery(&report("wh_one", &first[0].msg_id, "worker-a", 2_100, AttemptOutcome::Dead))
        .await
        .unwrap();

    let next = store.claim_webhook_deliveries(&claim("worker-a", 2_200)).await.unwrap();
    let dead_filter = DeliveryFilter { state: Some(DeliveryState::Dead), ..DeliveryFilter::default() };
    let dead = store.list_webhook_deliveries(&dead_filter).await.unwrap();

    assert_eq!(next.len(), 1, "a dead letter no longer holds back later messages");
    assert_ne!(next[0].msg_id, first[0].msg_id);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].msg_id, first[0].msg_id);
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(dead[0].last_result.as_deref(), Some("HTTP 500"));

    let retried = admin_event(AuditEventType::WebhookDeliveriesRetried, 3_000, "wh_one");
    assert_eq!(store.retry_webhook_deliveries(Some("wh_other"), &retried).await.unwrap(), 0);
    assert_eq!(store.retry_webhook_deliveries(None, &retried).await.unwrap(), 1);
    let pending = store.list_webhook_deliveries(&DeliveryFilter::default()).await.unwrap();
    assert!(pending.iter().all(|delivery| delivery.state == DeliveryState::Pending), "{pending:?}");
    assert_eq!(pending[0].attempts, 0);
    let filter = AuditFilter { event: Some(AuditEventType::WebhookDeliveriesRetried), ..AuditFilter::default() };
    let rows = store.list_audit(&filter).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.details["deliveries"], 1);
}

pub async fn secret_rotation_keeps_old_until_expiry(store: &dyn Store) {
    add_endpoint(store, "wh_one", vec![], 500).await;
    let rotated = admin_event(AuditEventType::WebhookSecretRotated, 1_000, "wh_one");

    assert!(store.add_webhook_secret("wh_one", &[9; 72], Instant::from_millis(50_000), &rotated).await.unwrap());
    assert!(!store.add_webhook_secret("wh_missing", &[9; 72], Instant::from_millis(50_000), &rotated).await.unwrap());

    let endpoint = store.get_webhook_endpoint("wh_one").await.unwrap().unwrap();
    assert_eq!(endpoint.secrets.len(), 2);
    assert_eq!(endpoint.secrets[0].expires_at, Some(Instant::from_millis(50_000)));
    assert_eq!(endpoint.secrets[1].expires_at, None);
    assert_eq!(endpoint.secrets[1].sealed, vec![9; 72]);
    assert_eq!(endpoint.secrets[1].created_at, Instant::from_millis(1_000));
    let filter = AuditFilter { event: Some(AuditEventType::WebhookSecretRotated), ..AuditFilter::default() };
    assert_eq!(store.list_audit(&filter).await.unwrap().len(), 1);

    // A later rotation with an earlier deadline also cuts off the secret the first one left
    // signing, and one with a later deadline never extends it.
    assert!(store.add_webhook_secret("wh_one", &[8; 72], Instant::from_millis(20_000), &rotated).await.unwrap());
    assert!(store.add_webhook_secret("wh_one", &[7; 72], Instant::from_millis(90_000), &rotated).await.unwrap());
    let expiries: Vec<Option<Instant>> =
        store.get_webhook_endpoint("wh_one").await.unwrap().unwrap().secrets.iter().map(|s| s.expires_at).collect();
    let at = |millis| Some(Instant::from_millis(millis));
    assert_eq!(expiries, [at(20_000), at(20_000), at(90_000), None]);
}

pub async fn disabled_endpoint_gets_nothing(store: &dyn Store) {
    add_endpoint(store, "wh_one", vec![], 500).await;
    insert(store, &key(1, None, 1_000)).await;
    let disabled = admin_event(AuditEventType::WebhookEndpointDisabled, 2_000, "wh_one");

    assert!(store.disable_webhook_endpoint("wh_one", "HTTP 410 Gone", &disabled).await.unwrap());
    assert!(!store.disable_webhook_endpoint("wh_one", "HTTP 410 Gone", &disabled).await.unwrap());
    insert(store, &key(2, None, 3_000)).await;

    assert!(store.claim_webhook_deliveries(&claim("worker-a", 4_000)).await.unwrap().is_empty());
    assert_eq!(store.list_webhook_deliveries(&DeliveryFilter::default()).await.unwrap().len(), 1);
    let endpoint = store.get_webhook_endpoint("wh_one").await.unwrap().unwrap();
    assert!(!endpoint.enabled);
    assert_eq!(endpoint.disabled_reason.as_deref(), Some("HTTP 410 Gone"));
}

pub async fn remove_endpoint_drops_deliveries(store: &dyn Store) {
    add_endpoint(store, "wh_one", vec![], 500).await;
    add_endpoint(store, "wh_two", vec![], 500).await;
    insert(store, &key(1, None, 1_000)).await;
    let removed = admin_event(AuditEventType::WebhookEndpointRemoved, 2_000, "wh_one");

    assert!(store.remove_webhook_endpoint("wh_one", &removed).await.unwrap());
    assert!(!store.remove_webhook_endpoint("wh_one", &removed).await.unwrap());

    assert!(store.get_webhook_endpoint("wh_one").await.unwrap().is_none());
    let left = store.list_webhook_deliveries(&DeliveryFilter::default()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].endpoint_id, "wh_two");
    assert_eq!(store.list_outbox(0, 10).await.unwrap().len(), 1);
    let filter = AuditFilter { event: Some(AuditEventType::WebhookEndpointRemoved), ..AuditFilter::default() };
    assert_eq!(store.list_audit(&filter).await.unwrap().len(), 1);
}
