//! The delivery worker: leases due deliveries from the store, sends each as one signed POST,
//! and records the result. A 2xx status delivers the message, and 410 Gone disables the
//! endpoint. Any other status, a timeout or a rejected address is retried after a jittered
//! exponential delay. When the attempts run out, the delivery is dead-lettered.
//!
//! Every attempt resolves the endpoint's host again, checks every address against the URL rules,
//! and connects to the address it checked, so a DNS answer that changes between the check and
//! the connection (DNS rebinding) cannot redirect the request. Redirects are not followed, no
//! proxy is used, and the response body is never read.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration as StdDuration;

use keyturn_core::webhook::{check_address, signature_header, test_payload, WebhookUrl};
use keyturn_core::{Actor, AuditEventType, Instant};
use keyturn_store::{AttemptOutcome, AttemptReport, ClaimedDelivery, DeliveryClaim, WebhookEndpoint};
use rand_core::{OsRng, RngCore};
use serde_json::json;
use tokio::sync::watch;

use super::{hex, Webhooks, TARGET};
use crate::{Caller, Error};

/// Deliveries leased per store call.
const CLAIM_BATCH: u32 = 32;
/// Rounds of leasing per [`Webhooks::deliver_once`]: after a message is delivered, the next one
/// for the same endpoint becomes due at once, so one call drains short queues. A round that
/// delivers nothing ends the call.
const MAX_ROUNDS: u32 = 100;
/// The maximum length, in characters, of the status line or error kept with a delivery.
const MAX_RESULT_CHARS: usize = 200;

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// The HTTP status, or `None` when no response arrived.
    pub status: Option<u16>,
    /// The status line or the error, at most 200 characters.
    pub result: String,
}

/// Counts of one [`Webhooks::deliver_once`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryRun {
    pub delivered: u32,
    pub retried: u32,
    pub dead: u32,
    pub disabled: u32,
}

impl AttemptResult {
    fn is_success(&self) -> bool {
        self.status.is_some_and(|status| (200..300).contains(&status))
    }
}

impl Webhooks {
    /// Sends every delivery that is due now, each endpoint's in outbox order, and returns what
    /// became of them. A failed delivery waits for its next attempt, so it is sent again by a
    /// later call once its delay has passed.
    pub async fn deliver_once(&self) -> Result<DeliveryRun, Error> {
        let mut run = DeliveryRun::default();
        for _ in 0..MAX_ROUNDS {
            let now = self.clock.now();
            let lease = self.config.request_timeout.saturating_mul(3) + StdDuration::from_secs(30);
            let claim = DeliveryClaim {
                owner: self.owner.clone(),
                now,
                lease_until: now.saturating_add(keyturn_core::Duration::from_millis(millis(lease))),
                limit: CLAIM_BATCH,
            };
            let claimed = self.store.claim_webhook_deliveries(&claim).await?;
            if claimed.is_empty() {
                break;
            }
            let delivered_before = run.delivered;
            for delivery in claimed {
                self.deliver(delivery, &mut run).await?;
            }
            // Only a delivery makes the next message of its endpoint due. A failure waits for its
            // retry delay, which full jitter may make zero, so this call does not retry it.
            if run.delivered == delivered_before {
                break;
            }
        }
        Ok(run)
    }

