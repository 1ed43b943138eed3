//! `keyturn serve`: runs the HTTP service of `keyturn-http` on the configured database and
//! pepper until SIGTERM or SIGINT. It prints the addresses it listens on, one per line, so a
//! script that asked for port 0 learns the port.

use std::net::SocketAddr;

use keyturn_http::{Limits, Listeners};
use tokio::net::TcpListener;

use crate::error::CliError;
use crate::output::emit;
use crate::setup::open_keyring;
use crate::{GlobalArgs, ServeArgs};

/// Runs `serve` until a shutdown signal, then waits for in-flight requests and flushes usage.
pub async fn run(global: &GlobalArgs, args: &ServeArgs) -> Result<(), CliError> {
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_header_bytes: args.max_header_bytes,
        request_timeout: parse_timeout("--request-timeout", &args.request_timeout)?,
        header_read_timeout: parse_timeout("--header-read-timeout", &args.header_read_timeout)?,
    };
    let keyring = open_keyring(global).await?;

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

    let listeners = Listeners { api, gateway };
    keyturn_http::serve(keyring, listeners, limits, keyturn_http::shutdown_signal())
        .await
        .map_err(|error| CliError::new(error.to_string()))
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

fn parse_timeout(option: &str, value: &str) -> Result<std::time::Duration, CliError> {
    let duration = keyturn_core::Duration::parse(value).map_err(|error| CliError::new(format!("{option}: {error}")))?;
    if duration.is_zero() {
        return Err(CliError::new(format!("{option}: a timeout must be greater than zero, such as 10s")));
    }
    Ok(std::time::Duration::from_millis(duration.as_millis().unsigned_abs()))
}
