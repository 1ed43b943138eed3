//! Verification for other services: `POST /v1/verify`, which a service calls with a token and
//! the scopes its route requires, and which returns the decision as JSON. The caller must
//! authenticate with a key holding `keyturn:verify`. The decision is the keyring's, so the
//! outcome and headers match the Flask extension's for the same token at the same instant.
//!
//! The request body carries a token, so errors about it never quote its members' values.

use std::time::Instant as StdInstant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use keyturn_core::{Decision, Scopes, Token};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::admin::read_body;
use crate::auth::authenticate;
use crate::client::ClientAddr;
use crate::error::{append_headers, send};
use crate::json::{check_json_content_type, rfc3339};
use crate::{AppState, Error};

pub(crate) const VERIFY: &str = "keyturn:verify";

/// The body of `POST /v1/verify`. It has no `Debug`, because it contains a token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    token: String,
    #[serde(default)]
    scopes: Vec<String>,
}

/// `POST /v1/verify`: verifies a token against the required scopes.
pub(crate) async fn verify(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let caller = authenticate(&state, &headers, &uri, &client_addr, VERIFY).await?;
    check_json_content_type(&headers)?;
    let (token, required) = parse(&read_body(&state, body).await?)?;

    let started = StdInstant::now();
    let result = state.keyring.verify(token.expose(), &required, Some(&client_addr)).await;
    drop(token);
    let decision = match result {
        Ok(decision) => decision,
        Err(error) => {
            tracing::warn!(target: crate::TARGET, error = %error, "store unavailable during verification");
            state.metrics.record_verification("verify", "store_unavailable", started.elapsed());
            let mut response = send(&state.keyring.config().responses.store_unavailable());
            response.extensions_mut().insert(crate::error::StoreFailure);
            return Ok(response);
        }
    };
    state.metrics.record_verification("verify", decision.code(), started.elapsed());

    let value = decision_json(&state, &decision);
    let mut response = (StatusCode::OK, axum::Json(value)).into_response();
    append_headers(response.headers_mut(), &caller.headers);
    Ok(response)
}

/// Parses the body into the token and the required scopes. Errors name the member and the
/// rule, never the value, since a misplaced token could be that value.
fn parse(body: &Bytes) -> Result<(Token, Scopes), Error> {
    let body: VerifyBody = serde_json::from_slice(body).map_err(|error| {
        let category = match error.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "it is not valid JSON",
            _ => {
                "expected an object with a string member \"token\" and an optional array of strings \"scopes\", \
                  and no other members"
            }
        };
        Error::InvalidBody(format!("{category} (line {} column {})", error.line(), error.column()))
    })?;
    let token = Token::new(body.token);

    let mut scopes = Vec::with_capacity(body.scopes.len());
    for (index, scope) in body.scopes.iter().enumerate() {
        let parsed = keyturn_core::Scope::parse(scope).map_err(|_| Error::InvalidParameter {
            parameter: "scopes",
            reason: format!(
                "member {index} is not a scope: use 1 to 128 characters of [A-Za-z0-9:._/-], and under \
                 \"keyturn:\" only the reserved scopes"
            ),
        })?;
        scopes.push(parsed);
    }
    Ok((token, scopes.into_iter().collect()))
}

/// Renders a decision: whether it allows the request, its outcome, the key when the secret
/// matched, the lifecycle headers to forward, and for a rejection the exact response to send.
fn decision_json(state: &AppState, decision: &Decision) -> Value {
    let key = decision.key.as_deref();
    let headers: Map<String, Value> =
        decision.lifecycle_headers().into_iter().map(|(name, value)| (name.to_owned(), Value::String(value))).collect();
    let rejection = state.keyring.config().responses.rejection(decision).map(|response| {
        let headers: Map<String, Value> =
            response.headers.into_iter().map(|(name, value)| (name.to_owned(), Value::String(value))).collect();
        json!({
            "status": response.status,
            "headers": headers,
            // The core builds problem bodies as UTF-8 JSON text.
            "body": String::from_utf8_lossy(&response.body),
        })
    });

    json!({
        "allowed": decision.allowed(),
        "outcome": decision.code(),
        "key_id": key.map(|record| record.key_id.as_str()),
        "owner": key.and_then(|record| record.owner.as_deref()),
        "scopes": key.map(|record| &record.scopes),
        "expires_at": rfc3339(key.and_then(|record| record.expires_at)),
        "missing_scopes": decision.missing_scopes,
        "headers": headers,
        "rejection": rejection,
    })
}
