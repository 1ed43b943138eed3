//! The server's own endpoints and lifecycle over real HTTP: health and readiness checks,
//! Prometheus metrics, request timeouts, and graceful shutdown that writes queued usage.

mod common;

use std::time::Duration;

use common::*;
use keyturn::core::Outcome;
use keyturn::{Config, Consistency};
use keyturn_http::Limits;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn health_and_readiness() {
    let server = Server::start().await;
    for url in [server.url("/healthz"), server.gateway_url("/healthz")] {
        let response = server.client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
    }
    let ready = server.client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    server.store.set_down(true);
    let ready = server.client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.headers()["retry-after"], "1");
    let problem: Value = ready.json().await.unwrap();
    assert_eq!(problem["code"], "store_unavailable");
    let alive = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), StatusCode::OK, "the process is up while its store is down");
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_outcomes_and_routes() {
    let server = Server::start().await;
    let reader = server.key("reader", &["keyturn:keys:read"]).await;
    let client = server.key("client", &["orders:read"]).await;
    server.client.get(server.url("/v1/keys")).bearer_auth(reader.token.expose()).send().await.unwrap();
    server.client.get(server.url("/v1/keys")).send().await.unwrap();
    let auth = server.client.get(server.gateway_url("/v1/auth")).bearer_auth(client.token.expose());
    auth.header("x-keyturn-scopes", "orders:write").send().await.unwrap();
    server.store.set_down(true);
    server.client.get(server.url("/readyz")).send().await.unwrap();
    server.store.set_down(false);

    let response = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    for line in [
        r#"keyturn_verifications_total{endpoint="admin",outcome="active"} 1"#,
        r#"keyturn_verifications_total{endpoint="admin",outcome="missing_credentials"} 1"#,
        r#"keyturn_verifications_total{endpoint="auth",outcome="insufficient_scope"} 1"#,
        r#"keyturn_admin_requests_total{method="GET",route="/v1/keys",status="200"} 1"#,
        r#"keyturn_admin_requests_total{method="GET",route="/v1/keys",status="401"} 1"#,
        "keyturn_verify_duration_seconds_count 3",
        "keyturn_store_errors_total 1",
    ] {
        assert!(text.lines().any(|metric| metric == line), "missing {line:?} in\n{text}");
    }
    server.stop().await;
}

/// Returns the value of the unlabelled metric `name` in a `/metrics` body.
fn metric_value(text: &str, name: &str) -> u64 {
    let line = text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' '));
    let value = line.unwrap_or_else(|| panic!("missing {name} in\n{text}"));
    value.parse().unwrap_or_else(|error| panic!("invalid value {value:?} of {name}: {error}"))
}

