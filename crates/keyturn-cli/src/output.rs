//! Rendering of keys, verification decisions, the migration report and audit events, as JSON
//! for scripts and as short text for people, and the writing of that output to stdout. Instants
//! are RFC 3339 in UTC and absent values are `null` in JSON and `-` in text. Nothing here reads a key's hash, and tokens
//! are rendered only by the functions for newly issued keys.

use std::io::{ErrorKind, Write};

use keyturn::{Issued, KeyView, MigrationEntry};
use keyturn_core::{AuditEvent, Decision, Instant, KeyId, KeyRecord, KeyState};
use serde_json::{json, Map, Value};

use crate::error::CliError;

/// Writes `text` to stdout. A closed pipe, as in `keyturn keys list | head -1`, is not an error.
/// Output that carries a token goes through [`write_stdout`] instead, because there every failed
/// write loses the token.
pub fn emit(text: &str) -> Result<(), CliError> {
    match write_stdout(text) {
        Err(error) if error.kind() != ErrorKind::BrokenPipe => {
            Err(CliError::new(format!("failed to write to stdout: {error}")))
        }
        _ => Ok(()),
    }
}

/// Writes `text` to stdout and flushes it, returning every error, a closed pipe included.
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush())
}

/// Renders `value` as indented JSON followed by a line break.
pub fn json_text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// Renders a key as a JSON object, with its state at the instant it was read.
pub fn key_json(record: &KeyRecord, state: &KeyState) -> Value {
    keyturn::json::key_json(record, state)
}

/// Renders a newly issued key as JSON: the key's fields plus `token`. For a rotation, the
/// rotated key is added under `predecessor` when it could be read back.
pub fn issued_json(issued: &Issued, state: &KeyState, predecessor: Option<&KeyView>) -> Value {
    let mut value = key_json(&issued.record, state);
    if let Value::Object(object) = &mut value {
        object.insert("token".to_owned(), Value::String(issued.token.expose().to_owned()));
        if let Some(view) = predecessor {
            object.insert("predecessor".to_owned(), key_json(&view.record, &view.state));
        }
    }
    value
}

/// Renders the token on its own line, for people. The warning that it is shown only once goes to
/// stderr, so it reaches the terminal even when stdout is redirected to a file.
pub fn token_text(issued: &Issued) -> String {
    format!("{}\n", issued.token.expose())
}

/// Renders a one-line summary of a newly issued key, for people.
pub fn issued_summary(record: &KeyRecord, state: &KeyState) -> String {
    format!(
        "key {} ({}), owner {}, scopes {}, state {}, expires {}\n",
        record.key_id,
        escape_text(&record.name),
        text(record.owner.as_deref()),
        scopes_text(record),
        state.outcome,
        instant_text(record.expires_at),
    )
}

/// Renders one key as labelled lines, for `keys show`. Free text is escaped, so each label
/// starts a line of its own whatever the name, owner, reason or metadata contain.
pub fn key_details(record: &KeyRecord, state: &KeyState) -> String {
    let state_text = match state.deadline {
        Some(deadline) => format!("{} until {deadline}", state.outcome),
        None => state.outcome.to_string(),
    };
    let rows = [
        ("key id", record.key_id.to_string()),
        ("name", escape_text(&record.name)),
        ("owner", text(record.owner.as_deref())),
        ("scopes", scopes_text(record)),
        ("state", state_text),
        ("created at", record.created_at.to_string()),
        ("expires at", instant_text(record.expires_at)),
        ("grace", record.grace.to_string()),
        ("grace ends at", instant_text(record.grace_ends_at())),
        ("warn before", record.warn_before.to_string()),
        ("self-rotation", if record.self_rotation { "allowed" } else { "rejected" }.to_owned()),
        ("chain ends at", record.chain_ends_at().to_string()),
        ("revoked at", instant_text(record.revoked_at)),
        ("revocation reason", text(record.revocation_reason.as_deref())),
        ("rotated at", instant_text(record.rotated_at)),
        ("overlap ends at", instant_text(record.overlap_ends_at)),
        ("successor", text(record.successor_id.as_ref().map(KeyId::as_str))),
        ("predecessor", text(record.predecessor_id.as_ref().map(KeyId::as_str))),
        ("first used at", instant_text(record.first_used_at)),
        ("last used at", instant_text(record.last_used_at)),
        ("metadata", escape_json_text(&Value::Object(record.metadata.clone()).to_string())),
        ("policy", record.policy.to_string()),
        ("overlap after first use", record.overlap_after_first_use.map_or_else(|| "-".to_owned(), |d| d.to_string())),
    ];
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    rows.iter().map(|(label, value)| format!("{label:<width$}  {value}\n")).collect()
}

