//! `GET /v1/keys/migration-report` over real HTTP on loopback: the report's fields and statuses,
//! its owner filter and pages, the scope it requires, and its path next to `GET /v1/keys/{key_id}`.
//! Clients use their keys through the gateway endpoint, which records the `X-Forwarded-For`
//! address, and the keyring flushes the usage that the report reads.

mod common;

use common::*;
use keyturn::core::Duration;
use keyturn::{Caller, Issued, NewKey, RotateOptions};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Sends a request with an optional bearer token; returns the status and the JSON body.
async fn call(server: &Server, method: Method, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = server.client.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    (status, value)
}

/// Uses `key` through the gateway endpoint, as a client at `client` behind the gateway would.
async fn use_key(server: &Server, key: &Issued, client: &str) {
    let response = server
        .client
        .get(server.gateway_url("/v1/auth"))
        .bearer_auth(key.token.expose())
        .header("X-Forwarded-For", client)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT, "{} was rejected", key.record.key_id);
}

/// Rotates `key` now with an overlap window of `days` days and returns the successor.
async fn rotate(server: &Server, key: &Issued, days: i64) -> Issued {
    let options = RotateOptions { overlap: Some(Duration::from_days(days)), ..RotateOptions::default() };
    server.keyring.rotate(&key.record.key_id, &options, &Caller::cli()).await.unwrap()
}

