//! The webhook routes of the admin API: list and add endpoints, remove one, and send one a test
//! message. Every route requires `keyturn:admin`, because an endpoint receives every key
//! lifecycle event. Adding and removing are audited by the service layer with the admin key as
//! the actor, and a listing is audited as an admin read.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use keyturn::webhooks::{endpoint_json, Webhooks};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::read_body;
use crate::auth::{authenticate, Authenticated};
use crate::client::ClientAddr;
use crate::error::append_headers;
use crate::{json, AppState, Error};

pub(crate) const ADMIN: &str = "keyturn:admin";

/// The body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    allow_private_network: bool,
}

/// The `{endpoint_id}` path segment, with a problem response for one that does not decode.
pub(crate) struct EndpointIdPath(String);

impl<S: Send + Sync> FromRequestParts<S> for EndpointIdPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(endpoint_id)) => Ok(EndpointIdPath(endpoint_id)),
            Err(_) => Err(Error::InvalidParameter {
                parameter: "endpoint_id",
                reason: "the path segment is not valid percent-encoded UTF-8; an endpoint id looks like \
                         wh_0123456789abcdef"
                    .to_owned(),
            }),
        }
    }
}

/// `GET /v1/webhooks`: lists every endpoint, without secrets.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, ADMIN).await?;
    let webhooks = service(&state)?;

    let endpoints = webhooks.list().await?;
    state.keyring.record_admin_read(&admin.caller(), "list_webhooks", None, json!({})).await?;
    let values: Vec<Value> = endpoints.iter().map(endpoint_json).collect();
    Ok(respond(StatusCode::OK, json!({ "webhooks": values }), &admin))
}

/// `POST /v1/webhooks`: adds an endpoint and returns it with its signing secret, shown this once.
pub(crate) async fn add(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, ADMIN).await?;
    let webhooks = service(&state)?;
    let body: AddBody = json::parse_body(&headers, &read_body(&state, body).await?)?;

    let added = webhooks.add(&body.url, &body.events, body.allow_private_network, &admin.caller()).await?;
    let mut value = endpoint_json(&added.endpoint);
    value["secret"] = json!(added.secret.as_str());
    Ok(respond(StatusCode::CREATED, value, &admin))
}

/// `DELETE /v1/webhooks/{endpoint_id}`: removes an endpoint with its undelivered messages.
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    EndpointIdPath(endpoint_id): EndpointIdPath,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, ADMIN).await?;
    let webhooks = service(&state)?;

    webhooks.remove(&endpoint_id, &admin.caller()).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    append_headers(response.headers_mut(), &admin.headers);
    Ok(response)
}

/// `POST /v1/webhooks/{endpoint_id}/test`: sends a signed `webhook_test` message now and returns
/// the endpoint's status.
pub(crate) async fn test(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    EndpointIdPath(endpoint_id): EndpointIdPath,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, ADMIN).await?;
    let webhooks = service(&state)?;

    let result = webhooks.test(&endpoint_id).await?;
    let delivered = result.status.is_some_and(|status| (200..300).contains(&status));
    let value = json!({ "delivered": delivered, "status": result.status, "result": result.result });
    Ok(respond(StatusCode::OK, value, &admin))
}

fn service(state: &AppState) -> Result<&Arc<Webhooks>, Error> {
    state.webhooks.as_ref().ok_or_else(|| {
        Error::Service(keyturn::Error::InvalidInput {
            field: "webhooks",
            reason: "this server runs without webhooks; start it with --webhooks on".to_owned(),
        })
    })
}

fn respond(status: StatusCode, value: Value, admin: &Authenticated) -> Response {
    let mut response = (status, axum::Json(value)).into_response();
    append_headers(response.headers_mut(), &admin.headers);
    response
}
