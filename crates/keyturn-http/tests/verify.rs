//! The verify endpoints over real HTTP: `/v1/auth` on the gateway listener and `/v1/verify` on
//! the API listener give the same outcome as `Keyring::authenticate` for the same token at the
//! same instant, through every state a key passes; plus their own errors and the nginx mapping.

mod common;

use std::collections::BTreeMap;

use common::*;
use keyturn::core::Duration;
use keyturn::{AuthRequest, Authentication, Caller, RotateOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The response headers that a rejection or an allowed request can carry.
const COMPARED_HEADERS: [&str; 6] =
    ["www-authenticate", "content-type", "cache-control", "retry-after", "api-key-status", "api-key-expires"];

struct Case {
    name: &'static str,
    token: String,
    at: i64,
    scopes: &'static [&'static str],
}

#[tokio::test]
async fn same_outcome_from_auth_verify_and_keyring() {
    let server = Server::start().await;
    let verifier = server.lasting_key("verifier", &["keyturn:verify"]).await;
    let key = server.key("client", &["orders:read"]).await;
    let token = key.token.expose().to_owned();
    let old = server.key("old", &["orders:read"]).await;
    let overlap = RotateOptions { overlap: Some(Duration::from_days(1)), ..RotateOptions::default() };
    server.keyring.rotate(&old.record.key_id, &overlap, &Caller::cli()).await.unwrap();
    let revoked = server.key("revoked", &["orders:read"]).await;
    server.keyring.revoke(&revoked.record.key_id, Some("leaked"), &Caller::cli()).await.unwrap();
    let requested = server.key("requested", &["orders:read"]).await;
    let deadline = keyturn::core::Instant::from_millis(T0 + 10 * DAY);
    let selector = keyturn::RotationSelector::Keys(vec![requested.record.key_id.clone()]);
    server.keyring.request_rotation(&selector, deadline, None, false, &Caller::cli()).await.unwrap();
    let requested_token = requested.token.expose().to_owned();
    let mut wrong_secret = token.clone();
    wrong_secret.replace_range(25..26, if &token[25..26] == "A" { "B" } else { "A" });

    let cases = [
        Case { name: "active", token: token.clone(), at: T0, scopes: &["orders:read"] },
        Case { name: "expiring", token: token.clone(), at: T0 + 80 * DAY, scopes: &["orders:read"] },
        Case { name: "grace", token: token.clone(), at: T0 + 92 * DAY, scopes: &["orders:read"] },
        Case { name: "expired", token: token.clone(), at: T0 + 97 * DAY, scopes: &["orders:read"] },
        Case { name: "superseded", token: old.token.expose().to_owned(), at: T0 + DAY - 1, scopes: &[] },
        Case { name: "rotated", token: old.token.expose().to_owned(), at: T0 + DAY, scopes: &[] },
        Case { name: "revoked", token: revoked.token.expose().to_owned(), at: T0, scopes: &[] },
        Case { name: "rotation_requested", token: requested_token.clone(), at: T0, scopes: &["orders:read"] },
        Case { name: "rotation_requested", token: requested_token.clone(), at: T0 + 10 * DAY - 1, scopes: &[] },
        Case { name: "grace", token: requested_token.clone(), at: T0 + 10 * DAY, scopes: &[] },
        Case { name: "grace", token: requested_token.clone(), at: T0 + 17 * DAY - 1, scopes: &[] },
        Case { name: "expired", token: requested_token.clone(), at: T0 + 17 * DAY, scopes: &[] },
        Case { name: "invalid", token: wrong_secret, at: T0, scopes: &[] },
        Case { name: "invalid", token: "kt_live_garbage".into(), at: T0, scopes: &[] },
        Case { name: "insufficient_scope", token: token.clone(), at: T0, scopes: &["orders:write"] },
    ];

    for case in cases {
        server.at(case.at);
        let required = scopes(case.scopes);
        let bearer = format!("Bearer {}", case.token);
        let authorization = [bearer.as_str()];
        let request = AuthRequest { authorization: &authorization, ..AuthRequest::default() };
        let expected = server.keyring.authenticate(&request, &required).await;

        let auth = server
            .client
            .get(server.gateway_url("/v1/auth"))
            .header("authorization", &bearer)
            .header("x-keyturn-scopes", case.scopes.join(" "))
            .send()
            .await
            .unwrap();
        let auth_status = auth.status().as_u16();
        let auth_headers = compared(auth.headers());
        let auth_body = auth.bytes().await.unwrap();

        let verify = server
            .client
            .post(server.url("/v1/verify"))
            .bearer_auth(verifier.token.expose())
            .json(&json!({"token": case.token, "scopes": case.scopes}))
            .send()
            .await
            .unwrap();
        assert_eq!(verify.status(), StatusCode::OK, "{}", case.name);
        let decision: Value = verify.json().await.unwrap();
        assert_eq!(decision["outcome"], case.name, "{}: {decision}", case.name);

        match expected {
            Authentication::Allowed { decision: expected, headers } => {
                assert_eq!(expected.code(), case.name);
                assert_eq!(auth_status, 204, "{}", case.name);
                let lifecycle: BTreeMap<String, String> =
                    headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.clone())).collect();
                let sent: BTreeMap<String, String> =
                    auth_headers.into_iter().filter(|(name, _)| name.starts_with("api-key-")).collect();
                assert_eq!(sent, lifecycle, "{}: /v1/auth lifecycle headers", case.name);
                assert!(auth_body.is_empty());

                assert_eq!(decision["allowed"], true, "{}", case.name);
                let forwarded: BTreeMap<String, String> = decision["headers"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str().unwrap().to_owned()))
                    .collect();
                assert_eq!(forwarded, lifecycle, "{}: /v1/verify lifecycle headers", case.name);
                assert_eq!(decision["rejection"], Value::Null);
                assert!(decision["expires_at"].is_string(), "{}", case.name);
            }
            Authentication::Rejected { response, decision: expected } => {
                assert_eq!(expected.map(|decision| decision.code()), Some(case.name));
                assert_eq!(auth_status, response.status, "{}: /v1/auth status", case.name);
                let built: BTreeMap<String, String> =
                    response.headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.clone())).collect();
                assert_eq!(auth_headers, built, "{}: /v1/auth headers", case.name);
                assert_eq!(auth_body.as_ref(), response.body.as_slice(), "{}: /v1/auth body", case.name);

                assert_eq!(decision["allowed"], false, "{}", case.name);
                assert_eq!(decision["headers"], json!({}), "{}", case.name);
                let rejection = &decision["rejection"];
                assert_eq!(rejection["status"], response.status, "{}", case.name);
                assert_eq!(rejection["body"].as_str().unwrap().as_bytes(), response.body.as_slice(), "{}", case.name);
                for (name, value) in &response.headers {
                    assert_eq!(rejection["headers"][name], value.as_str(), "{}: {name}", case.name);
                }
                let secret_matched = case.name != "invalid";
                assert_eq!(decision["key_id"].is_string(), secret_matched, "{}: {decision}", case.name);
                assert_eq!(decision["expires_at"].is_string(), secret_matched, "{}: {decision}", case.name);
            }
        }
    }
    server.stop().await;
}