fn key_ids(report: &Value) -> Vec<String> {
    report["keys"].as_array().unwrap().iter().map(|entry| entry["key_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn report_lists_statuses_over_http() {
    let server = Server::start().await;
    let reader = server.key("reader", &["keyturn:keys:read"]).await;
    let token = Some(reader.token.expose());
    let moved = server.key("moved", &[]).await;
    let both = server.key("both", &[]).await;
    let waiting = server.key("waiting", &[]).await;

    server.at(T0 + 1_000);
    let moved_successor = rotate(&server, &moved, 3).await;
    let both_successor = rotate(&server, &both, 1).await;
    let waiting_successor = rotate(&server, &waiting, 2).await;
    server.at(T0 + 2_000);
    use_key(&server, &moved, "192.0.2.1").await;
    use_key(&server, &waiting, "192.0.2.3").await;
    server.keyring.flush().await.unwrap();
    server.at(T0 + 3_000);
    use_key(&server, &moved_successor, "198.51.100.1").await;
    use_key(&server, &both_successor, "198.51.100.2").await;
    server.keyring.flush().await.unwrap();
    server.at(T0 + 4_000);
    use_key(&server, &both, "203.0.113.9").await;
    server.keyring.flush().await.unwrap();

    let (status, report) = call(&server, Method::GET, "/v1/keys/migration-report", token).await;

    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["next_cursor"], Value::Null);
    let expected = json!([
        {
            "key_id": both.record.key_id.as_str(), "name": "both", "owner": "team-a",
            "rotated_at": "2027-01-15T08:00:01Z", "overlap_ends_at": "2027-01-16T08:00:01Z",
            "last_used_at": "2027-01-15T08:00:04Z", "last_client_addr": "203.0.113.9", "uses_since_rotation": 1,
            "successor_id": both_successor.record.key_id.as_str(),
            "successor_first_used_at": "2027-01-15T08:00:03Z", "status": "both",
        },
        {
            "key_id": waiting.record.key_id.as_str(), "name": "waiting", "owner": "team-a",
            "rotated_at": "2027-01-15T08:00:01Z", "overlap_ends_at": "2027-01-17T08:00:01Z",
            "last_used_at": "2027-01-15T08:00:02Z", "last_client_addr": "192.0.2.3", "uses_since_rotation": 1,
            "successor_id": waiting_successor.record.key_id.as_str(),
            "successor_first_used_at": null, "status": "not_moved",
        },
        {
            "key_id": moved.record.key_id.as_str(), "name": "moved", "owner": "team-a",
            "rotated_at": "2027-01-15T08:00:01Z", "overlap_ends_at": "2027-01-18T08:00:01Z",
            "last_used_at": "2027-01-15T08:00:02Z", "last_client_addr": "192.0.2.1", "uses_since_rotation": 1,
            "successor_id": moved_successor.record.key_id.as_str(),
            "successor_first_used_at": "2027-01-15T08:00:03Z", "status": "moved",
        },
    ]);
    assert_eq!(report["keys"], expected);

    let events = server.keyring.audit(&Default::default()).await.unwrap();
    let read = events.last().unwrap();
    assert_eq!(read.event.event.as_str(), "authz_admin", "the report read is audited");
    assert_eq!(read.event.details["operation"], "migration_report");
    assert_eq!(read.event.details["parameters"], json!({ "owner": null, "limit": 100, "cursor": null }));
    assert_eq!(read.event.actor.to_stored(), format!("key:{}", reader.record.key_id));
    server.stop().await;
}

#[tokio::test]
async fn report_filters_by_owner_and_pages() {
    let server = Server::start().await;
    let reader = server.key("reader", &["keyturn:keys:read"]).await;
    let token = Some(reader.token.expose());
    let mut team_a = Vec::new();
    for days in [3, 1, 2] {
        let key = server.key(&format!("{days} days"), &[]).await;
        rotate(&server, &key, days).await;
        team_a.push(key.record.key_id.to_string());
    }
    let new = NewKey { name: "ops".into(), owner: Some("ops".into()), ..NewKey::default() };
    let ops = server.keyring.create(new, &Caller::cli()).await.unwrap();
    rotate(&server, &ops, 1).await;

    let (_, report) = call(&server, Method::GET, "/v1/keys/migration-report?owner=ops", token).await;
    assert_eq!(key_ids(&report), [ops.record.key_id.to_string()]);
    let (_, report) = call(&server, Method::GET, "/v1/keys/migration-report?owner=nobody", token).await;
    assert_eq!(report, json!({ "keys": [], "next_cursor": null }));

    let mut listed = Vec::new();
    let mut path = "/v1/keys/migration-report?owner=team-a&limit=2".to_owned();
    for _ in 0..10 {
        let (status, page) = call(&server, Method::GET, &path, token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        listed.extend(key_ids(&page));
        let Some(cursor) = page["next_cursor"].as_str() else { break };
        path = format!("/v1/keys/migration-report?owner=team-a&limit=2&cursor={cursor}");
    }
    assert_eq!(listed, [team_a[1].clone(), team_a[2].clone(), team_a[0].clone()], "the soonest end comes first");

    for bad in ["limit=0", "limit=1001", "cursor=short", "state=superseded"] {
        let (status, problem) = call(&server, Method::GET, &format!("/v1/keys/migration-report?{bad}"), token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
        assert_eq!(problem["code"], "invalid_parameter", "{bad}");
    }
    server.stop().await;
}

#[tokio::test]
async fn report_requires_keys_read_scope() {
    let server = Server::start().await;
    let writer = server.key("writer", &["keyturn:keys:write", "keyturn:audit:read"]).await;
    let admin = server.key("admin", &["keyturn:admin"]).await;
    let path = "/v1/keys/migration-report";

    let (status, problem) = call(&server, Method::GET, path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["code"], "missing_credentials");

    let (status, problem) = call(&server, Method::GET, path, Some(writer.token.expose())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["code"], "insufficient_scope");
    assert_eq!(problem["scope"], "keyturn:keys:read");
    assert!(problem.get("keys").is_none(), "a rejected request must not see the report: {problem}");

    let (status, report) = call(&server, Method::GET, path, Some(admin.token.expose())).await;
    assert_eq!(status, StatusCode::OK, "keyturn:admin grants every reserved scope: {report}");
    server.stop().await;
}

#[tokio::test]
async fn report_path_does_not_shadow_show_key() {
    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:keys:read", "keyturn:keys:write"]).await;
    let token = Some(admin.token.expose());
    let rotated = server.key("rotated", &[]).await;
    rotate(&server, &rotated, 1).await;

    let (status, report) = call(&server, Method::GET, "/v1/keys/migration-report", token).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(key_ids(&report), [rotated.record.key_id.to_string()]);

    let (status, shown) = call(&server, Method::GET, &format!("/v1/keys/{}", rotated.record.key_id), token).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["state"], "superseded");

    // Paths that only resemble the report still reach the key handlers, which reject the id.
    for path in ["/v1/keys/migration-reports", "/v1/keys/Migration-Report"] {
        let (status, problem) = call(&server, Method::GET, path, token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
        assert_eq!(problem["code"], "invalid_parameter", "{path}");
    }
    let (status, problem) = call(&server, Method::POST, "/v1/keys/migration-report/rotate", token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["code"], "invalid_parameter");

    let post = server.client.post(server.url("/v1/keys/migration-report")).bearer_auth(admin.token.expose());
    assert_eq!(post.send().await.unwrap().status(), StatusCode::METHOD_NOT_ALLOWED);
    let keys = server.keyring.list(&keyturn::ListFilter::default()).await.unwrap();
    assert_eq!(keys.len(), 3, "no request above changed the store");
    server.stop().await;
}
