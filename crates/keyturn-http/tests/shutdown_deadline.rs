//! Checks that a connection that never finishes its request cannot hold a graceful shutdown open:
//! the server stops within the request timeout plus its fixed margin of 5 seconds.

mod common;

use std::time::{Duration, Instant};

use common::*;
use keyturn_http::Limits;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn half_sent_request_cannot_block_shutdown() {
    let limits = Limits { request_timeout: Duration::from_secs(1), ..Limits::default() };
    let server = Server::with_limits(limits).await;
    let mut stalled = tokio::net::TcpStream::connect(server.api).await.unwrap();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\nHost: keyturn\r\nX-Partial: a").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), server.stop()).await.expect("shutdown hung");

    assert!(started.elapsed() < Duration::from_secs(10), "shutdown took {:?}", started.elapsed());
    drop(stalled);
}
