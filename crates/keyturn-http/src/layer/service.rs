//! The service of [`super::KeyturnLayer`]. It reads the credential headers, the query and the
//! client address of a request and passes them to `Keyring::authenticate`. Then it sends the
//! rejection that returns, or calls the inner service and adds the lifecycle headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use axum::response::Response;
use keyturn::{AuthRequest, Authentication, Keyring};

use super::{Mode, ResponseFuture, VerifiedKey};
use crate::error::{append_headers, send};

/// Authenticates each request, then calls the inner service `S`.
#[derive(Debug, Clone)]
pub struct KeyturnService<S> {
    inner: S,
    keyring: Arc<Keyring>,
    mode: Mode,
}

impl<S> KeyturnService<S> {
    pub(crate) fn new(inner: S, keyring: Arc<Keyring>, mode: Mode) -> Self {
        KeyturnService { inner, keyring, mode }
    }
}

impl<S> tower::Service<Request> for KeyturnService<S>
where
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The clone that was polled ready serves this request; the fresh clone stays for the next.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let keyring = Arc::clone(&self.keyring);
        let mode = self.mode.clone();

        ResponseFuture::new(async move {
            let api_key_header = keyring.config().responses.api_key_header().to_owned();
            let authorization = header_values(request.headers(), "authorization");
            let api_key = header_values(request.headers(), &api_key_header);
            let query: Vec<(String, String)> = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect();
            let client_addr = client_addr(&keyring, &request);

            let query: Vec<(&str, &str)> = query.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
            let required = match mode {
                Mode::Public => {
                    if let Some(rejection) = keyring.check_query(&query, client_addr.as_deref()) {
                        return Ok(send(&rejection));
                    }
                    return inner.call(request).await;
                }
                Mode::Required(scopes) => scopes,
            };

            let authorization: Vec<&str> = authorization.iter().map(String::as_str).collect();
            let api_key: Vec<&str> = api_key.iter().map(String::as_str).collect();
            let auth_request = AuthRequest {
                authorization: &authorization,
                api_key: &api_key,
                query: &query,
                client_addr: client_addr.as_deref(),
            };
            let (decision, lifecycle_headers) = match keyring.authenticate(&auth_request, &required).await {
                Authentication::Rejected { response, .. } => return Ok(send(&response)),
                Authentication::Allowed { decision, headers } => (decision, headers),
            };

            if let Some(verified) = VerifiedKey::from_decision(&decision) {
                request.extensions_mut().insert(verified);
            }
            let mut response = inner.call(request).await?;
            append_headers(response.headers_mut(), &lifecycle_headers);
            Ok(response)
        })
    }
}

/// Returns the client address of a request from the socket peer in its `ConnectInfo`, or from
/// `X-Forwarded-For` when that peer is one of the keyring's trusted proxies.
fn client_addr(keyring: &Keyring, request: &Request) -> Option<String> {
    let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    let peer = peer.to_string();
    if keyring.config().trusted_proxies.is_empty() {
        return Some(peer);
    }
    let forwarded = header_values(request.headers(), "x-forwarded-for");
    let forwarded: Vec<&str> = forwarded.iter().map(String::as_str).collect();
    Some(keyring.client_addr(&peer, &forwarded))
}

/// Returns every value of header `name` as text, replacing bytes that are not UTF-8.
fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers.get_all(name).iter().map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned()).collect()
}
