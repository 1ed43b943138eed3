//! The incident endpoints of the admin API. `POST /v1/keys/revoke` revokes every key of an owner
//! or of a list of key ids in one transaction, or lists them in a dry run.
//! `POST /v1/keys/report-leak` revokes the keys of leaked tokens. Both require
//! `keyturn:keys:write`, and the server's body limit bounds their input. No response, error or
//! log line of a leak report names a token: results give each token's position and key id.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use keyturn::{ReportedToken, MAX_LEAK_LINE_BYTES, MAX_LEAK_TOKENS};
use keyturn_core::{KeyId, KeyRecord};
use keyturn_store::{BulkOutcome, KeySelection, MAX_BULK_KEYS};
use serde::Deserialize;
use serde_json::json;

use crate::admin::{read_body, KEYS_WRITE};
use crate::auth::{authenticate, Authenticated};
use crate::client::ClientAddr;
use crate::error::append_headers;
use crate::{json, AppState, Error};

/// The body of `POST /v1/keys/revoke`: exactly one of `owner`, `policy` and `key_ids`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeKeysBody {
    owner: Option<String>,
    policy: Option<String>,
    key_ids: Option<Vec<String>>,
    reason: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// The body of `POST /v1/keys/report-leak`. It derives no `Debug`, so it cannot be logged.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportLeakBody {
    tokens: Vec<String>,
    source: Option<String>,
    reason: Option<String>,
}

/// `POST /v1/keys/revoke`: revokes the selected keys, or lists them with `dry_run`.
pub(crate) async fn revoke_keys(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, KEYS_WRITE).await?;
    let body: RevokeKeysBody = json::parse_body(&headers, &read_body(&state, body).await?)?;
    let selection = selection(&body)?;

    let now = state.keyring.now();
    let (keys, missing): (Vec<(KeyRecord, Option<BulkOutcome>)>, Vec<KeyId>) = if body.dry_run {
        let (views, missing) = state.keyring.select_keys(&selection).await?;
        let parameters = json!({
            "owner": body.owner,
            "policy": body.policy,
            "key_ids": body.key_ids.as_ref().map(Vec::len),
        });
        state.keyring.record_admin_read(&admin.caller(), "revoke_keys_dry_run", None, parameters).await?;
        (views.into_iter().map(|view| (view.record, None)).collect(), missing)
    } else {
        let report = state.keyring.revoke_selection(&selection, body.reason.as_deref(), &admin.caller()).await?;
        (report.keys.into_iter().map(|key| (key.record, Some(key.outcome))).collect(), report.missing)
    };
    let value = keyturn::json::bulk_revocation_json(&keys, &missing, body.dry_run, now);
    Ok(respond(value, &admin))
}

/// `POST /v1/keys/report-leak`: revokes the keys whose tokens the body reports as leaked.
pub(crate) async fn report_leak(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, KEYS_WRITE).await?;
    let report: ReportLeakBody = json::parse_body(&headers, &read_body(&state, body).await?)?;
    let tokens = reported_tokens(&report.tokens)?;

    let results = state
        .keyring
        .report_leaks(&tokens, report.source.as_deref(), report.reason.as_deref(), &admin.caller())
        .await?;
    Ok(respond(json!({ "results": keyturn::json::leak_results_json(&results) }), &admin))
}

/// Builds the selection of a bulk revocation body.
fn selection(body: &RevokeKeysBody) -> Result<KeySelection, Error> {
    match (&body.owner, &body.policy, &body.key_ids) {
        (Some(owner), None, None) => Ok(KeySelection::Owner(owner.clone())),
        (None, Some(policy), None) => Ok(KeySelection::Policy(json::policy_name(policy)?)),
        (None, None, Some(ids)) => {
            if ids.len() > MAX_BULK_KEYS {
                return Err(Error::InvalidBody(format!(
                    "key_ids has {} entries; give at most {MAX_BULK_KEYS} per request",
                    ids.len()
                )));
            }
            let ids = ids.iter().map(|id| json::key_id("key_ids", id)).collect::<Result<Vec<_>, _>>()?;
            Ok(KeySelection::KeyIds(ids))
        }
        _ => Err(Error::InvalidBody(
            "give exactly one of owner (every key of that owner), policy (every key of that named policy) and \
             key_ids (a list of key ids)"
                .to_owned(),
        )),
    }
}

/// Checks the token list's bounds and numbers the tokens from 1, without quoting any of them.
fn reported_tokens(tokens: &[String]) -> Result<Vec<ReportedToken>, Error> {
    if tokens.is_empty() {
        return Err(Error::InvalidBody("tokens is empty; give at least one leaked token".to_owned()));
    }
    if tokens.len() > MAX_LEAK_TOKENS {
        return Err(Error::InvalidBody(format!(
            "tokens has {} entries; report at most {MAX_LEAK_TOKENS} per request",
            tokens.len()
        )));
    }
    let mut reported = Vec::with_capacity(tokens.len());
    for (index, token) in tokens.iter().enumerate() {
        let token = token.trim();
        if token.len() > MAX_LEAK_LINE_BYTES {
            return Err(Error::InvalidBody(format!(
                "tokens entry {} is {} bytes long, longer than the {MAX_LEAK_LINE_BYTES} bytes a token may have",
                index + 1,
                token.len()
            )));
        }
        reported.push(ReportedToken::new(index + 1, token));
    }
    Ok(reported)
}

fn respond(value: serde_json::Value, admin: &Authenticated) -> Response {
    let mut response = (StatusCode::OK, axum::Json(value)).into_response();
    append_headers(response.headers_mut(), &admin.headers);
    response
}
