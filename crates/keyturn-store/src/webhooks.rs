//! The values the webhook methods of [`Store`](crate::Store) take and return, shared by both
//! backends, and the decoding of their rows. The outbox row of an audit event is written by the
//! audit append path of each backend (`insert_event`), so every writer of a notifiable event
//! fills the outbox without knowing about webhooks. Signing secrets reach the store sealed under
//! the webhook key and leave it sealed, so this crate never handles a secret in the clear.

use std::fmt;

use keyturn_core::{AuditEventType, Instant};
use rand_core::{OsRng, RngCore};

use crate::rows::StoredRow;
use crate::StoreError;

/// A webhook endpoint to insert, with its first sealed signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NewWebhookEndpoint {
    pub endpoint_id: String,
    pub url: String,
    /// The event types it receives; empty for every notifiable type.
    pub events: Vec<AuditEventType>,
    pub allow_private: bool,
    pub created_at: Instant,
    /// The first signing secret, sealed for `endpoint_id`.
    pub sealed_secret: Vec<u8>,
}

/// A stored webhook endpoint with its signing secrets, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub endpoint_id: String,
    pub url: String,
    pub events: Vec<AuditEventType>,
    pub allow_private: bool,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: Instant,
    pub secrets: Vec<StoredSecret>,
}

/// One sealed signing secret of an endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub secret_no: i64,
    pub sealed: Vec<u8>,
    pub created_at: Instant,
    /// When the secret stops signing; `None` for the newest secret.
    pub expires_at: Option<Instant>,
}

/// The state of one delivery of one message to one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Every attempt failed; `keyturn webhooks retry` makes it pending again.
    Dead,
}

/// A request to lease the deliveries that are due: per endpoint, only its oldest pending
/// delivery, so each endpoint receives its messages in outbox order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryClaim {
    /// Who takes the lease; only the same owner can report the result.
    pub owner: String,
    pub now: Instant,
    pub lease_until: Instant,
    pub limit: u32,
}

/// A leased delivery with what is needed to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub endpoint_id: String,
    pub msg_id: String,
    pub audit_seq: i64,
    /// The attempts made before this one.
    pub attempts: u32,
    pub payload: String,
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Failed; try again at this instant.
    Retry {
        next_attempt_at: Instant,
    },
    /// Failed for the last time.
    Dead,
}

/// The result of one attempt, reported by the owner of its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    pub endpoint_id: String,
    pub msg_id: String,
    pub owner: String,
    pub at: Instant,
    pub outcome: AttemptOutcome,
    /// A short description: the HTTP status line or the error, never a response body.
    pub result: String,
}

/// One delivery as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub endpoint_id: String,
    pub msg_id: String,
    pub event: String,
    pub key_id: Option<String>,
    pub audit_seq: i64,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: Instant,
    pub last_attempt_at: Option<Instant>,
    pub last_result: Option<String>,
}

/// The filter of [`Store::list_webhook_deliveries`](crate::Store::list_webhook_deliveries),
/// whose results are ordered by audit sequence number, then endpoint id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub endpoint_id: Option<String>,
    pub state: Option<DeliveryState>,
    pub limit: Option<u32>,
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub msg_id: String,
    pub audit_seq: i64,
    pub event: String,
    pub key_id: Option<String>,
    pub at: Instant,
    pub payload: String,
    pub once_key: Option<String>,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Dead]
            .into_iter()
            .find(|state| state.as_str() == value)
    }
}

impl fmt::Debug for NewWebhookEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewWebhookEndpoint")
            .field("endpoint_id", &self.endpoint_id)
            .field("events", &self.events)
            .field("allow_private", &self.allow_private)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSecret")
            .field("secret_no", &self.secret_no)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Generates a message id: `msg_` and 32 hexadecimal digits of OS randomness, unique across
/// stores, so a receiver that de-duplicates by `webhook-id` never confuses two stores' messages.
pub(crate) fn new_message_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("msg_{hex}")
}

/// The text that an endpoint's `events` column contains when its filter names `event`.
pub(crate) fn event_needle(event: AuditEventType) -> String {
    format!("\"{}\"", event.as_str())
}

pub(crate) fn events_json(events: &[AuditEventType]) -> String {
    serde_json::Value::from(events.iter().map(|event| event.as_str()).collect::<Vec<_>>()).to_string()
}

fn corrupt(table: &str, id: &str, column: &str) -> StoreError {
    StoreError::Internal(format!("stored {table} row {id} has an invalid {column} column"))
}

fn required_text<R: StoredRow>(row: &R, column: &str, table: &str, id: &str) -> Result<String, StoreError> {
    row.text(column).ok().flatten().ok_or_else(|| corrupt(table, id, column))
}

fn required_integer<R: StoredRow>(row: &R, column: &str, table: &str, id: &str) -> Result<i64, StoreError> {
    row.integer(column).ok().flatten().ok_or_else(|| corrupt(table, id, column))
}

fn optional_integer<R: StoredRow>(row: &R, column: &str, table: &str, id: &str) -> Result<Option<i64>, StoreError> {
    row.integer(column).map_err(|_| corrupt(table, id, column))
}

fn attempts<R: StoredRow>(row: &R, table: &str, id: &str) -> Result<u32, StoreError> {
    let value = required_integer(row, "attempts", table, id)?;
    u32::try_from(value).map_err(|_| corrupt(table, id, "attempts"))
}