/// Renders keys as an aligned table: key id, name, owner, state and expiry.
pub fn key_table(views: &[KeyView]) -> String {
    if views.is_empty() {
        return "no keys found\n".to_owned();
    }
    let header = ["KEY ID", "NAME", "OWNER", "STATE", "EXPIRES"];
    let rows = views
        .iter()
        .map(|view| {
            let record = &view.record;
            vec![
                record.key_id.to_string(),
                escape_text(&record.name),
                text(record.owner.as_deref()),
                view.state.outcome.to_string(),
                instant_text(record.expires_at),
            ]
        })
        .collect();
    table(&header, rows)
}

/// Renders the migration report as a JSON array.
pub fn migration_json(entries: &[MigrationEntry]) -> Value {
    Value::Array(entries.iter().map(keyturn::json::migration_entry_json).collect())
}

/// Renders the migration report as an aligned table, one key per row in the report's order.
pub fn migration_table(entries: &[MigrationEntry]) -> String {
    if entries.is_empty() {
        return "no keys in their overlap window\n".to_owned();
    }
    let header = [
        "KEY ID",
        "NAME",
        "OWNER",
        "STATUS",
        "ROTATED AT",
        "OVERLAP ENDS AT",
        "LAST USED AT",
        "LAST CLIENT",
        "USES SINCE ROTATION",
        "SUCCESSOR",
        "SUCCESSOR FIRST USED AT",
    ];
    let rows = entries
        .iter()
        .map(|entry| {
            vec![
                entry.key_id.to_string(),
                escape_text(&entry.name),
                text(entry.owner.as_deref()),
                entry.status.to_string(),
                entry.rotated_at.to_rfc3339(),
                entry.overlap_ends_at.to_rfc3339(),
                instant_text(entry.last_used_at),
                text(entry.last_client_addr.as_deref()),
                entry.uses_since_rotation.to_string(),
                entry.successor_id.to_string(),
                instant_text(entry.successor_first_used_at),
            ]
        })
        .collect();
    table(&header, rows)
}

/// Renders audit events as a JSON array.
pub fn audit_json(events: &[AuditEvent]) -> Value {
    Value::Array(events.iter().map(keyturn::json::audit_event_json).collect())
}

/// Renders audit events one per line: sequence number, instant, event, key id, actor and reason.
pub fn audit_table(events: &[AuditEvent]) -> String {
    if events.is_empty() {
        return "no audit events found\n".to_owned();
    }
    let header = ["SEQ", "AT", "EVENT", "KEY ID", "ACTOR", "REASON"];
    let rows = events
        .iter()
        .map(|stored| {
            let event = &stored.event;
            vec![
                stored.seq.to_string(),
                event.at.to_string(),
                event.event.to_string(),
                text(event.key_id.as_ref().map(KeyId::as_str)),
                escape_text(&event.actor.to_stored()),
                text(event.reason.as_deref()),
            ]
        })
        .collect();
    table(&header, rows)
}

/// Renders a verification decision as JSON. Key fields are `null` unless the secret matched.
pub fn decision_json(decision: &Decision) -> Value {
    let key = decision.key.as_deref();
    let headers: Map<String, Value> =
        decision.lifecycle_headers().into_iter().map(|(name, value)| (name.to_owned(), Value::String(value))).collect();
    json!({
        "allowed": decision.allowed(),
        "outcome": decision.code(),
        "key_id": key.map(|record| record.key_id.as_str()),
        "owner": key.and_then(|record| record.owner.as_deref()),
        "scopes": key.map(|record| &record.scopes),
        "expires_at": rfc3339(key.and_then(|record| record.expires_at)),
        "deadline": rfc3339(decision.deadline),
        "missing_scopes": decision.missing_scopes,
        "headers": headers,
    })
}

