//! Checks that a key id path segment that is not valid percent-encoded UTF-8 gets a problem
//! response, like every other bad input, and changes nothing.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn bad_percent_encoding_is_problem() {
    let server = Server::start().await;
    let reader = server.key("reader", &["keyturn:keys:read", "keyturn:keys:write"]).await;
    let token = reader.token.expose();

    for (method, path) in [
        (reqwest::Method::GET, "/v1/keys/%ff%fe"),
        (reqwest::Method::POST, "/v1/keys/%ff%fe/revoke"),
        (reqwest::Method::POST, "/v1/keys/%c3/rotate"),
    ] {
        let response = server.client.request(method.clone(), server.url(path)).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{method} {path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{method} {path}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_parameter", "{method} {path}");
    }
    server.stop().await;
}
