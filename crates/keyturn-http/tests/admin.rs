//! The admin API over real HTTP on loopback: each endpoint, its authorization matrix, cursor
//! pagination, the audit trail of admin changes, and bad input that must change nothing.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Sends a request with an optional bearer token and JSON body; returns status, headers, body.
async fn call(
    server: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = server.client.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    (status, headers, value)
}

/// Returns the key list and the audit log, to compare before and after a rejected request.
async fn snapshot(server: &Server) -> (usize, usize) {
    let keys = server.keyring.list(&keyturn::ListFilter::default()).await.unwrap().len();
    let events = server.keyring.audit(&Default::default()).await.unwrap().len();
    (keys, events)
}

#[tokio::test]
async fn create_show_rotate_revoke_over_http() {
    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:keys:write", "keyturn:keys:read"]).await;
    let token = admin.token.expose();

    let body = json!({"name": "billing", "owner": "team-b", "scopes": ["orders:read"], "expires_in": "30d",
                      "grace": "1d", "metadata": {"ticket": "OPS-1"}});
    let (status, headers, created) = call(&server, Method::POST, "/v1/keys", Some(token), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    assert_eq!(headers["location"], format!("/v1/keys/{key_id}"));
    assert_eq!(headers["cache-control"], "no-store");
    assert!(created["token"].as_str().unwrap().starts_with(&format!("kt_live_{key_id}_")));
    assert_eq!(created["expires_at"], "2027-02-14T08:00:00Z");
    assert_eq!(created["grace"], "1d");
    assert_eq!(created["metadata"]["ticket"], "OPS-1");

    let (status, _, shown) = call(&server, Method::GET, &format!("/v1/keys/{key_id}"), Some(token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["owner"], "team-b");
    assert!(shown.get("token").is_none(), "show must not return a token: {shown}");

    let rotate = json!({"overlap": "2d"});
    let path = format!("/v1/keys/{key_id}/rotate");
    let (status, _, rotated) = call(&server, Method::POST, &path, Some(token), Some(rotate)).await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let successor_id = rotated["key_id"].as_str().unwrap().to_owned();
    assert_eq!(rotated["predecessor"]["successor_id"], successor_id.as_str());
    assert_eq!(rotated["predecessor"]["overlap_ends_at"], "2027-01-17T08:00:00Z");

    let (status, _, conflict) = call(&server, Method::POST, &path, Some(token), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["code"], "already_rotated");
    assert!(conflict["detail"].as_str().unwrap().contains(&successor_id), "{conflict}");
    let replace = json!({"replace_unused_successor": true});
    let (status, _, replaced) = call(&server, Method::POST, &path, Some(token), Some(replace)).await;
    assert_eq!(status, StatusCode::CREATED, "{replaced}");

    let revoke = json!({"reason": "leaked in a log"});
    let path = format!("/v1/keys/{key_id}/revoke");
    let (status, _, revoked) = call(&server, Method::POST, &path, Some(token), Some(revoke)).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["revocation_reason"], "leaked in a log");
    let (status, _, again) = call(&server, Method::POST, &path, Some(token), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["code"], "already_revoked");
    assert_eq!(again["key_id"], key_id.as_str());
    server.stop().await;
}

#[tokio::test]
async fn admin_changes_audited_with_key_and_address() {
    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:keys:write", "keyturn:audit:read"]).await;
    let token = admin.token.expose();
    let (_, _, created) = call(&server, Method::POST, "/v1/keys", Some(token), Some(json!({"name": "audited"}))).await;
    let key_id = created["key_id"].as_str().unwrap();
    call(&server, Method::POST, &format!("/v1/keys/{key_id}/revoke"), Some(token), None).await;

    let (status, _, page) = call(&server, Method::GET, &format!("/v1/audit?key_id={key_id}"), Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let events = page["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|event| event["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["authn_token_created", "authn_token_revoked"]);
    for event in events {
        assert_eq!(event["actor"], format!("key:{}", admin.record.key_id));
        assert!(event["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{event}");
    }
    server.stop().await;
}

#[tokio::test]
async fn audit_filters_and_pages_by_seq() {
    let server = Server::start().await;
    let reader = server.key("reader", &["keyturn:audit:read"]).await;
    let token = reader.token.expose();
    for n in 0..4 {
        server.at(T0 + n * DAY);
        server.key(&format!("k{n}"), &[]).await;
    }

    let mut seen = Vec::new();
    let mut cursor: Option<i64> = None;
    for _ in 0..10 {
        let mut path = "/v1/audit?event=authn_token_created&limit=2".to_owned();
        if let Some(cursor) = cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, _, page) = call(&server, Method::GET, &path, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["events"].as_array().unwrap().iter().map(|event| event["seq"].as_i64().unwrap()));
        cursor = page["next_cursor"].as_i64();
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, [1, 2, 3, 4, 5], "the reader key and four more, in order");

    let window = "/v1/audit?since=2027-01-16T08:00:00Z&until=2027-01-18T08:00:00Z";
    let (_, _, page) = call(&server, Method::GET, window, Some(token), None).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2, "{page}");
    let (status, _, bad) = call(&server, Method::GET, "/v1/audit?event=nope", Some(token), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["detail"].as_str().unwrap().contains("\"nope\""), "{bad}");
    server.stop().await;
}

#[tokio::test]
async fn list_keys_filters_and_pages() {
    let server = Server::start().await;
    let reader = server.key("reader", &["keyturn:keys:read"]).await;
    let token = reader.token.expose();
    let mut ids = vec![reader.record.key_id.to_string()];
    for n in 1..5 {
        server.at(T0 + n);
        ids.push(server.key(&format!("k{n}"), &[]).await.record.key_id.to_string());
    }
    server.keyring.revoke(&keyturn::core::KeyId::parse(&ids[2]).unwrap(), None, &keyturn::Caller::cli()).await.unwrap();

    let mut listed = Vec::new();
    let mut path = "/v1/keys?limit=2".to_owned();
    for _ in 0..10 {
        let (status, _, page) = call(&server, Method::GET, &path, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        listed.extend(page["keys"].as_array().unwrap().iter().map(|key| key["key_id"].as_str().unwrap().to_owned()));
        let Some(cursor) = page["next_cursor"].as_str() else { break };
        path = format!("/v1/keys?limit=2&cursor={cursor}");
    }
    assert_eq!(listed, ids);

    let (_, _, revoked) = call(&server, Method::GET, "/v1/keys?state=revoked", Some(token), None).await;
    assert_eq!(revoked["keys"].as_array().unwrap().len(), 1);
    assert_eq!(revoked["keys"][0]["key_id"], ids[2].as_str());
    let (_, _, none) = call(&server, Method::GET, "/v1/keys?owner=nobody", Some(token), None).await;
    assert_eq!(none["keys"], json!([]));
    assert_eq!(none["next_cursor"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn authorization_matrix_for_every_endpoint() {
    let server = Server::start().await;
    let target = server.key("target", &[]).await.record.key_id.to_string();
    let wrong = server.key("wrong", &["keyturn:verify", "orders:read"]).await;
    let revoked = server.key("revoked", &["keyturn:admin"]).await;
    server.keyring.revoke(&revoked.record.key_id, None, &keyturn::Caller::cli()).await.unwrap();
    let readers = server.key("all", &["keyturn:keys:read", "keyturn:keys:write", "keyturn:audit:read"]).await;

    let endpoints = [
        (Method::GET, "/v1/keys".to_owned(), None, "keyturn:keys:read", StatusCode::OK),
        (Method::GET, format!("/v1/keys/{target}"), None, "keyturn:keys:read", StatusCode::OK),
        (Method::GET, "/v1/keys/migration-report".to_owned(), None, "keyturn:keys:read", StatusCode::OK),
        (
            Method::POST,
            "/v1/keys/rotation-requests".to_owned(),
            Some(json!({"owner": "nobody", "by": "1d"})),
            "keyturn:keys:write",
            StatusCode::OK,
        ),
        (Method::POST, "/v1/keys".to_owned(), Some(json!({"name": "n"})), "keyturn:keys:write", StatusCode::CREATED),
        (Method::POST, format!("/v1/keys/{target}/rotate"), None, "keyturn:keys:write", StatusCode::CREATED),
        (Method::POST, format!("/v1/keys/{target}/revoke"), None, "keyturn:keys:write", StatusCode::OK),
        (Method::GET, "/v1/audit".to_owned(), None, "keyturn:audit:read", StatusCode::OK),
    ];
    for (method, path, body, scope, allowed) in endpoints {
        let before = snapshot(&server).await;
        let (status, headers, problem) = call(&server, method.clone(), &path, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without a key");
        assert_eq!(problem["code"], "missing_credentials");
        assert_eq!(headers["www-authenticate"], "Bearer realm=\"api\"");

        let (status, headers, problem) =
            call(&server, method.clone(), &path, Some(wrong.token.expose()), body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} with a key lacking {scope}");
        assert_eq!(problem["code"], "insufficient_scope");
        assert_eq!(problem["scope"], scope);
        let challenge = format!("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"{scope}\"");
        assert_eq!(headers["www-authenticate"], challenge.as_str());

        let (status, _, problem) =
            call(&server, method.clone(), &path, Some(revoked.token.expose()), body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with a revoked key");
        assert_eq!(problem["code"], "revoked");
        assert_eq!(snapshot(&server).await, before, "{method} {path}: a rejected request changed the store");

        let (status, _, answer) = call(&server, method.clone(), &path, Some(readers.token.expose()), body).await;
        assert_eq!(status, allowed, "{method} {path} with the right key: {answer}");
    }
    server.stop().await;
}

#[tokio::test]
async fn reserved_scopes_need_admin_key() {
    let server = Server::start().await;
    let writer = server.key("writer", &["keyturn:keys:write"]).await;
    let admin = server.key("admin", &["keyturn:admin"]).await;
    let body = json!({"name": "verifier", "scopes": ["keyturn:verify"]});

    let before = snapshot(&server).await;
    let (status, _, problem) =
        call(&server, Method::POST, "/v1/keys", Some(writer.token.expose()), Some(body.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["code"], "reserved_scope");
    assert_eq!(problem["type"], "urn:keyturn:problem:reserved_scope");
    assert_eq!(snapshot(&server).await, before);

    let (status, _, created) = call(&server, Method::POST, "/v1/keys", Some(admin.token.expose()), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/v1/keys/{}/rotate", created["key_id"].as_str().unwrap());
    let (status, _, problem) = call(&server, Method::POST, &path, Some(writer.token.expose()), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["code"], "reserved_scope");
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_a_problem_and_changes_nothing() {
    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:admin"]).await;
    let token = admin.token.expose();
    let target = server.key("target", &[]).await.record.key_id.to_string();
    let unknown = "AAAAAAAAAAAA";

    let cases: Vec<(Method, String, &str, StatusCode, &str, &str)> = vec![
        (Method::POST, "/v1/keys".into(), "{\"name\": ", StatusCode::BAD_REQUEST, "invalid_body", "not valid JSON"),
        (
            Method::POST,
            "/v1/keys".into(),
            r#"{"name":"x","colour":"red"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "unknown member",
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            r#"{"name":"x","expires_in":"90 days"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "expires_in",
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            r#"{"name":"x","grace":"-1d"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "grace",
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            r#"{"name":"x","expires_at":"tomorrow"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "expires_at",
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            r#"{"name":"x","scopes":["bad scope"]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "scopes",
        ),
        (Method::POST, "/v1/keys".into(), r#"{"name":"   "}"#, StatusCode::BAD_REQUEST, "invalid_input", "name"),
        (
            Method::POST,
            format!("/v1/keys/{target}/rotate"),
            r#"{"overlap":"1w"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "overlap",
        ),
        (Method::POST, format!("/v1/keys/{unknown}/rotate"), "{}", StatusCode::NOT_FOUND, "not_found", unknown),
        (Method::POST, format!("/v1/keys/{unknown}/revoke"), "{}", StatusCode::NOT_FOUND, "not_found", unknown),
        (Method::GET, format!("/v1/keys/{unknown}"), "", StatusCode::NOT_FOUND, "not_found", unknown),
        (Method::GET, "/v1/keys/short".into(), "", StatusCode::BAD_REQUEST, "invalid_parameter", "short"),
        (Method::GET, "/v1/keys?limit=0".into(), "", StatusCode::BAD_REQUEST, "invalid_parameter", "limit"),
        (Method::GET, "/v1/keys?state=sleeping".into(), "", StatusCode::BAD_REQUEST, "invalid_parameter", "sleeping"),
        (Method::GET, "/v1/keys?colour=red".into(), "", StatusCode::BAD_REQUEST, "invalid_parameter", "colour"),
        (Method::DELETE, "/v1/keys".into(), "", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "DELETE"),
        (Method::GET, "/v2/keys".into(), "", StatusCode::NOT_FOUND, "no_route", "no endpoint"),
    ];
    for (method, path, body, status, code, named) in cases {
        let before = snapshot(&server).await;
        let mut request = server.client.request(method.clone(), server.url(&path)).bearer_auth(token);
        if !body.is_empty() {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{method} {path} {body}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{method} {path}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{method} {path} {body}: {problem}");
        assert_eq!(problem["type"], format!("urn:keyturn:problem:{code}"));
        assert_eq!(problem["status"], status.as_u16());
        assert!(problem["detail"].as_str().unwrap().contains(named), "{method} {path}: {problem}");
        assert_eq!(snapshot(&server).await, before, "{method} {path} {body} changed the store");
    }

    let response = server.client.post(server.url("/v1/keys")).bearer_auth(token).body("{\"name\":\"x\"}").send();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    server.stop().await;
}

#[tokio::test]
async fn oversize_body_and_headers_rejected() {
    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:admin"]).await;
    let token = admin.token.expose();
    let before = snapshot(&server).await;

    let huge = json!({"name": "x", "metadata": {"blob": "a".repeat(70 * 1024)}});
    let (status, headers, problem) = call(&server, Method::POST, "/v1/keys", Some(token), Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(problem["code"], "body_too_large");
    assert!(problem["detail"].as_str().unwrap().contains("65536"), "{problem}");

    let response = server.client.get(server.url("/v1/keys")).bearer_auth(token).header("x-padding", "p".repeat(20_000));
    let response = response.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "headers_too_large");

    let response = server.client.get(server.url("/v1/keys")).header("authorization", b"Bearer \xff\xfe".as_slice());
    let response = response.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_header");
    assert!(problem["detail"].as_str().unwrap().contains("Authorization"), "{problem}");
    assert_eq!(snapshot(&server).await, before);
    server.stop().await;
}

#[tokio::test]
async fn admin_reads_audited_as_authz_admin() {
    let server = Server::start().await;
    let admin = server.key("admin", &["keyturn:keys:read", "keyturn:audit:read"]).await;
    let token = admin.token.expose();
    let (status, _, _) = call(&server, Method::GET, "/v1/keys?owner=team-a", Some(token), None).await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/v1/keys/{}", admin.record.key_id);
    assert_eq!(call(&server, Method::GET, &path, Some(token), None).await.0, StatusCode::OK);

    let (_, _, page) = call(&server, Method::GET, "/v1/audit?event=authz_admin", Some(token), None).await;
    let events = page["events"].as_array().unwrap();
    let operations: Vec<&str> = events.iter().map(|event| event["details"]["operation"].as_str().unwrap()).collect();
    assert_eq!(operations, ["list_keys", "show_key"], "{page}");
    assert_eq!(events[0]["details"]["parameters"]["owner"], "team-a");
    assert_eq!(events[1]["key_id"], admin.record.key_id.as_str());
    for event in events {
        assert_eq!(event["actor"], format!("key:{}", admin.record.key_id));
        assert!(event["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{event}");
    }

    // The read of the audit log above is itself audited.
    let (_, _, page) = call(&server, Method::GET, "/v1/audit?event=authz_admin", Some(token), None).await;
    let operations: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["details"]["operation"].as_str().unwrap())
        .collect();
    assert_eq!(operations, ["list_keys", "show_key", "list_audit"], "{page}");
    server.stop().await;
}

#[tokio::test]
async fn list_filters_expiring_and_unused_keys() {
    let server = Server::start().await;
    let reader = server.lasting_key("reader", &["keyturn:keys:read"]).await;
    let token = reader.token.expose();
    let soon = server.key("soon", &[]).await;

    let (status, _, page) = call(&server, Method::GET, "/v1/keys?expiring_within=365d", Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids: Vec<&str> = page["keys"].as_array().unwrap().iter().map(|key| key["key_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [soon.record.key_id.as_str()], "a key without expiry is never expiring soon");

    let (status, _, page) = call(&server, Method::GET, "/v1/keys?unused_for=1d", Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["keys"].as_array().unwrap().len(), 0, "keys created now are not stale: {page}");

    let (status, _, problem) = call(&server, Method::GET, "/v1/keys?unused_for=soon", Some(token), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("unused_for"), "{problem}");
    server.stop().await;
}
