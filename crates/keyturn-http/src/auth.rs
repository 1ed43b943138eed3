//! Authentication of requests to the service's own endpoints with keyturn keys. Every protected
//! route calls [`authenticate`] with the reserved scope it requires, which hands the request's
//! headers and query to `Keyring::authenticate`. So a missing, invalid or under-scoped key gets
//! the same status, headers and body here as in the Flask extension.
//!
//! This module also reads the parts of a request that authentication needs (header values as
//! text, the query string) for the gateway endpoint, which authenticates a forwarded request.

use std::time::Instant as StdInstant;

use axum::http::{HeaderMap, Uri};
use keyturn::{AuthRequest, Authentication, Caller};
use keyturn_core::{Decision, Scopes};

use crate::{AppState, Error};

/// A request authenticated with a keyturn key.
#[derive(Debug)]
pub(crate) struct Authenticated {
    pub decision: Decision,
    /// The lifecycle headers to add to the response, telling the caller its key expires soon.
    pub headers: Vec<(&'static str, String)>,
    pub client_addr: String,
}

/// The text of the headers and query that authentication reads, borrowed by [`AuthRequest`].
pub(crate) struct RequestParts {
    pub authorization: Vec<String>,
    pub api_key: Vec<String>,
    pub query: Vec<(String, String)>,
}

impl Authenticated {
    /// Returns the audit caller: the acting key, its scopes and the client address.
    pub fn caller(&self) -> Caller {
        // `Authentication::Allowed` is only built from a decision whose secret matched, which
        // carries the key record.
        let key = self.decision.key.as_ref().expect("an allowed decision carries its key");
        Caller::key(key.key_id.clone(), key.scopes.clone(), Some(self.client_addr.clone()))
    }
}

impl RequestParts {
    /// Reads the `Authorization` values, the configured API key header values and the decoded
    /// query parameters of `uri` and of any extra `queries`. A header value that is not visible
    /// ASCII is an error naming the header, never quoting its value.
    pub fn read(state: &AppState, headers: &HeaderMap, queries: &[&str]) -> Result<Self, Error> {
        let api_key_header = state.keyring.config().responses.api_key_header();
        let query = queries
            .iter()
            .flat_map(|query| form_urlencoded::parse(query.as_bytes()))
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        Ok(RequestParts {
            authorization: header_values(headers, "authorization")?,
            api_key: header_values(headers, api_key_header)?,
            query,
        })
    }

    /// Authenticates these parts against `required` with the keyring.
    pub async fn authenticate(&self, state: &AppState, client_addr: &str, required: &Scopes) -> Authentication {
        let authorization: Vec<&str> = self.authorization.iter().map(String::as_str).collect();
        let api_key: Vec<&str> = self.api_key.iter().map(String::as_str).collect();
        let query: Vec<(&str, &str)> = self.query.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
        let request = AuthRequest {
            authorization: &authorization,
            api_key: &api_key,
            query: &query,
            client_addr: Some(client_addr),
        };
        state.keyring.authenticate(&request, required).await
    }
}

/// Authenticates a request to a protected route that requires `scope`. A rejection is
/// [`Error::Rejected`] with the exact response to send.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    client_addr: &str,
    scope: &'static str,
) -> Result<Authenticated, Error> {
    let parts = RequestParts::read(state, headers, &[uri.query().unwrap_or("")])?;
    // Reserved scope names are fixed strings that the scope parser accepts.
    let required = Scopes::parse([scope]).expect("reserved scopes parse");

    let started = StdInstant::now();
    let authentication = parts.authenticate(state, client_addr, &required).await;
    state.metrics.record_verification("admin", outcome_code(&authentication), started.elapsed());

    match authentication {
        Authentication::Allowed { decision, headers } => {
            Ok(Authenticated { decision, headers, client_addr: client_addr.to_owned() })
        }
        Authentication::Rejected { response, decision } => {
            let key_id = decision.as_ref().and_then(|decision| decision.key.as_ref()).map(|key| key.key_id.to_string());
            tracing::info!(target: crate::TARGET, key_id, status = response.status, scope, "admin request rejected");
            Err(Error::Rejected(response))
        }
    }
}

/// Returns the outcome of an authentication as the metric label: the decision's code, or the
/// problem code for a request that was rejected before a token was verified.
pub(crate) fn outcome_code(authentication: &Authentication) -> &'static str {
    match authentication {
        Authentication::Allowed { decision, .. } => decision.code(),
        Authentication::Rejected { decision: Some(decision), .. } => decision.code(),
        Authentication::Rejected { response, decision: None } => match response.status {
            400 => "invalid_request",
            401 => "missing_credentials",
            429 => "too_many_requests",
            503 => "store_unavailable",
            _ => "other",
        },
    }
}

/// Returns every value of header `name` as text.
pub(crate) fn header_values(headers: &HeaderMap, name: &str) -> Result<Vec<String>, Error> {
    headers
        .get_all(name)
        .iter()
        .map(|value| value.to_str().map(str::to_owned).map_err(|_| Error::InvalidHeader { name: display_name(name) }))
        .collect()
}

/// Returns the single value of header `name` as text, `None` when absent.
pub(crate) fn header_text(headers: &HeaderMap, name: &str) -> Result<Option<String>, Error> {
    headers
        .get(name)
        .map(|value| value.to_str().map(str::to_owned).map_err(|_| Error::InvalidHeader { name: display_name(name) }))
        .transpose()
}

fn display_name(name: &str) -> String {
    if name.eq_ignore_ascii_case("authorization") {
        "Authorization".to_owned()
    } else {
        name.to_owned()
    }
}