#[tokio::test]
async fn metrics_count_cache_hits_and_misses() {
    // The change follower syncs once at start and then not for an hour, so no eviction can fall
    // between the two verifications, and the cache stays fresh however slowly the test runs.
    let hour = Duration::from_secs(3600);
    let consistency = Consistency { max_staleness: hour, poll_interval: hour, ..Consistency::default() };
    let server = Server::with_config(Config { consistency, ..Config::default() }, Limits::default()).await;
    let key = server.key("client", &["orders:read"]).await;
    let scrape = || async { server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap() };

    let mut text = scrape().await;
    for _ in 0..100 {
        if metric_value(&text, "keyturn_cache_fresh") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = scrape().await;
    }
    assert_eq!(metric_value(&text, "keyturn_cache_fresh"), 1, "the change follower did not sync within 2 s");
    assert!(text.contains("# TYPE keyturn_cache_hits counter\n"), "{text}");
    assert!(text.contains("# TYPE keyturn_cache_misses counter\n"), "{text}");
    assert!(text.contains("# TYPE keyturn_cache_fresh gauge\n"), "{text}");
    let hits = metric_value(&text, "keyturn_cache_hits_total");
    let misses = metric_value(&text, "keyturn_cache_misses_total");

    for _ in 0..2 {
        let response = server.client.get(server.gateway_url("/v1/auth")).bearer_auth(key.token.expose()).send();
        assert_eq!(response.await.unwrap().status(), StatusCode::NO_CONTENT);
    }

    let text = scrape().await;
    assert_eq!(metric_value(&text, "keyturn_cache_misses_total"), misses + 1, "the first verification reads the store");
    assert_eq!(metric_value(&text, "keyturn_cache_hits_total"), hits + 1, "the second verification hits the cache");
    assert_eq!(metric_value(&text, "keyturn_cache_fresh"), 1);
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_flushes_usage() {
    let config = Config { flush_interval: Duration::from_secs(3600), ..Config::default() };
    let server = Server::with_config(config, Limits::default()).await;
    let key = server.key("client", &["orders:read"]).await;
    let verify = || server.client.get(server.gateway_url("/v1/auth")).bearer_auth(key.token.expose()).send();
    // The first use of a key wakes the writer at once; wait until that flush has landed.
    assert_eq!(verify().await.unwrap().status(), StatusCode::NO_CONTENT);
    let store = server.store.clone();
    let written = vec![(Outcome::Active, 1)];
    for _ in 0..100 {
        if store.inner_usage(&key.record.key_id).await == written {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.inner_usage(&key.record.key_id).await, written, "the first use was not written within 2 s");
    for _ in 0..3 {
        assert_eq!(verify().await.unwrap().status(), StatusCode::NO_CONTENT);
    }
    // The writer's next flush is an hour away, so the last three uses are still queued.
    assert_eq!(store.inner_usage(&key.record.key_id).await, written);

    server.stop().await;
    assert_eq!(store.inner_usage(&key.record.key_id).await, vec![(Outcome::Active, 4)]);
}

#[tokio::test]
async fn stopped_server_refuses_connections() {
    let server = Server::start().await;
    let api = server.url("/healthz");
    let client = server.client.clone();
    server.stop().await;
    let error = client.get(&api).timeout(Duration::from_secs(2)).send().await.unwrap_err();
    assert!(error.is_connect(), "{error}");
}

#[tokio::test]
async fn slow_request_times_out_with_problem() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let limits = Limits { request_timeout: Duration::from_millis(200), ..Limits::default() };
    let server = Server::with_limits(limits).await;
    let admin = server.key("admin", &["keyturn:admin"]).await;
    let mut stream = tokio::net::TcpStream::connect(server.api).await.unwrap();
    let head = format!(
        "POST /v1/keys HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\nConnection: close\r\n\r\n{{\"name\":",
        server.api,
        admin.token.expose()
    );
    stream.write_all(head.as_bytes()).await.unwrap();

    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer)).await;
    read.expect("the server answered within 5 s").unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");
    server.stop().await;
}

/// Reads from `stream` until the server closes it, and returns what arrived and how long it took.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> (String, Duration) {
    use tokio::io::AsyncReadExt;

    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
    // A reset instead of a clean close also ends the connection.
    let _ = read.expect("the server closed the connection within 5 s");
    (String::from_utf8_lossy(&received).into_owned(), started.elapsed())
}

#[tokio::test]
async fn slow_headers_close_connection() {
    use tokio::io::AsyncWriteExt;

    let limits = Limits { header_read_timeout: Duration::from_millis(300), ..Limits::default() };
    let server = Server::with_limits(limits).await;
    let mut stream = tokio::net::TcpStream::connect(server.api).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: keyturn\r\n").await.unwrap();

    let (received, elapsed) = read_until_closed(&mut stream).await;
    assert!(!received.contains("200 OK"), "{received}");
    assert!(elapsed >= Duration::from_millis(250), "closed after {elapsed:?}");
    server.stop().await;
}

#[tokio::test]
async fn idle_connection_closes_after_header_timeout() {
    use tokio::io::AsyncWriteExt;

    let limits = Limits { header_read_timeout: Duration::from_millis(300), ..Limits::default() };
    let server = Server::with_limits(limits).await;
    let mut stream = tokio::net::TcpStream::connect(server.api).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: keyturn\r\n\r\n").await.unwrap();

    let (received, _) = read_until_closed(&mut stream).await;
    assert!(received.starts_with("HTTP/1.1 200 OK"), "{received}");
    server.stop().await;
}

#[tokio::test]
async fn body_not_awaited_before_authentication() {
    use tokio::io::AsyncWriteExt;

    let server = Server::start().await;
    for path in ["/v1/keys", "/v1/verify"] {
        let mut stream = tokio::net::TcpStream::connect(server.api).await.unwrap();
        // The client announces a body and never sends it.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: keyturn\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();

        let (received, elapsed) = read_until_closed(&mut stream).await;
        assert!(received.starts_with("HTTP/1.1 401"), "{path}: {received}");
        assert!(received.contains("\"code\":\"missing_credentials\""), "{path}: {received}");
        assert!(elapsed < Limits::default().request_timeout, "{path}: answered after {elapsed:?}");
    }
    server.stop().await;
}
