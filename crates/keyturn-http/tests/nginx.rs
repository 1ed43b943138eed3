//! Runs the nginx configuration of `examples/nginx` with a real nginx in front of a small
//! upstream, all on 127.0.0.1, and checks what the client and the upstream see: identity headers,
//! lifecycle headers, and keyturn's problem responses on rejection. nginx is started and stopped
//! by pid. The test is skipped, saying so, only when no nginx binary is installed; `.ci/run`
//! installs one.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::get;
use common::*;
use keyturn::core::{Duration as KeyDuration, Expiry};
use keyturn::{Caller, NewKey};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A running nginx master process, stopped with SIGTERM when dropped.
struct Nginx {
    child: Child,
    prefix: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx", "/usr/local/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts an upstream that answers every request with the identity headers it received.
async fn start_upstream() -> SocketAddr {
    async fn echo(headers: HeaderMap) -> axum::Json<Value> {
        let text = |name: &str| headers.get(name).map(|value| value.to_str().unwrap().to_owned());
        axum::Json(json!({
            "key_id": text("keyturn-key-id"),
            "owner": text("keyturn-owner"),
            "scopes": text("keyturn-scopes"),
            "authorization": text("authorization").is_some(),
        }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().route("/{*path}", get(echo))).await });
    address
}

async fn start_nginx(binary: &Path, dir: &Path, gateway: SocketAddr, upstream: SocketAddr) -> (Nginx, u16) {
    let port = free_port();
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/nginx/nginx.conf"))
        .expect("read examples/nginx/nginx.conf");
    let config = template
        .replace("@PREFIX@", dir.to_str().unwrap())
        .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
        .replace("@KEYTURN_GATEWAY@", &gateway.to_string())
        .replace("@UPSTREAM@", &upstream.to_string());
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).unwrap();

    // A worker started by root runs as nobody, which cannot write to this private directory.
    let child = Command::new(binary)
        .args(["-p", dir.to_str().unwrap(), "-c", config_path.to_str().unwrap(), "-g", "daemon off; user root;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let nginx = Nginx { child, prefix: dir.to_path_buf() };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return (nginx, port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(nginx.prefix.join("error.log")).unwrap_or_default();
    panic!("nginx did not listen on 127.0.0.1:{port} within 5 s; error.log:\n{log}");
}

#[tokio::test]
async fn nginx_example_protects_upstream() {
    let Some(binary) = nginx_binary() else {
        eprintln!("skipping nginx_example_protects_upstream: no nginx binary; install it with `apt-get install nginx`");
        return;
    };
    let server = Server::start().await;
    let upstream = start_upstream().await;
    let nginx_dir = tempfile::tempdir().unwrap();
    let (nginx, port) = start_nginx(&binary, nginx_dir.path(), server.gateway, upstream).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let responses = &server.keyring.config().responses;

    let reader = server.key("reader", &["orders:read"]).await;
    let response = server
        .client
        .get(url("/orders/7"))
        .bearer_auth(reader.token.expose())
        .header("keyturn-key-id", "forgedForged")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("api-key-status").is_none());
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["key_id"], reader.record.key_id.as_str(), "the upstream got the verified key id: {seen}");
    assert_eq!(seen["owner"], "team-a");
    assert_eq!(seen["scopes"], "orders:read");

    let expiring = NewKey {
        name: "expiring".into(),
        scopes: scopes(&["orders:read"]),
        expiry: Some(Expiry::After(KeyDuration::from_days(3))),
        ..NewKey::default()
    };
    let expiring = server.keyring.create(expiring, &Caller::cli()).await.unwrap();
    let response = server.client.get(url("/orders")).header("x-api-key", expiring.token.expose()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["api-key-status"], "expiring");
    assert_eq!(response.headers()["api-key-expires"], "Mon, 18 Jan 2027 08:00:00 GMT");

    let response = server.client.get(url("/orders")).send().await.unwrap();
    let expected = responses.missing_credentials();
    assert_eq!(response.status().as_u16(), expected.status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"api\"");
    assert_eq!(response.headers().get_all("www-authenticate").iter().count(), 1);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.bytes().await.unwrap().as_ref(), expected.body.as_slice());

    let writer_only = server.key("writer", &["orders:write"]).await;
    let response = server.client.get(url("/orders")).bearer_auth(writer_only.token.expose()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"orders:read\"";
    assert_eq!(response.headers()["www-authenticate"], challenge);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "insufficient_scope");
    assert_eq!(problem["key_id"], writer_only.record.key_id.as_str());

    let exposed = url(&format!("/orders?api_key={}", reader.token.expose()));
    let response = server.client.get(exposed).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_request");

    let unseen = server.key("unseen", &["orders:read"]).await;
    server.store.set_down(true);
    server.keyring.sync_cache().await.unwrap_err();
    let response = server.client.get(url("/orders")).bearer_auth(unseen.token.expose()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let expected = responses.store_unavailable();
    assert_eq!(response.bytes().await.unwrap().as_ref(), expected.body.as_slice());
    server.store.set_down(false);

    let access_log = std::fs::read_to_string(nginx.prefix.join("access.log")).unwrap();
    assert!(!access_log.contains(&reader.token.expose()[20..]), "the access log kept a token: {access_log}");
    drop(nginx);
    server.stop().await;
}

#[tokio::test]
async fn nginx_example_sends_503_when_keyturn_is_unreachable() {
    let Some(binary) = nginx_binary() else {
        eprintln!("skipping nginx_example_sends_503_when_keyturn_is_unreachable: no nginx binary");
        return;
    };
    let server = Server::start().await;
    let reader = server.key("reader", &["orders:read"]).await;
    let upstream = start_upstream().await;
    // Nothing listens on this port, so every auth subrequest fails to connect.
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let nginx_dir = tempfile::tempdir().unwrap();
    let (nginx, port) = start_nginx(&binary, nginx_dir.path(), closed, upstream).await;

    let url = format!("http://127.0.0.1:{port}/orders");
    let response = server.client.get(url).bearer_auth(reader.token.expose()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "store_unavailable");
    assert_eq!(problem["status"], 503);
    assert!(problem.get("key_id").is_none(), "{problem}");
    drop(nginx);
    server.stop().await;
}
