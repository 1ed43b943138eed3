//! The `keys` commands that manage keys (create, list, show, rotate, revoke), `keys
//! migration-report` and `audit list`.
//! Each command parses its arguments into service-layer types before it opens the database, and
//! the service layer checks the rest before writing, so an invalid value changes nothing.
//! `keys verify` lives in `verify.rs`. `store copy` copies a whole store and needs no pepper,
//! because it copies hashes as they are.

use std::future::Future;
use std::sync::Arc;

use keyturn::{Caller, Keyring, ListFilter, NewKey, RotateOptions, SelfRotationOptions};
use keyturn_core::{Duration, Expiry, Instant, KeyId, Outcome, PolicyName, Scopes};
use keyturn_store::AuditFilter;

use crate::error::CliError;
use crate::output::{self, emit};
use crate::setup::open_keyring;
use crate::{
    AuditListArgs, CreateArgs, GlobalArgs, ListArgs, MigrationReportArgs, RevokeArgs, RotateArgs, ShowArgs,
    StoreBackupArgs, StoreCopyArgs,
};

/// Opens the keyring, runs `command` on it and shuts the keyring down, so queued writes are
/// flushed whether the command succeeded or not.
pub async fn with_keyring<T, F, Fut>(global: &GlobalArgs, command: F) -> Result<T, CliError>
where
    F: FnOnce(Arc<Keyring>) -> Fut,
    Fut: Future<Output = Result<T, CliError>>,
{
    let keyring = open_keyring(global).await?;
    let result = command(Arc::clone(&keyring)).await;
    keyring.shutdown().await;
    result
}

pub async fn create(global: &GlobalArgs, args: &CreateArgs) -> Result<(), CliError> {
    let new = NewKey {
        name: args.name.clone(),
        owner: args.owner.clone(),
        scopes: parse_scopes(&args.scopes)?,
        metadata: serde_json::Map::new(),
        expiry: parse_expiry(args)?,
        grace: args.grace.as_deref().map(|value| parse_duration("--grace", value)).transpose()?,
        warn_before: args.warn_before.as_deref().map(|value| parse_duration("--warn-before", value)).transpose()?,
        policy: args.policy.as_deref().map(PolicyName::parse).transpose()?,
    };
    let max_chain_lifetime =
        args.max_chain_lifetime.as_deref().map(|value| parse_duration("--max-chain-lifetime", value)).transpose()?;
    let self_rotation = SelfRotationOptions { allowed: args.no_self_rotation.then_some(false), max_chain_lifetime };

    with_keyring(global, |keyring| async move {
        let issued = keyring.create_with(new, self_rotation, &Caller::cli()).await?;
        let state = issued.record.state_at(keyring.now());
        let text = if args.json {
            output::json_text(&output::issued_json(&issued, &state, None))
        } else {
            format!("created {}{}", output::issued_summary(&issued.record, &state), output::token_text(&issued))
        };
        show_token(&text, &issued.record.key_id, args.json)
    })
    .await
}

pub async fn list(global: &GlobalArgs, args: &ListArgs) -> Result<(), CliError> {
    let filter = ListFilter {
        owner: args.owner.clone(),
        state: args.state.as_deref().map(parse_state).transpose()?,
        expiring_within: args
            .expiring_within
            .as_deref()
            .map(|value| parse_duration("--expiring-within", value))
            .transpose()?,
        unused_for: args.unused_for.as_deref().map(|value| parse_duration("--unused-for", value)).transpose()?,
    };
    with_keyring(global, |keyring| async move {
        let views = keyring.list(&filter).await?;
        if args.json {
            let keys = views.iter().map(|view| output::key_json(&view.record, &view.state)).collect();
            emit(&output::json_text(&serde_json::Value::Array(keys)))
        } else {
            emit(&output::key_table(&views))
        }
    })
    .await
}

pub async fn show(global: &GlobalArgs, args: &ShowArgs) -> Result<(), CliError> {
    let key_id = parse_key_id(&args.key_id)?;
    with_keyring(global, |keyring| async move {
        let view = keyring.get(&key_id).await?;
        if args.json {
            emit(&output::json_text(&output::key_json(&view.record, &view.state)))
        } else {
            emit(&output::key_details(&view.record, &view.state))
        }
    })
    .await
}

