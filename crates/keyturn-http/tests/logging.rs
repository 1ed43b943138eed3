//! Captures every log line of the server at trace level while keys are issued, rotated,
//! verified and rejected over HTTP, including tokens sent where they do not belong, and checks
//! that no token and no secret appears in the output.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
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

#[tokio::test]
async fn trace_logs_contain_no_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:admin"]).await;
    let mut tokens = vec![admin.token.expose().to_owned()];
    let admin_token = admin.token.expose();

    let created: Value = server
        .client
        .post(server.url("/v1/keys"))
        .bearer_auth(admin_token)
        .json(&json!({"name": "logged", "scopes": ["orders:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    tokens.push(token.clone());
    let key_id = created["key_id"].as_str().unwrap();
    let rotated: Value = server
        .client
        .post(server.url(&format!("/v1/keys/{key_id}/rotate")))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens.push(rotated["token"].as_str().unwrap().to_owned());

    for candidate in tokens.clone() {
        let mut wrong = candidate.clone();
        wrong.replace_range(25..26, if &candidate[25..26] == "A" { "B" } else { "A" });
        for sent in [candidate.as_str(), wrong.as_str()] {
            let auth = server.client.get(server.gateway_url("/v1/auth")).bearer_auth(sent);
            auth.header("x-keyturn-scopes", "orders:read").send().await.unwrap();
            let verify = server.client.post(server.url("/v1/verify")).bearer_auth(admin_token);
            verify.json(&json!({"token": sent, "scopes": ["orders:write"]})).send().await.unwrap();
            server.client.get(server.url(&format!("/v1/keys?api_key={sent}"))).send().await.unwrap();
            server.client.get(server.url(&format!("/v1/keys/{sent}"))).bearer_auth(admin_token).send().await.unwrap();
            let gateway = server.client.get(server.gateway_url("/v1/auth")).header("x-api-key", sent);
            gateway.header("x-original-uri", format!("/orders?token={sent}")).send().await.unwrap();
        }
    }
    server.keyring.flush().await.unwrap();
    server.stop().await;

    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(output.contains("TRACE") || output.contains("DEBUG"), "nothing was captured");
    assert!(output.contains("keyturn::http"), "no line of the HTTP service was captured");
    for token in &tokens {
        let secret = &token[token.len() - 36..token.len() - 6];
        assert!(!output.contains(secret), "a secret appeared in the logs");
        assert!(!output.contains(&secret[1..]), "a secret appeared in the logs");
    }
}
