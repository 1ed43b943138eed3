//! The webhook service on a real SQLite file: an endpoint's secret appears only in the value
//! returned to the operator, never in a stored row, an audit row, an error or `Debug` output;
//! the addresses of an endpoint are checked again at every delivery; and a refused delivery is
//! retried, then dead-lettered.

mod common;

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use keyturn::core::webhook::WebhookKey;
use keyturn::core::Duration;
use keyturn::store::{AuditFilter, DeliveryFilter, DeliveryState, Store};
use keyturn::webhooks::{WebhookConfig, Webhooks};
use keyturn::Error;
use rand_core::OsRng;

use common::{cli, new_key, Fixture, T0};

fn webhook_key() -> (String, WebhookKey) {
    let text = WebhookKey::generate(&mut OsRng).to_string();
    let key = WebhookKey::parse(&text, "test").unwrap();
    (text, key)
}

fn webhooks(fixture: &Fixture, key: Option<WebhookKey>, config: WebhookConfig) -> Webhooks {
    Webhooks::new(fixture.store.clone(), key, Arc::new(fixture.clock.clone()), config)
}

fn fast(allow_private: bool) -> WebhookConfig {
    WebhookConfig {
        max_attempts: 2,
        retry_base: std::time::Duration::from_millis(1),
        request_timeout: std::time::Duration::from_secs(2),
        allow_private,
        ..WebhookConfig::default()
    }
}

#[tokio::test]
async fn secret_never_stored_or_logged() {
    let fixture = Fixture::new().await;
    let (key_text, key) = webhook_key();
    let service = webhooks(&fixture, Some(key), WebhookConfig::default());

    let added = service.add("https://hooks.example.com/t?token=abc", &[], false, &cli()).await.unwrap();
    let rotated = service.rotate_secret(&added.endpoint.endpoint_id, Duration::from_secs(60), &cli()).await.unwrap();

    let raw = STANDARD.decode(added.secret.trim_start_matches("whsec_")).unwrap();
    let audit = fixture.store.list_audit(&AuditFilter::default()).await.unwrap();
    let endpoint = service.get(&added.endpoint.endpoint_id).await.unwrap();
    let texts = [
        format!("{audit:?}"),
        format!("{endpoint:?}"),
        format!("{added:?}"),
        format!("{service:?}"),
        format!("{:?}", fixture.store.list_outbox(0, 100).await.unwrap()),
    ];
    for text in &texts {
        assert!(!text.contains(added.secret.as_str()), "{text}");
        assert!(!text.contains(rotated.as_str()), "{text}");
        assert!(!text.contains(&key_text), "{text}");
        assert!(!text.contains("token=abc") || text.contains("https://hooks.example.com/t?token=abc"), "{text}");
    }
    for secret in &endpoint.secrets {
        assert!(!secret.sealed.windows(raw.len()).any(|window| window == raw.as_slice()));
    }
    let created = audit.iter().find(|row| row.event.event.as_str() == "webhook_endpoint_created").unwrap();
    assert_eq!(created.event.details["origin"], "https://hooks.example.com");
    assert!(!created.canonical.contains("token=abc"), "{}", created.canonical);
    assert_eq!(endpoint.secrets.len(), 2);
    assert_eq!(endpoint.secrets[0].expires_at.unwrap().as_millis(), T0 + 60_000);
}