pub async fn rotate(global: &GlobalArgs, args: &RotateArgs) -> Result<(), CliError> {
    let key_id = parse_key_id(&args.key_id)?;
    let options = RotateOptions {
        overlap: args.overlap.as_deref().map(|value| parse_duration("--overlap", value)).transpose()?,
        expiry: None,
        replace_unused_successor: args.replace_unused_successor,
        overlap_after_first_use: args
            .overlap_after_first_use
            .as_deref()
            .map(|value| parse_duration("--overlap-after-first-use", value))
            .transpose()?,
    };

    with_keyring(global, |keyring| async move {
        let issued = keyring.rotate(&key_id, &options, &Caller::cli()).await?;
        let state = issued.record.state_at(keyring.now());
        // The rotation is committed, so a failed read of the old key must not hide the token.
        let predecessor = match keyring.get(&key_id).await {
            Ok(view) => Some(view),
            Err(error) => {
                tracing::warn!(key_id = %key_id, error = %error, "reading the rotated key back failed");
                None
            }
        };

        let text = if args.json {
            output::json_text(&output::issued_json(&issued, &state, predecessor.as_ref()))
        } else {
            let overlap_end = predecessor
                .as_ref()
                .and_then(|view| view.record.overlap_ends_at)
                .map_or_else(|| "the end of its overlap window".to_owned(), |end| end.to_rfc3339());
            format!(
                "rotated key {key_id}; it keeps working until {overlap_end}\nsuccessor {}{}",
                output::issued_summary(&issued.record, &state),
                output::token_text(&issued)
            )
        };
        show_token(&text, &issued.record.key_id, args.json)
    })
    .await
}

pub async fn revoke(global: &GlobalArgs, args: &RevokeArgs) -> Result<(), CliError> {
    if args.owner.is_some() || args.policy.is_some() || args.dry_run {
        return crate::incident::revoke_selection(global, args).await;
    }
    let key_id = parse_key_id(args.key_id.as_deref().unwrap_or_default())?;
    with_keyring(global, |keyring| async move {
        let record = keyring.revoke(&key_id, args.reason.as_deref(), &Caller::cli()).await?;
        let state = record.state_at(keyring.now());
        if args.json {
            emit(&output::json_text(&output::key_json(&record, &state)))
        } else {
            let revoked_at = record.revoked_at.map_or_else(|| "now".to_owned(), Instant::to_rfc3339);
            emit(&format!("revoked key {key_id} at {revoked_at}\n"))
        }
    })
    .await
}

/// Runs `keys migration-report`.
pub async fn migration_report(global: &GlobalArgs, args: &MigrationReportArgs) -> Result<(), CliError> {
    if args.rotation_requests {
        return crate::schedule::rotation_request_report(global, args).await;
    }
    with_keyring(global, |keyring| async move {
        let entries = keyring.migration_report(args.owner.as_deref()).await?;
        if args.json {
            emit(&output::json_text(&output::migration_json(&entries)))
        } else {
            emit(&output::migration_table(&entries))
        }
    })
    .await
}

/// Runs `audit list`.
pub async fn audit_list(global: &GlobalArgs, args: &AuditListArgs) -> Result<(), CliError> {
    let (since, until) = crate::audit::parse_range(args.since.as_deref(), args.until.as_deref())?;
    let filter = AuditFilter {
        key_id: args.key_id.as_deref().map(parse_key_id).transpose()?,
        event: args.event.as_deref().map(crate::audit::parse_event_type).transpose()?,
        since,
        until,
        after_seq: args.after_seq,
        ..AuditFilter::default()
    };
    with_keyring(global, |keyring| async move {
        let events = keyring.audit(&filter).await?;
        if args.json {
            emit(&output::json_text(&output::audit_json(&events)))
        } else {
            emit(&output::audit_table(&events))
        }
    })
    .await
}

