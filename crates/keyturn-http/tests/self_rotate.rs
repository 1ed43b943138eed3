//! `POST /v1/self/rotate` over real HTTP on loopback. A client rotates its own key with either
//! header and replaces a successor whose response it lost. A missing or rejected key, a disabled
//! policy, an ended chain and a used successor get the documented problem responses.

mod common;

use common::*;
use keyturn::core::{AuditEventType, Duration, Expiry, Outcome};
use keyturn::store::AuditFilter;
use keyturn::{Caller, NewKey, SelfRotationOptions};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

/// Sends `POST /v1/self/rotate` with `headers`; returns status, headers and the JSON body.
async fn self_rotate(server: &Server, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value) {
    let mut request = server.client.post(server.url("/v1/self/rotate"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn create(server: &Server, name: &str, options: SelfRotationOptions) -> keyturn::Issued {
    let new = NewKey { name: name.into(), expiry: Some(Expiry::After(Duration::from_days(30))), ..NewKey::default() };
    server.keyring.create_with(new, options, &Caller::cli()).await.unwrap()
}

async fn outcome(server: &Server, token: &str) -> Outcome {
    server.keyring.verify(token, &scopes(&[]), None).await.unwrap().outcome
}

#[tokio::test]
async fn expiring_key_rotates_itself() {
    let server = Server::start().await;
    let old = create(&server, "client", SelfRotationOptions::default()).await;
    server.at(T0 + 20 * DAY);
    let authorization = bearer(old.token.expose());

    let (status, headers, body) = self_rotate(&server, &[("authorization", &authorization)]).await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    let token = body["token"].as_str().unwrap();
    let key_id = body["key_id"].as_str().unwrap();
    assert_eq!(body["predecessor_id"], old.record.key_id.as_str());
    assert_eq!(body["predecessor"]["successor_id"], key_id);
    assert_eq!(body["predecessor"]["state"], "superseded");
    assert_eq!(outcome(&server, token).await, Outcome::Active);

    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenSelfRotated), ..AuditFilter::default() };
    let events = server.keyring.audit(&filter).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.actor.to_stored(), format!("key:{}", old.record.key_id));
    assert!(events[0].event.client_addr.as_deref().unwrap().starts_with("127.0.0.1:"));
    server.stop().await;
}

#[tokio::test]
async fn api_key_header_and_immediate_retry() {
    let server = Server::start().await;
    let old = create(&server, "client", SelfRotationOptions::default()).await;

    let (status, _, first) = self_rotate(&server, &[("x-api-key", old.token.expose())]).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    // A retry within ten seconds conflicts instead of replacing the successor just issued, so
    // concurrent requests get one successor; the keyring tests cover the replacement after that.
    let (status, _, retry) = self_rotate(&server, &[("x-api-key", old.token.expose())]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{retry}");

    assert_eq!(outcome(&server, first["token"].as_str().unwrap()).await, Outcome::Active);
    assert_eq!(first["predecessor"]["successor_id"], first["key_id"]);
    server.stop().await;
}

#[tokio::test]
async fn rejected_keys_get_authentication_responses() {
    let server = Server::start().await;
    let revoked = create(&server, "revoked", SelfRotationOptions::default()).await;
    server.keyring.revoke(&revoked.record.key_id, None, &Caller::cli()).await.unwrap();
    let responses = &server.keyring.config().responses;
    let revoked_auth = bearer(revoked.token.expose());

    let (status, headers, body) = self_rotate(&server, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"api\"");
    let expected: Value = serde_json::from_slice(&responses.missing_credentials().body).unwrap();
    assert_eq!(body, expected);

    let (status, headers, body) = self_rotate(&server, &[("authorization", &revoked_auth)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"api\", error=\"invalid_token\"");
    assert_eq!(body["code"], "revoked");

    let (status, _, body) = self_rotate(&server, &[("authorization", "Bearer kt_live_nonsense")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "invalid");
    server.stop().await;
}

#[tokio::test]
async fn disabled_and_ended_chain_are_403() {
    let server = Server::start().await;
    let disabled = SelfRotationOptions { allowed: Some(false), ..SelfRotationOptions::default() };
    let disabled = create(&server, "disabled", disabled).await;
    let capped = SelfRotationOptions { max_chain_lifetime: Some(Duration::from_days(10)), ..Default::default() };
    let capped = create(&server, "capped", capped).await;

    let (status, _, body) = self_rotate(&server, &[("authorization", &bearer(disabled.token.expose()))]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "self_rotation_denied");
    assert_eq!(body["type"], "urn:keyturn:problem:self_rotation_denied");
    assert_eq!(body["key_id"], disabled.record.key_id.as_str());

    server.at(T0 + 10 * DAY);
    let (status, headers, body) = self_rotate(&server, &[("authorization", &bearer(capped.token.expose()))]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["code"], "self_rotation_denied");
    assert!(body["detail"].as_str().unwrap().contains("an operator must issue a new key"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn used_successor_is_409() {
    let server = Server::start().await;
    let old = create(&server, "client", SelfRotationOptions::default()).await;
    let (_, _, successor) = self_rotate(&server, &[("authorization", &bearer(old.token.expose()))]).await;
    assert_eq!(outcome(&server, successor["token"].as_str().unwrap()).await, Outcome::Active);
    server.keyring.flush().await.unwrap();

    let (status, _, body) = self_rotate(&server, &[("authorization", &bearer(old.token.expose()))]).await;

    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "successor_used");
    server.stop().await;
}
