//! Scopes: the permissions a key holds and a route requires. Application scopes are free-form;
//! scopes under `keyturn:` are reserved for keyturn's own administration.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::quote_value;
use crate::Error;

pub const RESERVED_PREFIX: &str = "keyturn:";
pub const RESERVED_SCOPES: &str =
    "keyturn:keys:read, keyturn:keys:write, keyturn:audit:read, keyturn:verify, keyturn:admin";
const RESERVED: [&str; 5] =
    ["keyturn:keys:read", "keyturn:keys:write", "keyturn:audit:read", "keyturn:verify", "keyturn:admin"];

/// One scope, such as `orders:read`: 1 to 128 characters of `[A-Za-z0-9:._/-]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope(String);

/// A set of scopes in sorted order.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(BTreeSet<Scope>);

impl Scope {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let well_formed = !value.is_empty()
            && value.len() <= 128
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'/' | b'-'));
        let reserved_ok = !value.starts_with(RESERVED_PREFIX) || RESERVED.contains(&value);
        if well_formed && reserved_ok {
            Ok(Scope(value.to_owned()))
        } else {
            Err(Error::InvalidScope { scope: quote_value(value), reserved: RESERVED_SCOPES })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns whether the scope is one of keyturn's reserved administration scopes.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(RESERVED_PREFIX)
    }
}

impl TryFrom<String> for Scope {
    type Error = Error;

    fn try_from(value: String) -> Result<Self, Error> {
        Scope::parse(&value)
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> String {
        scope.0
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Scopes {
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, Error> {
        values.into_iter().map(Scope::parse).collect::<Result<BTreeSet<_>, _>>().map(Scopes)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    /// Returns the scopes of `required` that this set lacks. `keyturn:admin` grants every
    /// reserved scope.
    pub fn missing<'a>(&self, required: &'a Scopes) -> Vec<&'a Scope> {
        let admin = self.0.iter().any(|scope| scope.as_str() == "keyturn:admin");
        let granted = |scope: &Scope| self.0.contains(scope) || (admin && scope.is_reserved());
        required.iter().filter(|scope| !granted(scope)).collect()
    }

    /// Joins the scopes with single spaces, as the `scope` parameter of a challenge does.
    pub fn to_space_separated(&self) -> String {
        self.0.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    pub fn has_reserved(&self) -> bool {
        self.0.iter().any(Scope::is_reserved)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().collect())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_accepts_application_scopes() {
        for value in ["orders:read", "orders.write", "a", "repo/admin", "keyturn:admin"] {
            assert!(Scope::parse(value).is_ok(), "{value}");
        }
    }

    #[test]
    fn scope_rejects_malformed_and_unknown_reserved() {
        for value in ["", "has space", "quote\"", "ünï", "keyturn:everything", &"x".repeat(129)] {
            assert!(Scope::parse(value).is_err(), "{value}");
        }
    }

    #[test]
    fn missing_lists_absent_scopes() {
        let held = Scopes::parse(["orders:read"]).unwrap();
        let required = Scopes::parse(["orders:read", "orders:write"]).unwrap();
        let missing = held.missing(&required);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].as_str(), "orders:write");
    }

    #[test]
    fn admin_grants_reserved_scopes_only() {
        let admin = Scopes::parse(["keyturn:admin"]).unwrap();
        let required = Scopes::parse(["keyturn:keys:write", "orders:read"]).unwrap();
        let missing = admin.missing(&required);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].as_str(), "orders:read");
    }
}
