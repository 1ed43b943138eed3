//! A tower layer that protects an axum app the way the Flask extension protects a Flask app.
//! Every request passes through `Keyring::authenticate`, so a rejected request gets exactly the
//! status, headers and body that the Flask extension and the HTTP service send. An allowed
//! request reaches the handler with a [`VerifiedKey`] request extension, and its response gains
//! the lifecycle headers `API-Key-Status` and `API-Key-Expires`. This module owns only the
//! translation between HTTP types and the keyring; every decision is the keyring's.
//!
//! ```
//! use std::sync::Arc;
//!
//! use axum::routing::get;
//! use axum::{Extension, Router};
//! use keyturn::core::Scopes;
//! use keyturn::Keyring;
//! use keyturn_http::{KeyturnLayer, VerifiedKey};
//!
//! async fn orders(Extension(key): Extension<VerifiedKey>) -> String {
//!     format!("orders of {}", key.record.owner.as_deref().unwrap_or("nobody"))
//! }
//!
//! fn app(keyring: Arc<Keyring>) -> Router {
//!     let read = Scopes::parse(["orders:read"]).expect("a valid scope");
//!     let protected = Router::new()
//!         .route("/orders", get(orders))
//!         .layer(KeyturnLayer::new(Arc::clone(&keyring)).require(read));
//!     let public = Router::new()
//!         .route("/health", get(|| async { "ok" }))
//!         .layer(KeyturnLayer::public(keyring));
//!     protected.merge(public)
//! }
//! ```
//!
//! # Caveats
//!
//! - The client address for usage records, audit rows and the brute-force guard comes from
//!   axum's `ConnectInfo<SocketAddr>`, so serve the app with
//!   `into_make_service_with_connect_info`. Without it the address is not recorded and failed
//!   verifications are not counted. `X-Forwarded-For` is read only when the peer is one of the
//!   keyring's trusted proxies (`Config::trusted_proxies`).
//! - The keyring's brute-force guard applies: once a client address fails verification more
//!   often than `Config::guard` allows, its failed requests get 429 with `Retry-After`, while
//!   requests with a valid key still pass.
//! - A header value that is not visible ASCII is read with invalid bytes replaced, so the token
//!   in it fails to parse and the request gets the `invalid` response.
//! - Mark `Authorization` and the API key header sensitive (tower-http's
//!   `SetSensitiveRequestHeadersLayer`) before any tracing layer, since they carry tokens.
//! - The layer starts no background tasks. Call `Keyring::start_background` once at startup, so
//!   the cache follows changes made by other processes and usage is written.

mod future;
mod service;

use std::sync::Arc;

use keyturn::core::{Decision, Instant, KeyRecord, Outcome, Scopes};
use keyturn::Keyring;

pub use self::future::ResponseFuture;
pub use self::service::KeyturnService;

/// A tower layer that authenticates every request with a keyturn key before the inner service.
#[derive(Debug, Clone)]
pub struct KeyturnLayer {
    keyring: Arc<Keyring>,
    mode: Mode,
}

/// The requirement the layer enforces on each request.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// A key that is allowed and has these scopes.
    Required(Scopes),
    /// No key, but no token in the URL query either, as on the Flask extension's public routes.
    Public,
}

/// The key that authenticated a request, added to its extensions for the handler.
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub record: Arc<KeyRecord>,
    /// The key's state when the request was verified: active, expiring, grace or superseded.
    pub outcome: Outcome,
    /// The deadline that `API-Key-Expires` advertises, when the state has one.
    pub deadline: Option<Instant>,
}

impl KeyturnLayer {
    /// Creates a layer that requires an allowed key, with no particular scope.
    pub fn new(keyring: Arc<Keyring>) -> Self {
        KeyturnLayer { keyring, mode: Mode::Required(Scopes::default()) }
    }

    /// Creates a layer for public routes: it requires no key, but rejects a token in the URL
    /// query with 400 `invalid_request`, because proxies and access logs keep URLs.
    pub fn public(keyring: Arc<Keyring>) -> Self {
        KeyturnLayer { keyring, mode: Mode::Public }
    }

    /// Requires the key to hold every one of `scopes`.
    pub fn require(mut self, scopes: Scopes) -> Self {
        self.mode = Mode::Required(scopes);
        self
    }
}

impl<S> tower::Layer<S> for KeyturnLayer {
    type Service = KeyturnService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyturnService::new(inner, Arc::clone(&self.keyring), self.mode.clone())
    }
}

impl VerifiedKey {
    /// Returns the verified key of an allowed decision, which always carries its record.
    pub(crate) fn from_decision(decision: &Decision) -> Option<Self> {
        let record = decision.key.clone()?;
        Some(VerifiedKey { record, outcome: decision.outcome, deadline: decision.deadline })
    }
}
