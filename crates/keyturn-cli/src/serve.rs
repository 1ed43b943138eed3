//! `keyturn serve`: runs the HTTP service of `keyturn-http` on the configured database and
//! pepper until SIGTERM or SIGINT. It prints the addresses it listens on, one per line, so a
//! script that asked for port 0 learns the port.

use std::net::SocketAddr;
use std::sync::Arc;

use keyturn::webhooks::settings::{webhook_config_from_env, webhook_key_from_env};
use keyturn::webhooks::Webhooks;
use keyturn::{Config, GuardConfig, Keyring};
use keyturn_core::SystemClock;
use keyturn_core::TrustedProxies;
use keyturn_http::{Limits, Listeners};
use tokio::net::TcpListener;

use crate::error::CliError;
use crate::output::emit;
use crate::setup::open_keyring_with;
use crate::{GlobalArgs, ServeArgs, Switch};

/// Runs `serve` until a shutdown signal, then waits for in-flight requests and flushes usage.
pub async fn run(global: &GlobalArgs, args: &ServeArgs) -> Result<(), CliError> {
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_header_bytes: args.max_header_bytes,
        request_timeout: parse_timeout("--request-timeout", &args.request_timeout)?,
        header_read_timeout: parse_timeout("--header-read-timeout", &args.header_read_timeout)?,
    };
    let config = service_config(args)?;
    let keyring = open_keyring_with(global, config).await?;
    log_client_settings(keyring.config());

    let api = bind(args.listen, "--listen").await?;
    let gateway = match args.gateway_listen {
        Some(address) => Some(bind(address, "--gateway-listen").await?),
        None => None,
    };
    emit(&format!("serving the API on http://{}\n", local_address(&api)))?;
    if let Some(listener) = &gateway {
        let address = local_address(listener);
        if !address.ip().is_loopback() {
            eprintln!(
                "warning: the gateway endpoint on {address} trusts every client that reaches it; bind it to \
                 loopback or a private interface that only the gateway can reach"
            );
        }
        emit(&format!("serving the gateway endpoint on http://{address}\n"))?;
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let webhooks = match args.webhooks {
        Switch::On => Some(Arc::new(open_webhooks(global, &keyring)?)),
        Switch::Off => None,
    };
    let worker = webhooks.clone().map(|webhooks| tokio::spawn(async move { webhooks.run(stopped).await }));
    let shutdown = {
        let stop = Arc::clone(&stop);
        async move {
            keyturn_http::shutdown_signal().await;
            let _ = stop.send(true);
        }
    };

    let listeners = Listeners { api, gateway };
    let served = keyturn_http::serve_with_webhooks(keyring, webhooks, listeners, limits, shutdown).await;
    let _ = stop.send(true);
    if let Some(worker) = worker {
        // The worker finishes its current attempt and returns once it sees the stop signal.
        let _ = worker.await;
    }
    served.map_err(|error| CliError::new(error.to_string()))
}

/// Builds the webhook worker over the keyring's store, with the webhook key and the
/// `KEYTURN_WEBHOOK_*` settings of the environment.
fn open_webhooks(global: &GlobalArgs, keyring: &Keyring) -> Result<Webhooks, CliError> {
    let database = keyturn::settings::resolve_database_url(global.database.as_deref())?;
    let key = webhook_key_from_env(&database)?;
    let config = webhook_config_from_env()?;
    Ok(Webhooks::new(Arc::clone(keyring.store()), key, Arc::new(SystemClock), config))
}

async fn bind(address: SocketAddr, option: &str) -> Result<TcpListener, CliError> {
    TcpListener::bind(address)
        .await
        .map_err(|error| CliError::new(format!("{option} {address}: cannot listen: {error}")))
}

fn local_address(listener: &TcpListener) -> SocketAddr {
    // A bound listener has a local address; the fallback only keeps this total.
    listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Builds the guard and trusted proxy settings from the options, rejecting each invalid value
/// with the option that set it.
fn service_config(args: &ServeArgs) -> Result<Config, CliError> {
    let trusted_proxies = TrustedProxies::parse(&args.trusted_proxies)
        .map_err(|error| CliError::new(format!("--trusted-proxy: {error}")))?;
    let window = parse_duration("--guard-window", &args.guard_window)?;
    let cooldown = parse_duration("--guard-cooldown", &args.guard_cooldown)?;
    let option = |error: keyturn::Error| {
        let name = match &error {
            keyturn::Error::InvalidInput { field: "guard window", .. } => "--guard-window",
            keyturn::Error::InvalidInput { field: "guard cooldown", .. } => "--guard-cooldown",
            _ => "--guard-max-failures",
        };
        CliError::new(format!("{name}: {error}"))
    };
    let guard = GuardConfig::new(args.guard_max_failures, window, cooldown).map_err(option)?;
    let guard = (args.guard == Switch::On).then_some(guard);
    let interval = parse_duration("--schedule-interval", &args.schedule_interval)?;
    if interval.is_zero() {
        return Err(CliError::new(format!(
            "--schedule-interval {:?}: the interval must be greater than zero; use --scheduler off to stop the scheduler",
            args.schedule_interval
        )));
    }
    let schedule_interval = (args.scheduler == Switch::On).then_some(interval);
    Ok(Config { guard, trusted_proxies, schedule_interval, ..Config::default() })
}

/// Logs the guard's limits and the trusted proxies at startup, and warns when a trusted network
/// covers every address, since then any client can choose its own address.
fn log_client_settings(config: &Config) {
    match &config.guard {
        Some(guard) => tracing::info!(
            target: "keyturn::guard", max_failures = guard.max_failures(), window_secs = guard.window().as_secs(),
            cooldown_secs = guard.cooldown().as_secs(), "brute-force guard on"
        ),
        None => tracing::warn!(target: "keyturn::guard", "brute-force guard off; failed verifications are not limited"),
    }
    let networks = config.trusted_proxies.to_strings();
    if networks.is_empty() {
        return;
    }
    tracing::info!(target: "keyturn::http", trusted_proxies = %networks.join(","), "reading X-Forwarded-For from trusted proxies");
    if networks.iter().any(|network| network.ends_with("/0")) {
        eprintln!(
            "warning: --trusted-proxy includes a /0 network, so every client can set its own address in \
             X-Forwarded-For; list only the addresses of your proxies"
        );
    }
}

fn parse_duration(option: &str, value: &str) -> Result<std::time::Duration, CliError> {
    let duration = keyturn_core::Duration::parse(value).map_err(|error| CliError::new(format!("{option}: {error}")))?;
    Ok(std::time::Duration::from_millis(duration.as_millis().unsigned_abs()))
}

fn parse_timeout(option: &str, value: &str) -> Result<std::time::Duration, CliError> {
    let duration = parse_duration(option, value)?;
    if duration.is_zero() {
        return Err(CliError::new(format!("{option}: a timeout must be greater than zero, such as 10s")));
    }
    Ok(duration)
}
