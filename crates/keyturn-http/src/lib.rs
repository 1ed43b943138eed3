//! The keyturn HTTP service behind `keyturn serve`: the admin API, the verify endpoint for other
//! services, the gateway endpoint for nginx and Envoy, health checks and Prometheus metrics.
//! Every handler calls the `keyturn` service layer, so a key gets the same outcome here as in
//! the CLI and the Flask extension. [`KeyturnLayer`] protects another axum app the same way.
//! This crate owns routing, request parsing, the mapping of
//! errors to problem responses and the server's lifecycle; it makes no decision about a key.
//!
//! No log line, error body or `Debug` output of this crate contains a token: request logs name
//! the method and the matched route, never the URI or a header value.

// The OpenAPI document is one `json!` literal, deeper than the default limit of 128.
#![recursion_limit = "256"]

mod admin;
mod auth;
mod client;
mod error;
mod gateway;
mod incident;
mod json;
mod layer;
mod metrics;
mod openapi;
mod policies;
mod rotation_requests;
mod routes;
mod self_rotate;
mod server;
mod verify;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use keyturn::Keyring;

pub use crate::error::Error;
pub use crate::gateway::{GATEWAY_HEADER, ORIGINAL_URI_HEADER, PROBLEM_HEADER, SCOPES_HEADER, STATUS_HEADER};
pub use crate::layer::{KeyturnLayer, KeyturnService, ResponseFuture, VerifiedKey};
pub use crate::server::{serve, serve_with_webhooks, shutdown_signal, Listeners};

/// The tracing target of every log line of this crate.
pub(crate) const TARGET: &str = "keyturn::http";

/// Limits on each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body, in bytes. Default 64 KiB; admin bodies are far smaller.
    pub max_body_bytes: usize,
    /// The largest total size of a request's header names and values, in bytes. Default 16 KiB.
    pub max_header_bytes: usize,
    /// How long one request may take before it is answered with 408. Default 10 s.
    pub request_timeout: Duration,
    /// How long a connection may take to send a request's headers, or stay idle between
    /// requests, before it is closed. Default 10 s.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The state every handler shares: the keyring, the metrics, the limits and the OpenAPI document.
#[derive(Clone)]
pub(crate) struct AppState {
    pub keyring: Arc<Keyring>,
    pub metrics: Arc<metrics::Metrics>,
    pub limits: Limits,
    /// The serialised OpenAPI document that `/openapi.json` serves.
    pub openapi: axum::body::Bytes,
    /// The webhook service of the `/v1/webhooks` routes; `None` when the server runs without it.
    pub webhooks: Option<Arc<keyturn::webhooks::Webhooks>>,
}
