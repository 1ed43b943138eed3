//! `keys request-rotation`, which asks keys to be rotated by a deadline, `keys migration-report
//! --rotation-requests`, which shows how far the requested rotations got, and `schedule run
//! --once`, which records the lifecycle events that time alone causes and is meant for cron
//! when no `keyturn serve` runs the scheduler.

use keyturn::json::{campaign_entry_json, request_entry_json, schedule_run_json};
use keyturn::{parse_deadline, Caller, CampaignEntry, RequestEntry, RequestStatus, RotationSelector, ScheduleRun};

use crate::commands::{parse_key_id, parse_policy_name, with_keyring};
use crate::error::CliError;
use crate::output::{self, emit};
use crate::{GlobalArgs, MigrationReportArgs, RequestRotationArgs, ScheduleRunArgs};

pub async fn request_rotation(global: &GlobalArgs, args: &RequestRotationArgs) -> Result<(), CliError> {
    let selector = match (&args.owner, &args.policy) {
        (Some(owner), _) => RotationSelector::Owner(owner.clone()),
        (None, Some(policy)) => RotationSelector::Policy(parse_policy_name(policy)?),
        (None, None) => {
            RotationSelector::Keys(args.key_ids.iter().map(|value| parse_key_id(value)).collect::<Result<_, _>>()?)
        }
    };
    with_keyring(global, |keyring| async move {
        let deadline =
            parse_deadline(&args.by, keyring.now()).map_err(|error| CliError::new(format!("--by: {error}")))?;
        let entries =
            keyring.request_rotation(&selector, deadline, args.reason.as_deref(), args.dry_run, &Caller::cli()).await?;
        if args.json {
            let rows = entries.iter().map(request_entry_json).collect();
            emit(&output::json_text(&serde_json::Value::Array(rows)))
        } else {
            emit(&request_text(&entries, args.dry_run))
        }
    })
    .await
}

/// Runs `keys migration-report --rotation-requests`.
pub async fn rotation_request_report(global: &GlobalArgs, args: &MigrationReportArgs) -> Result<(), CliError> {
    with_keyring(global, |keyring| async move {
        let entries = keyring.rotation_request_report(args.owner.as_deref()).await?;
        if args.json {
            let rows = entries.iter().map(campaign_entry_json).collect();
            emit(&output::json_text(&serde_json::Value::Array(rows)))
        } else {
            emit(&campaign_text(&entries))
        }
    })
    .await
}

pub async fn run(global: &GlobalArgs, args: &ScheduleRunArgs) -> Result<(), CliError> {
    with_keyring(global, |keyring| async move {
        let run = keyring.run_scheduler().await?;
        if args.json {
            emit(&output::json_text(&schedule_run_json(&run)))
        } else {
            emit(&run_text(&run))
        }
    })
    .await
}

/// One line per key, then a count. A dry run says what would happen.
fn request_text(entries: &[RequestEntry], dry_run: bool) -> String {
    let mut text = String::new();
    let mut requested = 0;
    for entry in entries {
        let line = match &entry.status {
            RequestStatus::Requested { deadline, .. } => {
                requested += 1;
                let verb = if dry_run { "would request" } else { "requested" };
                format!("{verb} rotation of key {} by {}", entry.key_id, deadline.to_rfc3339())
            }
            RequestStatus::AlreadyRotated { successor_id } => {
                format!("skipped key {}: already rotated; its successor is {successor_id}", entry.key_id)
            }
            RequestStatus::Revoked => format!("skipped key {}: revoked", entry.key_id),
            RequestStatus::Expired => format!("skipped key {}: expired or in its grace period", entry.key_id),
            RequestStatus::NotFound => format!("skipped key {}: not found", entry.key_id),
        };
        text.push_str(&line);
        text.push('\n');
    }
    let verb = if dry_run { "would be requested" } else { "requested" };
    text.push_str(&format!("{requested} of {} keys {verb}\n", entries.len()));
    text
}

/// One line per recorded event, then the range of boundaries the run looked at, then one line
/// per rotation requested by a policy's cadence and their count.
fn run_text(run: &ScheduleRun) -> String {
    let mut text = String::new();
    for event in &run.recorded {
        text.push_str(&format!(
            "recorded {} for key {} (boundary {}, audit event {})\n",
            event.event.audit_event(),
            event.key_id,
            event.boundary.to_rfc3339(),
            event.seq
        ));
    }
    let from = run.from.map_or_else(|| "the start".to_owned(), |from| from.to_rfc3339());
    text.push_str(&format!(
        "recorded {} events with boundaries after {from} up to {}\n",
        run.recorded.len(),
        run.to.to_rfc3339()
    ));
    for request in &run.rotations_requested {
        text.push_str(&format!(
            "requested rotation of key {} by {} (rotation cadence of policy {})\n",
            request.key_id,
            request.deadline.to_rfc3339(),
            request.policy
        ));
    }
    text.push_str(&format!("requested {} rotations by policy cadence\n", run.rotations_requested.len()));
    text
}

/// One line per requested key, then a count of those rotated and of those whose successor was used.
fn campaign_text(entries: &[CampaignEntry]) -> String {
    if entries.is_empty() {
        return "no keys with a rotation request\n".to_owned();
    }
    let mut text = String::new();
    for entry in entries {
        let progress = match (&entry.successor_id, entry.successor_first_used_at) {
            (None, _) => "not rotated".to_owned(),
            (Some(successor_id), None) => format!("rotated to {successor_id}, successor not used yet"),
            (Some(successor_id), Some(_)) => format!("rotated to {successor_id}, successor used"),
        };
        text.push_str(&format!(
            "key {} ({}): deadline {}, {progress}, state {}\n",
            entry.key_id,
            output::escape_text(&entry.name),
            entry.deadline.to_rfc3339(),
            entry.state.outcome
        ));
    }
    let rotated = entries.iter().filter(|entry| entry.successor_id.is_some()).count();
    let used = entries.iter().filter(|entry| entry.successor_first_used_at.is_some()).count();
    text.push_str(&format!("{rotated} of {} keys rotated, {used} successors used\n", entries.len()));
    text
}
