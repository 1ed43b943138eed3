//! Sends a real token where it does not belong: in a path, a method, JSON members and their names,
//! durations, instants, scopes and the gateway's scopes header. Checks that no response body, no
//! response header and no log line captured at trace level contains it.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use reqwest::{Method, RequestBuilder};
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

/// Sends a request and returns its status with its headers and body as one text.
async fn exchange(request: RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let mut text = String::new();
    for (name, value) in response.headers() {
        text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
    }
    text.push_str(&response.text().await.unwrap());
    (status, text)
}

fn assert_no_token(text: &str, token: &str, case: &str) {
    let secret = &token[token.len() - 36..token.len() - 6];
    assert!(!text.contains(token), "{case}: the token appeared: {text}");
    assert!(!text.contains(secret), "{case}: the secret appeared: {text}");
}

#[tokio::test]
async fn token_never_echoed_in_errors_or_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:admin"]).await;
    let admin_token = admin.token.expose().to_owned();
    let leaked = server.key("leaked", &["orders:read"]).await;
    let token = leaked.token.expose().to_owned();
    let target = server.key("target", &["orders:read"]).await;
    let rotate_path = format!("/v1/keys/{}/rotate", target.record.key_id);

    let create_bodies: Vec<(&str, Value)> = vec![
        ("wrong type", json!({"name": "n", "no_expiry": token})),
        ("wrong type in array", json!({"name": "n", "scopes": [1, token]})),
        ("unknown member", json!({"name": "n", token.as_str(): 1})),
        ("invalid scope", json!({"name": "n", "scopes": [format!("{token}!")]})),
        ("expires_in", json!({"name": "n", "expires_in": token})),
        ("expires_at", json!({"name": "n", "expires_at": token})),
        ("grace", json!({"name": "n", "grace": token})),
        ("warn_before", json!({"name": "n", "warn_before": token})),
        ("max_chain_lifetime", json!({"name": "n", "max_chain_lifetime": token})),
    ];
    for (case, body) in &create_bodies {
        let request = server.client.post(server.url("/v1/keys")).bearer_auth(&admin_token).json(body);
        let (status, text) = exchange(request).await;
        assert_eq!(status, 400, "{case}: {text}");
        assert_no_token(&text, &token, case);
        let named = match *case {
            "unknown member" => "expected one of `name`".to_owned(),
            "wrong type" | "wrong type in array" => "line 1 column".to_owned(),
            "invalid scope" => "scopes".to_owned(),
            member => format!("invalid {member}"),
        };
        assert!(text.contains(&named), "{case}: the detail lacks {named:?}: {text}");
    }

    let rotate_bodies: Vec<(&str, Value)> = vec![
        ("rotate overlap", json!({"overlap": token})),
        ("rotate expires_in", json!({"expires_in": token})),
        ("rotate expires_at", json!({"expires_at": token})),
        ("rotate unknown member", json!({token.as_str(): true})),
        ("rotate wrong type", json!({"replace_unused_successor": token})),
    ];
    for (case, body) in &rotate_bodies {
        let request = server.client.post(server.url(&rotate_path)).bearer_auth(&admin_token).json(body);
        let (status, text) = exchange(request).await;
        assert_eq!(status, 400, "{case}: {text}");
        assert_no_token(&text, &token, case);
    }

    let revoke_path = format!("/v1/keys/{}/revoke", target.record.key_id);
    let request = server
        .client
        .post(server.url(&revoke_path))
        .bearer_auth(&admin_token)
        .json(&json!({"reason": 1, token.as_str(): 2}));
    let (status, text) = exchange(request).await;
    assert_eq!(status, 400, "revoke body: {text}");
    assert_no_token(&text, &token, "revoke body");

    for url in [server.url(&format!("/x/{token}")), server.gateway_url(&format!("/x/{token}"))] {
        let (status, text) = exchange(server.client.get(&url)).await;
        assert_eq!(status, 404, "unknown path: {text}");
        assert_no_token(&text, &token, "unknown path");
    }

    let method = Method::from_bytes(token.as_bytes()).unwrap();
    for path in ["/v1/keys", "/nowhere"] {
        let request = server.client.request(method.clone(), server.url(path)).bearer_auth(&admin_token);
        let (status, text) = exchange(request).await;
        assert!(status == 404 || status == 405, "token as method on {path}: {status} {text}");
        assert_no_token(&text, &token, "token as method");
    }

    let mut not_text = token.clone().into_bytes();
    not_text.push(0xff);
    for scopes in [format!("orders:read {token}!").into_bytes(), not_text] {
        let value = reqwest::header::HeaderValue::from_bytes(&scopes).unwrap();
        let request = server.client.get(server.gateway_url("/v1/auth")).bearer_auth(&admin_token);
        let (status, text) = exchange(request.header("x-keyturn-scopes", value)).await;
        assert!(status >= 400, "bad scopes header: {status} {text}");
        assert_no_token(&text, &token, "bad scopes header");
    }

    server.keyring.flush().await.unwrap();
    server.stop().await;

    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(output.contains("keyturn::http"), "no line of the HTTP service was captured");
    for line in output.lines() {
        assert_no_token(line, &token, "log line");
    }
}
