//! JSON bodies of the admin API: parsing requests into service-layer types and rendering keys,
//! issued keys and audit events. Request bodies reject unknown members, so a misspelt option
//! fails instead of being ignored. Durations are strings such as `"90d"` and instants RFC 3339.
//! Only [`issued_json`] renders a token.

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use keyturn::{Issued, NewKey, RotateOptions, SelfRotationOptions};
use keyturn_core::{AuditEvent, Duration, Expiry, Instant, KeyId, KeyRecord, KeyState, PolicyName, Scopes};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::Error;

/// The longest invalid key id that an error message quotes; every token is longer.
const MAX_QUOTED_KEY_ID: usize = 20;

/// The body of `POST /v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyBody {
    name: String,
    owner: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    metadata: Map<String, Value>,
    expires_in: Option<String>,
    expires_at: Option<String>,
    #[serde(default)]
    no_expiry: bool,
    grace: Option<String>,
    warn_before: Option<String>,
    self_rotation: Option<bool>,
    max_chain_lifetime: Option<String>,
    policy: Option<String>,
}

/// The body of `POST /v1/keys/{key_id}/rotate`; an empty body takes every default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    overlap: Option<String>,
    expires_in: Option<String>,
    expires_at: Option<String>,
    #[serde(default)]
    replace_unused_successor: bool,
    overlap_after_first_use: Option<String>,
}

/// The body of `POST /v1/keys/{key_id}/revoke`; an empty body revokes without a reason.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeBody {
    pub reason: Option<String>,
}

/// Parses a JSON request body.
pub(crate) fn parse_body<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, Error> {
    check_json_content_type(headers)?;
    serde_json::from_slice(body).map_err(|error| Error::InvalidBody(describe_json_error(&error)))
}

/// Describes a JSON body error by its kind and location, without the value or the unknown member
/// name that serde quotes, because a client may have put a token in either. Only text that the
/// body's type supplies is kept: the expected type or the accepted member names, and the name of
/// a missing or duplicate member.
fn describe_json_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;

    let location = format!("line {} column {}", error.line(), error.column());
    if matches!(error.classify(), Category::Syntax | Category::Eof | Category::Io) {
        return format!("the body is not valid JSON at {location}");
    }
    let message = error.to_string();
    // serde writes the expected part after the value, so the last ", expected " starts it.
    let expected = message
        .strip_suffix(&format!(" at {location}"))
        .unwrap_or(&message)
        .rsplit_once(", expected ")
        .map(|(_, expected)| expected);
    let member = |prefix: &str| message.strip_prefix(prefix).and_then(|rest| rest.split('`').next());

    if message.starts_with("unknown field `") {
        let accepted = expected.unwrap_or("no members");
        return format!("unknown member at {location}; expected {accepted}");
    }
    if let Some(name) = member("missing field `") {
        return format!("missing member `{name}` at {location}");
    }
    if let Some(name) = member("duplicate field `") {
        return format!("duplicate member `{name}` at {location}");
    }
    let with_value = ["invalid type: ", "invalid value: ", "invalid length ", "unknown variant `"];
    match expected {
        Some(expected) if with_value.iter().any(|prefix| message.starts_with(prefix)) => {
            format!("invalid value at {location}: expected {expected}")
        }
        _ => format!("invalid value at {location}"),
    }
}

/// Parses a JSON request body whose members are all optional; an empty body takes the defaults.
pub(crate) fn parse_optional_body<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Error> {
    if body.is_empty() {
        return Ok(T::default());
    }
    parse_body(headers, body)
}

/// Rejects a body whose `Content-Type` is not `application/json` (parameters such as a charset
/// are allowed).
pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType)
    }
}

impl CreateKeyBody {
    /// Converts the body into a service-layer request and the key's self-rotation policy; the
    /// service layer checks the rest.
    pub fn into_new_key(self) -> Result<(NewKey, SelfRotationOptions), Error> {
        let expiry = match (self.expires_in, self.expires_at, self.no_expiry) {
            (None, None, false) => None,
            (None, None, true) => Some(Expiry::Never),
            (Some(value), None, false) => Some(Expiry::After(positive_duration("expires_in", &value)?)),
            (None, Some(value), false) => Some(Expiry::At(instant("expires_at", &value)?)),
            _ => {
                return Err(Error::InvalidParameter {
                    parameter: "expires_in, expires_at, no_expiry",
                    reason: "give at most one of them".to_owned(),
                })
            }
        };
        let self_rotation = SelfRotationOptions {
            allowed: self.self_rotation,
            max_chain_lifetime: self
                .max_chain_lifetime
                .as_deref()
                .map(|value| positive_duration("max_chain_lifetime", value))
                .transpose()?,
        };
        let new = NewKey {
            name: self.name,
            owner: self.owner,
            scopes: scopes(&self.scopes)?,
            metadata: self.metadata,
            expiry,
            grace: self.grace.as_deref().map(|value| duration("grace", value)).transpose()?,
            warn_before: self.warn_before.as_deref().map(|value| duration("warn_before", value)).transpose()?,
            policy: self.policy.as_deref().map(policy_name).transpose()?,
        };
        Ok((new, self_rotation))
    }
}

