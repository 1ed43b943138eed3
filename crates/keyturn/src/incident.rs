//! Incident tools of the keyring: revoking every key of a selection at once, and leak reports,
//! which revoke the keys whose tokens were found in the open. Both write through one store
//! transaction, so an incident is handled whole or not at all. Pepper retirement lives in
//! `pepper_ops.rs`.
//!
//! A leak report contains tokens, so [`ReportedToken`] redacts its `Debug` output and zeroizes the
//! token on drop, and no result, log line or audit row names a token: only its line and, when the
//! token parsed, its key id.

use std::fmt;

use keyturn_core::{AuditEventType, KeyId, NewAuditEvent};
use keyturn_store::{BulkOutcome, BulkReport, BulkRevocation, KeySelection, MAX_BULK_KEYS};
use serde_json::json;
use zeroize::Zeroizing;

use crate::keyring::{check_reason, check_text};
use crate::{Caller, Error, KeyView, Keyring};

/// The maximum number of tokens in one leak report.
pub const MAX_LEAK_TOKENS: usize = 1_000;
/// The maximum length of a line of a leak report, in bytes. A token is far shorter; a longer line is not a
/// token of any prefix keyturn accepts.
pub const MAX_LEAK_LINE_BYTES: usize = 512;
/// The revocation reason of a key whose token was reported leaked, before the report's reason.
pub const LEAK_REASON: &str = "leak reported";

/// One token of a leak report, with its 1-based line (or position in a list).
pub struct ReportedToken {
    pub line: usize,
    token: Zeroizing<String>,
}

/// The outcome of a leak report for one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakStatus {
    /// The token matched its key, which this report revoked.
    Revoked,
    /// The token matched its key, which was revoked before; the report is still audited.
    AlreadyRevoked,
    /// The token is malformed, names no key of this store, or its secret does not match.
    NotFound,
    /// The key is hashed under a pepper missing from this process's ring, so the token cannot
    /// be checked. Add the pepper back and report it again.
    PepperMissing,
}

/// The result of one token of a leak report. It never contains the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakResult {
    pub line: usize,
    /// The key id, when the token parsed.
    pub key_id: Option<KeyId>,
    pub status: LeakStatus,
}

impl ReportedToken {
    pub fn new(line: usize, token: &str) -> Self {
        ReportedToken { line, token: Zeroizing::new(token.to_owned()) }
    }
}

impl fmt::Debug for ReportedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportedToken").field("line", &self.line).field("token", &"<redacted>").finish()
    }
}

impl LeakStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LeakStatus::Revoked => "revoked",
            LeakStatus::AlreadyRevoked => "already_revoked",
            LeakStatus::NotFound => "not_found",
            LeakStatus::PepperMissing => "pepper_missing",
        }
    }

    /// Describes the status for an operator, without the token.
    pub fn describe(self) -> &'static str {
        match self {
            LeakStatus::Revoked => "revoked now",
            LeakStatus::AlreadyRevoked => "already revoked; the leak report is recorded",
            LeakStatus::NotFound => "not a keyturn key of this store",
            LeakStatus::PepperMissing => {
                "cannot be checked, because its key is hashed under a pepper missing from the ring"
            }
        }
    }
}

/// Splits a leak report's text into tokens: one per line, blank lines skipped, surrounding white
/// space removed. Fails on more than [`MAX_LEAK_TOKENS`] tokens or a line longer than
/// [`MAX_LEAK_LINE_BYTES`], naming the line but never quoting it.
pub fn parse_token_lines(text: &str) -> Result<Vec<ReportedToken>, Error> {
    let mut tokens = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let token = line.trim();
        if token.is_empty() {
            continue;
        }
        if token.len() > MAX_LEAK_LINE_BYTES {
            return Err(Error::InvalidInput {
                field: "tokens",
                reason: format!(
                    "line {} is {} bytes long, longer than the {MAX_LEAK_LINE_BYTES} bytes a token may have; put one \
                     token on each line",
                    index + 1,
                    token.len()
                ),
            });
        }
        if tokens.len() == MAX_LEAK_TOKENS {
            return Err(too_many_tokens());
        }
        tokens.push(ReportedToken::new(index + 1, token));
    }
    Ok(tokens)
}

pub(crate) fn too_many_tokens() -> Error {
    Error::InvalidInput {
        field: "tokens",
        reason: format!("a leak report carries at most {MAX_LEAK_TOKENS} tokens; split it into several reports"),
    }
}

