//! The client address of each request, attached by the accept loop as a [`ClientAddr`]
//! extension before any middleware runs, so token checks, authentication, usage records and
//! audit rows all see the same address. On the API listener it is the address that
//! `Keyring::client_addr` chooses from the socket peer and `X-Forwarded-For`, which counts only
//! when the peer is a configured trusted proxy. On the gateway listener it is the socket peer,
//! and `/v1/auth` reads the gateway's own `X-Forwarded-For` instead.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use keyturn::Keyring;

/// The client address of a request: `ip:port` of the socket peer, or an address that a trusted
/// proxy forwarded, without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub String);

/// The source of the client addresses of a listener's requests.
#[derive(Clone)]
pub(crate) enum Source {
    /// The socket peer, whatever the headers contain.
    Peer,
    /// The socket peer, or the client that the keyring's trusted proxies forwarded.
    TrustedProxies(Arc<Keyring>),
}

impl Source {
    /// Returns the client address of a request from `peer` with `headers`.
    pub(crate) fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientAddr {
        let peer = peer.to_string();
        let keyring = match self {
            Source::TrustedProxies(keyring) if !keyring.config().trusted_proxies.is_empty() => keyring,
            _ => return ClientAddr(peer),
        };
        // A value that is not visible ASCII becomes an empty entry, which ends the walk through
        // the forwarded addresses at the last trusted hop.
        let forwarded: Vec<&str> =
            headers.get_all("x-forwarded-for").iter().map(|value| value.to_str().unwrap_or("")).collect();
        ClientAddr(keyring.client_addr(&peer, &forwarded))
    }
}