impl RotateBody {
    pub fn into_options(self) -> Result<RotateOptions, Error> {
        let expiry = match (self.expires_in, self.expires_at) {
            (None, None) => None,
            (Some(value), None) => Some(Expiry::After(positive_duration("expires_in", &value)?)),
            (None, Some(value)) => Some(Expiry::At(instant("expires_at", &value)?)),
            (Some(_), Some(_)) => {
                return Err(Error::InvalidParameter {
                    parameter: "expires_in, expires_at",
                    reason: "give at most one of them".to_owned(),
                })
            }
        };
        Ok(RotateOptions {
            overlap: self.overlap.as_deref().map(|value| duration("overlap", value)).transpose()?,
            expiry,
            replace_unused_successor: self.replace_unused_successor,
            overlap_after_first_use: self
                .overlap_after_first_use
                .as_deref()
                .map(|value| duration("overlap_after_first_use", value))
                .transpose()?,
        })
    }
}

/// Parses a policy name member.
pub(crate) fn policy_name(value: &str) -> Result<PolicyName, Error> {
    PolicyName::parse(value).map_err(|error| Error::InvalidParameter { parameter: "policy", reason: error.to_string() })
}

/// Parses a duration member such as `"90d"`. The error names the member but not the value, which
/// could be a misplaced token.
pub(crate) fn duration(parameter: &'static str, value: &str) -> Result<Duration, Error> {
    Duration::parse(value).map_err(|_| Error::InvalidParameter {
        parameter,
        reason: "expected whole amounts with units in the order d, h, m, s, ms, such as 90d, 12h, 30m, 45s, \
                 250ms or 1h30m"
            .to_owned(),
    })
}

fn positive_duration(parameter: &'static str, value: &str) -> Result<Duration, Error> {
    let parsed = duration(parameter, value)?;
    if parsed.is_zero() {
        return Err(Error::InvalidParameter {
            parameter,
            reason: format!("{value:?} is zero; a lifetime must be greater than zero, or set no_expiry"),
        });
    }
    Ok(parsed)
}

/// Parses an RFC 3339 instant. The error names the member or parameter but not the value.
pub(crate) fn instant(parameter: &'static str, value: &str) -> Result<Instant, Error> {
    Instant::parse_rfc3339(value).map_err(|_| Error::InvalidParameter {
        parameter,
        reason: "expected an RFC 3339 date and time such as 2027-01-31T12:00:00Z".to_owned(),
    })
}

/// Parses a key id path segment or parameter. The error quotes only a value too short to be a
/// token, because a client may send a token where a key id belongs.
pub(crate) fn key_id(parameter: &'static str, value: &str) -> Result<KeyId, Error> {
    KeyId::parse(value).map_err(|_| {
        let quoted = if value.chars().count() <= MAX_QUOTED_KEY_ID { format!("{value:?} ") } else { String::new() };
        Error::InvalidParameter {
            parameter,
            reason: format!(
                "{quoted}is not a key id: a key id is the 12 characters of [A-Za-z0-9] after the token prefix"
            ),
        }
    })
}

/// Parses the scopes member. The error gives the index of the invalid scope, not its text.
fn scopes(values: &[String]) -> Result<Scopes, Error> {
    Scopes::parse(values.iter().map(String::as_str)).map_err(|_| {
        let index = values.iter().position(|value| keyturn_core::Scope::parse(value).is_err()).unwrap_or(0);
        Error::InvalidParameter {
            parameter: "scopes",
            reason: format!(
                "member {index} is not a scope: use 1 to 128 characters of [A-Za-z0-9:._/-], and under \
                 \"keyturn:\" only the reserved scopes"
            ),
        }
    })
}

/// Renders a key with its state at the instant it was read, in the form every front end prints.
pub(crate) fn key_json(record: &KeyRecord, state: &KeyState) -> Value {
    keyturn::json::key_json(record, state)
}

/// Renders a newly issued key with its token, which this response shows once.
pub(crate) fn issued_json(issued: &Issued, state: &KeyState) -> Value {
    let mut value = key_json(&issued.record, state);
    if let Value::Object(object) = &mut value {
        object.insert("token".to_owned(), Value::String(issued.token.expose().to_owned()));
    }
    value
}

/// Renders one audit event, in the form every front end prints.
pub(crate) fn audit_json(stored: &AuditEvent) -> Value {
    keyturn::json::audit_event_json(stored)
}

pub(crate) fn rfc3339(instant: Option<Instant>) -> Value {
    instant.map_or(Value::Null, |instant| Value::String(instant.to_rfc3339()))
}
