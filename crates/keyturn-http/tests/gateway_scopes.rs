//! Checks that `/v1/auth` rejects a request carrying two `X-Keyturn-Scopes` headers, since one of
//! them may come from the client, and applies a single one.

mod common;

use common::*;

#[tokio::test]
async fn duplicate_scopes_header_rejected() {
    let server = Server::start().await;
    let client = server.key("client", &["orders:read"]).await;
    let bearer = format!("Bearer {}", client.token.expose());
    let auth = || server.client.get(server.gateway_url("/v1/auth")).header("authorization", &bearer);

    let single = auth().header("x-keyturn-scopes", "orders:write").send().await.unwrap();
    assert_eq!(single.status().as_u16(), 403);

    let duplicated = auth()
        .header("x-keyturn-scopes", "orders:read")
        .header("x-keyturn-scopes", "orders:write")
        .send()
        .await
        .unwrap();
    assert_eq!(duplicated.status().as_u16(), 500);
    let problem: serde_json::Value = duplicated.json().await.unwrap();
    assert_eq!(problem["code"], "internal", "a gateway configuration fault, logged with its cause");

    let allowed = auth().header("x-keyturn-scopes", "orders:read").send().await.unwrap();
    assert_eq!(allowed.status().as_u16(), 204);
    server.stop().await;
}