impl Keyring {
    /// Returns the keys of a selection with their state now, for a dry run: nothing is written.
    pub async fn select_keys(&self, selection: &KeySelection) -> Result<(Vec<KeyView>, Vec<KeyId>), Error> {
        let selection = self.checked_selection(selection).await?;
        let now = self.clock.now();
        let (records, missing) = self.store.select_keys(&selection, MAX_BULK_KEYS).await?;
        let views = records.into_iter().map(|record| KeyView { state: record.state_at(now), record }).collect();
        Ok((views, missing))
    }

    /// Revokes every key of a selection that is not revoked yet, in one transaction, with one
    /// revocation audit event and one change row per key revoked now. Keys revoked before are
    /// reported as such and keep their revocation. A key that has expired or whose overlap
    /// window ended is revoked too, so it stays rejected whatever its record states.
    pub async fn revoke_selection(
        &self,
        selection: &KeySelection,
        reason: Option<&str>,
        caller: &Caller,
    ) -> Result<BulkReport, Error> {
        let selection = self.checked_selection(selection).await?;
        let reason = reason.map(check_reason).transpose()?.filter(|reason| !reason.is_empty());
        let now = self.clock.now();

        let mut event = NewAuditEvent::new(AuditEventType::AuthnTokenRevoked, now, None, caller.actor.clone())
            .with_reason(reason.clone())
            .with_details(json!({ "bulk": selection_details(&selection) }));
        event.client_addr = caller.client_addr.clone();
        let revocation = BulkRevocation {
            selection,
            revoked_at: now,
            reason,
            event,
            leading_events: Vec::new(),
            closing_events: Vec::new(),
            limit: MAX_BULK_KEYS,
        };
        let report = self.store.revoke_selection(&revocation).await?;
        self.cache.evict(report.keys.iter().map(|key| &key.record.key_id));

        let revoked = report.keys.iter().filter(|key| key.outcome == BulkOutcome::Revoked).count();
        tracing::info!(
            target: "keyturn::keyring",
            selected = report.keys.len(),
            revoked,
            actor = %caller.actor.to_stored(),
            "selected keys revoked"
        );
        Ok(report)
    }

    /// Checks a selection as [`check_selection`] does, and that the policy of a policy selection
    /// exists: a removed policy is no longer referenced by any key, so an unknown name is a
    /// mistake such as a typo, and fails with [`Error::UnknownPolicy`].
    async fn checked_selection(&self, selection: &KeySelection) -> Result<KeySelection, Error> {
        let selection = check_selection(selection)?;
        if let KeySelection::Policy(name) = &selection {
            self.policy(name).await?;
        }
        Ok(selection)
    }

