//! `POST /v1/self/rotate`: a client rotates its own key, authenticated by that key and no scope.
//! The request is authenticated with `Keyring::authenticate`, so a missing or rejected key gets
//! the same 401 and 400 responses as everywhere else. `Keyring::self_rotate` then decides and
//! writes the rotation; this module only maps its result to the response.

use std::time::Instant as StdInstant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use keyturn::Authentication;
use keyturn_core::{extract_credential, Decision, Scopes};

use crate::auth::{outcome_code, RequestParts};
use crate::client::ClientAddr;
use crate::{json, AppState, Error, TARGET};

/// `POST /v1/self/rotate`: issues a successor of the calling key and returns it with its token,
/// shown this once, and the calling key under `predecessor`. The request body is ignored.
pub(crate) async fn self_rotate(
    State(state): State<AppState>,
    Extension(ClientAddr(address)): Extension<ClientAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let parts = RequestParts::read(&state, &headers, &[uri.query().unwrap_or("")])?;
    let no_scopes = Scopes::default();

    let started = StdInstant::now();
    let authentication = parts.authenticate(&state, &address, &no_scopes).await;
    state.metrics.record_verification("self_rotate", outcome_code(&authentication), started.elapsed());
    if let Authentication::Rejected { response, .. } = authentication {
        tracing::info!(target: TARGET, status = response.status, "self-rotation rejected at authentication");
        return Err(Error::Rejected(response));
    }

    // Authentication allowed the request, so exactly one credential is present.
    let authorization: Vec<&str> = parts.authorization.iter().map(String::as_str).collect();
    let api_key: Vec<&str> = parts.api_key.iter().map(String::as_str).collect();
    let responses = &state.keyring.config().responses;
    let credential = extract_credential(&authorization, &api_key, responses.api_key_header())
        .ok()
        .flatten()
        .ok_or_else(|| Error::Rejected(responses.missing_credentials()))?;

    let issued = match state.keyring.self_rotate(credential.as_str(), Some(&address)).await {
        Ok(issued) => issued,
        // Only a change between authentication and this read leads here, such as a pepper removed
        // from the ring. The client gets the one response that every invalid token gets.
        Err(keyturn::Error::InvalidToken) => {
            let invalid = Decision::invalid(&no_scopes);
            return Err(responses
                .rejection(&invalid)
                .map_or(Error::Service(keyturn::Error::InvalidToken), Error::Rejected));
        }
        Err(error) => return Err(error.into()),
    };

    let predecessor_id = issued.record.predecessor_id.clone();
    let view = issued.record.state_at(state.keyring.now());
    let mut value = json::issued_json(&issued, &view);
    // The rotation is committed, so a failed read of the old key must not hide the token.
    if let Some(predecessor_id) = predecessor_id {
        match state.keyring.get(&predecessor_id).await {
            Ok(old) => value["predecessor"] = json::key_json(&old.record, &old.state),
            Err(error) => {
                tracing::warn!(target: TARGET, key_id = %predecessor_id, error = %error, "reading the rotated key back failed")
            }
        }
    }
    Ok((StatusCode::CREATED, axum::Json(value)).into_response())
}