/// Renders a verification decision for people: allowed or rejected, the outcome, the key and
/// the lifecycle headers that an HTTP response would carry.
pub fn decision_text(decision: &Decision) -> String {
    let verdict = if decision.allowed() { "allowed" } else { "rejected" };
    let mut lines = match decision.key.as_deref() {
        Some(record) => {
            format!("{verdict}: {} (key {}, owner {})\n", decision.code(), record.key_id, text(record.owner.as_deref()))
        }
        None => format!("{verdict}: {}\n", decision.code()),
    };
    if !decision.missing_scopes.is_empty() {
        let missing: Vec<&str> = decision.missing_scopes.iter().map(|scope| scope.as_str()).collect();
        lines.push_str(&format!("missing scopes: {}\n", missing.join(" ")));
    }
    for (name, value) in decision.lifecycle_headers() {
        lines.push_str(&format!("{name}: {value}\n"));
    }
    lines
}

/// Aligns `rows` under `header` with two spaces between columns. Widths count characters, so
/// a wide character such as an ideograph can shift the columns after it.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let header_row = header.iter().map(|title| (*title).to_owned()).collect();
    let mut output = String::new();
    for row in std::iter::once(header_row).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if index == last {
                output.push_str(cell);
            } else {
                let padding = width - cell.chars().count();
                output.push_str(cell);
                output.push_str(&" ".repeat(padding + 2));
            }
        }
        output.push('\n');
    }
    output
}

fn rfc3339(instant: Option<Instant>) -> Value {
    instant.map_or(Value::Null, |instant| Value::String(instant.to_rfc3339()))
}

fn instant_text(instant: Option<Instant>) -> String {
    instant.map_or_else(|| "-".to_owned(), |instant| instant.to_rfc3339())
}

/// Renders optional free text for people: escaped, or `-` when absent.
pub(crate) fn text(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), escape_text)
}

/// Escapes the characters of free text that could forge or hide output in a terminal. These are
/// the backslash, control characters such as line breaks and the escape that starts terminal
/// sequences, the Unicode line and paragraph separators, and the bidirectional formatting
/// characters that reorder text. They become Rust escapes such as `\\`, `\n` and `\u{1b}`.
/// Everything else, quotes included, is kept, so ordinary names print unchanged.
pub(crate) fn escape_text(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '\\' || needs_escape(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Escapes, in JSON text, the characters of [`escape_text`] that a JSON serializer leaves as
/// they are (serde_json escapes only U+0000 to U+001F, quotes and backslashes). They become
/// `\uXXXX` escapes, so the text stays valid JSON.
fn escape_json_text(json: &str) -> String {
    let mut escaped = String::with_capacity(json.len());
    for c in json.chars() {
        if needs_escape(c) {
            // Every character that needs_escape matches is in the Basic Multilingual Plane.
            escaped.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Returns whether `c` is a control character (Unicode category Cc: C0, DEL and C1), a line or
/// paragraph separator, or a bidirectional formatting character.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

fn scopes_text(record: &KeyRecord) -> String {
    if record.scopes.is_empty() {
        "-".to_owned()
    } else {
        record.scopes.to_space_separated()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_text_keeps_plain_text() {
        assert_eq!(escape_text("billing \"eu\" team's ключ"), "billing \"eu\" team's ключ");
    }

    #[test]
    fn escape_text_escapes_line_breaks_and_controls() {
        assert_eq!(escape_text("a\nb\r\tc\\"), "a\\nb\\r\\tc\\\\");
        assert_eq!(escape_text("\u{1b}[2K\u{7f}\u{9b}"), "\\u{1b}[2K\\u{7f}\\u{9b}");
        assert_eq!(escape_text("x\u{2028}y\u{202e}z\u{2066}"), "x\\u{2028}y\\u{202e}z\\u{2066}");
    }

    #[test]
    fn escape_json_text_stays_valid_json() {
        let metadata = json!({"note": "a\nb\u{202e}c\u{85}", "path": "C:\\x"});
        let escaped = escape_json_text(&metadata.to_string());
        assert!(!escaped.contains('\u{202e}'), "{escaped}");
        assert!(!escaped.contains('\u{85}'), "{escaped}");
        assert!(escaped.contains(r"a\nb\u202ec\u0085"), "{escaped}");
        let parsed: Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(parsed, metadata);
    }
}
