//! The OpenAPI document at `/openapi.json` against the live server: every documented method of
//! every documented path is served, and every error response has the problem+json shape.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Fills a documented path's parameters with values the router matches.
fn concrete(path: &str) -> String {
    path.replace("{key_id}", "UnknownKey01").replace("{path}", "orders/42")
}

#[tokio::test]
async fn openapi_document_matches_server() {
    let server = Server::start().await;
    let response = server.client.get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["components"]["securitySchemes"]["apiKey"]["name"], "X-API-Key");
    let paths = document["paths"].as_object().unwrap();
    for path in ["/v1/keys", "/v1/keys/{key_id}/rotate", "/v1/verify", "/v1/auth/{path}", "/openapi.json", "/readyz"] {
        assert!(paths.contains_key(path), "{path} missing from the document");
    }

    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            for (status, response) in responses.iter().filter(|(status, _)| status.as_str() >= "400") {
                let schema = &response["content"]["application/problem+json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/Problem", "{method} {path} {status}");
            }

            let listener = operation["x-keyturn-listener"].as_str().unwrap();
            let url =
                if listener == "gateway" { server.gateway_url(&concrete(path)) } else { server.url(&concrete(path)) };
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let answer = server.client.request(method.clone(), &url).send().await.unwrap();
            assert_ne!(answer.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if answer.status() == StatusCode::NOT_FOUND {
                let problem: Value = answer.json().await.unwrap();
                assert_ne!(problem["code"], "no_route", "{method} {path} is documented but not served");
            }
        }
    }

    let put = server.client.put(server.url("/v1/keys")).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED, "an undocumented method is not served");
    server.stop().await;
}
