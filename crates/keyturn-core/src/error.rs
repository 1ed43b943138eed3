//! The error type of the core crate. Every variant names the offending value and the rule it
//! broke, except that a token is never quoted: token errors name only the defect.

/// Errors raised while parsing or validating domain values. Fields that hold a rejected value
/// hold it as [`quote_value`] prints it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid token: expected {expected} characters, got {actual}")]
    TokenLength { expected: usize, actual: usize },
    #[error("invalid token: character {position} is outside [A-Za-z0-9_]")]
    TokenAlphabet { position: usize },
    #[error("invalid token: it does not start with the prefix \"{expected}_\"")]
    TokenPrefix { expected: String },
    #[error("invalid token: expected \"_\" only after the prefix and after the key id")]
    TokenStructure,
    #[error("invalid token: the checksum does not match")]
    TokenChecksum,

    #[error(
        "invalid token prefix {prefix}: use 1 to 32 characters of [a-z0-9] in segments \
         separated by single underscores, such as \"acme_live\""
    )]
    InvalidPrefix { prefix: String },
    #[error("invalid key id {key_id}: a key id is {length} characters of [A-Za-z0-9]")]
    InvalidKeyId { key_id: String, length: usize },

    #[error("invalid pepper entry {entry}: {reason}")]
    InvalidPepper { entry: String, reason: String },
    #[error("no pepper is configured: {hint}")]
    MissingPepper { hint: String },
    #[error("invalid audit key in {origin}: {reason}")]
    InvalidAuditKey { origin: String, reason: String },

    #[error(
        "invalid duration {value}: write whole amounts with units in the order d, h, m, s, ms, \
         such as 90d, 12h, 30m, 45s, 250ms or 1h30m"
    )]
    InvalidDuration { value: String },
    #[error("invalid instant {value}: write an RFC 3339 date and time such as 2027-01-31T12:00:00Z")]
    InvalidInstant { value: String },

    #[error(
        "invalid scope {scope}: a scope is 1 to 128 characters of [A-Za-z0-9:._/-] and reserved \
         scopes under \"keyturn:\" are {reserved}"
    )]
    InvalidScope { scope: String, reserved: &'static str },
    #[error("invalid policy name {name}: use 1 to 64 characters of [a-z0-9_-], such as \"ci-bots\"")]
    InvalidPolicyName { name: String },
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
}

/// Quotes a rejected value for an error message without ever showing a token: a value with a run
/// of 24 or more token characters (`[A-Za-z0-9_]`, shorter than any token's key id and secret
/// together) is described by its length only, and a long value is cut to its first 40
/// characters, so a huge argument does not make a huge message.
pub fn quote_value(value: &str) -> String {
    const SHOWN: usize = 40;
    const TOKEN_RUN: usize = 24;
    let mut run = 0;
    let looks_like_token = value.chars().any(|c| {
        run = if c.is_ascii_alphanumeric() || c == '_' { run + 1 } else { 0 };
        run >= TOKEN_RUN
    });
    let count = value.chars().count();
    if looks_like_token {
        return format!("(a value of {count} characters, not shown because it may be a token)");
    }
    if count <= SHOWN {
        return format!("{value:?}");
    }
    let shown: String = value.chars().take(SHOWN).collect();
    format!("{shown:?} (first {SHOWN} of {count} characters)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_value_hides_token_like_runs() {
        assert_eq!(quote_value("90x"), "\"90x\"");
        let token_like = "kt_live_abcdefABCDEF_0123456789abcdefghijklmnopqrstuvwxyz";
        let quoted = quote_value(&format!("x {token_like}"));
        assert!(!quoted.contains("abcdef"), "{quoted}");
        assert!(quoted.contains("may be a token"));
        let long = "a b ".repeat(30);
        assert!(quote_value(&long).contains("first 40 of 120 characters"));
    }
}
