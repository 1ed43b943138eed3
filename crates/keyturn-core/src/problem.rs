//! Problem responses (RFC 9457) and authentication challenges (RFC 6750), built here once so that
//! the CLI, the HTTP server and the Flask extension return the same bytes for the same decision.
//!
//! Every rejection of an unknown or mismatched token produces one identical body: the only
//! members that name a key appear after its secret matched.

use serde::Serialize;

use crate::{Decision, Error, Instant, Outcome};

/// The stable `type` URI of each problem is this prefix followed by its code.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:keyturn:problem:";
/// Seconds a client waits before retrying when the store is unavailable.
pub const STORE_RETRY_AFTER_SECS: u64 = 1;

/// The status, headers and body of a response that a front end sends as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// The `code` member of a problem body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemCode {
    MissingCredentials,
    InvalidRequest,
    Invalid,
    Revoked,
    Rotated,
    Expired,
    InsufficientScope,
    TooManyRequests,
    StoreUnavailable,
}

/// Deployment settings that appear in responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseConfig {
    realm: String,
    api_key_header: String,
}

impl ProblemCode {
    pub const ALL: [ProblemCode; 9] = [
        ProblemCode::MissingCredentials,
        ProblemCode::InvalidRequest,
        ProblemCode::Invalid,
        ProblemCode::Revoked,
        ProblemCode::Rotated,
        ProblemCode::Expired,
        ProblemCode::InsufficientScope,
        ProblemCode::TooManyRequests,
        ProblemCode::StoreUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::MissingCredentials => "missing_credentials",
            ProblemCode::InvalidRequest => "invalid_request",
            ProblemCode::Invalid => "invalid",
            ProblemCode::Revoked => "revoked",
            ProblemCode::Rotated => "rotated",
            ProblemCode::Expired => "expired",
            ProblemCode::InsufficientScope => "insufficient_scope",
            ProblemCode::TooManyRequests => "too_many_requests",
            ProblemCode::StoreUnavailable => "store_unavailable",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ProblemCode::InvalidRequest => 400,
            ProblemCode::MissingCredentials
            | ProblemCode::Invalid
            | ProblemCode::Revoked
            | ProblemCode::Rotated
            | ProblemCode::Expired => 401,
            ProblemCode::InsufficientScope => 403,
            ProblemCode::TooManyRequests => 429,
            ProblemCode::StoreUnavailable => 503,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ProblemCode::MissingCredentials => "API key required",
            ProblemCode::InvalidRequest => "Invalid authentication request",
            ProblemCode::Invalid => "Invalid API key",
            ProblemCode::Revoked => "API key revoked",
            ProblemCode::Rotated => "API key replaced",
            ProblemCode::Expired => "API key expired",
            ProblemCode::InsufficientScope => "Insufficient scope",
            ProblemCode::TooManyRequests => "Too many failed attempts",
            ProblemCode::StoreUnavailable => "Key store unavailable",
        }
    }

    pub fn type_uri(self) -> String {
        format!("{PROBLEM_TYPE_PREFIX}{}", self.as_str())
    }

    fn for_outcome(outcome: Outcome) -> Option<Self> {
        match outcome {
            Outcome::Invalid => Some(ProblemCode::Invalid),
            Outcome::Revoked => Some(ProblemCode::Revoked),
            Outcome::Rotated => Some(ProblemCode::Rotated),
            Outcome::Expired => Some(ProblemCode::Expired),
            _ => None,
        }
    }
}

impl Default for ResponseConfig {
    fn default() -> Self {
        ResponseConfig { realm: "api".to_owned(), api_key_header: "X-API-Key".to_owned() }
    }
}

