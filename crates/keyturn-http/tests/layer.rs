//! The axum layer against `Keyring::authenticate`: for every outcome, the same token at the same
//! instant gets the same status, headers and body through the layer as the keyring builds. The
//! requests go to the router in memory; the keyring runs on a real SQLite file.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use common::*;
use keyturn::core::{Duration, Scopes};
use keyturn::{AuthRequest, Authentication, Caller, Keyring, RotateOptions};
use keyturn_http::{KeyturnLayer, VerifiedKey};
use tower::ServiceExt;

const HANDLER_BODY: &str = "handled";

/// One request: its credential headers and query, and the scopes the route requires.
struct Case {
    name: &'static str,
    authorization: Option<String>,
    query: Option<String>,
    required: &'static [&'static str],
}

async fn handler(Extension(key): Extension<VerifiedKey>) -> ([(&'static str, String); 1], &'static str) {
    ([("x-verified-key", key.record.key_id.to_string())], HANDLER_BODY)
}

/// Sends `case` through the layer and returns status, every header except `x-verified-key`
/// and `content-length`, and the body.
async fn through_layer(keyring: &std::sync::Arc<Keyring>, case: &Case) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let layer = KeyturnLayer::new(keyring.clone()).require(scopes(case.required));
    let app = Router::new().route("/orders", get(handler)).layer(layer);
    let uri = match &case.query {
        Some(query) => format!("/orders?{query}"),
        None => "/orders".to_owned(),
    };
    let mut request = Request::get(uri);
    if let Some(authorization) = &case.authorization {
        request = request.header("authorization", authorization);
    }
    let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();

    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "x-verified-key" && *name != "content-length")
        .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap().to_owned()))
        .collect();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec();
    (status, headers, body)
}

/// Builds what the layer must send for `case`, from `Keyring::authenticate` directly.
async fn expected(keyring: &Keyring, case: &Case) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let authorization: Vec<&str> = case.authorization.iter().map(String::as_str).collect();
    let query: Vec<(String, String)> = form_urlencoded::parse(case.query.as_deref().unwrap_or("").as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let query: Vec<(&str, &str)> = query.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let request = AuthRequest { authorization: &authorization, api_key: &[], query: &query, client_addr: None };
    let lower = |headers: &[(&str, String)]| -> Vec<(String, String)> {
        headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.clone())).collect()
    };

    match keyring.authenticate(&request, &scopes(case.required)).await {
        Authentication::Allowed { headers, .. } => {
            let mut all = lower(&[("content-type", "text/plain; charset=utf-8".to_owned())]);
            all.extend(lower(&headers));
            (200, all, HANDLER_BODY.as_bytes().to_vec())
        }
        Authentication::Rejected { response, .. } => (response.status, lower(&response.headers), response.body),
    }
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

#[tokio::test]
async fn layer_matches_authenticate_for_every_outcome() {
    let server = Server::start().await;
    let keyring = server.keyring.clone();
    let now = T0 + 200 * DAY;
    let create = |name: &'static str, at: i64| {
        let server = &server;
        async move {
            server.at(at);
            server.key(name, &["orders:read"]).await
        }
    };

    let expired = create("expired", now - 100 * DAY).await;
    let grace = create("grace", now - 92 * DAY).await;
    let expiring = create("expiring", now - 80 * DAY).await;
    let rotated = create("rotated", now - 10 * DAY).await;
    server.at(now - 5 * DAY);
    let one_day = RotateOptions { overlap: Some(Duration::from_days(1)), ..RotateOptions::default() };
    server.keyring.rotate(&rotated.record.key_id, &one_day, &Caller::cli()).await.unwrap();
    let superseded = create("superseded", now - DAY).await;
    server.at(now - 3_600_000);
    server.keyring.rotate(&superseded.record.key_id, &one_day, &Caller::cli()).await.unwrap();
    let revoked = create("revoked", now - DAY).await;
    server.keyring.revoke(&revoked.record.key_id, Some("leaked"), &Caller::cli()).await.unwrap();
    let active = create("active", now).await;

    let case = |name, token: &keyturn::Issued, required| Case {
        name,
        authorization: bearer(token.token.expose()),
        query: None,
        required,
    };
    let cases = [
        case("active", &active, &["orders:read"]),
        case("expiring", &expiring, &["orders:read"]),
        case("grace", &grace, &["orders:read"]),
        case("superseded", &superseded, &["orders:read"]),
        case("rotated", &rotated, &["orders:read"]),
        case("expired", &expired, &["orders:read"]),
        case("revoked", &revoked, &["orders:read"]),
        case("insufficient scope", &active, &["orders:write"]),
        Case { name: "invalid", authorization: bearer("kt_live_nonsense"), query: None, required: &[] },
        Case { name: "missing credentials", authorization: None, query: None, required: &[] },
        Case {
            name: "token in query",
            authorization: None,
            query: Some(format!("api_key={}", active.token.expose())),
            required: &[],
        },
    ];

    for case in &cases {
        let want = expected(&keyring, case).await;
        let got = through_layer(&keyring, case).await;
        assert_eq!(got.0, want.0, "status of {}", case.name);
        assert_eq!(got.1, want.1, "headers of {}", case.name);
        assert_eq!(got.2, want.2, "body of {}", case.name);
    }
    server.stop().await;
}

#[tokio::test]
async fn layer_statuses_per_outcome() {
    let server = Server::start().await;
    let key = server.key("client", &["orders:read"]).await;
    let app = Router::new()
        .route("/orders", get(handler))
        .layer(KeyturnLayer::new(server.keyring.clone()).require(Scopes::parse(["orders:read"]).unwrap()));

    let allowed = Request::get("/orders").header("authorization", format!("Bearer {}", key.token.expose()));
    let response = app.clone().oneshot(allowed.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-verified-key"], key.record.key_id.as_str());

    let missing = Request::get("/orders").body(Body::empty()).unwrap();
    let response = app.oneshot(missing).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn public_layer_rejects_token_in_query() {
    let server = Server::start().await;
    let key = server.key("client", &[]).await;
    let app =
        Router::new().route("/health", get(|| async { "ok" })).layer(KeyturnLayer::public(server.keyring.clone()));

    let plain = Request::get("/health").body(Body::empty()).unwrap();
    assert_eq!(app.clone().oneshot(plain).await.unwrap().status(), StatusCode::OK);
    let leaked = Request::get(format!("/health?token={}", key.token.expose())).body(Body::empty()).unwrap();
    assert_eq!(app.oneshot(leaked).await.unwrap().status(), StatusCode::BAD_REQUEST);

    // The exposure is queued for the background writer, so flush before reading the audit.
    server.keyring.flush().await.unwrap();
    let events = server.keyring.audit(&Default::default()).await.unwrap();
    assert!(events.iter().any(|row| row.event.event.as_str() == "authn_token_exposed"));
    server.stop().await;
}