/// A rotation with a short overlap cuts off every older secret, including one that an earlier
/// rotation left signing for longer. An overlap past the maximum is rejected.
#[tokio::test]
async fn secret_rotation_cuts_off_older_secrets() {
    let fixture = Fixture::new().await;
    let (_, key) = webhook_key();
    let service = webhooks(&fixture, Some(key), WebhookConfig::default());
    let added = service.add("https://hooks.example.com/t", &[], false, &cli()).await.unwrap();
    let id = &added.endpoint.endpoint_id;

    let too_long = service.rotate_secret(id, Duration::from_days(31), &cli()).await.unwrap_err();
    assert!(matches!(&too_long, Error::InvalidInput { field: "overlap", .. }), "{too_long:?}");
    assert!(too_long.to_string().contains("30d"), "{too_long}");
    assert_eq!(service.get(id).await.unwrap().secrets.len(), 1);

    service.rotate_secret(id, Duration::from_days(30), &cli()).await.unwrap();
    service.rotate_secret(id, Duration::from_secs(0), &cli()).await.unwrap();

    let secrets = service.get(id).await.unwrap().secrets;
    assert_eq!(secrets.len(), 3);
    let expiries: Vec<Option<i64>> = secrets.iter().map(|secret| secret.expires_at.map(|at| at.as_millis())).collect();
    assert_eq!(expiries, [Some(T0), Some(T0), None]);
}

#[tokio::test]
async fn wrong_webhook_key_error_hides_both_keys() {
    let fixture = Fixture::new().await;
    let (_, key) = webhook_key();
    let (other_text, other) = webhook_key();
    let added = webhooks(&fixture, Some(key), fast(true)).add("http://127.0.0.1:9/", &[], true, &cli()).await.unwrap();

    let error = webhooks(&fixture, Some(other), fast(true)).test(&added.endpoint.endpoint_id).await.unwrap_err();

    let message = format!("{error} {error:?}");
    assert!(message.contains("does not open under the configured webhook key"), "{message}");
    assert!(!message.contains(&other_text), "{message}");
    assert!(!message.contains(added.secret.as_str()), "{message}");
}

#[tokio::test]
async fn missing_webhook_key_names_the_fix() {
    let fixture = Fixture::new().await;

    let error = webhooks(&fixture, None, WebhookConfig::default())
        .add("https://hooks.example.com/", &[], false, &cli())
        .await
        .unwrap_err();

    assert!(matches!(error, Error::InvalidInput { field: "webhook key", .. }), "{error:?}");
    assert!(error.to_string().contains("KEYTURN_WEBHOOK_KEY"), "{error}");
}

/// An endpoint added while private networks were allowed is refused at delivery once they are
/// not: every attempt checks the addresses again. The refusal is retried, then dead-lettered.
#[tokio::test]
async fn delivery_checks_address_again() {
    let fixture = Fixture::new().await;
    let (_, key) = webhook_key();
    let permissive = webhooks(&fixture, Some(key.clone()), fast(true));
    let added = permissive.add("https://127.0.0.1:9/hook", &[], false, &cli()).await.unwrap();
    fixture.keyring.create(new_key("watched"), &cli()).await.unwrap();
    let strict = webhooks(&fixture, Some(key), fast(false));

    let first = strict.deliver_once().await.unwrap();
    fixture.clock.advance(Duration::from_secs(1));
    let second = strict.deliver_once().await.unwrap();

    assert_eq!((first.retried, first.dead), (1, 0));
    assert_eq!((second.retried, second.dead), (0, 1));
    let filter = DeliveryFilter { endpoint_id: Some(added.endpoint.endpoint_id.clone()), ..DeliveryFilter::default() };
    let deliveries = strict.deliveries(&filter).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].state, DeliveryState::Dead);
    let result = deliveries[0].last_result.clone().unwrap();
    assert!(result.contains("loopback"), "{result}");
}

#[tokio::test]
async fn unknown_endpoint_not_found() {
    let fixture = Fixture::new().await;
    let (_, key) = webhook_key();
    let service = webhooks(&fixture, Some(key), WebhookConfig::default());

    let removed = service.remove("wh_0000000000000000", &cli()).await.unwrap_err();
    let rotated = service.rotate_secret("wh_0000000000000000", Duration::from_secs(1), &cli()).await.unwrap_err();
    let retried = service.retry(Some("wh_0000000000000000"), &cli()).await.unwrap_err();

    for error in [removed, rotated, retried] {
        assert!(matches!(error, Error::WebhookNotFound(_)), "{error:?}");
    }
}