impl ResponseConfig {
    /// Creates a configuration. The realm is quoted in challenges, so it may not contain quotes,
    /// backslashes or control characters; the header name must be a valid HTTP token.
    pub fn new(realm: &str, api_key_header: &str) -> Result<Self, Error> {
        let realm_ok = !realm.is_empty()
            && realm.len() <= 128
            && realm.chars().all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\');
        if !realm_ok {
            return Err(Error::InvalidField {
                field: "realm",
                reason: format!("{realm:?} must be 1 to 128 printable ASCII characters without quotes or backslashes"),
            });
        }
        if !is_header_name(api_key_header) || api_key_header.eq_ignore_ascii_case("authorization") {
            return Err(Error::InvalidField {
                field: "api_key_header",
                reason: format!("{api_key_header:?} is not a valid HTTP header name other than Authorization"),
            });
        }
        Ok(ResponseConfig { realm: realm.to_owned(), api_key_header: api_key_header.to_owned() })
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn api_key_header(&self) -> &str {
        &self.api_key_header
    }

    /// Builds the problem response for a rejected decision; `None` when the decision allows.
    pub fn rejection(&self, decision: &Decision) -> Option<HttpResponse> {
        if decision.allowed() {
            return None;
        }
        let key_id = decision.key.as_ref().map(|key| key.key_id.to_string());
        let id = key_id.as_deref().unwrap_or("");
        let mut extras = Extras { key_id: key_id.clone(), ..Extras::default() };

        let Some(code) = ProblemCode::for_outcome(decision.outcome) else {
            if decision.missing_scopes.is_empty() && decision.administration_key {
                extras.scope = Some(decision.required_scopes.to_space_separated());
                let detail = format!(
                    "API key {id} holds only keyturn administration scopes and cannot call this API; use a key \
                     issued for the application"
                );
                return Some(self.problem(ProblemCode::InsufficientScope, &detail, extras));
            }
            let required = decision.missing_scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
            extras.scope = Some(required.clone());
            let detail = format!("API key {id} lacks the required scope: {required}");
            return Some(self.problem(ProblemCode::InsufficientScope, &detail, extras));
        };

        let key = decision.key.as_deref();
        let detail = match (code, key) {
            (ProblemCode::Revoked, Some(key)) => {
                extras.revoked_at = key.revoked_at.map(Instant::to_rfc3339);
                format!("API key {id} was revoked; ask the API's operator for a new key")
            }
            (ProblemCode::Rotated, Some(key)) => {
                extras.overlap_ended_at = key.overlap_ends_at.map(Instant::to_rfc3339);
                format!("API key {id} was replaced by a newer key and its overlap window has ended; use the newer key")
            }
            (ProblemCode::Expired, Some(key)) => {
                extras.expired_at = key.expires_at.map(Instant::to_rfc3339);
                format!("API key {id} has expired and its grace period has ended; ask the API's operator for a new key")
            }
            _ => {
                extras = Extras::default();
                "the API key is not valid".to_owned()
            }
        };
        Some(self.problem(code, &detail, extras))
    }

    /// Builds the 401 response for a request that carried no API key.
    pub fn missing_credentials(&self) -> HttpResponse {
        let detail = format!(
            "send an API key in the Authorization header as \"Bearer <token>\" or in the {} header",
            self.api_key_header
        );
        self.problem(ProblemCode::MissingCredentials, &detail, Extras::default())
    }

    /// Builds the 400 response for a malformed authentication request; `detail` must not contain
    /// a token.
    pub fn invalid_request(&self, detail: &str) -> HttpResponse {
        self.problem(ProblemCode::InvalidRequest, detail, Extras::default())
    }

    /// Builds the 503 response for a verification that needed the store while it was down.
    pub fn store_unavailable(&self) -> HttpResponse {
        let detail = format!("the key store is unavailable; retry after {STORE_RETRY_AFTER_SECS} second");
        let mut response = self.problem(ProblemCode::StoreUnavailable, &detail, Extras::default());
        response.headers.push(("Retry-After", STORE_RETRY_AFTER_SECS.to_string()));
        response
    }

    /// Builds the 429 response for a client that failed too often.
    pub fn too_many_requests(&self, retry_after_secs: u64) -> HttpResponse {
        let unit = if retry_after_secs == 1 { "second" } else { "seconds" };
        let detail = format!("too many failed attempts from this client; retry after {retry_after_secs} {unit}");
        let mut response = self.problem(ProblemCode::TooManyRequests, &detail, Extras::default());
        response.headers.push(("Retry-After", retry_after_secs.to_string()));
        response
    }

    fn problem(&self, code: ProblemCode, detail: &str, extras: Extras) -> HttpResponse {
        let body = ProblemBody {
            type_uri: code.type_uri(),
            title: code.title(),
            status: code.status(),
            detail,
            code: code.as_str(),
            extras,
        };
        let mut headers =
            vec![("Content-Type", "application/problem+json".to_owned()), ("Cache-Control", "no-store".to_owned())];
        if let Some(challenge) = self.challenge(code, body.extras.scope.as_deref()) {
            headers.push(("WWW-Authenticate", challenge));
        }
        // Serialising a struct of strings and integers cannot fail.
        let body = serde_json::to_vec(&body).expect("problem bodies serialise");
        HttpResponse { status: code.status(), headers, body }
    }

    fn challenge(&self, code: ProblemCode, scope: Option<&str>) -> Option<String> {
        let realm = &self.realm;
        match code {
            ProblemCode::MissingCredentials => Some(format!("Bearer realm=\"{realm}\"")),
            ProblemCode::Invalid | ProblemCode::Revoked | ProblemCode::Rotated | ProblemCode::Expired => {
                Some(format!("Bearer realm=\"{realm}\", error=\"invalid_token\""))
            }
            ProblemCode::InsufficientScope => Some(format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"",
                scope.unwrap_or("")
            )),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(flatten)]
    extras: Extras,
}

#[derive(Serialize, Default)]
struct Extras {
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expired_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overlap_ended_at: Option<String>,
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::key::tests::record;
    use crate::Scopes;