    /// Handles a leak report: checks each token against its key's hash, and in one transaction
    /// appends an `authn_token_leak_reported` event per matching token and revokes its key
    /// unless it already was revoked. The revocation reason is "leak reported", followed by
    /// `reason` when given. A token that does not match writes nothing.
    pub async fn report_leaks(
        &self,
        tokens: &[ReportedToken],
        source: Option<&str>,
        reason: Option<&str>,
        caller: &Caller,
    ) -> Result<Vec<LeakResult>, Error> {
        if tokens.len() > MAX_LEAK_TOKENS {
            return Err(too_many_tokens());
        }
        let source = source.map(|source| check_text("source", source)).transpose()?;
        let reason = reason.map(check_reason).transpose()?.filter(|reason| !reason.is_empty());
        let now = self.clock.now();

        let mut results = Vec::with_capacity(tokens.len());
        let mut matched: Vec<KeyId> = Vec::new();
        let mut leading_events = Vec::new();
        for reported in tokens {
            let (key_id, unmatched) = self.check_reported(&reported.token).await?;
            // A matching token is reported as revoked until the transaction reports otherwise.
            let status = unmatched.unwrap_or(LeakStatus::Revoked);
            if unmatched.is_none() {
                if let Some(key_id) = &key_id {
                    let event = self
                        .event(AuditEventType::AuthnTokenLeakReported, now, key_id, caller)
                        .with_reason(reason.clone())
                        .with_details(json!({ "source": source, "line": reported.line }));
                    leading_events.push(event);
                    matched.push(key_id.clone());
                }
            }
            results.push(LeakResult { line: reported.line, key_id, status });
        }
        if matched.is_empty() {
            tracing::info!(target: "keyturn::keyring", tokens = tokens.len(), matched = 0, "leak report matched no key");
            return Ok(results);
        }

        let revocation_reason = match &reason {
            Some(reason) => format!("{LEAK_REASON}: {reason}"),
            None => LEAK_REASON.to_owned(),
        };
        let mut event = NewAuditEvent::new(AuditEventType::AuthnTokenRevoked, now, None, caller.actor.clone())
            .with_reason(Some(revocation_reason.clone()))
            .with_details(json!({ "leak_report": { "source": source } }));
        event.client_addr = caller.client_addr.clone();
        let revocation = BulkRevocation {
            selection: KeySelection::KeyIds(matched),
            revoked_at: now,
            reason: Some(revocation_reason),
            event,
            leading_events,
            closing_events: Vec::new(),
            limit: MAX_LEAK_TOKENS,
        };
        let report = self.store.revoke_selection(&revocation).await?;
        self.cache.evict(report.keys.iter().map(|key| &key.record.key_id));

        // The same token reported on several lines revokes its key once: the first line reports
        // the revocation and the later ones find the key already revoked.
        let mut revoked_now = std::collections::HashSet::new();
        for result in &mut results {
            let Some(key_id) = result.key_id.as_ref().filter(|_| result.status == LeakStatus::Revoked) else {
                continue;
            };
            result.status = match report.keys.iter().find(|key| &key.record.key_id == key_id) {
                Some(key) if key.outcome == BulkOutcome::AlreadyRevoked => LeakStatus::AlreadyRevoked,
                Some(_) if !revoked_now.insert(key_id.clone()) => LeakStatus::AlreadyRevoked,
                Some(_) => LeakStatus::Revoked,
                // The key was deleted between the check and the transaction.
                None => LeakStatus::NotFound,
            };
            tracing::info!(
                target: "keyturn::keyring",
                key_id = %key_id,
                line = result.line,
                status = result.status.as_str(),
                actor = %caller.actor.to_stored(),
                "leaked token reported"
            );
        }
        Ok(results)
    }

    /// Checks one reported token against its key: `None` when its secret matches the key's
    /// hash, revoked or not, else the status to report.
    async fn check_reported(&self, token: &str) -> Result<(Option<KeyId>, Option<LeakStatus>), Error> {
        let Ok(parsed) = self.config.format.parse(token) else {
            return Ok((None, Some(LeakStatus::NotFound)));
        };
        let key_id = parsed.key_id().clone();
        let Some(record) = self.store.get_key(&key_id).await? else {
            return Ok((Some(key_id), Some(LeakStatus::NotFound)));
        };
        let Some(hash) = self.peppers.hash_with(&record.pepper_id, token) else {
            tracing::error!(
                target: "keyturn::keyring", key_id = %key_id, pepper_id = %record.pepper_id,
                "reported key is hashed under a pepper missing from the ring"
            );
            return Ok((Some(key_id), Some(LeakStatus::PepperMissing)));
        };
        // TokenHash compares in constant time.
        let status = if hash == record.hash { None } else { Some(LeakStatus::NotFound) };
        Ok((Some(key_id), status))
    }
}

/// Rejects an empty or oversized selection, and an owner that no key could have. Returns the
/// selection with the owner trimmed, as keys store it.
fn check_selection(selection: &KeySelection) -> Result<KeySelection, Error> {
    match selection {
        KeySelection::Owner(owner) => check_text("owner", owner).map(KeySelection::Owner),
        KeySelection::KeyIds(ids) if ids.is_empty() => Err(Error::InvalidInput {
            field: "key_ids",
            reason: "the list is empty; give at least one key id, or select keys by owner or by policy".to_owned(),
        }),
        KeySelection::KeyIds(ids) if ids.len() > MAX_BULK_KEYS => Err(Error::InvalidInput {
            field: "key_ids",
            reason: format!("{} key ids were given; give at most {MAX_BULK_KEYS} per request", ids.len()),
        }),
        other => Ok(other.clone()),
    }
}

/// Describes a selection in the revocation audit events. A list of key ids is not repeated in
/// every row, because each row names its own key.
fn selection_details(selection: &KeySelection) -> serde_json::Value {
    match selection {
        KeySelection::Owner(owner) => json!({ "owner": owner }),
        KeySelection::KeyIds(ids) => json!({ "key_ids": ids.len() }),
        KeySelection::Policy(name) => json!({ "policy": name.as_str() }),
        _ => json!({}),
    }
}
