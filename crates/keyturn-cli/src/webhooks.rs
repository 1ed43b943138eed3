//! `keyturn webhooks`: add, list and remove webhook endpoints, rotate their signing secrets,
//! list and retry deliveries, send a test message, and run the delivery worker once for cron
//! and tests. These commands need the database and the webhook key, not the pepper.

use std::sync::Arc;

use clap::{Args, Subcommand};
use keyturn::webhooks::settings::{webhook_config_from_env, webhook_key_from_env};
use keyturn::webhooks::{endpoint_json, Webhooks, DEFAULT_SECRET_OVERLAP};
use keyturn::Caller;
use keyturn_core::SystemClock;
use keyturn_store::{DeliveryFilter, DeliveryState, WebhookDelivery};
use serde_json::{json, Value};

use crate::error::CliError;
use crate::output::{self, emit};
use crate::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Add an endpoint that receives key lifecycle events, and print its signing secret, which
    /// is shown only this once
    Add(AddArgs),
    /// List endpoints
    List(JsonArgs),
    /// Remove an endpoint with its undelivered messages
    Remove(EndpointArgs),
    /// Send a signed webhook_test message to an endpoint now and print the response status
    Test(EndpointArgs),
    /// List deliveries, oldest message first
    Deliveries(DeliveriesArgs),
    /// Schedule dead-lettered deliveries for a new round of attempts
    Retry(RetryArgs),
    /// Give an endpoint a new signing secret; older secrets keep signing until --overlap passes
    /// (at most 30d), and --overlap 0s stops them at once
    RotateSecret(RotateSecretArgs),
    /// Send the deliveries that are due, then exit (with --once), or keep sending until SIGTERM
    Deliver(DeliverArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The https URL to POST events to
    pub url: String,
    /// An event type to send, such as authn_token_revoked; repeat for several [default: every
    /// key lifecycle event]
    #[arg(long = "event", value_name = "TYPE")]
    pub events: Vec<String>,
    /// Accept private, loopback, link-local and unique-local addresses for this endpoint, and
    /// plain http to a loopback host
    #[arg(long)]
    pub allow_private_network: bool,
    /// Print the endpoint and its secret as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// The endpoint id, such as wh_0123456789abcdef
    pub id: String,
}

#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// Only dead-lettered deliveries
    #[arg(long)]
    pub dead: bool,
    /// Only deliveries to this endpoint
    #[arg(long, value_name = "ID")]
    pub endpoint: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Only the dead letters of this endpoint [default: every endpoint]
    pub id: Option<String>,
}

#[derive(Debug, Args)]
pub struct RotateSecretArgs {
    /// The endpoint id
    pub id: String,
    /// How long the previous secret keeps signing, such as 24h or 7d
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub overlap: String,
}

#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// Send what is due now and exit
    #[arg(long)]
    pub once: bool,
}

pub async fn run(global: &GlobalArgs, command: &WebhooksCommand) -> Result<(), CliError> {
    let webhooks = open(global).await?;
    let caller = Caller::cli();
    match command {
        WebhooksCommand::Add(args) => add(&webhooks, args, &caller).await,
        WebhooksCommand::List(args) => list(&webhooks, args.json).await,
        WebhooksCommand::Remove(args) => {
            webhooks.remove(&args.id, &caller).await?;
            emit(&format!("removed webhook endpoint {}\n", args.id))
        }
        WebhooksCommand::Test(args) => {
            let result = webhooks.test(&args.id).await?;
            emit(&format!("{}\n", result.result))?;
            match result.status {
                Some(status) if (200..300).contains(&status) => Ok(()),
                _ => Err(CliError::new(format!("the test message to {} was not accepted: {}", args.id, result.result))),
            }
        }
        WebhooksCommand::Deliveries(args) => deliveries(&webhooks, args).await,
        WebhooksCommand::Retry(args) => {
            let count = webhooks.retry(args.id.as_deref(), &caller).await?;
            emit(&format!("scheduled {count} dead-lettered deliveries again\n"))
        }
        WebhooksCommand::RotateSecret(args) => rotate_secret(&webhooks, args, &caller).await,
        WebhooksCommand::Deliver(args) => deliver(&webhooks, args.once).await,
    }
}

async fn open(global: &GlobalArgs) -> Result<Webhooks, CliError> {
    let database = keyturn::settings::resolve_database_url(global.database.as_deref())?;
    let key = webhook_key_from_env(&database)?;
    let config = webhook_config_from_env()?;
    let store = keyturn::open_store(&database, false).await?;
    Ok(Webhooks::new(store, key, Arc::new(SystemClock), config))
}