fn compared(headers: &reqwest::header::HeaderMap) -> BTreeMap<String, String> {
    COMPARED_HEADERS
        .iter()
        .filter_map(|name| headers.get(*name).map(|value| ((*name).to_owned(), value.to_str().unwrap().to_owned())))
        .collect()
}

#[tokio::test]
async fn auth_sends_identity_headers() {
    let server = Server::start().await;
    let key = server.key("client", &["orders:read", "orders:write"]).await;

    let response = server
        .client
        .get(server.gateway_url("/v1/auth/orders/7"))
        .header("x-api-key", key.token.expose())
        .header("x-keyturn-scopes", "orders:read")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.headers()["keyturn-key-id"], key.record.key_id.as_str());
    assert_eq!(response.headers()["keyturn-owner"], "team-a");
    assert_eq!(response.headers()["keyturn-scopes"], "orders:read orders:write");

    let missing = server.client.get(server.url("/v1/auth")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND, "/v1/auth is served on the gateway listener only");
    server.stop().await;
}

#[tokio::test]
async fn auth_maps_other_statuses_for_nginx() {
    let server = Server::start().await;
    let key = server.key("client", &["orders:read"]).await;
    let exposed = format!("/orders?api_key={}", key.token.expose());

    let plain = server
        .client
        .get(server.gateway_url("/v1/auth"))
        .header("authorization", format!("Bearer {}", key.token.expose()))
        .header("x-original-uri", &exposed)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);
    let problem: Value = plain.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_request");

    let nginx = server
        .client
        .get(server.gateway_url("/v1/auth"))
        .header("keyturn-gateway", "nginx")
        .header("x-original-uri", &exposed)
        .send()
        .await
        .unwrap();
    assert_eq!(nginx.status(), StatusCode::FORBIDDEN);
    assert_eq!(nginx.headers()["keyturn-status"], "400");
    let problem: Value = serde_json::from_slice(nginx.headers()["keyturn-problem"].as_bytes()).unwrap();
    assert_eq!(problem["code"], "invalid_request");
    assert!(!nginx.headers()["keyturn-problem"].to_str().unwrap().contains(key.token.expose()));

    let denied = server
        .client
        .get(server.gateway_url("/v1/auth"))
        .header("keyturn-gateway", "nginx")
        .header("x-keyturn-scopes", "orders:write")
        .bearer_auth(key.token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert_eq!(denied.headers()["keyturn-status"], "403");

    let other = server.key("never verified", &[]).await;
    let other = other.token.expose();
    server.store.set_down(true);
    server.keyring.sync_cache().await.unwrap_err();
    for (mode, status) in [("envoy", StatusCode::SERVICE_UNAVAILABLE), ("nginx", StatusCode::FORBIDDEN)] {
        let down = server
            .client
            .get(server.gateway_url("/v1/auth"))
            .header("keyturn-gateway", mode)
            .bearer_auth(other)
            .send()
            .await
            .unwrap();
        assert_eq!(down.status(), status, "{mode}");
        assert_eq!(down.headers()["retry-after"], "1", "{mode}");
        let problem: Value = down.json().await.unwrap();
        assert_eq!(problem["code"], "store_unavailable", "{mode}");
    }
    server.stop().await;
}

