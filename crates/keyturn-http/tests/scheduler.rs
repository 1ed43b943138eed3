//! `keyturn serve` runs the scheduler as a background task that stops with the server. With an
//! interval set, a key that expires while the server runs gets its audit row without any
//! verification. A key that reaches its policy's `rotate_every` age gets a rotation request,
//! which the client sees in the response headers.

mod common;

use std::time::Duration as StdDuration;

use common::*;
use keyturn::core::{AuditEventType, Duration, Instant, NamedPolicy, PolicyName};
use keyturn::store::AuditFilter;
use keyturn::{Caller, Config, NewKey};
use keyturn_http::Limits;

#[tokio::test]
async fn serve_runs_scheduler_in_background() {
    let config = Config { schedule_interval: Some(StdDuration::from_millis(20)), ..Config::default() };
    let server = Server::with_config(config, Limits::default()).await;
    let key = server.key("client", &["orders:read"]).await;
    server.at(T0 + 97 * DAY);

    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenExpired), ..AuditFilter::default() };
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = server.keyring.audit(&filter).await.unwrap();
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }

    assert_eq!(rows.len(), 1, "the scheduler recorded no expiry within 2 s");
    assert_eq!(rows[0].event.key_id.as_ref(), Some(&key.record.key_id));
    server.stop().await;
}

#[tokio::test]
async fn serve_requests_rotation_on_policy_cadence() {
    let config = Config { schedule_interval: Some(StdDuration::from_millis(20)), ..Config::default() };
    let server = Server::with_config(config, Limits::default()).await;
    let mut policy = NamedPolicy::from_policy(PolicyName::parse("ci").unwrap(), &Default::default());
    policy.max_lifetime = Duration::from_days(30);
    policy.rotate_every = Some(Duration::from_days(20));
    let plan = server.keyring.plan_policy(&policy, false).await.unwrap();
    server.keyring.apply_policies(plan, &Caller::cli()).await.unwrap();
    let new = NewKey {
        name: "bot".into(),
        scopes: scopes(&["orders:read"]),
        policy: Some(PolicyName::parse("ci").unwrap()),
        ..NewKey::default()
    };
    let key = server.keyring.create(new, &Caller::cli()).await.unwrap();
    server.at(T0 + 20 * DAY);

    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenRotationRequested), ..AuditFilter::default() };
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = server.keyring.audit(&filter).await.unwrap();
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    assert_eq!(rows.len(), 1, "the scheduler requested no rotation within 2 s");
    assert_eq!(rows[0].event.key_id.as_ref(), Some(&key.record.key_id));

    let response =
        server.client.get(server.gateway_url("/v1/auth")).bearer_auth(key.token.expose()).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
    assert_eq!(response.headers()["api-key-status"], "rotation-requested");
    let expiry = Instant::from_millis(T0 + 30 * DAY).to_http_date();
    assert_eq!(response.headers()["api-key-expires"], expiry.as_str());
    server.stop().await;
}
