//! `keyturn serve` runs the scheduler as a background task: with an interval set, a key that
//! expires while the server runs gets its audit row without any verification, and the task stops
//! with the server.

mod common;

use std::time::Duration as StdDuration;

use common::*;
use keyturn::core::AuditEventType;
use keyturn::store::AuditFilter;
use keyturn::Config;
use keyturn_http::Limits;

#[tokio::test]
async fn serve_runs_scheduler_in_background() {
    let config = Config { schedule_interval: Some(StdDuration::from_millis(20)), ..Config::default() };
    let server = Server::with_config(config, Limits::default()).await;
    let key = server.key("client", &["orders:read"]).await;
    server.at(T0 + 97 * DAY);

    let filter = AuditFilter { event: Some(AuditEventType::AuthnTokenExpired), ..AuditFilter::default() };
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = server.keyring.audit(&filter).await.unwrap();
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }

    assert_eq!(rows.len(), 1, "the scheduler recorded no expiry within 2 s");
    assert_eq!(rows[0].event.key_id.as_ref(), Some(&key.record.key_id));
    server.stop().await;
}
