//! The gateway endpoint `/v1/auth`, for nginx `auth_request` and Envoy's HTTP external
//! authorization. The gateway forwards the client's headers; this endpoint authenticates them
//! with `Keyring::authenticate` against the scopes named in `X-Keyturn-Scopes`, and answers 204
//! with identity and lifecycle headers, or the exact rejection that the Flask extension sends.
//!
//! The gateway is trusted by where it connects: this endpoint is served only on the gateway
//! listener, which must be reachable only by the gateway (loopback or a private interface). So
//! it trusts the gateway's `X-Forwarded-For` for the client address and its `X-Original-URI` for
//! the query that is checked for a misplaced token.
//!
//! nginx treats any subrequest status other than 2xx, 401 and 403 as an error. A gateway that
//! sends `Keyturn-Gateway: nginx` therefore gets every other rejection as 403, with the real
//! status in `Keyturn-Status` and the problem body also in `Keyturn-Problem`, which the nginx
//! configuration turns back into the real response.

use std::time::Instant as StdInstant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use keyturn::Authentication;
use keyturn_core::Scopes;

use crate::auth::{header_text, outcome_code, RequestParts};
use crate::client::ClientAddr;
use crate::error::{append_headers, send};
use crate::{AppState, Error};

/// The header in which the gateway names the scopes a route requires, separated by spaces.
pub const SCOPES_HEADER: &str = "x-keyturn-scopes";
/// The header with which a gateway asks for the nginx status mapping; its value is `nginx`.
pub const GATEWAY_HEADER: &str = "keyturn-gateway";
/// The original request URI, whose query is checked for a misplaced token.
pub const ORIGINAL_URI_HEADER: &str = "x-original-uri";
/// The response header with the status the client should receive, in the nginx mapping.
pub const STATUS_HEADER: &str = "keyturn-status";
/// The response header with the problem body, in the nginx mapping.
pub const PROBLEM_HEADER: &str = "keyturn-problem";

const KEY_ID_HEADER: &str = "keyturn-key-id";
const OWNER_HEADER: &str = "keyturn-owner";
const KEY_SCOPES_HEADER: &str = "keyturn-scopes";

/// The largest problem body copied into `Keyturn-Problem`; problem bodies are far smaller.
const MAX_PROBLEM_BYTES: usize = 4096;

/// `/v1/auth` (any method, any path below it): authenticates a forwarded request.
pub(crate) async fn auth(
    State(state): State<AppState>,
    Extension(ClientAddr(peer)): Extension<ClientAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let nginx = headers.get(GATEWAY_HEADER).is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"nginx"));
    let response = match authenticate(&state, &peer, &uri, &headers).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    if nginx {
        map_for_nginx(response).await
    } else {
        response
    }
}

async fn authenticate(state: &AppState, peer: &str, uri: &Uri, headers: &HeaderMap) -> Result<Response, Error> {
    // The gateway sets this header itself; two copies mean a client-sent one got through, and
    // reading either could let the client choose the scopes its own request is checked against.
    if headers.get_all(SCOPES_HEADER).iter().count() > 1 {
        return Err(Error::Gateway(
            "header X-Keyturn-Scopes appears more than once; the gateway must set it once and drop any copy \
             the client sent"
                .to_owned(),
        ));
    }
    let required = match header_text(headers, SCOPES_HEADER)? {
        // The error names the header but not its value, which is logged and could hold a token.
        Some(text) => Scopes::parse(text.split_ascii_whitespace()).map_err(|_| {
            Error::Gateway(
                "header X-Keyturn-Scopes is not a list of scopes separated by spaces, each 1 to 128 \
                 characters of [A-Za-z0-9:._/-]"
                    .to_owned(),
            )
        })?,
        None => Scopes::default(),
    };
    let original_uri = header_text(headers, ORIGINAL_URI_HEADER)?.unwrap_or_default();
    let original_query = original_uri.split_once('?').map_or("", |(_, query)| query);
    let parts = RequestParts::read(state, headers, &[uri.query().unwrap_or(""), original_query])?;
    let client_addr = forwarded_client(headers)?.unwrap_or_else(|| peer.to_owned());

    let started = StdInstant::now();
    let authentication = parts.authenticate(state, &client_addr, &required).await;
    state.metrics.record_verification("auth", outcome_code(&authentication), started.elapsed());

    match authentication {
        Authentication::Allowed { decision, headers: lifecycle } => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let map = response.headers_mut();
            if let Some(key) = decision.key.as_deref() {
                insert(map, KEY_ID_HEADER, key.key_id.as_str().as_bytes());
                if let Some(owner) = &key.owner {
                    insert(map, OWNER_HEADER, owner.as_bytes());
                }
                insert(map, KEY_SCOPES_HEADER, key.scopes.to_space_separated().as_bytes());
            }
            append_headers(map, &lifecycle);
            Ok(response)
        }
        Authentication::Rejected { response, .. } => {
            let mut sent = send(&response);
            if response.status == 503 {
                sent.extensions_mut().insert(crate::error::StoreFailure);
            }
            Ok(sent)
        }
    }
}

/// Returns the client address that the gateway put last in `X-Forwarded-For`, if any.
fn forwarded_client(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let Some(forwarded) = header_text(headers, "x-forwarded-for")? else { return Ok(None) };
    let last = forwarded.rsplit(',').next().map(str::trim).filter(|address| !address.is_empty());
    Ok(last.map(str::to_owned))
}

/// Rewrites a rejection so that nginx `auth_request` can pass it on: the status the client should
/// receive goes into `Keyturn-Status`, the body into `Keyturn-Problem`, and a status other than
/// 401 or 403 becomes 403.
async fn map_for_nginx(response: Response) -> Response {
    let status = response.status();
    if status.is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_PROBLEM_BYTES).await.unwrap_or_default();

    insert(&mut parts.headers, STATUS_HEADER, status.as_str().as_bytes());
    insert(&mut parts.headers, PROBLEM_HEADER, &bytes);
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        parts.status = StatusCode::FORBIDDEN;
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn insert(map: &mut HeaderMap, name: &'static str, value: &[u8]) {
    match HeaderValue::from_bytes(value) {
        Ok(value) => {
            map.insert(HeaderName::from_static(name), value);
        }
        Err(_) => tracing::error!(target: crate::TARGET, header = name, "skipped an invalid response header"),
    }
}
