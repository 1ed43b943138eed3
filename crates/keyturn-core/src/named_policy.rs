//! Named policies: the lifetime, grace period, warning window, overlap and self-rotation rules
//! that keys are created under, stored by name so that every instance reads the same ones. A key
//! records the name of its policy and a copy of the instants the policy gave it, so a key's state
//! stays a pure function of its record. This module validates policies and compares two versions
//! of one; storing them is the store's job.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::policy::{MAX_GRACE, MAX_WARN_BEFORE};
use crate::{quote_value, Duration, Error, Expiry, Policy};

/// The longest maximum lifetime a policy may give: 100 years. A key that should live longer
/// is created with no expiry, explicitly.
pub const MAX_LIFETIME: Duration = Duration::from_days(36_500);

/// The name of the built-in policy, which keys get when they name none.
pub const DEFAULT_POLICY: &str = "default";

const MAX_NAME_LEN: usize = 64;

/// A policy name: 1 to 64 characters of lowercase letters, digits, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PolicyName(String);

impl PolicyName {
    /// Parses a policy name, rejecting anything outside `[a-z0-9_-]{1,64}`.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if value.is_empty() || value.len() > MAX_NAME_LEN || !value.chars().all(valid_char) {
            return Err(Error::InvalidPolicyName { name: quote_value(value) });
        }
        Ok(PolicyName(value.to_owned()))
    }

    /// Returns the name of the built-in policy, `default`.
    pub fn default_name() -> Self {
        PolicyName(DEFAULT_POLICY.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_POLICY
    }
}

impl Default for PolicyName {
    fn default() -> Self {
        PolicyName::default_name()
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PolicyName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PolicyName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A policy stored under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPolicy {
    pub name: PolicyName,
    /// How long a key lives, counted from its creation.
    pub max_lifetime: Duration,
    pub grace: Duration,
    pub warn_before: Duration,
    /// The overlap window of a rotation that does not set its own.
    pub default_overlap: Duration,
    /// Whether a key may rotate itself with its own token.
    pub self_rotation: bool,
    /// How long a chain of rotations may last before self-rotation is rejected.
    pub max_chain_lifetime: Duration,
    /// The key age at which the scheduler requests a rotation, shorter than `max_lifetime`.
    /// Creation and verification ignore it.
    pub rotate_every: Option<Duration>,
    /// The overlap after the successor's first use that a rotation without its own value gets.
    pub overlap_after_first_use: Option<Duration>,
}

/// One field of a policy whose value differs between two versions, both written as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub old: String,
    pub new: String,
}

impl NamedPolicy {
    /// Builds the named policy that `policy` describes. A policy without a lifetime gets
    /// [`MAX_LIFETIME`], because every named policy gives keys an expiry.
    pub fn from_policy(name: PolicyName, policy: &Policy) -> Self {
        let max_lifetime = match policy.expiry {
            Expiry::After(lifetime) => lifetime,
            Expiry::At(_) | Expiry::Never => MAX_LIFETIME,
        };
        NamedPolicy {
            name,
            max_lifetime,
            grace: policy.grace,
            warn_before: policy.warn_before,
            default_overlap: policy.default_overlap,
            self_rotation: policy.self_rotation,
            max_chain_lifetime: policy.max_chain_lifetime,
            rotate_every: None,
            overlap_after_first_use: None,
        }
    }

    /// Returns the unnamed policy that a key created under this one receives.
    pub fn to_policy(&self) -> Policy {
        Policy {
            expiry: Expiry::After(self.max_lifetime),
            grace: self.grace,
            warn_before: self.warn_before,
            default_overlap: self.default_overlap,
            self_rotation: self.self_rotation,
            max_chain_lifetime: self.max_chain_lifetime,
        }
    }

