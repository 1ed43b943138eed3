//! The named-policy routes of the admin API: `GET /v1/policies` and `GET /v1/policies/{name}`
//! with `keyturn:keys:read`, and `PUT /v1/policies/{name}` with `keyturn:admin`, which stores
//! one policy in one transaction with its `authz_policy_changed` audit event, the admin key as
//! actor. Reads are audited as `authz_admin`, like the other admin reads.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::Extension;
use keyturn::{policy_json, PlannedPolicy};
use keyturn_core::{Duration, NamedPolicy, PolicyName};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::{read_body, respond, KEYS_READ};
use crate::auth::authenticate;
use crate::client::ClientAddr;
use crate::json::{self, duration};
use crate::{AppState, Error};

pub(crate) const ADMIN: &str = "keyturn:admin";

/// The body of `PUT /v1/policies/{name}`. A missing field takes the built-in default policy's
/// value, and a missing optional duration stays unset.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyBody {
    max_lifetime: Option<String>,
    grace: Option<String>,
    warn_before: Option<String>,
    default_overlap: Option<String>,
    self_rotation: Option<bool>,
    max_chain_lifetime: Option<String>,
    rotate_every: Option<String>,
    overlap_after_first_use: Option<String>,
    #[serde(default)]
    apply_to_existing: bool,
}

/// `GET /v1/policies`: lists the policies by name, with the built-in `default`.
pub(crate) async fn list_policies(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, KEYS_READ).await?;
    let policies = state.keyring.policies().await?;
    state.keyring.record_admin_read(&admin.caller(), "list_policies", None, json!({})).await?;
    let values: Vec<Value> = policies.iter().map(policy_json).collect();
    Ok(respond(StatusCode::OK, json!({ "policies": values }), &admin))
}

/// `GET /v1/policies/{name}`: shows one policy.
pub(crate) async fn show_policy(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    name: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, KEYS_READ).await?;
    let name = policy_name(name)?;
    let policy = state.keyring.policy(&name).await?;
    state.keyring.record_admin_read(&admin.caller(), "show_policy", None, json!({ "policy": name.as_str() })).await?;
    Ok(respond(StatusCode::OK, policy_json(&policy), &admin))
}

/// `PUT /v1/policies/{name}`: stores one policy and returns it with what changed.
pub(crate) async fn put_policy(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    name: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let admin = authenticate(&state, &headers, &uri, &client_addr, ADMIN).await?;
    let name = policy_name(name)?;
    let body: PolicyBody = json::parse_body(&headers, &read_body(&state, body).await?)?;
    let policy = body.to_policy(name, &state.keyring.builtin_default_policy())?;

    let plan = state.keyring.plan_policy(&policy, body.apply_to_existing).await?;
    let plan = state.keyring.apply_policies(plan, &admin.caller()).await?;
    let (action, planned) = match (plan.added.first(), plan.changed.first()) {
        (Some(planned), _) => ("added", Some(planned)),
        (None, Some(planned)) => ("changed", Some(planned)),
        (None, None) => ("unchanged", None),
    };
    let status = if action == "added" { StatusCode::CREATED } else { StatusCode::OK };
    Ok(respond(status, change_json(&policy, action, planned), &admin))
}

/// Renders a stored policy with the action taken, its changed fields and the keys updated.
fn change_json(policy: &NamedPolicy, action: &str, planned: Option<&PlannedPolicy>) -> Value {
    let changes: Vec<Value> = planned
        .map(|planned| {
            let fields = planned.fields.iter();
            fields.map(|change| json!({ "field": change.field, "old": change.old, "new": change.new })).collect()
        })
        .unwrap_or_default();
    json!({
        "policy": policy_json(policy),
        "action": action,
        "changes": changes,
        "keys_updated": planned.map_or(0, |planned| planned.keys_affected),
    })
}

fn policy_name(path: Result<Path<String>, PathRejection>) -> Result<PolicyName, Error> {
    let invalid = |reason: String| Error::InvalidParameter { parameter: "name", reason };
    let Path(text) = path.map_err(|_| invalid("the path segment is not valid percent-encoded UTF-8".to_owned()))?;
    PolicyName::parse(&text).map_err(|error| invalid(error.to_string()))
}

impl PolicyBody {
    fn to_policy(&self, name: PolicyName, base: &NamedPolicy) -> Result<NamedPolicy, Error> {
        let required = |parameter, value: &Option<String>, fallback: Duration| {
            value.as_deref().map_or(Ok(fallback), |text| duration(parameter, text))
        };
        let optional =
            |parameter, value: &Option<String>| value.as_deref().map(|text| duration(parameter, text)).transpose();
        Ok(NamedPolicy {
            name,
            max_lifetime: required("max_lifetime", &self.max_lifetime, base.max_lifetime)?,
            grace: required("grace", &self.grace, base.grace)?,
            warn_before: required("warn_before", &self.warn_before, base.warn_before)?,
            default_overlap: required("default_overlap", &self.default_overlap, base.default_overlap)?,
            self_rotation: self.self_rotation.unwrap_or(base.self_rotation),
            max_chain_lifetime: required("max_chain_lifetime", &self.max_chain_lifetime, base.max_chain_lifetime)?,
            rotate_every: optional("rotate_every", &self.rotate_every)?,
            overlap_after_first_use: optional("overlap_after_first_use", &self.overlap_after_first_use)?,
        })
    }
}
