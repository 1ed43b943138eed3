//! The `policies` commands: `apply` reads named policies from a TOML file, prints what changes
//! and writes it in one transaction (or with `--dry-run` only prints it), and `list` and `show`
//! print the policies that new keys can be created under.
//!
//! The file declares every policy by name, as a table under `policies`; a field left out takes
//! the value of the built-in `default` policy, and durations are written as the other commands
//! read them, such as `90d` or `1h30m`:
//!
//! ```toml
//! [policies.ci-bots]
//! max_lifetime = "30d"
//! grace = "2d"
//! rotate_every = "20d"
//! overlap_after_first_use = "1h"
//! ```
//!
//! A stored policy that the file leaves out is removed, unless keys that are not revoked still
//! reference it. The `default` policy is never removed: a stored version stays until the file
//! declares another, and its first stored version counts as a change of the built-in one.

use std::collections::BTreeMap;

use keyturn::{policy_json, Caller, Keyring, PlannedPolicy, PolicyPlan};
use keyturn_core::{Duration, NamedPolicy, PolicyName};
use serde::Deserialize;
use serde_json::Value;

use crate::commands::with_keyring;
use crate::error::CliError;
use crate::output::{self, emit};
use crate::{GlobalArgs, PoliciesApplyArgs, PoliciesListArgs, PoliciesShowArgs};

/// The policy file: policies by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    policies: BTreeMap<String, PolicyEntry>,
}

/// One policy of the file; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyEntry {
    max_lifetime: Option<String>,
    grace: Option<String>,
    warn_before: Option<String>,
    default_overlap: Option<String>,
    self_rotation: Option<bool>,
    max_chain_lifetime: Option<String>,
    rotate_every: Option<String>,
    overlap_after_first_use: Option<String>,
}

pub async fn apply(global: &GlobalArgs, args: &PoliciesApplyArgs) -> Result<(), CliError> {
    let path = &args.file;
    let text = std::fs::read_to_string(path)
        .map_err(|error| CliError::new(format!("cannot read policy file {}: {error}", path.display())))?;
    let file: PolicyFile = toml::from_str(&text).map_err(|error| {
        CliError::new(format!("invalid policy file {}: {}", path.display(), describe_toml_error(&text, &error)))
    })?;

    with_keyring(global, |keyring| async move {
        let base = keyring.builtin_default_policy();
        let wanted = file
            .policies
            .iter()
            .map(|(name, entry)| entry.to_policy(name, &base))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| CliError::new(format!("invalid policy file {}: {error}", path.display())))?;
        let plan = keyring.plan_policies(&wanted, args.apply_to_existing).await?;
        if args.dry_run || plan.is_empty() {
            let note = if plan.is_empty() { "nothing to change" } else { "dry run: nothing was written" };
            return emit(&format!("{}{note}\n", plan_text(&plan, "would get")));
        }
        let applied = keyring.apply_policies(plan, &Caller::cli()).await?;
        emit(&plan_text(&applied, "got"))
    })
    .await
}

pub async fn list(global: &GlobalArgs, args: &PoliciesListArgs) -> Result<(), CliError> {
    with_keyring(global, |keyring: std::sync::Arc<Keyring>| async move {
        let policies = keyring.policies().await?;
        if args.json {
            let values = policies.iter().map(policy_json).collect();
            return emit(&output::json_text(&Value::Array(values)));
        }
        let mut text = String::new();
        for policy in &policies {
            let fields: Vec<String> =
                policy.fields().into_iter().map(|(field, value)| format!("{field}={value}")).collect();
            text.push_str(&format!("{}  {}\n", policy.name, fields.join(" ")));
        }
        emit(&text)
    })
    .await
}

pub async fn show(global: &GlobalArgs, args: &PoliciesShowArgs) -> Result<(), CliError> {
    let name = PolicyName::parse(&args.name)?;
    with_keyring(global, |keyring| async move {
        let policy = keyring.policy(&name).await?;
        if args.json {
            return emit(&output::json_text(&policy_json(&policy)));
        }
        let mut rows = vec![("name", policy.name.to_string())];
        rows.extend(policy.fields());
        let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        emit(&rows.iter().map(|(label, value)| format!("{label:<width$}  {value}\n")).collect::<String>())
    })
    .await
}

impl PolicyEntry {
    /// Builds the named policy, taking each missing field from `base`.
    fn to_policy(&self, name: &str, base: &NamedPolicy) -> Result<NamedPolicy, CliError> {
        let name = PolicyName::parse(name)?;
        let duration = |field: &str, value: &Option<String>, fallback: Duration| match value {
            Some(text) => {
                Duration::parse(text).map_err(|error| CliError::new(format!("policy {name}: {field}: {error}")))
            }
            None => Ok(fallback),
        };
        let optional = |field: &str, value: &Option<String>| {
            value.as_ref().map(|text| duration(field, &Some(text.clone()), Duration::ZERO)).transpose()
        };
        Ok(NamedPolicy {
            max_lifetime: duration("max_lifetime", &self.max_lifetime, base.max_lifetime)?,
            grace: duration("grace", &self.grace, base.grace)?,
            warn_before: duration("warn_before", &self.warn_before, base.warn_before)?,
            default_overlap: duration("default_overlap", &self.default_overlap, base.default_overlap)?,
            self_rotation: self.self_rotation.unwrap_or(base.self_rotation),
            max_chain_lifetime: duration("max_chain_lifetime", &self.max_chain_lifetime, base.max_chain_lifetime)?,
            rotate_every: optional("rotate_every", &self.rotate_every)?,
            overlap_after_first_use: optional("overlap_after_first_use", &self.overlap_after_first_use)?,
            name: name.clone(),
        })
    }
}

/// Describes a TOML error by its line and message. serde quotes a value of the wrong type, so a
/// message that could hold a token is replaced by a generic one.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message();
    let message = if keyturn_core::quote_value(message).contains("may be a token") {
        "a value is invalid (not shown, because it may be a token)"
    } else {
        message
    };
    let line = error.span().and_then(|span| text.get(..span.start)).map(|before| before.lines().count().max(1));
    match line {
        Some(line) => format!("line {line}: {message}"),
        None => message.to_owned(),
    }
}

/// Renders a plan, one policy per line, with the changed fields indented below their policy.
/// `verb` is "would get" before applying and "got" after.
fn plan_text(plan: &PolicyPlan, verb: &str) -> String {
    let mut text = String::new();
    let mut line = |planned: &PlannedPolicy, action: &str| {
        text.push_str(&format!("policy {}: {action}\n", planned.name));
        for change in &planned.fields {
            text.push_str(&format!("  {}: {} -> {}\n", change.field, change.old, change.new));
        }
        if plan.apply_to_existing && action == "changed" {
            text.push_str(&format!("  keys that {verb} new instants: {}\n", planned.keys_affected));
        }
    };
    for planned in &plan.added {
        line(planned, "added");
    }
    for planned in &plan.changed {
        line(planned, "changed");
    }
    for planned in &plan.removed {
        line(planned, "removed");
    }
    for name in &plan.unchanged {
        text.push_str(&format!("policy {name}: unchanged\n"));
    }
    text
}
