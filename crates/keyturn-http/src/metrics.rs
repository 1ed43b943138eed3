//! The service's Prometheus metrics and the `/metrics` endpoint that exposes them in the text
//! exposition format: verifications by outcome, verification latency, store errors, admin
//! requests by route and status, the verification cache's hits, misses and freshness, and the
//! brute-force guard's throttled requests, blocks and blocked addresses. Labels hold outcomes,
//! routes and statuses, never a key id, a client address or a token, so the number of series
//! stays bounded. The cache and guard figures are read from the keyring at each scrape, so the
//! verify path does no work for them beyond an atomic increment.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyturn::Keyring;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::StoreFailure;
use crate::AppState;

/// Upper bounds of the verification latency buckets, in seconds: 100 µs to 2.5 s.
const LATENCY_BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 2.5];

/// The metrics of one server.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    verifications: Family<OutcomeLabels, Counter>,
    verify_seconds: Histogram,
    store_errors: Counter,
    admin_requests: Family<AdminLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdminLabels {
    /// A standard method name or `other`, from [`method_name`].
    method: &'static str,
    /// The matched route pattern, such as `/v1/keys/{key_id}`, never the request path.
    route: String,
    status: u16,
}

impl Metrics {
    /// Creates the metrics of a server whose verifications go through `keyring`.
    pub(crate) fn new(keyring: Arc<Keyring>) -> Self {
        let verifications = Family::<OutcomeLabels, Counter>::default();
        let verify_seconds = Histogram::new(LATENCY_BUCKETS);
        let store_errors = Counter::default();
        let admin_requests = Family::<AdminLabels, Counter>::default();

        let mut registry = Registry::with_prefix("keyturn");
        registry.register(
            "verifications",
            "Verifications by endpoint and outcome (the problem code, or the state of an allowed key)",
            verifications.clone(),
        );
        registry.register("verify_duration_seconds", "Time to verify one token, in seconds", verify_seconds.clone());
        registry.register("store_errors", "Requests that failed because the store failed", store_errors.clone());
        registry.register("admin_requests", "Admin API requests by method, route and status", admin_requests.clone());
        registry.register_collector(Box::new(CacheCollector { keyring: Arc::clone(&keyring) }));
        registry.register_collector(Box::new(GuardCollector { keyring }));
        Metrics { registry: Mutex::new(registry), verifications, verify_seconds, store_errors, admin_requests }
    }

    /// Counts one verification on `endpoint` (`verify`, `auth` or `admin`) with its outcome.
    pub(crate) fn record_verification(&self, endpoint: &'static str, outcome: &'static str, elapsed: Duration) {
        self.verifications.get_or_create(&OutcomeLabels { endpoint, outcome }).inc();
        self.verify_seconds.observe(elapsed.as_secs_f64());
    }

    fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Writing to a String cannot fail.
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics encode into a string");
        text
    }
}

/// Reads the keyring's cache counters at each scrape.
struct CacheCollector {
    keyring: Arc<Keyring>,
}

impl std::fmt::Debug for CacheCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("CacheCollector").field("stats", &self.keyring.cache_stats()).finish()
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.keyring.cache_stats();
        let hits = ConstCounter::new(stats.hits);
        let misses = ConstCounter::new(stats.misses);
        let fresh = ConstGauge::new(i64::from(stats.fresh));

        let help = "Key lookups of verifications served from the cache without reading the store";
        hits.encode(encoder.encode_descriptor("cache_hits", help, None, hits.metric_type())?)?;
        let help = "Key lookups of verifications that read the store, because the key id was not cached or the cache was stale or disabled";
        misses.encode(encoder.encode_descriptor("cache_misses", help, None, misses.metric_type())?)?;
        let help =
            "1 while the cache may serve lookups (the change follower synced within the maximum staleness), else 0";
        fresh.encode(encoder.encode_descriptor("cache_fresh", help, None, fresh.metric_type())?)?;
        Ok(())
    }
}

/// Reads the keyring's brute-force guard counters at each scrape. With the guard off it writes
/// nothing.
struct GuardCollector {
    keyring: Arc<Keyring>,
}

impl std::fmt::Debug for GuardCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("GuardCollector").field("stats", &self.keyring.guard_stats()).finish()
    }
}

impl Collector for GuardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = self.keyring.guard_stats() else { return Ok(()) };
        let throttled = ConstCounter::new(stats.throttled);
        let blocks = ConstCounter::new(stats.blocks);
        let blocked = ConstGauge::new(i64::try_from(stats.blocked_clients).unwrap_or(i64::MAX));
        let tracked = ConstGauge::new(i64::try_from(stats.tracked_clients).unwrap_or(i64::MAX));

        let help = "Failed verifications rejected with 429 because their client address was blocked";
        throttled.encode(encoder.encode_descriptor("guard_throttled", help, None, throttled.metric_type())?)?;
        let help = "Client addresses blocked after too many failed verifications, counted once per block";
        blocks.encode(encoder.encode_descriptor("guard_blocks", help, None, blocks.metric_type())?)?;
        let help = "Client addresses blocked now";
        blocked.encode(encoder.encode_descriptor("guard_blocked_clients", help, None, blocked.metric_type())?)?;
        let help = "Client addresses with failed verifications held in memory, blocked or not";
        tracked.encode(encoder.encode_descriptor("guard_tracked_clients", help, None, tracked.metric_type())?)?;
        Ok(())
    }
}

/// Serves `/metrics`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let headers = [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")];
    (headers, state.metrics.encode()).into_response()
}

/// Counts admin requests by route and status, and responses that failed because of the store.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let method = method_name(request.method());
    let response = next.run(request).await;

    if response.extensions().get::<StoreFailure>().is_some() {
        state.metrics.store_errors.inc();
    }
    if let Some(route) = route.filter(|route| route.starts_with("/v1/keys") || route.starts_with("/v1/audit")) {
        let labels = AdminLabels { method, route, status: response.status().as_u16() };
        state.metrics.admin_requests.get_or_create(&labels).inc();
    }
    response
}

/// Returns the name of a standard method, or `other` for any other. Metric labels, logs and
/// problem details use this instead of the request's method text, which a client chooses freely:
/// each made-up method would add a metric series, and the text could be a token.
pub(crate) fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
