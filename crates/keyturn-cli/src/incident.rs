//! The incident commands: `keys revoke --owner` or `--policy` (and `--dry-run`), which revokes a selection of
//! keys in one transaction, and `keys report-leak`, which reads leaked tokens from stdin and
//! revokes their keys. A token is read only from stdin, never from an argument, and no output or
//! error of this module prints one: a token that matches no key is named by its line number and,
//! when it parsed, its key id.

use std::io::Read;

use clap::Args;
use keyturn::{parse_token_lines, Caller, LeakResult, LeakStatus, MAX_LEAK_LINE_BYTES, MAX_LEAK_TOKENS};
use keyturn_core::{KeyId, KeyRecord};
use keyturn_store::{BulkOutcome, KeySelection};
use zeroize::Zeroizing;

use crate::commands::{parse_key_id, parse_policy_name, with_keyring};
use crate::error::CliError;
use crate::output::{self, emit};
use crate::{GlobalArgs, RevokeArgs};

/// The maximum number of bytes `report-leak` reads from stdin: the largest report with its line breaks and
/// some room for white space around the tokens.
const MAX_INPUT_BYTES: usize = MAX_LEAK_TOKENS * (MAX_LEAK_LINE_BYTES + 2);

#[derive(Debug, Args)]
pub struct ReportLeakArgs {
    /// Reason recorded after "leak reported" in each revocation and in the audit log
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The place the tokens were found, such as a scanner or a URL, recorded in the audit log
    #[arg(long, value_name = "TEXT")]
    pub source: Option<String>,
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// Runs `keys revoke` with `--owner`, `--policy` or `--dry-run`.
pub async fn revoke_selection(global: &GlobalArgs, args: &RevokeArgs) -> Result<(), CliError> {
    let selection = match (&args.owner, &args.policy, &args.key_id) {
        (Some(owner), None, None) => KeySelection::Owner(owner.clone()),
        (None, Some(policy), None) => KeySelection::Policy(parse_policy_name(policy)?),
        (None, None, Some(key_id)) => KeySelection::KeyIds(vec![parse_key_id(key_id)?]),
        _ => return Err(CliError::new("give exactly one of a key id, --owner and --policy")),
    };

    with_keyring(global, |keyring| async move {
        let now = keyring.now();
        let (keys, missing): (Vec<(KeyRecord, Option<BulkOutcome>)>, Vec<KeyId>) = if args.dry_run {
            let (views, missing) = keyring.select_keys(&selection).await?;
            (views.into_iter().map(|view| (view.record, None)).collect(), missing)
        } else {
            let report = keyring.revoke_selection(&selection, args.reason.as_deref(), &Caller::cli()).await?;
            (report.keys.into_iter().map(|key| (key.record, Some(key.outcome))).collect(), report.missing)
        };

        if args.json {
            let value = keyturn::json::bulk_revocation_json(&keys, &missing, args.dry_run, now);
            return emit(&output::json_text(&value));
        }
        let mut text = summary(&keys, args.dry_run);
        for key_id in &missing {
            text.push_str(&format!("key {key_id} not found\n"));
        }
        if !keys.is_empty() {
            text.push_str(&table(&keys, now, args.dry_run));
        }
        emit(&text)
    })
    .await
}

/// Runs `keys report-leak`.
pub async fn report_leak(global: &GlobalArgs, args: &ReportLeakArgs) -> Result<(), CliError> {
    let text = read_stdin()?;
    let tokens = parse_token_lines(&text)?;
    drop(text);
    if tokens.is_empty() {
        return Err(CliError::new(
            "stdin contains no token; pipe the leaked tokens in, one per line, such as `keyturn keys report-leak < tokens.txt`",
        ));
    }

    with_keyring(global, |keyring| async move {
        let caller = Caller::cli();
        let results = keyring.report_leaks(&tokens, args.source.as_deref(), args.reason.as_deref(), &caller).await?;
        if args.json {
            return emit(&output::json_text(&keyturn::json::leak_results_json(&results)));
        }
        emit(&leak_text(&results))
    })
    .await
}

/// Reads stdin whole, up to [`MAX_INPUT_BYTES`]. The buffer is zeroed when dropped.
fn read_stdin() -> Result<Zeroizing<String>, CliError> {
    let mut bytes = Zeroizing::new(Vec::new());
    let limit = u64::try_from(MAX_INPUT_BYTES).unwrap_or(u64::MAX) + 1;
    std::io::stdin()
        .lock()
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|error| CliError::new(format!("failed to read the tokens from stdin: {error}")))?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(CliError::new(format!(
            "stdin is larger than {MAX_INPUT_BYTES} bytes; report at most {MAX_LEAK_TOKENS} tokens at a time"
        )));
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(error) => Err(CliError::new(format!(
            "stdin is not UTF-8 text (the first invalid byte is at offset {}); give one token per line",
            error.valid_up_to()
        ))),
    }
}

fn summary(keys: &[(KeyRecord, Option<BulkOutcome>)], dry_run: bool) -> String {
    let live = keys.iter().filter(|(record, _)| record.revoked_at.is_none()).count();
    if dry_run {
        return format!(
            "dry run: {} key(s) selected, {live} would be revoked, {} already revoked; nothing was written\n",
            keys.len(),
            keys.len() - live
        );
    }
    let count = |outcome| keys.iter().filter(|(_, result)| *result == Some(outcome)).count();
    format!(
        "revoked {} key(s); {} were already revoked\n",
        count(BulkOutcome::Revoked),
        count(BulkOutcome::AlreadyRevoked)
    )
}

fn table(keys: &[(KeyRecord, Option<BulkOutcome>)], now: keyturn_core::Instant, dry_run: bool) -> String {
    let header: &[&str] =
        if dry_run { &["KEY ID", "NAME", "OWNER", "STATE"] } else { &["KEY ID", "NAME", "OWNER", "STATE", "RESULT"] };
    let rows = keys
        .iter()
        .map(|(record, outcome)| {
            let mut row = vec![
                record.key_id.to_string(),
                output::escape_text(&record.name),
                output::text(record.owner.as_deref()),
                record.state_at(now).outcome.to_string(),
            ];
            match outcome {
                Some(BulkOutcome::Revoked) => row.push("revoked".to_owned()),
                Some(BulkOutcome::AlreadyRevoked) => row.push("already revoked".to_owned()),
                None => {}
            }
            row
        })
        .collect();
    output::table(header, rows)
}

/// Renders a leak report's results, one line per token, then a summary.
fn leak_text(results: &[LeakResult]) -> String {
    let mut text = String::new();
    for result in results {
        match &result.key_id {
            Some(key_id) => {
                text.push_str(&format!("line {}: key {key_id}: {}\n", result.line, result.status.describe()))
            }
            // A line that does not parse as a token is often a token with something around it,
            // such as a header name copied from a log.
            None => text.push_str(&format!(
                "line {}: {}: the line is not a keyturn token; put only the token on the line\n",
                result.line,
                result.status.describe()
            )),
        }
    }
    let count = |status| results.iter().filter(|result| result.status == status).count();
    text.push_str(&format!(
        "{} token(s): {} key(s) revoked now, {} already revoked, {} not a keyturn key of this store, {} not checked\n",
        results.len(),
        count(LeakStatus::Revoked),
        count(LeakStatus::AlreadyRevoked),
        count(LeakStatus::NotFound),
        count(LeakStatus::PepperMissing)
    ));
    text
}