/// Prints the output that carries a new token, then the warning that it is shown only once.
/// When writing to stdout fails for any reason, a closed pipe included, the key exists but its
/// token is lost, so the error message names the key to revoke.
pub fn show_token(text: &str, key_id: &KeyId, json: bool) -> Result<(), CliError> {
    output::write_stdout(text).map_err(|error| {
        CliError::new(format!(
            "failed to write to stdout: {error}; key {key_id} was created but its token was not shown, so revoke \
             it with `keyturn keys revoke {key_id}` and create another"
        ))
    })?;
    if !json {
        eprintln!("warning: this is the only time the token is shown; store it now, because keyturn keeps only a hash");
    }
    Ok(())
}

/// Parses a key id argument; the error quotes the value and the expected form.
pub fn parse_key_id(value: &str) -> Result<KeyId, CliError> {
    Ok(KeyId::parse(value)?)
}

/// Parses a `--policy` value; the error quotes the name and the allowed form.
pub fn parse_policy_name(value: &str) -> Result<PolicyName, CliError> {
    Ok(PolicyName::parse(value)?)
}

/// Parses `--scope` values; the error quotes the first invalid scope and the allowed form.
pub fn parse_scopes(values: &[String]) -> Result<Scopes, CliError> {
    Ok(Scopes::parse(values.iter().map(String::as_str))?)
}

fn parse_duration(option: &str, value: &str) -> Result<Duration, CliError> {
    Duration::parse(value).map_err(|error| CliError::new(format!("{option}: {error}")))
}

/// Reads the mutually exclusive expiry options; `None` takes the default lifetime of 90 days.
fn parse_expiry(args: &CreateArgs) -> Result<Option<Expiry>, CliError> {
    if args.no_expiry {
        return Ok(Some(Expiry::Never));
    }
    if let Some(value) = &args.expires_in {
        let lifetime = parse_duration("--expires-in", value)?;
        if lifetime.is_zero() {
            return Err(CliError::new(format!(
                "--expires-in {value:?}: a lifetime must be greater than zero; give a positive duration such as \
                 90d, or use --no-expiry for a key that never expires"
            )));
        }
        return Ok(Some(Expiry::After(lifetime)));
    }
    if let Some(value) = &args.expires_at {
        let instant = Instant::parse_rfc3339(value).map_err(|error| CliError::new(format!("--expires-at: {error}")))?;
        return Ok(Some(Expiry::At(instant)));
    }
    Ok(None)
}

fn parse_state(value: &str) -> Result<Outcome, CliError> {
    let states = Outcome::ALL.into_iter().filter(|outcome| *outcome != Outcome::Invalid);
    states.clone().find(|outcome| outcome.as_str() == value).ok_or_else(|| {
        let names: Vec<&str> = states.map(Outcome::as_str).collect();
        CliError::new(format!("invalid --state {value:?}: use one of {}", names.join(", ")))
    })
}

/// Copies every key, usage counter and audit event from `--from` to `--to` and prints what was
/// copied. Neither URL's password is ever printed.
pub async fn store_copy(args: &StoreCopyArgs) -> Result<(), CliError> {
    let from =
        keyturn_store::DatabaseUrl::parse(&args.from).map_err(|error| CliError::new(format!("--from: {error}")))?;
    let to = keyturn_store::DatabaseUrl::parse(&args.to).map_err(|error| CliError::new(format!("--to: {error}")))?;
    if from.to_string() == to.to_string() {
        return Err(CliError::new(format!("--from and --to both name {from}; copy to another database")));
    }
    // A mistyped --from must fail rather than gain keyturn tables and copy nothing.
    let source = keyturn::open_existing_store(&from).await?;
    let target = keyturn::open_store(&to, true).await?;
    let report = keyturn::copy_store(source.as_ref(), target.as_ref(), args.allow_non_empty).await?;
    emit(&format!(
        "copied {} keys, {} usage counters and {} audit events from {} to {}; row counts, keys and audit rows \
         match\n",
        report.copied.keys,
        report.copied.usage_counters,
        report.copied.audit_events,
        source.location(),
        target.location()
    ))
}

/// Writes a backup of the SQLite database of `--database` to `--to` and prints where it went.
pub async fn store_backup(global: &GlobalArgs, args: &StoreBackupArgs) -> Result<(), CliError> {
    let database = keyturn::settings::resolve_database_url(global.database.as_deref())?;
    keyturn::backup_store(&database, &args.to).await?;
    emit(&format!("backed up {database} to {}\n", args.to.display()))
}
