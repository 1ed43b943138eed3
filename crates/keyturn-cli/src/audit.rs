//! `audit verify` walks the audit chain and reports the first row that was edited, removed,
//! inserted or reordered. With a checkpoint it also detects a truncated tail. `audit export`
//! writes audit rows as JSON Lines for a SIEM and ends with a checkpoint of the chain's newest
//! row. Neither needs the pepper: they read audit rows only, and verify needs the audit key.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use keyturn::settings::{self, AUDIT_KEY_FILE_VAR, AUDIT_KEY_VAR};
use keyturn_core::chain::to_hex;
use keyturn_core::{AuditEvent, AuditEventType, ChainVerifier, Checkpoint, Instant};
use keyturn_store::{AuditFilter, Store};
use serde_json::{json, Value};

use crate::error::CliError;
use crate::output::emit;
use crate::{AuditExportArgs, AuditVerifyArgs, GlobalArgs};

/// How many audit rows are read per query.
const PAGE: u32 = 1_000;

/// Verifies the whole chain. Exits 0 when it holds, 1 when a row breaks it, 2 on an error.
pub async fn verify(global: &GlobalArgs, args: &AuditVerifyArgs) -> Result<ExitCode, CliError> {
    let database = settings::resolve_database_url(global.database.as_deref())?;
    let checkpoint = args.checkpoint.as_deref().map(read_checkpoint).transpose()?;
    let Some(key) = settings::audit_key_from_env(&database)? else {
        return Err(CliError::new(format!(
            "no audit key is configured; set {AUDIT_KEY_VAR} or {AUDIT_KEY_FILE_VAR} to the key that signs the chain"
        )));
    };
    let store = keyturn::open_store(&database, false).await?;

    let mut verifier = ChainVerifier::new(&key, checkpoint);
    let mut after_seq = None;
    loop {
        let rows = page(store.as_ref(), after_seq).await?;
        let Some(last) = rows.last() else { break };
        after_seq = Some(last.seq);
        for row in &rows {
            if let Err(broken) = verifier.push(row) {
                return Ok(broken_chain(&broken));
            }
        }
    }
    let summary = match verifier.finish() {
        Ok(summary) => summary,
        Err(broken) => return Ok(broken_chain(&broken)),
    };

    let mut text = match &summary.head {
        Some(head) => {
            format!("audit chain intact: {} rows, newest row {} with MAC {}\n", summary.rows, head.seq, head.mac)
        }
        None => format!("audit chain intact: {} rows, none of them signed\n", summary.rows),
    };
    if summary.unsigned_prefix > 0 {
        text.push_str(&format!(
            "note: the first {} rows were written before an audit key was configured and carry no MAC, so nothing \
             proves they are unchanged\n",
            summary.unsigned_prefix
        ));
    }
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn broken_chain(broken: &keyturn_core::ChainBreak) -> ExitCode {
    eprintln!("audit chain broken: {broken}");
    ExitCode::from(1)
}

/// Writes the rows in the time range as JSON Lines, then a checkpoint of the newest row.
pub async fn export(global: &GlobalArgs, args: &AuditExportArgs) -> Result<(), CliError> {
    let database = settings::resolve_database_url(global.database.as_deref())?;
    let (since, until) = parse_range(args.since.as_deref(), args.until.as_deref())?;
    let store = keyturn::open_store(&database, false).await?;

    let mut after_seq = None;
    let mut newest: Option<AuditEvent> = None;
    loop {
        let filter = AuditFilter { since, until, after_seq, limit: Some(PAGE), ..AuditFilter::default() };
        let rows = store.list_audit(&filter).await.map_err(keyturn::Error::from)?;
        let Some(last) = rows.last() else { break };
        after_seq = Some(last.seq);
        let mut lines = String::new();
        for row in &rows {
            lines.push_str(&export_line(row).to_string());
            lines.push('\n');
        }
        emit(&lines)?;
        newest = rows.into_iter().last();
    }

    // The checkpoint names the newest row of the whole chain, which may lie after the range.
    loop {
        let rows = page(store.as_ref(), after_seq).await?;
        let Some(last) = rows.into_iter().last() else { break };
        after_seq = Some(last.seq);
        newest = Some(last);
    }
    let checkpoint = newest.map(|row| json!({ "seq": row.seq, "mac": row.mac.as_deref().map(to_hex) }));
    emit(&format!("{}\n", json!({ "checkpoint": checkpoint })))
}

/// Renders one exported row: the audit event as every front end prints it, plus the canonical
/// text and MAC, so the chain can be verified from the export alone.
fn export_line(row: &AuditEvent) -> Value {
    let mut value = keyturn::json::audit_event_json(row);
    value["canonical"] = Value::String(row.canonical.clone());
    value["mac"] = row.mac.as_deref().map_or(Value::Null, |mac| Value::String(to_hex(mac)));
    value
}

async fn page(store: &dyn Store, after_seq: Option<i64>) -> Result<Vec<AuditEvent>, CliError> {
    let filter = AuditFilter { after_seq, limit: Some(PAGE), ..AuditFilter::default() };
    Ok(store.list_audit(&filter).await.map_err(keyturn::Error::from)?)
}

/// Parses `--since` and `--until`, which must be in order when both are given.
pub fn parse_range(since: Option<&str>, until: Option<&str>) -> Result<(Option<Instant>, Option<Instant>), CliError> {
    let since = since.map(|value| parse_instant("--since", value)).transpose()?;
    let until = until.map(|value| parse_instant("--until", value)).transpose()?;
    if let (Some(since), Some(until)) = (since, until) {
        if since >= until {
            return Err(CliError::new(format!("--since {since} is not before --until {until}; swap them")));
        }
    }
    Ok((since, until))
}

/// Parses `--event`: an audit event type as docs/audit.md lists them.
pub fn parse_event_type(value: &str) -> Result<AuditEventType, CliError> {
    serde_json::from_value(Value::String(value.to_owned())).map_err(|_| {
        CliError::new(format!(
            "invalid --event {value:?}: use an audit event type such as authn_token_revoked; docs/audit.md lists them"
        ))
    })
}

fn parse_instant(option: &str, value: &str) -> Result<Instant, CliError> {
    Instant::parse_rfc3339(value).map_err(|error| CliError::new(format!("{option}: {error}")))
}

/// Reads a checkpoint from a file: an export, whose last line is the checkpoint, a file with only
/// the checkpoint line, or `-` for stdin.
fn read_checkpoint(path: &Path) -> Result<Checkpoint, CliError> {
    let shown = path.display();
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| CliError::new(format!("--checkpoint -: cannot read stdin: {error}")))?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|error| CliError::new(format!("--checkpoint {shown}: {error}")))?
    };
    let last = text.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("");
    let invalid = || {
        CliError::new(format!(
            "--checkpoint {shown}: the last line is not a checkpoint such as {{\"checkpoint\":{{\"seq\":42,\"mac\":\"...\"}}}}; \
             pass the file that `keyturn audit export` wrote"
        ))
    };
    let value: Value = serde_json::from_str(last).map_err(|_| invalid())?;
    let checkpoint = value.get("checkpoint").ok_or_else(invalid)?;
    let seq = checkpoint.get("seq").and_then(Value::as_i64).ok_or_else(invalid)?;
    let mac = checkpoint.get("mac").and_then(Value::as_str).ok_or_else(|| {
        CliError::new(format!(
            "--checkpoint {shown}: the checkpoint's row {seq} has no MAC, because no audit key signed it; it cannot \
             detect a truncated tail"
        ))
    })?;
    let valid = mac.len() == 64 && mac.bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase());
    if !valid || seq < 1 {
        return Err(invalid());
    }
    Ok(Checkpoint { seq, mac: mac.to_owned() })
}