    /// Runs [`Webhooks::deliver_once`] every poll interval until `stopped` turns true. Errors
    /// are logged and the loop goes on, so a store outage only delays delivery.
    pub async fn run(&self, mut stopped: watch::Receiver<bool>) {
        tracing::info!(target: TARGET, "webhook delivery worker started");
        loop {
            if *stopped.borrow() {
                break;
            }
            match self.deliver_once().await {
                Ok(run) if run != DeliveryRun::default() => {
                    tracing::debug!(target: TARGET, delivered = run.delivered, retried = run.retried, dead = run.dead, "webhook deliveries sent");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(target: TARGET, %error, "webhook delivery round failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = stopped.changed() => {}
            }
        }
        tracing::info!(target: TARGET, "webhook delivery worker stopped");
    }

    /// Sends a signed `webhook_test` message to an endpoint now, outside the outbox, and returns
    /// the result. It writes nothing to the store.
    pub async fn test(&self, endpoint_id: &str) -> Result<AttemptResult, Error> {
        let endpoint = self.get(endpoint_id).await?;
        let now = self.clock.now();
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let msg_id = format!("msg_{}", hex(&id));
        let body = test_payload(endpoint_id, now).to_string();
        self.send(&endpoint, &msg_id, &body).await
    }

    async fn deliver(&self, delivery: ClaimedDelivery, run: &mut DeliveryRun) -> Result<(), Error> {
        let endpoint = match self.store.get_webhook_endpoint(&delivery.endpoint_id).await? {
            Some(endpoint) => endpoint,
            // Removed while leased: its deliveries went with it.
            None => return Ok(()),
        };
        let result = match self.send(&endpoint, &delivery.msg_id, &delivery.payload).await {
            Ok(result) => result,
            Err(error) => AttemptResult { status: None, result: truncate(&error.to_string()) },
        };
        let now = self.clock.now();

        let outcome = if result.is_success() {
            run.delivered += 1;
            AttemptOutcome::Delivered
        } else if result.status == Some(410) {
            self.disable_gone(&endpoint, now).await?;
            run.disabled += 1;
            AttemptOutcome::Retry { next_attempt_at: now }
        } else if delivery.attempts + 1 >= self.config.max_attempts {
            run.dead += 1;
            AttemptOutcome::Dead
        } else {
            run.retried += 1;
            AttemptOutcome::Retry { next_attempt_at: now.saturating_add(self.retry_delay(delivery.attempts + 1)) }
        };
        log_attempt(&delivery, &result, outcome);

        let report = AttemptReport {
            endpoint_id: delivery.endpoint_id.clone(),
            msg_id: delivery.msg_id.clone(),
            owner: self.owner.clone(),
            at: now,
            outcome,
            result: result.result,
        };
        if !self.store.finish_webhook_delivery(&report).await? {
            tracing::warn!(target: TARGET, endpoint_id = delivery.endpoint_id, msg_id = delivery.msg_id, "webhook lease expired before the attempt finished; another worker may send the message again");
        }
        Ok(())
    }

    async fn disable_gone(&self, endpoint: &WebhookEndpoint, now: Instant) -> Result<(), Error> {
        let reason = format!("the endpoint answered 410 Gone at {}", now.to_rfc3339());
        let caller = Caller::new(Actor::System);
        let event = self
            .event(AuditEventType::WebhookEndpointDisabled, now, &caller)
            .with_reason(Some(reason.clone()))
            .with_details(json!({ "endpoint_id": endpoint.endpoint_id }));
        if self.store.disable_webhook_endpoint(&endpoint.endpoint_id, &reason, &event).await? {
            tracing::warn!(target: TARGET, endpoint_id = endpoint.endpoint_id, "webhook endpoint returned 410 Gone and was disabled");
        }
        Ok(())
    }

    /// Returns the wait before attempt `attempt + 1`: uniform between zero and
    /// `retry_base * 6^(attempt - 1)`, capped at `retry_max`.
    fn retry_delay(&self, attempt: u32) -> keyturn_core::Duration {
        let base = millis(self.config.retry_base);
        let cap = millis(self.config.retry_max).max(base);
        let bound = (0..attempt.saturating_sub(1)).fold(base, |delay, _| delay.saturating_mul(6).min(cap));
        let bound = u64::try_from(bound).unwrap_or(0);
        let jittered = if bound == 0 { 0 } else { OsRng.next_u64() % (bound + 1) };
        keyturn_core::Duration::from_millis(i64::try_from(jittered).unwrap_or(i64::MAX))
    }

    /// Sends one signed POST and returns its status line, or an error when the URL or an
    /// address is rejected or the endpoint has no secret that opens.
    async fn send(&self, endpoint: &WebhookEndpoint, msg_id: &str, body: &str) -> Result<AttemptResult, Error> {
        let allow_private = endpoint.allow_private || self.config.allow_private;
        let url = WebhookUrl::parse(&endpoint.url, allow_private)?;
        let address = resolve_checked(&url, allow_private).await?;
        let now = self.clock.now();
        let secrets = self.signing_secrets(endpoint, now)?;

        let timestamp = now.as_millis().div_euclid(1_000);
        let signature = signature_header(&secrets, msg_id, timestamp, body.as_bytes());
        let client = self.client(&url, address)?;
        let response = client
            .post(url.as_str())
            .header("content-type", "application/json")
            .header("user-agent", concat!("keyturn-webhooks/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await;

        Ok(match response {
            Ok(response) => {
                let status = response.status();
                let line = format!("HTTP {} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
                AttemptResult { status: Some(status.as_u16()), result: truncate(line.trim_end()) }
            }
            Err(error) => {
                AttemptResult { status: None, result: truncate(&describe(error, &self.config.request_timeout)) }
            }
        })
    }

    /// Builds a client that connects to `address` for the URL's host, follows no redirect and
    /// uses no proxy.
    fn client(&self, url: &WebhookUrl, address: SocketAddr) -> Result<reqwest::Client, Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.config.request_timeout)
            .connect_timeout(self.config.request_timeout)
            .resolve(&url.host(), address);
        if let Some(path) = &self.config.ca_file {
            let pem = std::fs::read(path).map_err(|error| Error::InvalidInput {
                field: "webhook CA file",
                reason: format!("cannot read {}: {error}", path.display()),
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| Error::InvalidInput {
                field: "webhook CA file",
                reason: format!("{} holds no valid PEM certificate", path.display()),
            })?;
            builder = builder.tls_built_in_root_certs(false);
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        builder.build().map_err(|error| Error::InvalidInput {
            field: "webhook client",
            reason: format!("cannot build the HTTP client: {error}"),
        })
    }
}

/// Resolves the URL's host and checks every address it resolves to; returns the first. A
/// plain-http URL must resolve to loopback addresses only.
async fn resolve_checked(url: &WebhookUrl, allow_private: bool) -> Result<SocketAddr, Error> {
    let host = url.host();
    let port = url.port();
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|error| rejected(url, format!("cannot resolve host {host:?}: {error}")))?
            .collect(),
    };
    let first = *addresses.first().ok_or_else(|| rejected(url, format!("host {host:?} has no address")))?;
    for address in &addresses {
        check_address(address.ip(), allow_private).map_err(|error| rejected(url, error.reason()))?;
        if !url.is_https() && !address.ip().to_canonical().is_loopback() {
            return Err(rejected(
                url,
                format!("plain http is allowed to loopback addresses only, and {host:?} resolves to {}", address.ip()),
            ));
        }
    }
    Ok(first)
}

fn rejected(url: &WebhookUrl, reason: String) -> Error {
    Error::InvalidInput { field: "webhook url", reason: format!("{}: {reason}", url.origin()) }
}

/// Describes a failed request without its URL, whose path or query may hold a receiver's token.
fn describe(error: reqwest::Error, timeout: &StdDuration) -> String {
    if error.is_timeout() {
        return format!("request timed out after {} ms", timeout.as_millis());
    }
    let kind = if error.is_connect() { "connection failed" } else { "request failed" };
    let mut text = kind.to_owned();
    let error = error.without_url();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn log_attempt(delivery: &ClaimedDelivery, result: &AttemptResult, outcome: AttemptOutcome) {
    let attempt = delivery.attempts + 1;
    match outcome {
        AttemptOutcome::Delivered => {
            tracing::info!(target: TARGET, endpoint_id = delivery.endpoint_id, msg_id = delivery.msg_id, attempt, "webhook delivered");
        }
        AttemptOutcome::Retry { next_attempt_at } => {
            tracing::warn!(target: TARGET, endpoint_id = delivery.endpoint_id, msg_id = delivery.msg_id, attempt, result = result.result, next_attempt_at = %next_attempt_at, "webhook attempt failed; retrying");
        }
        AttemptOutcome::Dead => {
            tracing::error!(target: TARGET, endpoint_id = delivery.endpoint_id, msg_id = delivery.msg_id, attempt, result = result.result, "webhook attempt failed for the last time; dead-lettered");
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(MAX_RESULT_CHARS).collect()
}

fn millis(duration: StdDuration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
