//! The admin API under `/v1`: create, list, show, rotate and revoke keys, report which clients
//! moved to the successors of rotated keys, and list audit events.
//! Each handler first authenticates the request with the reserved scope its route requires, so
//! a request without the right key learns nothing else. Then it parses its input and calls the
//! keyring. Every mutation is audited with the acting key and the client's socket address.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http_body_util::LengthLimitError;
use keyturn::{ListFilter, MAX_PAGE_SIZE};
use keyturn_core::{AuditEventType, Outcome};
use keyturn_store::AuditFilter;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{authenticate, Authenticated};
use crate::client::ClientAddr;
use crate::error::append_headers;
use crate::json::{self, CreateKeyBody, RevokeBody, RotateBody};
use crate::{AppState, Error};

pub(crate) const KEYS_READ: &str = "keyturn:keys:read";
pub(crate) const KEYS_WRITE: &str = "keyturn:keys:write";
pub(crate) const AUDIT_READ: &str = "keyturn:audit:read";

/// The page size of a listing without `limit`.
const DEFAULT_PAGE_SIZE: u32 = 100;

/// The query of `GET /v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyListQuery {
    owner: Option<String>,
    state: Option<String>,
    expiring_within: Option<String>,
    unused_for: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The query of `GET /v1/keys/migration-report`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrationReportQuery {
    owner: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    key_id: Option<String>,
    event: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    cursor: Option<i64>,
}

/// The extractors that the list handlers take from every request.
type Request = (State<AppState>, Extension<ClientAddr>, Uri, HeaderMap);

