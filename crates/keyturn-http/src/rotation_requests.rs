//! `POST /v1/keys/rotation-requests`: asks keys, selected by owner, by policy or by key id, to be rotated
//! by a deadline. Keys already rotated, revoked or expired are reported in the response, not
//! treated as errors; with `dry_run` nothing changes.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::Extension;
use keyturn::json::request_entry_json;
use keyturn::{parse_deadline, RequestStatus, RotationSelector};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::{read_body, respond, KEYS_WRITE};
use crate::auth::authenticate;
use crate::client::ClientAddr;
use crate::json;
use crate::{AppState, Error};

/// The body of `POST /v1/keys/rotation-requests`: exactly one of `owner`, `policy` and
/// `key_ids`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotationRequestBody {
    owner: Option<String>,
    policy: Option<String>,
    key_ids: Option<Vec<String>>,
    /// An RFC 3339 instant, or a duration from now such as 14d.
    by: String,
    reason: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

impl RotationRequestBody {
    fn selector(&self) -> Result<RotationSelector, Error> {
        match (&self.owner, &self.policy, &self.key_ids) {
            (Some(owner), None, None) => Ok(RotationSelector::Owner(owner.clone())),
            (None, Some(policy), None) => Ok(RotationSelector::Policy(json::policy_name(policy)?)),
            (None, None, Some(key_ids)) => {
                let parsed = key_ids.iter().map(|key_id| json::key_id("key_ids", key_id)).collect::<Result<_, _>>()?;
                Ok(RotationSelector::Keys(parsed))
            }
            _ => Err(Error::InvalidBody(
                "give exactly one of \"owner\" (every key of that owner), \"policy\" (every key of that named \
                 policy) and \"key_ids\" (a list of key ids)"
                    .to_owned(),
            )),
        }
    }
}

/// `POST /v1/keys/rotation-requests`: records the request and returns one entry per key.
pub(crate) async fn request_rotation(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, KEYS_WRITE).await?;
    let body: RotationRequestBody = json::parse_body(&headers, &read_body(&state, body).await?)?;
    let selector = body.selector()?;
    let deadline = parse_deadline(&body.by, state.keyring.now())?;

    let entries = state
        .keyring
        .request_rotation(&selector, deadline, body.reason.as_deref(), body.dry_run, &admin.caller())
        .await?;
    let requested = entries.iter().filter(|entry| matches!(entry.status, RequestStatus::Requested { .. })).count();
    let keys: Vec<Value> = entries.iter().map(request_entry_json).collect();
    let status = if body.dry_run || requested == 0 { StatusCode::OK } else { StatusCode::CREATED };
    let value = json!({ "dry_run": body.dry_run, "requested": requested, "keys": keys });
    Ok(respond(status, value, &admin))
}
