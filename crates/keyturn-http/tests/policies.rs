//! The named-policy routes and the policy and overlap members of the key routes, over real HTTP
//! on loopback: scopes, audit rows with the admin key as actor, unknown names, and a rotation
//! whose overlap the successor's first use shortens.

mod common;

use common::*;
use keyturn::core::{AuditEventType, Outcome};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn call(server: &Server, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = server.client.request(method, server.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

#[tokio::test]
async fn policy_routes_enforce_scopes() {
    let server = Server::start().await;
    let reader = server.key("reader", &["keyturn:keys:read"]).await;
    let writer = server.key("writer", &["keyturn:keys:write"]).await;
    let admin = server.key("admin", &["keyturn:admin"]).await;
    let body = json!({"max_lifetime": "30d"});

    let (status, listed) = call(&server, Method::GET, "/v1/policies", reader.token.expose(), None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["policies"][0]["name"], "default");
    assert_eq!(listed["policies"][0]["max_lifetime"], "90d");
    let (status, _) = call(&server, Method::GET, "/v1/policies", writer.token.expose(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    for token in [reader.token.expose(), writer.token.expose()] {
        let (status, problem) = call(&server, Method::PUT, "/v1/policies/ci", token, Some(body.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    }
    let (status, problem) = call(&server, Method::PUT, "/v1/policies/ci", "", Some(body.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert!(server.keyring.store().list_policies().await.unwrap().is_empty());

    let (status, _) = call(&server, Method::GET, "/v1/policies/default", admin.token.expose(), None).await;
    assert_eq!(status, StatusCode::OK, "keyturn:admin grants every reserved scope");
    let (status, added) = call(&server, Method::PUT, "/v1/policies/ci", admin.token.expose(), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    server.stop().await;
}

#[tokio::test]
async fn put_policy_adds_changes_and_audits() {
    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:admin"]).await;
    let token = admin.token.expose();

    let body = json!({"max_lifetime": "30d", "rotate_every": "20d", "overlap_after_first_use": "1h"});
    let (status, added) = call(&server, Method::PUT, "/v1/policies/ci", token, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["action"], "added");
    assert_eq!(added["policy"]["rotate_every"], "20d");
    assert_eq!(added["policy"]["grace"], "7d");

    let body = json!({"max_lifetime": "10d", "rotate_every": "5d", "apply_to_existing": true});
    let (status, changed) = call(&server, Method::PUT, "/v1/policies/ci", token, Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["action"], "changed");
    let fields: Vec<&str> =
        changed["changes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["max_lifetime", "rotate_every", "overlap_after_first_use"]);
    let (status, same) = call(&server, Method::PUT, "/v1/policies/ci", token, Some(body)).await;
    assert_eq!((status, same["action"].as_str()), (StatusCode::OK, Some("unchanged")));

    let (status, shown) = call(&server, Method::GET, "/v1/policies/ci", token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["max_lifetime"], "10d");

    let filter = keyturn::store::AuditFilter { event: Some(AuditEventType::AuthzPolicyChanged), ..Default::default() };
    let rows = server.keyring.audit(&filter).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].event.actor, keyturn::core::Actor::Key(admin.record.key_id.clone()));
    assert_eq!(rows[1].event.details["old"]["max_lifetime"], "30d");
    assert_eq!(rows[1].event.details["new"]["max_lifetime"], "10d");
    assert_eq!(rows[1].event.details["keys_updated"], 0);
    server.stop().await;
}

#[tokio::test]
async fn put_policy_rejects_invalid_values() {
    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:admin"]).await;
    let token = admin.token.expose();
    let cases = [
        ("/v1/policies/Bad.Name", json!({})),
        ("/v1/policies/ci", json!({"max_lifetime": "0s"})),
        ("/v1/policies/ci", json!({"grace": "91d"})),
        ("/v1/policies/ci", json!({"max_lifetime": "30d", "rotate_every": "30d"})),
        ("/v1/policies/ci", json!({"max_lifetime": "soon"})),
        ("/v1/policies/ci", json!({"unknown": "1d"})),
    ];
    for (path, body) in cases {
        let (status, problem) = call(&server, Method::PUT, path, token, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
    }
    let (status, problem) = call(&server, Method::GET, "/v1/policies/missing", token, None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("unknown_policy")), "{problem}");
    assert!(server.keyring.store().list_policies().await.unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn create_key_under_named_policy() {
    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:admin"]).await;
    let token = admin.token.expose();
    let body = json!({"max_lifetime": "30d", "grace": "1d"});
    call(&server, Method::PUT, "/v1/policies/ci", token, Some(body)).await;

    let body = json!({"name": "bot", "scopes": ["orders:read"], "policy": "ci"});
    let (status, created) = call(&server, Method::POST, "/v1/keys", token, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["policy"], "ci");
    assert_eq!(created["expires_at"], "2027-02-14T08:00:00Z");
    assert_eq!(created["grace"], "1d");

    let body = json!({"name": "bot", "policy": "ci", "grace": "2d"});
    let (_, overridden) = call(&server, Method::POST, "/v1/keys", token, Some(body)).await;
    assert_eq!(overridden["grace"], "2d");

    let before = server.keyring.list(&Default::default()).await.unwrap().len();
    let body = json!({"name": "bot", "policy": "missing"});
    let (status, problem) = call(&server, Method::POST, "/v1/keys", token, Some(body)).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("unknown_policy")), "{problem}");
    let body = json!({"name": "bot", "policy": "NOT VALID"});
    let (status, _) = call(&server, Method::POST, "/v1/keys", token, Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(server.keyring.list(&Default::default()).await.unwrap().len(), before);
    server.stop().await;
}

#[tokio::test]
async fn rotate_with_overlap_after_first_use() {
    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:admin"]).await;
    let client = server.key("client", &["orders:read"]).await;
    let path = format!("/v1/keys/{}/rotate", client.record.key_id);

    let body = json!({"overlap": "1h", "overlap_after_first_use": "2h"});
    let (status, problem) = call(&server, Method::POST, &path, admin.token.expose(), Some(body)).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_input")), "{problem}");

    let body = json!({"overlap": "7d", "overlap_after_first_use": "10m"});
    let (status, rotated) = call(&server, Method::POST, &path, admin.token.expose(), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    assert_eq!(rotated["predecessor"]["overlap_after_first_use"], "10m");
    assert_eq!(rotated["predecessor"]["overlap_ends_at"], "2027-01-22T08:00:00Z");

    let successor = rotated["token"].as_str().unwrap();
    let decision = server.keyring.verify(successor, &scopes(&[]), None).await.unwrap();
    assert_eq!(decision.outcome, Outcome::Active);
    server.keyring.flush().await.unwrap();
    let old = server.keyring.get(&client.record.key_id).await.unwrap();
    assert_eq!(old.record.overlap_ends_at.unwrap().to_rfc3339(), "2027-01-15T08:10:00Z");
    server.stop().await;
}