    /// Checks every field. The lifetime is above zero and at most [`MAX_LIFETIME`], grace and
    /// warning window are within their maximums, and the chain lifetime is positive. `rotate_every`
    /// is above zero and shorter than the lifetime, and an overlap after first use is no longer
    /// than the overlap.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field: &'static str, reason: String| {
            Err(Error::InvalidField { field, reason: format!("policy {}: {reason}", self.name) })
        };
        if self.max_lifetime.is_zero() {
            return invalid("max_lifetime", "it must be greater than zero".to_owned());
        }
        if self.max_lifetime > MAX_LIFETIME {
            return invalid(
                "max_lifetime",
                format!("{} is longer than the limit of {MAX_LIFETIME}", self.max_lifetime),
            );
        }
        if self.grace > MAX_GRACE {
            return invalid("grace", format!("{} is longer than the maximum grace period of {MAX_GRACE}", self.grace));
        }
        if self.warn_before > MAX_WARN_BEFORE {
            return invalid(
                "warn_before",
                format!("{} is longer than the maximum warning window of {MAX_WARN_BEFORE}", self.warn_before),
            );
        }
        if self.default_overlap > MAX_LIFETIME {
            return invalid(
                "default_overlap",
                format!("{} is longer than the limit of {MAX_LIFETIME}", self.default_overlap),
            );
        }
        if self.max_chain_lifetime.is_zero() || self.max_chain_lifetime > MAX_LIFETIME {
            return invalid(
                "max_chain_lifetime",
                format!("{} must be greater than zero and at most {MAX_LIFETIME}", self.max_chain_lifetime),
            );
        }
        if let Some(every) = self.rotate_every {
            if every.is_zero() || every >= self.max_lifetime {
                return invalid(
                    "rotate_every",
                    format!("{every} must be greater than zero and shorter than max_lifetime ({})", self.max_lifetime),
                );
            }
        }
        if let Some(after) = self.overlap_after_first_use {
            check_overlap_after_first_use(after, self.default_overlap)
                .or_else(|reason| invalid("overlap_after_first_use", reason))?;
        }
        Ok(())
    }

    /// Lists the fields whose value differs in `new`, in declaration order.
    pub fn changes(&self, new: &NamedPolicy) -> Vec<FieldChange> {
        self.fields()
            .into_iter()
            .zip(new.fields())
            .filter(|((_, old), (_, new))| old != new)
            .map(|((field, old), (_, new))| FieldChange { field, old, new })
            .collect()
    }

    /// Returns each field but the name with its value as text: durations in the notation
    /// [`Duration::parse`] reads, and `none` for an unset optional duration.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let optional = |value: Option<Duration>| value.map_or_else(|| "none".to_owned(), |d| d.to_string());
        vec![
            ("max_lifetime", self.max_lifetime.to_string()),
            ("grace", self.grace.to_string()),
            ("warn_before", self.warn_before.to_string()),
            ("default_overlap", self.default_overlap.to_string()),
            ("self_rotation", self.self_rotation.to_string()),
            ("max_chain_lifetime", self.max_chain_lifetime.to_string()),
            ("rotate_every", optional(self.rotate_every)),
            ("overlap_after_first_use", optional(self.overlap_after_first_use)),
        ]
    }
}

/// Checks an overlap after first use against the overlap it shortens: it must not be longer,
/// because it could then never end the overlap window earlier. Returns the reason otherwise.
pub fn check_overlap_after_first_use(after: Duration, overlap: Duration) -> Result<(), String> {
    if after > overlap {
        return Err(format!(
            "{after} is longer than the overlap of {overlap}, so it would never shorten it; choose at most {overlap}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str) -> NamedPolicy {
        NamedPolicy::from_policy(PolicyName::parse(name).unwrap(), &Policy::default())
    }

    #[test]
    fn name_accepts_documented_alphabet() {
        for valid in ["default", "a", "ci-bots_2", &"x".repeat(64)] {
            assert!(PolicyName::parse(valid).is_ok(), "{valid}");
        }
        for invalid in ["", "Upper", "with space", "dot.ted", &"x".repeat(65), "é"] {
            assert!(PolicyName::parse(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn default_round_trips_through_policy() {
        let named = policy("default");
        assert_eq!(named.to_policy(), Policy::default());
        assert!(named.validate().is_ok());
    }

    type Edit = Box<dyn Fn(&mut NamedPolicy)>;

    #[test]
    fn validate_rejects_each_rule() {
        let cases: Vec<(&str, Edit)> = vec![
            ("max_lifetime", Box::new(|p| p.max_lifetime = Duration::ZERO)),
            ("max_lifetime", Box::new(|p| p.max_lifetime = Duration::from_days(36_501))),
            ("grace", Box::new(|p| p.grace = Duration::from_days(91))),
            ("warn_before", Box::new(|p| p.warn_before = Duration::from_days(366))),
            ("max_chain_lifetime", Box::new(|p| p.max_chain_lifetime = Duration::ZERO)),
            ("rotate_every", Box::new(|p| p.rotate_every = Some(Duration::from_days(90)))),
            ("rotate_every", Box::new(|p| p.rotate_every = Some(Duration::ZERO))),
            ("overlap_after_first_use", Box::new(|p| p.overlap_after_first_use = Some(Duration::from_days(2)))),
        ];
        for (field, change) in cases {
            let mut named = policy("p");
            change(&mut named);
            match named.validate() {
                Err(Error::InvalidField { field: actual, .. }) => assert_eq!(actual, field),
                other => panic!("expected an invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn rotate_every_just_below_lifetime_is_valid() {
        let mut named = policy("p");
        named.rotate_every = Some(Duration::from_millis(named.max_lifetime.as_millis() - 1));
        assert!(named.validate().is_ok());
    }

    #[test]
    fn changes_lists_differing_fields() {
        let old = policy("p");
        let mut new = old.clone();
        new.grace = Duration::from_days(3);
        new.rotate_every = Some(Duration::from_days(30));
        let changes = old.changes(&new);
        assert_eq!(
            changes,
            vec![
                FieldChange { field: "grace", old: "7d".into(), new: "3d".into() },
                FieldChange { field: "rotate_every", old: "none".into(), new: "30d".into() },
            ]
        );
        assert!(old.changes(&old).is_empty());
    }
}
