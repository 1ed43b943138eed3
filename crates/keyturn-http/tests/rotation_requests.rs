//! `POST /v1/keys/rotation-requests` over real HTTP: a request by owner or key ids moves the
//! keys' expiry and audits each key, a dry run changes nothing, keys it cannot take are
//! reported, and bad input or a missing scope changes nothing.

mod common;

use common::*;
use keyturn::core::AuditEventType;
use keyturn::store::AuditFilter;
use keyturn::Caller;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn post(server: &Server, token: &str, body: Value) -> (StatusCode, Value) {
    let response = server
        .client
        .post(server.url("/v1/keys/rotation-requests"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn requested_rows(server: &Server) -> usize {
    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenRotationRequested), ..AuditFilter::default() };
    server.keyring.audit(&filter).await.unwrap().len()
}

#[tokio::test]
async fn request_rotation_by_owner_over_http() {
    let server = Server::start().await;
    let admin = server.lasting_key("admin", &["keyturn:keys:write"]).await;
    let first = server.key("first", &["orders:read"]).await;
    let second = server.key("second", &["orders:read"]).await;
    server.keyring.revoke(&second.record.key_id, None, &Caller::cli()).await.unwrap();

    let dry_body = json!({ "owner": "team-a", "by": "14d", "dry_run": true });
    let (status, dry) = post(&server, admin.token.expose(), dry_body).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["requested"], 1);
    assert_eq!(requested_rows(&server).await, 0);

    let body = json!({ "owner": "team-a", "by": "14d", "reason": "vendor breach" });
    let (status, done) = post(&server, admin.token.expose(), body).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    let entry =
        |key_id: &str| done["keys"].as_array().unwrap().iter().find(|entry| entry["key_id"] == key_id).unwrap().clone();
    let requested = entry(first.record.key_id.as_str());
    assert_eq!(requested["status"], "requested");
    assert_eq!(requested["rotation_deadline"], "2027-01-29T08:00:00Z");
    assert_eq!(requested["expires_at"], "2027-01-29T08:00:00Z");
    assert_eq!(entry(second.record.key_id.as_str())["status"], "revoked");
    assert_eq!(done["keys"].as_array().unwrap().len(), 2);
    assert_eq!(requested_rows(&server).await, 1);

    let shown = server.keyring.get(&first.record.key_id).await.unwrap();
    assert_eq!(shown.state.outcome.as_str(), "rotation_requested");
    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenRotationRequested), ..AuditFilter::default() };
    let row = &server.keyring.audit(&filter).await.unwrap()[0];
    assert_eq!(row.event.actor.to_stored(), format!("key:{}", admin.record.key_id));
    assert_eq!(row.event.reason.as_deref(), Some("vendor breach"));
}

#[tokio::test]
async fn request_rotation_by_key_ids_over_http() {
    let server = Server::start().await;
    let admin = server.lasting_key("admin", &["keyturn:keys:write"]).await;
    let key = server.key("client", &["orders:read"]).await;

    let body = json!({ "key_ids": [key.record.key_id.as_str(), "zzzzzzzzzzzz"], "by": "2027-01-20T00:00:00Z" });
    let (status, done) = post(&server, admin.token.expose(), body).await;

    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["keys"][0]["rotation_deadline"], "2027-01-20T00:00:00Z");
    assert_eq!(done["keys"][1]["status"], "not_found");
}

#[tokio::test]
async fn request_rotation_by_policy_over_http() {
    let server = Server::start().await;
    let admin = server.lasting_key("admin", &["keyturn:keys:write"]).await;
    let name = keyturn::core::PolicyName::parse("ci").unwrap();
    let named = keyturn::core::NamedPolicy::from_policy(name.clone(), &Default::default());
    let plan = server.keyring.plan_policy(&named, false).await.unwrap();
    server.keyring.apply_policies(plan, &Caller::cli()).await.unwrap();
    let new = keyturn::NewKey { name: "bot".into(), policy: Some(name), ..keyturn::NewKey::default() };
    let bot = server.keyring.create(new, &Caller::cli()).await.unwrap();
    server.key("client", &["orders:read"]).await;

    let (status, dry) =
        post(&server, admin.token.expose(), json!({ "policy": "ci", "by": "14d", "dry_run": true })).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["keys"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["keys"][0]["key_id"], bot.record.key_id.as_str());
    assert_eq!(requested_rows(&server).await, 0);

    let cases = [
        (json!({ "policy": "ci", "owner": "team-a", "by": "14d" }), "invalid_body"),
        (json!({ "policy": "ci", "key_ids": [bot.record.key_id.as_str()], "by": "14d" }), "invalid_body"),
        (json!({ "policy": "missing", "by": "14d" }), "unknown_policy"),
        (json!({ "policy": "Bad Name", "by": "14d" }), "invalid_parameter"),
    ];
    for (body, code) in cases {
        let (status, problem) = post(&server, admin.token.expose(), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["code"], code, "{body}: {problem}");
    }
    assert_eq!(requested_rows(&server).await, 0);

    let (status, done) = post(&server, admin.token.expose(), json!({ "policy": "ci", "by": "14d" })).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["keys"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(done["keys"][0]["status"], "requested");
    assert_eq!(requested_rows(&server).await, 1);
}

#[tokio::test]
async fn request_rotation_rejects_bad_input() {
    let server = Server::start().await;
    let admin = server.lasting_key("admin", &["keyturn:keys:write"]).await;
    let reader = server.lasting_key("reader", &["keyturn:keys:read"]).await;
    server.key("client", &["orders:read"]).await;
    let cases = [
        (json!({ "by": "14d" }), "invalid_body"),
        (json!({ "owner": "team-a", "key_ids": [], "by": "14d" }), "invalid_body"),
        (json!({ "owner": "team-a", "by": "soon" }), "invalid_input"),
        (json!({ "owner": "team-a", "by": "2020-01-01T00:00:00Z" }), "invalid_input"),
        (json!({ "owner": "team-a", "by": "0s" }), "invalid_input"),
        (json!({ "key_ids": ["not a key id"], "by": "14d" }), "invalid_parameter"),
        (json!({ "owner": "team-a", "by": "14d", "extra": 1 }), "invalid_body"),
    ];

    for (body, code) in cases {
        let (status, problem) = post(&server, admin.token.expose(), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["code"], code, "{body}: {problem}");
    }
    let (status, _) = post(&server, reader.token.expose(), json!({ "owner": "team-a", "by": "14d" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(requested_rows(&server).await, 0);
}
