//! The brute-force guard over loopback: 429 with `Retry-After` and a problem body on the API and
//! gateway listeners, valid keys from a blocked address, the guard's metrics, and
//! `X-Forwarded-For` ignored from an untrusted peer and honoured from a trusted proxy. The axum
//! layer is checked in memory, with the peer address set as `ConnectInfo`.

mod common;

use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use common::*;
use keyturn::core::{AuditEventType, KeyId, TokenFormat, TrustedProxies};
use keyturn::store::AuditFilter;
use keyturn::{Config, GuardConfig, Issued};
use keyturn_http::{KeyturnLayer, Limits};
use rand_core::OsRng;
use reqwest::Response;
use tower::ServiceExt;

const MAX_FAILURES: u32 = 3;

fn guarded(trusted_proxies: &[&str]) -> Config {
    let minute = StdDuration::from_secs(60);
    Config {
        guard: Some(GuardConfig::new(MAX_FAILURES, minute, minute).unwrap()),
        trusted_proxies: TrustedProxies::parse(trusted_proxies).unwrap(),
        ..Config::default()
    }
}

/// Returns a well-formed token with a valid checksum for the key of `issued` and another secret.
fn wrong_secret(issued: &Issued) -> String {
    TokenFormat::default().generate(&issued.record.key_id, &mut OsRng).expose().to_owned()
}

async fn list_keys(server: &Server, token: &str, forwarded_for: Option<&str>) -> Response {
    let mut request = server.client.get(server.url("/v1/keys")).bearer_auth(token);
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("X-Forwarded-For", forwarded_for);
    }
    request.send().await.unwrap()
}

async fn guard_events(server: &Server) -> Vec<keyturn::core::AuditEvent> {
    server.keyring.flush().await.unwrap();
    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenFailMax), ..AuditFilter::default() };
    server.keyring.audit(&filter).await.unwrap()
}

fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|value| value.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn blocked_client_gets_429_problem() {
    let server = Server::with_config(guarded(&[]), Limits::default()).await;
    let reader = server.key("reader", &["keyturn:keys:read"]).await;
    let wrong = wrong_secret(&reader);

    for attempt in 1..=MAX_FAILURES {
        let response = list_keys(&server, &wrong, None).await;
        assert_eq!(response.status().as_u16(), 401, "failure {attempt}");
    }
    let response = list_keys(&server, &wrong, None).await;
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(header(&response, "retry-after").as_deref(), Some("60"));
    assert_eq!(header(&response, "content-type").as_deref(), Some("application/problem+json"));
    assert_eq!(header(&response, "cache-control").as_deref(), Some("no-store"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:keyturn:problem:too_many_requests");
    assert_eq!(body["code"], "too_many_requests");
    assert_eq!(body["status"], 429);

    let response = list_keys(&server, reader.token.expose(), None).await;
    assert_eq!(response.status().as_u16(), 200, "a valid key from the blocked address was throttled");
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_throttled_requests() {
    let server = Server::with_config(guarded(&[]), Limits::default()).await;
    let reader = server.key("reader", &["keyturn:keys:read"]).await;
    let wrong = wrong_secret(&reader);
    for _ in 0..MAX_FAILURES + 3 {
        list_keys(&server, &wrong, None).await;
    }

    let text = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "keyturn_guard_throttled_total 3",
        "keyturn_guard_blocks_total 1",
        "keyturn_guard_blocked_clients 1",
        "keyturn_guard_tracked_clients 1",
        r#"keyturn_verifications_total{endpoint="admin",outcome="too_many_requests"} 3"#,
    ] {
        assert!(text.lines().any(|metric| metric == line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("127.0.0.1"), "a client address appears in the metrics");
    server.stop().await;
}

#[tokio::test]
async fn forwarded_for_ignored_from_untrusted_peer() {
    let server = Server::with_config(guarded(&[]), Limits::default()).await;
    let reader = server.key("reader", &["keyturn:keys:read"]).await;
    let wrong = wrong_secret(&reader);

    for index in 0..MAX_FAILURES {
        let spoofed = format!("198.51.100.{index}");
        assert_eq!(list_keys(&server, &wrong, Some(&spoofed)).await.status().as_u16(), 401);
    }
    let response = list_keys(&server, &wrong, Some("198.51.100.200")).await;
    assert_eq!(response.status().as_u16(), 429, "a new X-Forwarded-For value escaped the block");

    let events = guard_events(&server).await;
    assert_eq!(events.len(), 1);
    let client_addr = events[0].event.client_addr.as_deref().unwrap();
    assert!(client_addr.starts_with("127.0.0.1:"), "{client_addr}");
    assert_eq!(events[0].event.details["counted_as"], "127.0.0.1");
    server.stop().await;
}

#[tokio::test]
async fn forwarded_for_honoured_from_trusted_peer() {
    let server = Server::with_config(guarded(&["127.0.0.0/8", "::1"]), Limits::default()).await;
    let reader = server.key("reader", &["keyturn:keys:read"]).await;
    let wrong = wrong_secret(&reader);
    // The client wrote the left entry itself; the proxy appended the address it saw.
    let forwarded = "203.0.113.250, 198.51.100.7";

    for _ in 0..MAX_FAILURES {
        assert_eq!(list_keys(&server, &wrong, Some(forwarded)).await.status().as_u16(), 401);
    }
    assert_eq!(list_keys(&server, &wrong, Some(forwarded)).await.status().as_u16(), 429);
    let response = list_keys(&server, &wrong, Some("198.51.100.8")).await;
    assert_eq!(response.status().as_u16(), 401, "another forwarded client was throttled");
    let response = list_keys(&server, &wrong, None).await;
    assert_eq!(response.status().as_u16(), 401, "the proxy itself was throttled");

    let events = guard_events(&server).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.client_addr.as_deref(), Some("198.51.100.7"));
    server.stop().await;
}

#[tokio::test]
async fn trusted_proxy_client_recorded_in_admin_audit() {
    let server = Server::with_config(guarded(&["127.0.0.1"]), Limits::default()).await;
    let writer = server.key("writer", &["keyturn:keys:write"]).await;
    let target = server.key("target", &[]).await;

    let url = server.url(&format!("/v1/keys/{}/revoke", target.record.key_id));
    let response = server
        .client
        .post(url)
        .bearer_auth(writer.token.expose())
        .header("X-Forwarded-For", "198.51.100.9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenRevoked), ..AuditFilter::default() };
    let events = server.keyring.audit(&filter).await.unwrap();
    assert_eq!(events[0].event.client_addr.as_deref(), Some("198.51.100.9"));
    server.stop().await;
}

#[tokio::test]
async fn gateway_throttles_forwarded_client() {
    let server = Server::with_config(guarded(&[]), Limits::default()).await;
    let client_key = server.key("client", &[]).await;
    let unknown = TokenFormat::default().generate(&KeyId::parse("ZZZZZZZZZZZZ").unwrap(), &mut OsRng);
    let send = |token: String, nginx: bool| {
        let mut request = server
            .client
            .get(server.gateway_url("/v1/auth"))
            .bearer_auth(token)
            .header("X-Forwarded-For", "192.0.2.44");
        if nginx {
            request = request.header("Keyturn-Gateway", "nginx");
        }
        request.send()
    };

    for _ in 0..MAX_FAILURES {
        assert_eq!(send(unknown.expose().to_owned(), false).await.unwrap().status().as_u16(), 401);
    }
    let response = send(unknown.expose().to_owned(), false).await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(header(&response, "retry-after").as_deref(), Some("60"));

    let response = send(unknown.expose().to_owned(), true).await.unwrap();
    assert_eq!(response.status().as_u16(), 403, "nginx accepts only 401 and 403 from auth_request");
    assert_eq!(header(&response, "keyturn-status").as_deref(), Some("429"));
    assert_eq!(header(&response, "retry-after").as_deref(), Some("60"));

    let response = send(client_key.token.expose().to_owned(), false).await.unwrap();
    assert_eq!(response.status().as_u16(), 204, "a valid key from the blocked client was throttled");

    let events = guard_events(&server).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.client_addr.as_deref(), Some("192.0.2.44"));
    server.stop().await;
}

#[tokio::test]
async fn layer_throttles_by_peer_and_trusted_proxy() {
    let server = Server::with_config(guarded(&["10.0.0.0/8"]), Limits::default()).await;
    let client_key = server.key("client", &[]).await;
    let wrong = wrong_secret(&client_key);
    let app =
        Router::new().route("/orders", get(|| async { "orders" })).layer(KeyturnLayer::new(server.keyring.clone()));
    let send = |token: &str, peer: &str, forwarded_for: Option<&str>| {
        let mut request = axum::http::Request::get("/orders").header("authorization", format!("Bearer {token}"));
        if let Some(forwarded_for) = forwarded_for {
            request = request.header("x-forwarded-for", forwarded_for);
        }
        let mut request = request.body(Body::empty()).unwrap();
        request.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let app = app.clone();
        async move { app.oneshot(request).await.unwrap().status().as_u16() }
    };

    for _ in 0..MAX_FAILURES {
        assert_eq!(send(&wrong, "192.0.2.10:4000", Some("198.51.100.1")).await, 401);
    }
    assert_eq!(send(&wrong, "192.0.2.10:4001", Some("198.51.100.2")).await, 429, "untrusted peer escaped");
    assert_eq!(send(client_key.token.expose(), "192.0.2.10:4002", None).await, 200);

    for _ in 0..MAX_FAILURES {
        assert_eq!(send(&wrong, "10.0.0.5:4000", Some("198.51.100.3")).await, 401);
    }
    assert_eq!(send(&wrong, "10.0.0.6:4000", Some("198.51.100.3")).await, 429, "forwarded client escaped");
    assert_eq!(send(&wrong, "10.0.0.5:4000", Some("198.51.100.4")).await, 401, "the proxy was throttled");
    server.stop().await;
}
