//! Checks that clients cannot grow the number of metric series: made-up methods and unknown paths
//! map to fixed labels.

mod common;

use common::*;
use reqwest::Method;

/// Returns the `keyturn_admin_requests_total` series lines of a `/metrics` body.
async fn admin_series(server: &Server) -> Vec<String> {
    let text = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().filter(|line| line.starts_with("keyturn_admin_requests_total{")).map(str::to_owned).collect()
}

#[tokio::test]
async fn made_up_methods_share_one_series() {
    let server = Server::start().await;
    let reader = server.key("reader", &["keyturn:keys:read"]).await;
    let token = reader.token.expose();

    let first = Method::from_bytes(b"MADEUP0").unwrap();
    server.client.request(first, server.url("/v1/keys")).bearer_auth(token).send().await.unwrap();
    let before = admin_series(&server).await;

    for index in 1..=20 {
        let method = Method::from_bytes(format!("MADEUP{index}").as_bytes()).unwrap();
        let response = server.client.request(method.clone(), server.url("/v1/keys")).bearer_auth(token).send().await;
        assert_eq!(response.unwrap().status().as_u16(), 405, "{method}");
        let response = server.client.request(method, server.url(&format!("/v1/keys/x/y/{index}"))).send().await;
        assert_eq!(response.unwrap().status().as_u16(), 404);
    }
    let after = admin_series(&server).await;

    assert_eq!(before.len(), after.len(), "series before:\n{before:?}\nafter:\n{after:?}");
    assert!(after.iter().all(|line| !line.contains("MADEUP")), "{after:?}");
    let other = r#"keyturn_admin_requests_total{method="other",route="/v1/keys",status="405"} 21"#;
    assert!(after.iter().any(|line| line == other), "missing {other:?} in {after:?}");
    server.stop().await;
}
