//! Checks that a token in a URL query string is rejected with 400 on every route of both
//! listeners, public ones and unknown paths included, and that the exposed key is audited.

mod common;

use common::*;
use keyturn::core::AuditEventType;
use keyturn::store::AuditFilter;
use serde_json::Value;

#[tokio::test]
async fn token_in_query_rejected_everywhere() {
    let server = Server::start().await;
    let client = server.key("client", &["orders:read"]).await;
    let token = client.token.expose();

    let urls = [
        server.url(&format!("/healthz?api_key={token}")),
        server.url(&format!("/metrics?x={token}")),
        server.url(&format!("/nothing/here?q={token}")),
        server.url(&format!("/v1/keys?token={token}")),
        server.gateway_url(&format!("/healthz?key={token}")),
    ];
    for url in &urls {
        let response = server.client.get(url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{}", url.split('?').next().unwrap());
        let body = response.text().await.unwrap();
        assert!(!body.contains(token), "the 400 body quotes the token");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["code"], "invalid_request");
    }

    let harmless = server.client.get(server.url("/healthz?token=abc&page=2")).send().await.unwrap();
    assert_eq!(harmless.status().as_u16(), 200);

    server.keyring.flush().await.unwrap();
    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenExposed), ..AuditFilter::default() };
    let exposed = server.keyring.audit(&filter).await.unwrap();
    assert_eq!(exposed.len(), 1, "one exposure event per key and process");
    assert_eq!(exposed[0].event.key_id.as_ref(), Some(&client.record.key_id));
    server.stop().await;
}