#[tokio::test]
async fn auth_rejects_bad_scopes_header_as_internal() {
    let server = Server::start().await;
    let key = server.key("client", &["orders:read"]).await;
    let response = server
        .client
        .get(server.gateway_url("/v1/auth"))
        .bearer_auth(key.token.expose())
        .header("x-keyturn-scopes", "orders:read bad\"scope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "internal");
    server.stop().await;
}

#[tokio::test]
async fn verify_body_errors_never_quote_values() {
    let server = Server::start().await;
    let verifier = server.lasting_key("verifier", &["keyturn:verify"]).await;
    let key = server.key("client", &["orders:read"]).await;
    let token = key.token.expose();

    let bodies = [
        json!({"token": 5, "scopes": [token]}),
        json!({"token": token, "scopes": token}),
        json!({"token": token, "scopes": [format!("{token} x")]}),
        json!({"token": token, token: true}),
    ];
    for body in bodies {
        let response = server.client.post(server.url("/v1/verify")).bearer_auth(verifier.token.expose()).json(&body);
        let response = response.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let text = response.text().await.unwrap();
        assert!(!text.contains(&token[20..]), "an error body quoted the token: {text}");
    }

    let no_scope = server.key("plain", &["orders:read"]).await;
    let response = server.client.post(server.url("/v1/verify")).bearer_auth(no_scope.token.expose());
    let response = response.json(&json!({"token": token})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    server.store.set_down(true);
    server.keyring.sync_cache().await.unwrap_err();
    let response = server.client.post(server.url("/v1/verify")).bearer_auth(verifier.token.expose());
    let response = response.json(&json!({"token": token})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    server.stop().await;
}
