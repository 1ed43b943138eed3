//! Reading the API key from a request. Only headers carry a key: `Authorization: Bearer <token>`
//! (scheme case-insensitive) or a configurable header, `X-API-Key` by default. Two different
//! keys in one request, or a token in the query string, make the request invalid.
//!
//! This module only finds the candidate value; the token parser then rejects malformed values
//! before any hashing or store access.

use crate::{Error, Token, TokenFormat};

/// Query parameter names under which a value that starts with the token prefix is rejected even
/// when it is not a well-formed token.
pub const DEFAULT_QUERY_PARAMETERS: [&str; 5] = ["api_key", "apikey", "key", "token", "access_token"];

/// The query parameters checked for a mangled token, besides every well-formed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialConfig {
    pub query_parameters: Vec<String>,
}

/// The API key found in a request, with surrounding spaces and tabs removed.
#[derive(Debug, PartialEq, Eq)]
pub struct Credential(Token);

/// The reason a request's authentication cannot be processed (400 `invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("the request carries two different API keys; send exactly one, in the Authorization header or in the {header} header")]
    ConflictingCredentials { header: String },
    #[error(
        "an API key was sent in the URL query parameter \"{parameter}\", where proxies and access logs \
         keep it; send it in the Authorization header instead, and rotate the key because it is now exposed"
    )]
    TokenInQuery { parameter: String },
}

impl Default for CredentialConfig {
    fn default() -> Self {
        CredentialConfig { query_parameters: DEFAULT_QUERY_PARAMETERS.iter().map(|s| (*s).to_owned()).collect() }
    }
}

impl CredentialConfig {
    /// Creates a configuration that checks the given query parameter names (case-insensitive).
    pub fn new<'a>(query_parameters: impl IntoIterator<Item = &'a str>) -> Result<Self, Error> {
        let names: Vec<String> = query_parameters.into_iter().map(str::to_owned).collect();
        if let Some(bad) = names.iter().find(|name| name.is_empty() || name.len() > 64) {
            return Err(Error::InvalidField {
                field: "query_parameters",
                reason: format!("{bad:?} must be 1 to 64 characters"),
            });
        }
        Ok(CredentialConfig { query_parameters: names })
    }

    /// Returns the first query parameter that carries a token, with its value, so the caller can
    /// reject the request and audit the token as exposed. A value counts when it is a well-formed
    /// token under any parameter name, or when it starts with the token prefix under one of the
    /// checked names (case-insensitive), which catches a token mangled on its way into the URL.
    /// Other values, such as `?token=abc` for a page token, are left alone.
    pub fn find_token_in_query<'q>(
        &self,
        format: &TokenFormat,
        query: &[(&'q str, &'q str)],
    ) -> Option<(&'q str, &'q str)> {
        query.iter().copied().find(|(name, value)| {
            let value = value.trim_matches([' ', '\t']);
            let checked_name = self.query_parameters.iter().any(|checked| checked.eq_ignore_ascii_case(name));
            let prefixed = value.strip_prefix(format.prefix()).is_some_and(|rest| rest.starts_with('_'));
            format.parse(value).is_ok() || (checked_name && prefixed)
        })
    }
}

impl Credential {
    pub fn token(&self) -> &Token {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.expose()
    }
}

/// Finds the API key in a request's `Authorization` values and API key header values.
///
/// An `Authorization` value with another scheme (such as `Basic`) is ignored, as if absent. A key
/// sent twice with the same value counts once. `api_key_header` names the configured header and
/// appears only in the error message.
pub fn extract_credential(
    authorization: &[&str],
    api_key_values: &[&str],
    api_key_header: &str,
) -> Result<Option<Credential>, RequestError> {
    let bearer = authorization.iter().filter_map(|value| bearer_token(value));
    let header = api_key_values.iter().map(|value| trim_spaces(value));
    let mut found: Option<&str> = None;
    for candidate in bearer.chain(header) {
        match found {
            Some(existing) if existing != candidate => {
                return Err(RequestError::ConflictingCredentials { header: api_key_header.to_owned() });
            }
            _ => found = Some(candidate),
        }
    }
    Ok(found.map(|value| Credential(Token::new(value.to_owned()))))
}

fn bearer_token(value: &str) -> Option<&str> {
    let value = trim_spaces(value);
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| trim_spaces(rest))
}

fn trim_spaces(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(authorization: &[&str], api_key: &[&str]) -> Result<Option<String>, RequestError> {
        extract_credential(authorization, api_key, "X-API-Key").map(|found| found.map(|c| c.as_str().to_owned()))
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "Bearer   abc  ", " Bearer\tabc"] {
            assert_eq!(extract(&[value], &[]).unwrap().as_deref(), Some("abc"), "{value:?}");
        }
    }

    #[test]
    fn other_scheme_counts_as_absent() {
        assert_eq!(extract(&["Basic dXNlcjpwYXNz"], &[]).unwrap(), None);
        assert_eq!(extract(&["Basic dXNlcjpwYXNz"], &["abc"]).unwrap().as_deref(), Some("abc"));
        assert_eq!(extract(&[], &[]).unwrap(), None);
    }

    #[test]
    fn empty_bearer_is_an_empty_credential() {
        assert_eq!(extract(&["Bearer"], &[]).unwrap().as_deref(), Some(""));
        assert_eq!(extract(&[], &["  "]).unwrap().as_deref(), Some(""));
    }

    #[test]
    fn inner_space_left_for_parser() {
        assert_eq!(extract(&["Bearer ab cd"], &[]).unwrap().as_deref(), Some("ab cd"));
    }

    #[test]
    fn two_different_credentials_conflict() {
        assert!(matches!(extract(&["Bearer abc"], &["xyz"]), Err(RequestError::ConflictingCredentials { .. })));
        assert!(matches!(
            extract(&["Bearer abc", "Bearer xyz"], &[]),
            Err(RequestError::ConflictingCredentials { .. })
        ));
        assert_eq!(extract(&["Bearer abc"], &["abc"]).unwrap().as_deref(), Some("abc"));
    }

    #[test]
    fn query_token_found_under_any_name() {
        let config = CredentialConfig::default();
        let format = TokenFormat::default();
        let token = format.generate(&crate::KeyId::parse("abcdefABCDEF").unwrap(), &mut rand_core::OsRng);
        let token = token.expose();
        assert_eq!(config.find_token_in_query(&format, &[("page", "2"), ("q", token)]), Some(("q", token)));
        assert_eq!(
            config.find_token_in_query(&format, &[("API_KEY", "kt_live_mangled")]),
            Some(("API_KEY", "kt_live_mangled"))
        );
    }

    #[test]
    fn query_without_token_passes() {
        let config = CredentialConfig::default();
        let format = TokenFormat::default();
        for query in [&[("token", "abc")][..], &[("key", "name")], &[("q", "kt_live_mangled")], &[("token", "")]] {
            assert_eq!(config.find_token_in_query(&format, query), None, "{query:?}");
        }
    }

    #[test]
    fn request_error_never_quotes_token() {
        let message = RequestError::TokenInQuery { parameter: "api_key".into() }.to_string();
        assert!(message.contains("api_key"));
    }
}
