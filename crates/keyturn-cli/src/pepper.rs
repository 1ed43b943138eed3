//! `keyturn pepper status|add|retire`: pepper rotation. The ring lives outside the database, in
//! `KEYTURN_PEPPER` or the file that `KEYTURN_PEPPER_FILE` (or the default next to a SQLite
//! database) names. These commands edit a pepper file, atomically, but never the variable: with
//! `KEYTURN_PEPPER` they print what to change in the secrets manager. No output, error or log line
//! shows a pepper, apart from the one new entry that `add --print` writes to stdout.

use clap::{Args, Subcommand};
use keyturn::pepper_file::{self, Placement};
use keyturn::settings::{self, PepperSource, PEPPER_VAR};
use keyturn::{Caller, PepperStatus, MAX_PAGE_SIZE};
use keyturn_core::PepperId;
use keyturn_store::MAX_BULK_KEYS;
use serde_json::json;

use crate::commands::with_keyring;
use crate::error::CliError;
use crate::output::{self, emit};
use crate::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum PepperCommand {
    /// Show the ring's pepper ids (never the peppers), which is current, how many live keys each
    /// hashes, and how far rehashing under the current pepper has come
    Status(StatusArgs),
    /// Generate a new 32-byte pepper and add it to the pepper file
    Add(AddArgs),
    /// Remove a pepper that no live key uses from the pepper file, and audit its retirement
    Retire(RetireArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Id of the new pepper, 1 to 32 characters of [A-Za-z0-9._-] [default: the largest numeric
    /// id plus one]
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Put the new pepper first, so it hashes every new key once processes restart
    #[arg(long)]
    pub make_current: bool,
    /// With KEYTURN_PEPPER, print the new ID:BASE64 entry to stdout, this once, instead of
    /// failing; keyturn never edits the variable
    #[arg(long)]
    pub print: bool,
}

#[derive(Debug, Args)]
pub struct RetireArgs {
    /// Id of the pepper to retire
    pub id: String,
    /// Revoke the live keys still hashed under the pepper, then retire it
    #[arg(long)]
    pub force: bool,
    /// List the live keys still under the pepper and write nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs one `pepper` command.
pub async fn run(global: &GlobalArgs, command: &PepperCommand) -> Result<(), CliError> {
    match command {
        PepperCommand::Status(args) => status(global, args).await,
        PepperCommand::Add(args) => add(global, args),
        PepperCommand::Retire(args) => retire(global, args).await,
    }
}

fn pepper_source(global: &GlobalArgs) -> Result<PepperSource, CliError> {
    let database = settings::resolve_database_url(global.database.as_deref())?;
    Ok(PepperSource::from_env(&database)?)
}

async fn status(global: &GlobalArgs, args: &StatusArgs) -> Result<(), CliError> {
    let source = pepper_source(global)?;
    with_keyring(global, |keyring| async move {
        let status = keyring.pepper_status().await?;
        if args.json {
            emit(&output::json_text(&status_json(&status, &source.describe())))
        } else {
            emit(&status_text(&status, &source.describe()))
        }
    })
    .await
}

fn add(global: &GlobalArgs, args: &AddArgs) -> Result<(), CliError> {
    let id = args.id.as_deref().map(|id| PepperId::parse(id).map_err(|error| CliError::new(format!("--id: {error}"))));
    let id = id.transpose()?;
    let placement = if args.make_current { Placement::Current } else { Placement::Last };

    match pepper_source(global)? {
        PepperSource::File(path) => {
            if args.print {
                return Err(CliError::new(format!(
                    "--print is for {PEPPER_VAR}; the pepper file {} is edited in place and the new pepper is never \
                     printed, so run the command without --print",
                    path.display()
                )));
            }
            let id = pepper_file::add_pepper(&path, id, placement)?;
            let role = if args.make_current {
                "as the current pepper; restart every process that reads this file, so new keys are hashed under \
                 it and older keys are rehashed when they next verify"
            } else {
                "after the other peppers; restart every process that reads this file, then run `keyturn pepper add \
                 --make-current` or move it to the first line to make it current"
            };
            emit(&format!("added pepper {id} to {} {role}\n", path.display()))
        }
        source @ PepperSource::Value(_) => {
            let ring = source.load()?;
            let id = id.unwrap_or_else(|| pepper_file::next_pepper_id(&ring));
            if ring.contains(&id) {
                return Err(CliError::new(format!("pepper {id} is already in {PEPPER_VAR}; choose another --id")));
            }
            let place = if args.make_current { "first, before the other entries," } else { "last" };
            let instructions = format!(
                "{PEPPER_VAR} is set, so keyturn cannot edit the ring: put the new entry {place} in {PEPPER_VAR} in your \
                 secrets manager, entries separated by commas, and restart every process"
            );
            if !args.print {
                return Err(CliError::new(format!(
                    "{instructions}; run `keyturn pepper add --print` to generate the entry"
                )));
            }
            let entry = pepper_file::generate_entry(&id);
            output::write_stdout(&format!("{}\n", entry.as_str()))
                .map_err(|error| CliError::new(format!("failed to write to stdout: {error}")))?;
            eprintln!("{instructions}; the entry above is shown only this once");
            Ok(())
        }
    }
}

async fn retire(global: &GlobalArgs, args: &RetireArgs) -> Result<(), CliError> {
    let id = PepperId::parse(&args.id)?;
    let source = pepper_source(global)?;

    with_keyring(global, |keyring| async move {
        keyring.check_retirable(&id)?;
        if args.dry_run {
            let limit = u32::try_from(MAX_BULK_KEYS).unwrap_or(MAX_PAGE_SIZE) + 1;
            let live = keyring.live_keys_under_pepper(&id, limit).await?;
            let next =
                if live.is_empty() { "it can be retired" } else { "retiring it needs --force, which revokes them" };
            let mut text =
                format!("dry run: pepper {id} hashes {} live key(s); {next}; nothing was written\n", live.len());
            for key_id in &live {
                text.push_str(&format!("{key_id}\n"));
            }
            return emit(&text);
        }

        let retirement = keyring.retire_pepper(&id, args.force, &Caller::cli()).await?;
        let mut text =
            format!("retired pepper {id}; revoked {} live key(s) still under it\n", retirement.revoked.len());
        for key_id in &retirement.revoked {
            text.push_str(&format!("revoked {key_id}\n"));
        }
        match &source {
            PepperSource::File(path) => {
                pepper_file::remove_pepper(path, &id).map_err(|error| {
                    CliError::new(format!(
                        "the retirement of pepper {id} is recorded and its keys are revoked, but removing it from the \
                         pepper file failed: {error}; fix that and run `keyturn pepper retire {id}` again"
                    ))
                })?;
                text.push_str(&format!(
                    "removed pepper {id} from {}; restart every process that reads this file\n",
                    path.display()
                ));
            }
            PepperSource::Value(_) => text.push_str(&format!(
                "{PEPPER_VAR} is set, so keyturn cannot edit it: remove the entry {id} from {PEPPER_VAR} in your \
                 secrets manager and restart every process\n"
            )),
        }
        emit(&text)
    })
    .await
}

fn status_json(status: &PepperStatus, source: &str) -> serde_json::Value {
    let peppers: Vec<serde_json::Value> = status
        .peppers
        .iter()
        .map(|entry| {
            json!({
                "pepper_id": entry.pepper_id.as_str(),
                "current": entry.current,
                "in_ring": entry.in_ring,
                "live_keys": entry.live_keys,
            })
        })
        .collect();
    json!({
        "source": source,
        "current": status.current.as_str(),
        "peppers": peppers,
        "live_keys": status.live_keys,
        "live_keys_under_current": status.live_under_current,
    })
}

fn status_text(status: &PepperStatus, source: &str) -> String {
    let rows = status
        .peppers
        .iter()
        .map(|entry| {
            vec![
                entry.pepper_id.to_string(),
                if entry.current { "yes" } else { "no" }.to_owned(),
                if entry.in_ring { "yes" } else { "no" }.to_owned(),
                entry.live_keys.to_string(),
            ]
        })
        .collect();
    let mut text = format!("pepper ring from {source}\n");
    text.push_str(&output::table(&["PEPPER ID", "CURRENT", "IN RING", "LIVE KEYS"], rows));
    // With no live key, nothing is left to rehash.
    let percent = (status.live_under_current * 100).checked_div(status.live_keys).unwrap_or(100);
    text.push_str(&format!(
        "rehash progress: {} of {} live key(s) are under the current pepper {} ({percent}%)\n",
        status.live_under_current, status.live_keys, status.current
    ));
    for entry in status.peppers.iter().filter(|entry| !entry.in_ring && entry.live_keys > 0) {
        text.push_str(&format!(
            "warning: {} live key(s) are under pepper {}, which the ring lacks, so they cannot be verified; add it \
             back\n",
            entry.live_keys, entry.pepper_id
        ));
    }
    text
}
