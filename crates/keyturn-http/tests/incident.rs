//! The incident endpoints over real HTTP on loopback: `POST /v1/keys/revoke` and
//! `POST /v1/keys/report-leak`, their scopes and bounds, and a trace log capture that must not
//! contain a reported token.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use keyturn::store::AuditFilter;
use keyturn::NewKey;
use keyturn_core::AuditEventType;
use keyturn_http::Limits;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn post(server: &Server, path: &str, token: &str, body: Value) -> (StatusCode, String) {
    let response = server.client.post(server.url(path)).bearer_auth(token).json(&body).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn owned_key(server: &Server, owner: &str) -> keyturn::Issued {
    let new = NewKey { name: "svc".into(), owner: Some(owner.into()), ..NewKey::default() };
    server.keyring.create(new, &keyturn::Caller::cli()).await.unwrap()
}

async fn counts(server: &Server) -> (usize, i64) {
    let events = server.keyring.audit(&AuditFilter::default()).await.unwrap().len();
    (events, server.keyring.store().change_seq().await.unwrap())
}

#[tokio::test]
async fn revoke_keys_by_owner_and_ids() {
    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:keys:write"]).await;
    let token = admin.token.expose();
    let first = owned_key(&server, "billing").await;
    let second = owned_key(&server, "billing").await;
    let other = owned_key(&server, "search").await;

    let (status, body) = post(&server, "/v1/keys/revoke", token, json!({"owner": "billing", "dry_run": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dry: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["keys"].as_array().unwrap().len(), 2);
    assert!(server.keyring.get(&first.record.key_id).await.unwrap().record.revoked_at.is_none());

    let body = json!({"owner": "billing", "reason": "incident 4"});
    let (status, text) = post(&server, "/v1/keys/revoke", token, body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["revoked"], 2);
    for key in [&first, &second] {
        let record = server.keyring.get(&key.record.key_id).await.unwrap().record;
        assert_eq!(record.revocation_reason.as_deref(), Some("incident 4"));
    }
    let filter = AuditFilter {
        key_id: Some(first.record.key_id.clone()),
        event: Some(AuditEventType::AuthnTokenRevoked),
        ..AuditFilter::default()
    };
    let rows = server.keyring.audit(&filter).await.unwrap();
    assert_eq!(rows[0].event.actor.to_stored(), format!("key:{}", admin.record.key_id));

    let ids = json!({"key_ids": [first.record.key_id.as_str(), other.record.key_id.as_str(), "aaaaaaaaaaaa"]});
    let (status, text) = post(&server, "/v1/keys/revoke", token, ids).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((report["revoked"].as_u64(), report["already_revoked"].as_u64()), (Some(1), Some(1)));
    assert_eq!(report["missing_key_ids"], json!(["aaaaaaaaaaaa"]));
}

async fn policy_key(server: &Server, policy: &str) -> keyturn::Issued {
    let name = keyturn_core::PolicyName::parse(policy).unwrap();
    if server.keyring.store().get_policy(&name).await.unwrap().is_none() {
        let named = keyturn_core::NamedPolicy::from_policy(name.clone(), &Default::default());
        let plan = server.keyring.plan_policy(&named, false).await.unwrap();
        server.keyring.apply_policies(plan, &keyturn::Caller::cli()).await.unwrap();
    }
    let new = NewKey { name: "bot".into(), policy: Some(name), ..NewKey::default() };
    server.keyring.create(new, &keyturn::Caller::cli()).await.unwrap()
}

#[tokio::test]
async fn revoke_keys_by_policy() {
    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:keys:write"]).await;
    let token = admin.token.expose();
    let first = policy_key(&server, "ci").await;
    let second = policy_key(&server, "ci").await;
    let other = owned_key(&server, "billing").await;
    let before = counts(&server).await;

    let (status, body) = post(&server, "/v1/keys/revoke", token, json!({"policy": "ci", "dry_run": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dry: Value = serde_json::from_str(&body).unwrap();
    let mut listed: Vec<&str> =
        dry["keys"].as_array().unwrap().iter().map(|key| key["key_id"].as_str().unwrap()).collect();
    let mut expected = vec![first.record.key_id.as_str(), second.record.key_id.as_str()];
    listed.sort_unstable();
    expected.sort_unstable();
    assert_eq!(listed, expected);
    assert_eq!(server.keyring.store().change_seq().await.unwrap(), before.1, "a dry run changes no key");

    for body in [
        json!({"policy": "ci", "owner": "billing"}),
        json!({"policy": "ci", "key_ids": [other.record.key_id.as_str()]}),
        json!({"policy": "Not A Name"}),
        json!({"policy": "missing"}),
        json!({"policy": "missing", "dry_run": true}),
    ] {
        let (status, text) = post(&server, "/v1/keys/revoke", token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
    }
    let (_, text) = post(&server, "/v1/keys/revoke", token, json!({"policy": "missing"})).await;
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["code"], "unknown_policy", "{text}");
    assert_eq!(server.keyring.store().change_seq().await.unwrap(), before.1, "rejected requests change no key");

    let (status, text) =
        post(&server, "/v1/keys/revoke", token, json!({"policy": "ci", "reason": "runner leak"})).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((report["revoked"].as_u64(), report["already_revoked"].as_u64()), (Some(2), Some(0)));
    for key in [&first, &second] {
        let record = server.keyring.get(&key.record.key_id).await.unwrap().record;
        assert_eq!(record.revocation_reason.as_deref(), Some("runner leak"));
    }
    assert!(server.keyring.get(&other.record.key_id).await.unwrap().record.revoked_at.is_none());
}

#[tokio::test]
async fn revoke_keys_checks_scope_and_body() {
    let server = Server::start().await;
    let reader = server.key("reader", &["keyturn:keys:read"]).await;
    let writer = server.key("writer", &["keyturn:keys:write"]).await;
    owned_key(&server, "billing").await;
    let before = counts(&server).await;

    let (status, _) = post(&server, "/v1/keys/revoke", reader.token.expose(), json!({"owner": "billing"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let response = server.client.post(server.url("/v1/keys/revoke")).json(&json!({"owner": "billing"})).send().await;
    assert_eq!(response.unwrap().status(), StatusCode::UNAUTHORIZED);
    let (status, _) =
        post(&server, "/v1/keys/report-leak", reader.token.expose(), json!({"tokens": ["kt_live_x"]})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let token = writer.token.expose();
    for body in [
        json!({}),
        json!({"owner": "billing", "key_ids": ["aaaaaaaaaaaa"]}),
        json!({"key_ids": []}),
        json!({"key_ids": ["not a key id"]}),
        json!({"owner": "   "}),
        json!({"owner": "billing", "everything": true}),
    ] {
        let (status, text) = post(&server, "/v1/keys/revoke", token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
    }
    assert_eq!(counts(&server).await, before, "rejected requests write nothing");
}

#[tokio::test]
async fn report_leak_over_http() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:keys:write"]).await;
    let leaked = owned_key(&server, "billing").await;
    let kept = owned_key(&server, "billing").await;
    let forged = keyturn::Config::default().format.generate(&kept.record.key_id, &mut rand_core::OsRng);
    let tokens = [leaked.token.expose(), forged.expose(), "kt_live_garbage_token_text"];
    let body = json!({"tokens": tokens, "source": "paste site", "reason": "found in a gist"});

    let (status, text) = post(&server, "/v1/keys/report-leak", admin.token.expose(), body).await;

    assert_eq!(status, StatusCode::OK, "{text}");
    for token in tokens {
        assert!(!text.contains(token), "the response contains a token: {text}");
    }
    let results: Value = serde_json::from_str(&text).unwrap();
    let statuses: Vec<&str> =
        results["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["revoked", "not_found", "not_found"]);
    assert_eq!(results["results"][0]["line"], 1);
    assert_eq!(results["results"][1]["key_id"], kept.record.key_id.as_str());
    let record = server.keyring.get(&leaked.record.key_id).await.unwrap().record;
    assert_eq!(record.revocation_reason.as_deref(), Some("leak reported: found in a gist"));
    assert!(server.keyring.get(&kept.record.key_id).await.unwrap().record.revoked_at.is_none());
    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenLeakReported), ..AuditFilter::default() };
    let rows = server.keyring.audit(&filter).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.details["source"], "paste site");
    assert_eq!(rows[0].event.actor.to_stored(), format!("key:{}", admin.record.key_id));

    let before = counts(&server).await;
    let many: Vec<String> = (0..1_001).map(|n| format!("t{n}")).collect();
    let long = "x".repeat(600);
    for body in [json!({"tokens": []}), json!({"tokens": many}), json!({"tokens": [long]}), json!({"token": "x"})] {
        let (status, text) = post(&server, "/v1/keys/report-leak", admin.token.expose(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(!text.contains(&long), "an error quotes the over-long entry");
    }
    assert_eq!(counts(&server).await, before, "rejected reports write nothing");
    server.stop().await;

    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(output.contains("leaked token reported"), "the report was not logged");
    for token in tokens {
        assert!(!output.contains(token), "a reported token appeared in the logs");
    }
}

#[tokio::test]
async fn report_leak_body_is_bounded() {
    let limits = Limits { max_body_bytes: 1024, ..Limits::default() };
    let server = Server::with_limits(limits).await;
    let admin = server.key("admin", &["keyturn:keys:write"]).await;
    let tokens: Vec<String> = (0..40).map(|n| format!("kt_live_{n:040}")).collect();

    let (status, text) = post(&server, "/v1/keys/report-leak", admin.token.expose(), json!({"tokens": tokens})).await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
}
