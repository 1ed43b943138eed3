//! The error type of the HTTP service and its one mapping to problem responses (RFC 9457). The
//! admin API, the verify endpoints and the health checks all turn failures into responses through
//! [`Error::into_response`], so each failure has one status, `type`, title and `code` wherever
//! it happens. Authentication rejections are not built here: they carry the exact response that
//! `Keyring::authenticate` returned, so their bytes match every other front end.
//!
//! A store error is reported to the client only as an internal error; its cause is logged at
//! target `keyturn::http`. No variant carries a token.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyturn_core::problem::PROBLEM_TYPE_PREFIX;
use keyturn_core::{HttpResponse, ResponseConfig, SelfRotationDenied};
use keyturn_store::StoreError;
use serde::Serialize;

use crate::TARGET;

/// The cause of a failed request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request's API key was missing, invalid or lacked a scope: send this response as it is.
    #[error("authentication rejected with status {}", .0.status)]
    Rejected(HttpResponse),
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    #[error("the request body must be JSON; send Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request headers are larger than the limit of {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("the request was not answered within {seconds} seconds")]
    Timeout { seconds: u64 },
    #[error("invalid {parameter}: {reason}")]
    InvalidParameter { parameter: &'static str, reason: String },
    #[error("header {name} is not valid: use visible ASCII characters only")]
    InvalidHeader { name: String },
    /// No route matches the request path. The path is not kept, because a client may have put a
    /// token in it.
    #[error("no endpoint at this path; the endpoints are listed in docs/http-api.md")]
    NoRoute,
    /// The route does not serve the method. `method` is a standard method name or `other`,
    /// never the request's own text.
    #[error("method {method} is not allowed on this endpoint")]
    MethodNotAllowed { method: &'static str },
    #[error("the gateway configuration is invalid: {0}")]
    Gateway(String),
    #[error(transparent)]
    Service(#[from] keyturn::Error),
    #[error("cannot serve on {address}: {reason}")]
    Listen { address: String, reason: String },
}

/// Marks a response that failed because of the store, for the store error metric.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreFailure;

/// A problem body: the members of RFC 9457 plus `code` and, where it applies, `key_id`.
#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
}

impl Error {
    /// Returns the status, `code`, title and detail sent to the client.
    fn problem(&self) -> (StatusCode, &'static str, &'static str, String) {
        use keyturn::Error as Service;

        let detail = self.to_string();
        match self {
            Error::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body", "Invalid request body", detail),
            Error::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Unsupported media type", detail)
            }
            Error::BodyTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "Request body too large", detail)
            }
            Error::HeadersTooLarge { .. } => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", "Request headers too large", detail)
            }
            Error::Timeout { .. } => (StatusCode::REQUEST_TIMEOUT, "timeout", "Request timed out", detail),
            Error::InvalidParameter { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_parameter", "Invalid parameter", detail)
            }
            Error::InvalidHeader { .. } => (StatusCode::BAD_REQUEST, "invalid_header", "Invalid header", detail),
            Error::NoRoute => (StatusCode::NOT_FOUND, "no_route", "No such endpoint", detail),
            Error::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed", detail)
            }
            Error::Service(Service::Invalid(_) | Service::InvalidInput { .. }) => {
                (StatusCode::BAD_REQUEST, "invalid_input", "Invalid input", detail)
            }
            Error::Service(Service::NotFound(key_id)) => {
                let detail = format!("key {key_id} not found; list keys with GET /v1/keys");
                (StatusCode::NOT_FOUND, "not_found", "Key not found", detail)
            }
            Error::Service(Service::WebhookNotFound(_)) => {
                (StatusCode::NOT_FOUND, "not_found", "Webhook endpoint not found", detail)
            }
            Error::Service(Service::NotRotatable { .. }) => {
                (StatusCode::CONFLICT, "not_rotatable", "Key cannot be rotated", detail)
            }
            Error::Service(Service::AlreadyRotated { key_id, successor_id }) => {
                let detail = format!(
                    "key {key_id} has already been rotated; its successor is {successor_id} (to replace a \
                     successor that was never used, rotate again with \"replace_unused_successor\": true)"
                );
                (StatusCode::CONFLICT, "already_rotated", "Key already rotated", detail)
            }
            // Another rotation of the same key committed first, so this one is a conflict like a
            // second rotation, not a store fault.
            Error::Service(Service::Store(StoreError::SuccessorMismatch { .. })) => {
                (StatusCode::CONFLICT, "already_rotated", "Key already rotated", detail)
            }
            Error::Service(Service::SuccessorUsed { .. }) => {
                (StatusCode::CONFLICT, "successor_used", "Successor already used", detail)
            }
            Error::Service(Service::AlreadyRevoked { .. }) => {
                (StatusCode::CONFLICT, "already_revoked", "Key already revoked", detail)
            }
            Error::Service(Service::ReservedScope) => {
                (StatusCode::FORBIDDEN, "reserved_scope", "Reserved scope", detail)
            }
            Error::Service(Service::SelfRotationDenied(_)) => {
                (StatusCode::FORBIDDEN, "self_rotation_denied", "Self-rotation denied", detail)
            }
            Error::Service(Service::UnknownPolicy(name)) => {
                let detail = format!("policy {name:?} does not exist; list the policies with GET /v1/policies");
                (StatusCode::BAD_REQUEST, "unknown_policy", "Unknown policy", detail)
            }
            Error::Service(Service::Store(StoreError::PolicyInUse { .. } | StoreError::PolicyConflict { .. })) => {
                (StatusCode::CONFLICT, "policy_conflict", "Policy conflict", detail)
            }
            Error::Gateway(_) | Error::Rejected(_) | Error::Listen { .. } | Error::Service(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "an internal error occurred; the server log has the cause".to_owned(),
            ),
        }
    }

    fn key_id(&self) -> Option<&str> {
        use keyturn::Error as Service;

        match self {
            Error::Service(
                Service::NotFound(key_id)
                | Service::NotRotatable { key_id, .. }
                | Service::AlreadyRotated { key_id, .. }
                | Service::SuccessorUsed { key_id, .. }
                | Service::AlreadyRevoked { key_id, .. },
            ) => Some(key_id.as_str()),
            Error::Service(Service::SelfRotationDenied(
                SelfRotationDenied::Disabled { key_id } | SelfRotationDenied::ChainEnded { key_id, .. },
            )) => Some(key_id.as_str()),
            Error::Service(Service::Store(StoreError::SuccessorMismatch { key_id, .. })) => Some(key_id.as_str()),
            _ => None,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Rejected(response) => return send(response),
            Error::Service(error) if error.is_unavailable() => {
                tracing::warn!(target: TARGET, error = %error, "store unavailable");
                let mut response = send(&ResponseConfig::default().store_unavailable());
                response.extensions_mut().insert(StoreFailure);
                return response;
            }
            Error::Service(error @ keyturn::Error::Store(store))
                if !matches!(
                    store,
                    StoreError::SuccessorMismatch { .. }
                        | StoreError::PolicyInUse { .. }
                        | StoreError::PolicyConflict { .. }
                ) =>
            {
                tracing::error!(target: TARGET, error = %error, "store error");
                let mut response = internal_error();
                response.extensions_mut().insert(StoreFailure);
                return response;
            }
            Error::Gateway(_) | Error::Listen { .. } | Error::Service(_) if self.problem().0.is_server_error() => {
                tracing::error!(target: TARGET, error = %self, "request failed");
            }
            _ => tracing::debug!(target: TARGET, error = %self, "request rejected"),
        }

        let (status, code, title, detail) = self.problem();
        problem(status, code, title, &detail, self.key_id())
    }
}