/// Decodes a `webhook_endpoints` row; the caller adds its secrets.
pub(crate) fn decode_endpoint<R: StoredRow>(row: &R) -> Result<WebhookEndpoint, StoreError> {
    let table = "webhook endpoint";
    let id = row.text("endpoint_id").ok().flatten().ok_or_else(|| corrupt(table, "?", "endpoint_id"))?;
    let events_text = required_text(row, "events", table, &id)?;
    let names: Vec<String> = serde_json::from_str(&events_text).map_err(|_| corrupt(table, &id, "events"))?;
    let events = names
        .iter()
        .map(|name| AuditEventType::parse(name).ok_or_else(|| corrupt(table, &id, "events")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WebhookEndpoint {
        url: required_text(row, "url", table, &id)?,
        events,
        allow_private: row
            .boolean("allow_private")
            .ok()
            .flatten()
            .ok_or_else(|| corrupt(table, &id, "allow_private"))?,
        enabled: row.boolean("enabled").ok().flatten().ok_or_else(|| corrupt(table, &id, "enabled"))?,
        disabled_reason: row.text("disabled_reason").map_err(|_| corrupt(table, &id, "disabled_reason"))?,
        created_at: Instant::from_millis(required_integer(row, "created_at", table, &id)?),
        secrets: Vec::new(),
        endpoint_id: id,
    })
}

/// Decodes a `webhook_secrets` row and returns its endpoint id with it.
pub(crate) fn decode_secret<R: StoredRow>(row: &R) -> Result<(String, StoredSecret), StoreError> {
    let table = "webhook secret";
    let id = row.text("endpoint_id").ok().flatten().ok_or_else(|| corrupt(table, "?", "endpoint_id"))?;
    let secret = StoredSecret {
        secret_no: required_integer(row, "secret_no", table, &id)?,
        sealed: row.bytes("sealed").ok().flatten().ok_or_else(|| corrupt(table, &id, "sealed"))?,
        created_at: Instant::from_millis(required_integer(row, "created_at", table, &id)?),
        expires_at: optional_integer(row, "expires_at", table, &id)?.map(Instant::from_millis),
    };
    Ok((id, secret))
}

/// Attaches each secret to its endpoint; secrets arrive ordered by endpoint and number.
pub(crate) fn attach_secrets(endpoints: &mut [WebhookEndpoint], secrets: Vec<(String, StoredSecret)>) {
    for (endpoint_id, secret) in secrets {
        if let Some(endpoint) = endpoints.iter_mut().find(|endpoint| endpoint.endpoint_id == endpoint_id) {
            endpoint.secrets.push(secret);
        }
    }
}

pub(crate) fn decode_claimed<R: StoredRow>(row: &R) -> Result<ClaimedDelivery, StoreError> {
    let table = "webhook delivery";
    let msg_id = row.text("msg_id").ok().flatten().ok_or_else(|| corrupt(table, "?", "msg_id"))?;
    Ok(ClaimedDelivery {
        endpoint_id: required_text(row, "endpoint_id", table, &msg_id)?,
        audit_seq: required_integer(row, "audit_seq", table, &msg_id)?,
        attempts: attempts(row, table, &msg_id)?,
        payload: required_text(row, "payload", table, &msg_id)?,
        msg_id,
    })
}

pub(crate) fn decode_delivery<R: StoredRow>(row: &R) -> Result<WebhookDelivery, StoreError> {
    let table = "webhook delivery";
    let msg_id = row.text("msg_id").ok().flatten().ok_or_else(|| corrupt(table, "?", "msg_id"))?;
    let state = required_text(row, "state", table, &msg_id)?;
    Ok(WebhookDelivery {
        endpoint_id: required_text(row, "endpoint_id", table, &msg_id)?,
        event: required_text(row, "event", table, &msg_id)?,
        key_id: row.text("key_id").map_err(|_| corrupt(table, &msg_id, "key_id"))?,
        audit_seq: required_integer(row, "audit_seq", table, &msg_id)?,
        state: DeliveryState::parse(&state).ok_or_else(|| corrupt(table, &msg_id, "state"))?,
        attempts: attempts(row, table, &msg_id)?,
        next_attempt_at: Instant::from_millis(required_integer(row, "next_attempt_at", table, &msg_id)?),
        last_attempt_at: optional_integer(row, "last_attempt_at", table, &msg_id)?.map(Instant::from_millis),
        last_result: row.text("last_result").map_err(|_| corrupt(table, &msg_id, "last_result"))?,
        msg_id,
    })
}

pub(crate) fn decode_outbox<R: StoredRow>(row: &R) -> Result<OutboxMessage, StoreError> {
    let table = "webhook outbox";
    let msg_id = row.text("msg_id").ok().flatten().ok_or_else(|| corrupt(table, "?", "msg_id"))?;
    Ok(OutboxMessage {
        audit_seq: required_integer(row, "audit_seq", table, &msg_id)?,
        event: required_text(row, "event", table, &msg_id)?,
        key_id: row.text("key_id").map_err(|_| corrupt(table, &msg_id, "key_id"))?,
        at: Instant::from_millis(required_integer(row, "at", table, &msg_id)?),
        payload: required_text(row, "payload", table, &msg_id)?,
        once_key: row.text("once_key").map_err(|_| corrupt(table, &msg_id, "once_key"))?,
        msg_id,
    })
}

/// The columns that [`decode_delivery`] reads, from `webhook_deliveries d JOIN webhook_outbox o`.
pub(crate) const DELIVERY_COLUMNS: &str = "d.endpoint_id, d.msg_id, o.event, o.key_id, d.audit_seq, d.state, \
     d.attempts, d.next_attempt_at, d.last_attempt_at, d.last_result";

/// The columns that [`decode_outbox`] reads.
pub(crate) const OUTBOX_COLUMNS: &str = "msg_id, audit_seq, event, key_id, at, payload, once_key";