    fn header<'a>(response: &'a HttpResponse, name: &str) -> Option<&'a str> {
        response.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    fn body(response: &HttpResponse) -> serde_json::Value {
        serde_json::from_slice(&response.body).unwrap()
    }

    #[test]
    fn invalid_body_names_no_key() {
        let config = ResponseConfig::default();
        let response = config.rejection(&Decision::invalid(&Scopes::default())).unwrap();
        assert_eq!(response.status, 401);
        assert_eq!(header(&response, "WWW-Authenticate"), Some("Bearer realm=\"api\", error=\"invalid_token\""));
        assert_eq!(header(&response, "Content-Type"), Some("application/problem+json"));
        let json = body(&response);
        assert_eq!(json["type"], "urn:keyturn:problem:invalid");
        assert_eq!(json["code"], "invalid");
        assert_eq!(json["status"], 401);
        assert!(json.get("key_id").is_none());
    }

    #[test]
    fn missing_credentials_challenge_has_no_error() {
        let response = ResponseConfig::default().missing_credentials();
        assert_eq!(response.status, 401);
        assert_eq!(header(&response, "WWW-Authenticate"), Some("Bearer realm=\"api\""));
        assert_eq!(body(&response)["code"], "missing_credentials");
    }

    #[test]
    fn revoked_body_names_key_and_instant() {
        let mut key = record(0, Some(1_000_000));
        key.revoked_at = Some(Instant::from_millis(500));
        let decision = Decision::evaluate(Arc::new(key), Instant::from_millis(600), &Scopes::default());
        let response = ResponseConfig::default().rejection(&decision).unwrap();
        let json = body(&response);
        assert_eq!(json["code"], "revoked");
        assert_eq!(json["key_id"], "abcdefABCDEF");
        assert_eq!(json["revoked_at"], "1970-01-01T00:00:00.5Z");
    }

    #[test]
    fn insufficient_scope_is_403_with_scope() {
        let key = record(0, None);
        let required = Scopes::parse(["orders:write"]).unwrap();
        let decision = Decision::evaluate(Arc::new(key), Instant::from_millis(1), &required);
        assert_eq!(decision.code(), "insufficient_scope");
        let response = ResponseConfig::default().rejection(&decision).unwrap();
        assert_eq!(response.status, 403);
        assert_eq!(
            header(&response, "WWW-Authenticate"),
            Some("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"orders:write\"")
        );
        assert_eq!(body(&response)["scope"], "orders:write");
    }

    #[test]
    fn administration_key_rejected_on_application_route() {
        let mut key = record(0, None);
        key.scopes = Scopes::parse(["keyturn:admin"]).unwrap();
        let key = Arc::new(key);
        let decision = Decision::evaluate(Arc::clone(&key), Instant::from_millis(1), &Scopes::default());
        assert!(!decision.allowed());
        assert_eq!(decision.code(), "insufficient_scope");
        let response = ResponseConfig::default().rejection(&decision).unwrap();
        assert_eq!(response.status, 403);
        assert!(body(&response)["detail"].as_str().unwrap().contains("administration"));

        let admin_route = Scopes::parse(["keyturn:keys:read"]).unwrap();
        assert!(Decision::evaluate(key, Instant::from_millis(1), &admin_route).allowed());
    }

    #[test]
    fn store_unavailable_is_503_with_retry_after() {
        let response = ResponseConfig::default().store_unavailable();
        assert_eq!(response.status, 503);
        assert_eq!(header(&response, "Retry-After"), Some("1"));
        assert!(header(&response, "WWW-Authenticate").is_none());
    }

    #[test]
    fn allowed_decision_has_no_rejection_and_lifecycle_headers() {
        let key = record(0, Some(86_400_000));
        let decision = Decision::evaluate(Arc::new(key), Instant::from_millis(1), &Scopes::default());
        assert!(ResponseConfig::default().rejection(&decision).is_none());
        let headers = decision.lifecycle_headers();
        assert_eq!(headers[0], ("API-Key-Status", "expiring".to_owned()));
        assert_eq!(headers[1], ("API-Key-Expires", "Fri, 02 Jan 1970 00:00:00 GMT".to_owned()));
    }

    #[test]
    fn config_rejects_unsafe_realm_and_header() {
        assert!(ResponseConfig::new("my \"api\"", "X-API-Key").is_err());
        assert!(ResponseConfig::new("api", "X API Key").is_err());
        assert!(ResponseConfig::new("api", "authorization").is_err());
        assert!(ResponseConfig::new("Orders API", "X-Orders-Key").is_ok());
    }

    #[test]
    fn every_code_has_type_status_and_title() {
        for code in ProblemCode::ALL {
            assert!(code.type_uri().ends_with(code.as_str()));
            assert!((400..600).contains(&code.status()));
            assert!(!code.title().is_empty());
        }
    }
}
