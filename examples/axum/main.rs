//! An axum API protected by keyturn: `/orders` requires a key with `orders:read`, and `/health`
//! is public but still rejects a token in its URL. Run it next to a database made with
//! `keyturn init`, with the same `KEYTURN_DATABASE_URL` and `KEYTURN_PEPPER_FILE`:
//!
//! ```sh
//! cargo run -p keyturn-http --example axum -- 127.0.0.1:8000
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/orders
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::{Extension, Json, Router};
use keyturn::core::{Scopes, SystemClock};
use keyturn::settings::{self, PepperSource};
use keyturn::{Config, OpenOptions};
use keyturn_http::{KeyturnLayer, VerifiedKey};
use serde_json::{json, Value};

async fn orders(Extension(key): Extension<VerifiedKey>) -> Json<Value> {
    Json(json!({ "owner": key.record.owner, "key_id": key.record.key_id.as_str(), "orders": [] }))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8000".to_owned());
    let database = settings::resolve_database_url(None)?;
    let pepper = PepperSource::from_env(&database)?;
    let options = OpenOptions { database, pepper, create_if_missing: false, config: Config::default() };
    let keyring = keyturn::open(options, Arc::new(SystemClock)).await?;
    keyring.start_background();

    let read = Scopes::parse(["orders:read"])?;
    let protected = Router::new().route("/orders", get(orders)).layer(KeyturnLayer::new(keyring.clone()).require(read));
    let public = Router::new().route("/health", get(health)).layer(KeyturnLayer::public(keyring.clone()));
    let app = protected.merge(public);

    let listener = tokio::net::TcpListener::bind(&address).await?;
    // The bound address, so that a script which asked for port 0 learns the port.
    println!("serving on http://{}", listener.local_addr()?);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(keyturn_http::shutdown_signal())
        .await?;
    keyring.shutdown().await;
    Ok(())
}
