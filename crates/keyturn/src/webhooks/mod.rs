//! Webhook endpoints and the delivery worker. [`Webhooks`] adds, lists, removes and re-keys
//! endpoints, each change with its audit event. It also sends the outbox's messages to them,
//! signed as the Standard Webhooks specification describes. Delivery is at least once and in
//! outbox order per endpoint. Failures are retried on an exponential schedule with full jitter,
//! and a delivery is dead-lettered after the last attempt. The store fills the outbox itself, in
//! the transaction of each notifiable audit event.
//!
//! Signing secrets are generated here, shown once, and stored sealed under the webhook key
//! ([`settings`]). No log line, error or `Debug` output of this module contains a secret or the
//! webhook key, and an endpoint URL is logged and audited by its origin only, because a path or
//! query may carry the receiver's own access token.

mod deliver;
pub mod settings;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use keyturn_core::webhook::{WebhookKey, WebhookSecret, WebhookUrl, NOTIFIABLE_EVENTS};
use keyturn_core::{AuditEventType, Clock, Duration, Instant, NewAuditEvent};
use keyturn_store::{DeliveryFilter, NewWebhookEndpoint, Store, StoredSecret, WebhookDelivery, WebhookEndpoint};
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use zeroize::Zeroizing;

pub use self::deliver::{AttemptResult, DeliveryRun};
use crate::{Caller, Error};

/// The tracing target of the webhook worker.
const TARGET: &str = "keyturn::webhooks";

/// How long a rotated-out secret keeps signing by default.
pub const DEFAULT_SECRET_OVERLAP: Duration = Duration::from_secs(24 * 3_600);

/// The maximum time a rotated-out secret keeps signing. A rotation often follows a leaked secret,
/// so the old one must not stay valid for long.
pub const MAX_SECRET_OVERLAP: Duration = Duration::from_days(30);

/// Settings of the delivery worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Attempts per delivery before it is dead-lettered. Default 8.
    pub max_attempts: u32,
    /// The bound of the delay before the second attempt. Each later bound is 6 times the one
    /// before, up to `retry_max`, and the actual wait is drawn uniformly between zero and the
    /// bound (full jitter). Default 5 s, so the bounds run 5 s, 30 s, 3 min, 18 min, 1 h 48 min,
    /// then 4 h.
    pub retry_base: StdDuration,
    /// The largest delay between attempts. Default 4 h.
    pub retry_max: StdDuration,
    /// How long one request may take, connecting included. Default 10 s.
    pub request_timeout: StdDuration,
    /// How often the worker inside `keyturn serve` looks for due deliveries. Default 1 s.
    pub poll_interval: StdDuration,
    /// Accept private, loopback and link-local addresses for every endpoint
    /// (`KEYTURN_WEBHOOK_ALLOW_PRIVATE=1`). Default off.
    pub allow_private: bool,
    /// A PEM file of certificate authorities trusted for https endpoints, in place of the
    /// operating system's roots (`KEYTURN_WEBHOOK_CA_FILE`).
    pub ca_file: Option<PathBuf>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_attempts: 8,
            retry_base: StdDuration::from_secs(5),
            retry_max: StdDuration::from_secs(4 * 3_600),
            request_timeout: StdDuration::from_secs(10),
            poll_interval: StdDuration::from_secs(1),
            allow_private: false,
            ca_file: None,
        }
    }
}