/// Builds the 500 response of an internal error, which names no cause.
fn internal_error() -> Response {
    let detail = "an internal error occurred; the server log has the cause";
    problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", detail, None)
}

fn problem(status: StatusCode, code: &str, title: &str, detail: &str, key_id: Option<&str>) -> Response {
    let body = ProblemBody {
        type_uri: format!("{PROBLEM_TYPE_PREFIX}{code}"),
        title,
        status: status.as_u16(),
        detail,
        code,
        key_id,
    };
    // Serialising a struct of strings and integers cannot fail.
    let body = serde_json::to_vec(&body).expect("problem bodies serialise");
    let headers = [("content-type", "application/problem+json"), ("cache-control", "no-store")];
    (status, headers, body).into_response()
}

/// Converts a response built by the core (status, headers, body) into an axum response, byte
/// for byte.
pub(crate) fn send(response: &HttpResponse) -> Response {
    let mut sent = Response::new(axum::body::Body::from(response.body.clone()));
    *sent.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    append_headers(sent.headers_mut(), &response.headers);
    sent
}

/// Appends `headers` to a response's header map. The core builds names and values from ASCII
/// text, so a pair that is not a valid header is logged and skipped rather than sent.
pub(crate) fn append_headers(map: &mut axum::http::HeaderMap, headers: &[(&'static str, String)]) {
    for (name, value) in headers {
        let (Ok(header), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) else {
            tracing::error!(target: TARGET, header = name, "skipped an invalid response header");
            continue;
        };
        map.append(header, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyturn_core::KeyId;

    #[test]
    fn successor_mismatch_is_conflict() {
        let key_id = KeyId::parse("AAAAAAAAAAAA").unwrap();
        let expected = KeyId::parse("BBBBBBBBBBBB").unwrap();
        let error = Error::Service(keyturn::Error::Store(StoreError::SuccessorMismatch { key_id, expected }));

        let response = error.into_response();

        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert!(response.extensions().get::<StoreFailure>().is_none(), "counted as a store error");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }

    #[test]
    fn successor_mismatch_names_key_and_code() {
        let key_id = KeyId::parse("AAAAAAAAAAAA").unwrap();
        let expected = KeyId::parse("BBBBBBBBBBBB").unwrap();
        let error = Error::Service(keyturn::Error::Store(StoreError::SuccessorMismatch { key_id, expected }));

        let (status, code, _, detail) = error.problem();

        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(code, "already_rotated");
        assert!(detail.contains("AAAAAAAAAAAA"), "{detail}");
        assert_eq!(error.key_id(), Some("AAAAAAAAAAAA"));
    }
}