async fn add(webhooks: &Webhooks, args: &AddArgs, caller: &Caller) -> Result<(), CliError> {
    let added = webhooks.add(&args.url, &args.events, args.allow_private_network, caller).await?;
    let id = &added.endpoint.endpoint_id;
    let text = if args.json {
        let mut value = endpoint_json(&added.endpoint);
        value["secret"] = json!(added.secret.as_str());
        output::json_text(&value)
    } else {
        format!(
            "added webhook endpoint {id} for {}; its signing secret is\n{}\n",
            added.endpoint.url,
            added.secret.as_str()
        )
    };
    output::write_stdout(&text).map_err(|error| {
        CliError::new(format!(
            "failed to write to stdout: {error}; endpoint {id} was added but its secret was not shown, so run \
             `keyturn webhooks rotate-secret {id} --overlap 0s`"
        ))
    })?;
    if !args.json {
        eprintln!("warning: this is the only time the secret is shown; give it to the receiver now");
    }
    Ok(())
}

async fn list(webhooks: &Webhooks, json: bool) -> Result<(), CliError> {
    let endpoints = webhooks.list().await?;
    if json {
        let values: Vec<Value> = endpoints.iter().map(endpoint_json).collect();
        return emit(&output::json_text(&Value::Array(values)));
    }
    let mut text = String::from("ID                   ENABLED  EVENTS  URL\n");
    for endpoint in &endpoints {
        let events = if endpoint.events.is_empty() { "all".to_owned() } else { endpoint.events.len().to_string() };
        let enabled = if endpoint.enabled { "yes" } else { "no" };
        text.push_str(&format!("{:<20} {enabled:<8} {events:<7} {}\n", endpoint.endpoint_id, endpoint.url));
    }
    emit(&text)
}

async fn deliveries(webhooks: &Webhooks, args: &DeliveriesArgs) -> Result<(), CliError> {
    let filter = DeliveryFilter {
        endpoint_id: args.endpoint.clone(),
        state: args.dead.then_some(DeliveryState::Dead),
        limit: None,
    };
    let deliveries = webhooks.deliveries(&filter).await?;
    if args.json {
        let values: Vec<Value> = deliveries.iter().map(delivery_json).collect();
        return emit(&output::json_text(&Value::Array(values)));
    }
    let mut text =
        String::from("MESSAGE                               ENDPOINT             STATE      ATTEMPTS  EVENT\n");
    for delivery in &deliveries {
        text.push_str(&format!(
            "{:<37} {:<20} {:<10} {:<9} {}\n",
            delivery.msg_id,
            delivery.endpoint_id,
            delivery.state.as_str(),
            delivery.attempts,
            delivery.event
        ));
    }
    emit(&text)
}

async fn rotate_secret(webhooks: &Webhooks, args: &RotateSecretArgs, caller: &Caller) -> Result<(), CliError> {
    let overlap =
        keyturn_core::Duration::parse(&args.overlap).map_err(|error| CliError::new(format!("--overlap: {error}")))?;
    let secret = webhooks.rotate_secret(&args.id, overlap, caller).await?;
    let previous = if overlap == DEFAULT_SECRET_OVERLAP { "24h".to_owned() } else { args.overlap.clone() };
    output::write_stdout(&format!("{}\n", secret.as_str())).map_err(|error| {
        CliError::new(format!("failed to write to stdout: {error}; rotate the secret of {} again", args.id))
    })?;
    eprintln!("the previous secret keeps signing for {previous}; give the new secret to the receiver now");
    Ok(())
}

async fn deliver(webhooks: &Webhooks, once: bool) -> Result<(), CliError> {
    if once {
        let run = webhooks.deliver_once().await?;
        return emit(&format!(
            "delivered {}, retrying {}, dead-lettered {}, endpoints disabled {}\n",
            run.delivered, run.retried, run.dead, run.disabled
        ));
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        keyturn_http::shutdown_signal().await;
        let _ = stop.send(true);
    });
    webhooks.run(stopped).await;
    Ok(())
}

fn delivery_json(delivery: &WebhookDelivery) -> Value {
    json!({
        "msg_id": delivery.msg_id,
        "endpoint_id": delivery.endpoint_id,
        "event": delivery.event,
        "key_id": delivery.key_id,
        "audit_seq": delivery.audit_seq,
        "state": delivery.state.as_str(),
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at.to_rfc3339(),
        "last_attempt_at": delivery.last_attempt_at.map(|at| at.to_rfc3339()),
        "last_result": delivery.last_result,
    })
}