/// A new endpoint and its signing secret, which is shown this once.
pub struct AddedEndpoint {
    pub endpoint: WebhookEndpoint,
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for AddedEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddedEndpoint").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

/// Webhook management and delivery over one store.
pub struct Webhooks {
    store: Arc<dyn Store>,
    key: Option<Arc<WebhookKey>>,
    clock: Arc<dyn Clock>,
    config: WebhookConfig,
    /// The lease owner of this worker: unique per instance.
    owner: String,
}

impl Webhooks {
    pub fn new(store: Arc<dyn Store>, key: Option<WebhookKey>, clock: Arc<dyn Clock>, config: WebhookConfig) -> Self {
        let mut nonce = [0u8; 8];
        OsRng.fill_bytes(&mut nonce);
        let owner = format!("{}-{}", std::process::id(), hex(&nonce));
        Webhooks { store, key: key.map(Arc::new), clock, config, owner }
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Adds an endpoint that receives the notifiable events of `events` (every one when empty)
    /// appended from now on, and returns it with its new signing secret.
    pub async fn add(
        &self,
        url: &str,
        events: &[String],
        allow_private: bool,
        caller: &Caller,
    ) -> Result<AddedEndpoint, Error> {
        let key = self.key()?;
        let url = WebhookUrl::parse(url, allow_private || self.config.allow_private)?;
        let events = parse_events(events)?;
        let now = self.clock.now();
        let endpoint_id = new_endpoint_id();
        let secret = WebhookSecret::generate(&mut OsRng);

        let new = NewWebhookEndpoint {
            endpoint_id: endpoint_id.clone(),
            url: url.as_str().to_owned(),
            events: events.clone(),
            allow_private,
            created_at: now,
            sealed_secret: key.seal(&secret, &endpoint_id, &mut OsRng),
        };
        let event = self.event(AuditEventType::WebhookEndpointCreated, now, caller).with_details(json!({
            "endpoint_id": endpoint_id,
            "origin": url.origin(),
            "events": events.iter().map(|event| event.as_str()).collect::<Vec<_>>(),
            "allow_private_network": allow_private,
        }));
        self.store.insert_webhook_endpoint(&new, &event).await?;
        tracing::info!(target: TARGET, endpoint_id, origin = %url.origin(), "added webhook endpoint");

        let endpoint = self.get(&endpoint_id).await?;
        Ok(AddedEndpoint { endpoint, secret: secret.expose() })
    }

    pub async fn list(&self) -> Result<Vec<WebhookEndpoint>, Error> {
        Ok(self.store.list_webhook_endpoints().await?)
    }

    /// Returns one endpoint, or an error naming it when it does not exist.
    pub async fn get(&self, endpoint_id: &str) -> Result<WebhookEndpoint, Error> {
        self.store.get_webhook_endpoint(endpoint_id).await?.ok_or_else(|| not_found(endpoint_id))
    }

    /// Removes an endpoint with its secrets and undelivered messages.
    pub async fn remove(&self, endpoint_id: &str, caller: &Caller) -> Result<(), Error> {
        let now = self.clock.now();
        let event = self
            .event(AuditEventType::WebhookEndpointRemoved, now, caller)
            .with_details(json!({ "endpoint_id": endpoint_id }));
        if !self.store.remove_webhook_endpoint(endpoint_id, &event).await? {
            return Err(not_found(endpoint_id));
        }
        tracing::info!(target: TARGET, endpoint_id, "removed webhook endpoint");
        Ok(())
    }

    /// Adds a new signing secret to an endpoint and returns it. Older secrets keep signing
    /// until `overlap` has passed, or until their own earlier deadline, so a receiver can switch
    /// without missing a message. Fails when `overlap` exceeds [`MAX_SECRET_OVERLAP`].
    pub async fn rotate_secret(
        &self,
        endpoint_id: &str,
        overlap: Duration,
        caller: &Caller,
    ) -> Result<Zeroizing<String>, Error> {
        if overlap > MAX_SECRET_OVERLAP {
            return Err(Error::InvalidInput {
                field: "overlap",
                reason: format!(
                    "{overlap} is longer than the maximum of {MAX_SECRET_OVERLAP}; choose a shorter overlap, such as \
                     {DEFAULT_SECRET_OVERLAP}"
                ),
            });
        }
        let key = self.key()?;
        let now = self.clock.now();
        let secret = WebhookSecret::generate(&mut OsRng);
        let sealed = key.seal(&secret, endpoint_id, &mut OsRng);
        let old_expires_at = now.saturating_add(overlap);

        let event = self.event(AuditEventType::WebhookSecretRotated, now, caller).with_details(json!({
            "endpoint_id": endpoint_id,
            "previous_secret_expires_at": old_expires_at.to_rfc3339(),
        }));
        if !self.store.add_webhook_secret(endpoint_id, &sealed, old_expires_at, &event).await? {
            return Err(not_found(endpoint_id));
        }
        tracing::info!(target: TARGET, endpoint_id, "rotated webhook secret");
        Ok(secret.expose())
    }

    pub async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<WebhookDelivery>, Error> {
        Ok(self.store.list_webhook_deliveries(filter).await?)
    }

    /// Schedules the dead-lettered deliveries of one endpoint, or of all, for a new round of
    /// attempts now, and returns how many.
    pub async fn retry(&self, endpoint_id: Option<&str>, caller: &Caller) -> Result<u64, Error> {
        if let Some(endpoint_id) = endpoint_id {
            self.get(endpoint_id).await?;
        }
        let now = self.clock.now();
        let event = self
            .event(AuditEventType::WebhookDeliveriesRetried, now, caller)
            .with_details(json!({ "endpoint_id": endpoint_id }));
        Ok(self.store.retry_webhook_deliveries(endpoint_id, &event).await?)
    }

    fn key(&self) -> Result<&WebhookKey, Error> {
        self.key.as_deref().ok_or_else(|| Error::InvalidInput {
            field: "webhook key",
            reason: format!(
                "no webhook key is configured; set {} or {}, or run `keyturn init` to create the file next \
                 to a SQLite database",
                settings::WEBHOOK_KEY_VAR,
                settings::WEBHOOK_KEY_FILE_VAR
            ),
        })
    }

    fn event(&self, event: AuditEventType, at: Instant, caller: &Caller) -> NewAuditEvent {
        let mut row = NewAuditEvent::new(event, at, None, caller.actor.clone());
        row.client_addr = caller.client_addr.clone();
        row
    }

    /// Opens the secrets of `endpoint` that still sign at `now`.
    fn signing_secrets(&self, endpoint: &WebhookEndpoint, now: Instant) -> Result<Vec<WebhookSecret>, Error> {
        let key = self.key()?;
        let live = |secret: &&StoredSecret| secret.expires_at.is_none_or(|expires_at| now < expires_at);
        endpoint
            .secrets
            .iter()
            .filter(live)
            .map(|secret| key.open(&secret.sealed, &endpoint.endpoint_id).map_err(Error::from))
            .collect()
    }
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("config", &self.config).field("owner", &self.owner).finish_non_exhaustive()
    }
}

/// Renders an endpoint as JSON for the CLI and the admin API: its settings and the instants of
/// its secrets, never a secret.
pub fn endpoint_json(endpoint: &WebhookEndpoint) -> Value {
    json!({
        "id": endpoint.endpoint_id,
        "url": endpoint.url,
        "events": endpoint.events.iter().map(|event| event.as_str()).collect::<Vec<_>>(),
        "allow_private_network": endpoint.allow_private,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "created_at": endpoint.created_at.to_rfc3339(),
        "secrets": endpoint.secrets.iter().map(|secret| json!({
            "created_at": secret.created_at.to_rfc3339(),
            "expires_at": secret.expires_at.map(|at| at.to_rfc3339()),
        })).collect::<Vec<_>>(),
    })
}

/// Parses an event filter: each name must be a notifiable event type.
fn parse_events(names: &[String]) -> Result<Vec<AuditEventType>, Error> {
    let mut events = Vec::new();
    for name in names {
        let event = AuditEventType::parse(name.trim()).filter(|event| event.is_notifiable()).ok_or_else(|| {
            let known: Vec<&str> = NOTIFIABLE_EVENTS.iter().map(|event| event.as_str()).collect();
            Error::InvalidInput {
                field: "event",
                reason: format!("{name:?} is not a notifiable event type; use one of {}", known.join(", ")),
            }
        })?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

fn not_found(endpoint_id: &str) -> Error {
    Error::WebhookNotFound(keyturn_core::quote_value(endpoint_id))
}

/// Generates an endpoint id: `wh_` and 16 hexadecimal digits.
fn new_endpoint_id() -> String {
    let mut bytes = [0u8; 8];
    OsRng.fill_bytes(&mut bytes);
    format!("wh_{}", hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
