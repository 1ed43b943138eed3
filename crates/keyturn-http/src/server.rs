//! Routing, middleware and the server's lifecycle. [`serve`] starts the keyring's background
//! tasks, serves the API listener and the optional gateway listener until the shutdown future
//! completes, lets in-flight requests finish, and then shuts the keyring down, which writes the
//! queued usage counters.
//!
//! `Authorization`, the API key header and `X-Original-URI` are marked sensitive before the
//! tracing layer, and request spans record the method and the matched route only, because a URI
//! can carry a token that a client put in the wrong place.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use keyturn::Keyring;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::client::{ClientAddr, Source};
use crate::metrics::{self, method_name, Metrics};
use crate::openapi::{self, Operation};
use crate::{gateway, routes, AppState, Error, Limits, TARGET};

/// The sockets the service listens on.
#[derive(Debug)]
pub struct Listeners {
    /// The admin API, `/v1/verify`, health checks and metrics.
    pub api: TcpListener,
    /// `/v1/auth` for a gateway, and health checks. Bind it where only the gateway can connect.
    pub gateway: Option<TcpListener>,
}

/// Serves until `shutdown` completes, then stops accepting connections, waits for in-flight
/// requests and shuts the keyring down, flushing queued usage counters.
///
/// # Panics
///
/// Panics when called outside a tokio runtime.
pub async fn serve(
    keyring: Arc<Keyring>,
    listeners: Listeners,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    serve_with_webhooks(keyring, None, listeners, limits, shutdown).await
}

/// Serves like [`serve`], with the `/v1/webhooks` routes backed by `webhooks`. Without it those
/// routes answer 400. The caller runs the delivery worker itself.
pub async fn serve_with_webhooks(
    keyring: Arc<Keyring>,
    webhooks: Option<Arc<keyturn::webhooks::Webhooks>>,
    listeners: Listeners,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    keyring.start_background();
    let api_operations = routes::api_operations();
    let gateway_operations = routes::gateway_operations();
    let api_key_header = keyring.config().responses.api_key_header();
    let document = openapi::document(&api_operations, &gateway_operations, api_key_header);
    // Serialising a JSON value cannot fail.
    let document = serde_json::to_vec(&document).expect("the OpenAPI document serialises");
    let state = AppState {
        keyring: Arc::clone(&keyring),
        metrics: Arc::new(Metrics::new(Arc::clone(&keyring))),
        limits,
        openapi: document.into(),
        webhooks,
    };
    let (stop, stopped) = watch::channel(false);
    let stopped_for_deadline = stopped.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });

    let api_router = with_common(routes_of(api_operations), state.clone());
    let trusted = Source::TrustedProxies(Arc::clone(&keyring));
    let api = run(listeners.api, api_router, trusted, stopped.clone(), "api", &state.limits);
    let gateway = async {
        match listeners.gateway {
            Some(listener) => {
                let router = with_common(routes_of(gateway_operations), state.clone());
                run(listener, router, Source::Peer, stopped, "gateway", &state.limits).await
            }
            None => Ok(()),
        }
    };
    // Connections that never finish a request (idle keep-alive, headers sent slowly) would hold
    // a graceful shutdown open for ever, so in-flight work gets the request timeout plus a margin.
    let grace = state.limits.request_timeout + SHUTDOWN_MARGIN;
    let mut deadline_stopped = stopped_for_deadline;
    let deadline = async move {
        let _ = deadline_stopped.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = async { tokio::try_join!(api, gateway) } => result,
        () = deadline => {
            tracing::warn!(target: TARGET, grace_secs = grace.as_secs(), "connections still open at the shutdown deadline; closing them");
            Ok(((), ()))
        }
    };

    keyring.shutdown().await;
    tracing::info!(target: TARGET, "server stopped");
    result.map(|_| ())
}

/// How long after the request timeout a shutdown waits for open connections before closing them.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};

    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!(target: TARGET, "cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!(target: TARGET, signal = "SIGTERM", "shutting down"),
        _ = interrupt.recv() => tracing::info!(target: TARGET, signal = "SIGINT", "shutting down"),
    }
}

/// Serves one listener until `stopped` turns true, then stops accepting and waits for open
/// connections to finish their requests. Each request gets its client address from `source`
/// before any middleware runs. hyper closes a connection that takes longer than the
/// header read timeout to send a request's headers, or idles that long between requests, so a
/// slow client cannot hold a connection open.
async fn run(
    listener: TcpListener,
    router: Router,
    source: Source,
    mut stopped: watch::Receiver<bool>,
    name: &'static str,
    limits: &Limits,
) -> Result<(), Error> {
    let address = listener.local_addr().map(|address| address.to_string()).unwrap_or_default();
    tracing::info!(target: TARGET, listener = name, address = %address, "listening");
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let connections = GracefulShutdown::new();

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stopped| *stopped) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors is the usual cause. The pause lets connections
                // close, instead of the loop spinning on the same error.
                tracing::warn!(target: TARGET, listener = name, error = %error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Responses are small and sent at once, so waiting to coalesce them only adds latency.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let source = source.clone();
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            let client_addr = source.client_addr(peer, request.headers());
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(client_addr);
            router.clone().oneshot(request.map(Body::new))
        });
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(target: TARGET, listener = name, error = %error, "connection closed with an error");
            }
        });
    }

    drop(listener);
    connections.shutdown().await;
    Ok(())
}