/// `POST /v1/keys`: creates a key and returns it with its token, shown this once.
pub(crate) async fn create_key(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, KEYS_WRITE).await?;
    let body: CreateKeyBody = json::parse_body(&headers, &read_body(&state, body).await?)?;
    let (new, self_rotation) = body.into_new_key()?;

    let issued = state.keyring.create_with(new, self_rotation, &admin.caller()).await?;
    let view = issued.record.state_at(state.keyring.now());
    let mut response = respond(StatusCode::CREATED, json::issued_json(&issued, &view), &admin);
    let location = format!("/v1/keys/{}", issued.record.key_id);
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /v1/keys`: lists keys in creation order, one page at a time.
pub(crate) async fn list_keys(
    (State(state), Extension(ClientAddr(client_addr)), uri, headers): Request,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, KEYS_READ).await?;
    let query: KeyListQuery = parse_query(&uri)?;
    let filter = ListFilter {
        owner: query.owner,
        state: query.state.as_deref().map(parse_state).transpose()?,
        expiring_within: query
            .expiring_within
            .as_deref()
            .map(|value| json::duration("expiring_within", value))
            .transpose()?,
        unused_for: query.unused_for.as_deref().map(|value| json::duration("unused_for", value)).transpose()?,
    };
    let after = query.cursor.as_deref().map(|cursor| json::key_id("cursor", cursor)).transpose()?;
    let limit = page_size(query.limit)?;

    let page = state.keyring.list_page(&filter, after, limit).await?;
    let parameters = json!({
        "owner": filter.owner,
        "state": query.state,
        "expiring_within": query.expiring_within,
        "unused_for": query.unused_for,
        "limit": limit,
    });
    state.keyring.record_admin_read(&admin.caller(), "list_keys", None, parameters).await?;
    let keys: Vec<Value> = page.keys.iter().map(|view| json::key_json(&view.record, &view.state)).collect();
    let next = page.next_after.as_ref().map(|key_id| key_id.as_str());
    Ok(respond(StatusCode::OK, json!({ "keys": keys, "next_cursor": next }), &admin))
}

/// `GET /v1/keys/migration-report`: lists the keys in their overlap window, the soonest to end
/// first, with whether their clients have moved to the successor, one page at a time.
pub(crate) async fn migration_report(
    (State(state), Extension(ClientAddr(client_addr)), uri, headers): Request,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, KEYS_READ).await?;
    let query: MigrationReportQuery = parse_query(&uri)?;
    let after = query.cursor.as_deref().map(|cursor| json::key_id("cursor", cursor)).transpose()?;
    let limit = page_size(query.limit)?;

    let page = state.keyring.migration_report_page(query.owner.as_deref(), after, limit).await?;
    let parameters = json!({ "owner": query.owner, "limit": limit, "cursor": query.cursor });
    state.keyring.record_admin_read(&admin.caller(), "migration_report", None, parameters).await?;
    let keys: Vec<Value> = page.keys.iter().map(keyturn::json::migration_entry_json).collect();
    let next = page.next_after.as_ref().map(|key_id| key_id.as_str());
    Ok(respond(StatusCode::OK, json!({ "keys": keys, "next_cursor": next }), &admin))
}

/// The `{key_id}` path segment. A segment that is not valid percent-encoded UTF-8 gets a
/// problem response that does not quote it, instead of axum's plain-text rejection.
pub(crate) struct KeyIdPath(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for KeyIdPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(key_id)) => Ok(KeyIdPath(key_id)),
            Err(_) => Err(Error::InvalidParameter {
                parameter: "key_id",
                reason: "the path segment is not valid percent-encoded UTF-8; a key id is 12 characters of \
                         [A-Za-z0-9]"
                    .to_owned(),
            }),
        }
    }
}

/// `GET /v1/keys/{key_id}`: shows one key.
pub(crate) async fn show_key(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    KeyIdPath(key_id): KeyIdPath,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, KEYS_READ).await?;
    let key_id = json::key_id("key_id", &key_id)?;

    let view = state.keyring.get(&key_id).await?;
    state.keyring.record_admin_read(&admin.caller(), "show_key", Some(&key_id), json!({})).await?;
    Ok(respond(StatusCode::OK, json::key_json(&view.record, &view.state), &admin))
}

/// `POST /v1/keys/{key_id}/rotate`: issues a successor and returns it with its token.
pub(crate) async fn rotate_key(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    KeyIdPath(key_id): KeyIdPath,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, KEYS_WRITE).await?;
    let key_id = json::key_id("key_id", &key_id)?;
    let body: RotateBody = json::parse_optional_body(&headers, &read_body(&state, body).await?)?;
    let options = body.into_options()?;

    let issued = state.keyring.rotate(&key_id, &options, &admin.caller()).await?;
    let view = issued.record.state_at(state.keyring.now());
    let mut value = json::issued_json(&issued, &view);
    // The rotation is committed, so a failed read of the old key must not hide the token.
    match state.keyring.get(&key_id).await {
        Ok(old) => value["predecessor"] = json::key_json(&old.record, &old.state),
        Err(error) => {
            tracing::warn!(target: crate::TARGET, key_id = %key_id, error = %error, "reading the rotated key back failed")
        }
    }
    Ok(respond(StatusCode::CREATED, value, &admin))
}

/// `POST /v1/keys/{key_id}/revoke`: revokes a key at once.
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    KeyIdPath(key_id): KeyIdPath,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, KEYS_WRITE).await?;
    let key_id = json::key_id("key_id", &key_id)?;
    let body: RevokeBody = json::parse_optional_body(&headers, &read_body(&state, body).await?)?;

    let record = state.keyring.revoke(&key_id, body.reason.as_deref(), &admin.caller()).await?;
    let view = record.state_at(state.keyring.now());
    Ok(respond(StatusCode::OK, json::key_json(&record, &view), &admin))
}

/// `GET /v1/audit`: lists audit events in sequence order, one page at a time.
pub(crate) async fn list_audit(
    (State(state), Extension(ClientAddr(client_addr)), uri, headers): Request,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, AUDIT_READ).await?;
    let query: AuditQuery = parse_query(&uri)?;
    let limit = page_size(query.limit)?;
    let filter = AuditFilter {
        key_id: query.key_id.as_deref().map(|key_id| json::key_id("key_id", key_id)).transpose()?,
        event: query.event.as_deref().map(parse_event).transpose()?,
        since: query.since.as_deref().map(|since| json::instant("since", since)).transpose()?,
        until: query.until.as_deref().map(|until| json::instant("until", until)).transpose()?,
        after_seq: query.cursor,
        // Reading one event more than the page shows whether another page follows.
        limit: Some(limit + 1),
    };

    let mut events = state.keyring.audit(&filter).await?;
    let parameters = json!({
        "key_id": filter.key_id.as_ref().map(|key_id| key_id.as_str()),
        "event": filter.event.map(|event| event.as_str()),
        "since": query.since,
        "until": query.until,
        "cursor": query.cursor,
    });
    state.keyring.record_admin_read(&admin.caller(), "list_audit", None, parameters).await?;
    let more = events.len() > limit as usize;
    events.truncate(limit as usize);
    let next = if more { events.last().map(|event| event.seq) } else { None };
    let events: Vec<Value> = events.iter().map(json::audit_json).collect();
    Ok(respond(StatusCode::OK, json!({ "events": events, "next_cursor": next }), &admin))
}

/// Builds a JSON response with the acting key's lifecycle headers.
pub(crate) fn respond(status: StatusCode, value: Value, admin: &Authenticated) -> Response {
    let mut response = (status, axum::Json(value)).into_response();
    append_headers(response.headers_mut(), &admin.headers);
    response
}

/// Reads the request body, up to the body limit. Handlers call it only after authentication, so
/// a client without a valid key cannot make the server wait for a body or buffer one.
pub(crate) async fn read_body(state: &AppState, body: Body) -> Result<Bytes, Error> {
    let limit = state.limits.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        if exceeds_limit(&error) {
            Error::BodyTooLarge { limit }
        } else {
            Error::InvalidBody(format!("the request body could not be read: {error}"))
        }
    })
}

/// Returns whether a body failed because it was larger than a length limit.
fn exceeds_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if current.is::<LengthLimitError>() {
            return true;
        }
        cause = current.source();
    }
    false
}

fn parse_query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, Error> {
    serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|error| Error::InvalidParameter { parameter: "query", reason: error.to_string() })
}

fn page_size(limit: Option<u32>) -> Result<u32, Error> {
    match limit.unwrap_or(DEFAULT_PAGE_SIZE) {
        limit @ 1..=MAX_PAGE_SIZE => Ok(limit),
        other => Err(Error::InvalidParameter {
            parameter: "limit",
            reason: format!("{other} is out of range; use 1 to {MAX_PAGE_SIZE}"),
        }),
    }
}

fn parse_state(value: &str) -> Result<Outcome, Error> {
    let states = Outcome::ALL.into_iter().filter(|outcome| *outcome != Outcome::Invalid);
    states.clone().find(|outcome| outcome.as_str() == value).ok_or_else(|| {
        let names: Vec<&str> = states.map(Outcome::as_str).collect();
        Error::InvalidParameter { parameter: "state", reason: format!("{value:?} is not one of {}", names.join(", ")) }
    })
}

fn parse_event(value: &str) -> Result<AuditEventType, Error> {
    AuditEventType::parse(value).ok_or_else(|| Error::InvalidParameter {
        parameter: "event",
        reason: format!(
            "{value:?} is not an audit event type such as authn_token_created, authn_token_rotated or \
             authn_token_revoked"
        ),
    })
}