/// How long the accept loop pauses after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Mounts the handlers of a route table. This is the only place where routes enter a router,
/// so the OpenAPI document, built from the same table, lists every route.
pub(crate) fn routes_of(operations: Vec<Operation>) -> Router<AppState> {
    operations.into_iter().fold(Router::new(), |router, operation| router.route(operation.path, operation.handler))
}

/// Adds the fallbacks and the middleware that every listener shares.
fn with_common(routes: Router<AppState>, state: AppState) -> Router {
    let limits = state.limits.clone();
    let api_key_header = HeaderName::try_from(state.keyring.config().responses.api_key_header())
        .unwrap_or(HeaderName::from_static("x-api-key"));
    let sensitive = [header::AUTHORIZATION, api_key_header, HeaderName::from_static(gateway::ORIGINAL_URI_HEADER)];

    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            tracing::info_span!(target: TARGET, "request", method = method_name(request.method()), route = tracing::field::Empty)
        })
        .on_request(())
        .on_response(|response: &Response, latency: Duration, _span: &Span| {
            tracing::debug!(target: TARGET, status = response.status().as_u16(), latency_ms = latency.as_millis() as u64, "response");
        })
        .on_failure(());

    let middleware = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
        .layer(trace)
        .layer(middleware::from_fn_with_state(state.clone(), finish))
        .layer(middleware::from_fn_with_state(state.clone(), limit_headers))
        .layer(middleware::from_fn_with_state(state.clone(), reject_token_in_query))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout));

    routes
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware)
        .with_state(state)
}

/// `/healthz`: the process is up.
pub(crate) async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `/readyz`: 200 when the store responds to a query within the lookup timeout, so a load balancer
/// learns of an outage as fast as a verification does.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Response, Error> {
    let timeout = state.keyring.config().lookup_timeout;
    tokio::time::timeout(timeout, state.keyring.store().change_seq())
        .await
        .unwrap_or_else(|_| {
            Err(keyturn::store::StoreError::Unavailable(format!(
                "the store did not respond within {} ms",
                timeout.as_millis()
            )))
        })
        .map_err(keyturn::Error::from)?;
    Ok(axum::Json(serde_json::json!({ "status": "ready" })).into_response())
}

async fn no_route() -> Error {
    Error::NoRoute
}

async fn method_not_allowed(request: Request) -> Error {
    Error::MethodNotAllowed { method: method_name(request.method()) }
}

const PROBLEM_JSON: &str = "application/problem+json";

/// Rejects a request whose header names and values add up to more than the limit.
async fn limit_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.limits.max_header_bytes;
    let size: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if size > limit {
        return Error::HeadersTooLarge { limit }.into_response();
    }
    next.run(request).await
}

/// Rejects, with 400 `invalid_request`, any request whose query string carries a token, on every
/// route of every listener including health checks and unknown paths, because proxies and access
/// logs keep URLs whatever they name. The keyring audits the exposed key.
async fn reject_token_in_query(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(query) = request.uri().query().filter(|query| !query.is_empty()) else {
        return next.run(request).await;
    };
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.as_bytes()).map(|(name, value)| (name.into_owned(), value.into_owned())).collect();
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let client_addr = request.extensions().get::<ClientAddr>().map(|ClientAddr(address)| address.as_str());
    match state.keyring.check_query(&pairs, client_addr) {
        Some(rejection) => crate::error::send(&rejection),
        None => next.run(request).await,
    }
}

/// Records the matched route in the request span, turns the bare 408 and 413 responses of the
/// timeout and body limit layers into problem responses, and marks every response `no-store`,
/// since admin responses carry tokens and key details.
async fn finish(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(route) = request.extensions().get::<MatchedPath>() {
        Span::current().record("route", route.as_str());
    }
    let started = StdInstant::now();
    let mut response = next.run(request).await;

    let is_problem = response.headers().get(header::CONTENT_TYPE).is_some_and(|value| value == PROBLEM_JSON);
    if !is_problem {
        match response.status() {
            StatusCode::REQUEST_TIMEOUT => {
                tracing::warn!(target: TARGET, elapsed_ms = started.elapsed().as_millis() as u64, "request timed out");
                response = Error::Timeout { seconds: state.limits.request_timeout.as_secs() }.into_response();
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                response = Error::BodyTooLarge { limit: state.limits.max_body_bytes }.into_response();
            }
            _ => {}
        }
    }
    response.headers_mut().entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}
