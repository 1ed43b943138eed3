//! The `keyturn` command-line tool: argument definitions, logging setup and dispatch to the
//! command implementations. Every command calls the `keyturn` service layer, so it reaches the
//! same decisions as the HTTP server and the Flask extension. Exit codes: 0 on success, 2 on a
//! usage or store error, and 1 when `keys verify` rejects a token.

mod audit;
mod commands;
mod error;
mod incident;
mod output;
mod pepper;
mod policies;
mod schedule;
mod serve;
mod setup;
mod verify;
mod webhooks;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser, Subcommand};
use keyturn::settings::DATABASE_URL_VAR;
use keyturn_core::token::DEFAULT_PREFIX;
use tracing_subscriber::EnvFilter;

use crate::error::CliError;

/// Exit code of a usage, configuration or store error. clap uses the same code for its own
/// argument errors.
const EXIT_ERROR: u8 = 2;

/// Log filter used when neither `--log-level` nor `RUST_LOG` is set.
const DEFAULT_LOG_LEVEL: &str = "warn";
/// Log filter of `keyturn serve` when neither `--log-level` nor `RUST_LOG` is set.
const SERVE_LOG_LEVEL: &str = "info";

/// Create, rotate, revoke and verify API keys.
#[derive(Debug, Parser)]
#[command(name = "keyturn", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options that every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Database URL (sqlite:///absolute/path.db, sqlite:relative/path.db,
    /// postgres://user@host/database) or a SQLite file path [default: keyturn.db in the working
    /// directory]
    #[arg(long, global = true, env = DATABASE_URL_VAR, hide_env_values = true, value_name = "URL")]
    pub database: Option<String>,

    /// Prefix of the tokens this deployment issues and accepts: 1 to 32 characters of [a-z0-9]
    /// in segments separated by single underscores
    #[arg(long, global = true, env = "KEYTURN_TOKEN_PREFIX", default_value = DEFAULT_PREFIX, value_name = "PREFIX")]
    pub token_prefix: String,

    /// Log filter for messages written to stderr, such as debug or keyturn=info
    /// [default: the value of RUST_LOG, else warn, or info for `keyturn serve`]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Format of log lines on stderr: text for people, or json (one object per line) for a log
    /// shipper
    #[arg(long, global = true, value_enum, default_value = "text", env = "KEYTURN_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the pepper file, the database and, when the database has no keys, an admin key
    /// whose token is printed once. Running it again changes nothing
    Init,
    /// Create, list, show, rotate, revoke and verify keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Apply, list and show the named policies that keys are created under
    #[command(subcommand)]
    Policies(PoliciesCommand),
    /// Read the audit log
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Serve the admin API, the verify endpoints, health checks and metrics over HTTP until
    /// SIGTERM or SIGINT
    Serve(ServeArgs),
    /// Back up a store, or copy it to another database
    #[command(subcommand)]
    Store(StoreCommand),
    /// Show the pepper ring and how many live keys each pepper hashes, add a pepper, or retire one
    #[command(subcommand)]
    Pepper(pepper::PepperCommand),
    /// Send key lifecycle events to webhook endpoints: manage endpoints and deliveries
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Record the lifecycle events that time alone causes, such as a key entering its grace
    /// period; `keyturn serve` does this every 30 s
    #[command(subcommand)]
    Schedule(ScheduleCommand),
}

#[derive(Debug, Subcommand)]
pub enum PoliciesCommand {
    /// Make the stored policies those of a TOML file: add, change and remove policies in one
    /// transaction, and print each change field by field
    Apply(PoliciesApplyArgs),
    /// List the policies, with the built-in default
    List(PoliciesListArgs),
    /// Show one policy
    Show(PoliciesShowArgs),
}

#[derive(Debug, Args)]
pub struct PoliciesApplyArgs {
    /// TOML file with one [policies.NAME] table per policy
    #[arg(value_name = "FILE.toml")]
    pub file: std::path::PathBuf,
    /// Print what would change, and how many keys would get new instants, without writing
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the new expiry (created at plus the new maximum lifetime), grace period,
    /// warning window and self-rotation rules into every live key of each changed policy
    #[arg(long)]
    pub apply_to_existing: bool,
}

#[derive(Debug, Args)]
pub struct PoliciesListArgs {
    /// Print a JSON array instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PoliciesShowArgs {
    /// Name of the policy, such as default
    pub name: String,
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Record every lifecycle event due since the last run, once per key and event, and print
    /// them; for cron when no `keyturn serve` runs
    Run(ScheduleRunArgs),
}

#[derive(Debug, Args)]
pub struct ScheduleRunArgs {
    /// Run once and exit; the only mode, required so that a later periodic mode cannot change
    /// what a cron line does
    #[arg(long, required = true)]
    pub once: bool,
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("selector").required(true).args(["owner", "policy", "key_ids"])))]
pub struct RequestRotationArgs {
    /// Key ids of the keys to rotate
    #[arg(value_name = "KEY_ID")]
    pub key_ids: Vec<String>,
    /// Every key of this owner
    #[arg(long)]
    pub owner: Option<String>,
    /// Every key that references this named policy
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Deadline: an RFC 3339 instant such as 2027-01-31T12:00:00Z, or a duration from now such
    /// as 14d. Keys not rotated by then enter their grace period there
    #[arg(long, value_name = "INSTANT_OR_DURATION")]
    pub by: String,
    /// Reason recorded in the audit log
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Show what the request would do without changing anything
    #[arg(long)]
    pub dry_run: bool,
    /// Print a JSON array instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every key, usage counter and audit event to another database, such as from SQLite to
    /// PostgreSQL, then check the copy. Stop every writer of the source first
    Copy(StoreCopyArgs),
    /// Write a consistent copy of a SQLite database to a new file while keyturn keeps running.
    /// Back up the pepper and the audit key separately
    Backup(StoreBackupArgs),
}

#[derive(Debug, Args)]
pub struct StoreBackupArgs {
    /// The backup file to create, such as /var/backups/keyturn-2026-12-05.db; it must not exist
    #[arg(long, value_name = "FILE")]
    pub to: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct StoreCopyArgs {
    /// Database URL to copy from, such as sqlite:///var/lib/app/keyturn.db
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// Database URL to copy to, such as postgres://keyturn@db/keyturn; a SQLite file is created
    /// when missing
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Copy into a target that already holds keys or audit events; a key id or audit sequence
    /// number that exists in both stores then stops the copy
    #[arg(long)]
    pub allow_non_empty: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token, which is shown only this once
    Create(CreateArgs),
    /// List keys with their state now
    List(ListArgs),
    /// Show one key
    Show(ShowArgs),
    /// Issue a successor; the old key keeps working until the end of the overlap window
    Rotate(RotateArgs),
    /// Revoke a key, or every key of an owner or a named policy, at once; revocation is final
    Revoke(RevokeArgs),
    /// Revoke the keys of leaked tokens read from stdin, one per line; tokens are never printed
    ReportLeak(incident::ReportLeakArgs),
    /// Verify a token read from stdin; exits 0 when allowed, 1 when rejected, 2 on an error
    Verify(VerifyArgs),
    /// List the keys in their overlap window, the soonest to end first, with whether their
    /// clients moved to the successor: moved, both (old key still used) or not_moved
    MigrationReport(MigrationReportArgs),
    /// Ask keys to be rotated by a deadline: until they are, responses carry
    /// `API-Key-Status: rotation-requested`, and a key not rotated in time enters its grace
    /// period at the deadline
    RequestRotation(RequestRotationArgs),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit events in sequence order
    List(AuditListArgs),
    /// Check the audit chain with the audit key; exits 0 when it holds, 1 naming the first row
    /// that was edited, removed, inserted or reordered, 2 on an error
    Verify(AuditVerifyArgs),
    /// Write audit events as JSON Lines for a SIEM, ending with a checkpoint of the newest row
    Export(AuditExportArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// A file that `keyturn audit export` wrote (or `-` for stdin): its checkpoint must still be
    /// in the chain, which detects rows removed from the end
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// Only events at or after this instant, in RFC 3339 such as 2026-12-01T00:00:00Z
    #[arg(long, value_name = "RFC3339", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Only events before this instant, in RFC 3339
    #[arg(long, value_name = "RFC3339", allow_hyphen_values = true)]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("expiry").args(["expires_in", "expires_at", "no_expiry"])))]
pub struct CreateArgs {
    /// Name of the key, 1 to 128 characters
    #[arg(long)]
    pub name: String,
    /// Owner of the key, such as a team or a service
    #[arg(long)]
    pub owner: Option<String>,
    /// Scope the key grants, such as orders:read; repeat for several
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Lifetime counted from now, such as 90d, 12h or 1h30m [default: 90d]
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub expires_in: Option<String>,
    /// Fixed expiry instant in RFC 3339, such as 2027-01-31T12:00:00Z
    #[arg(long, value_name = "RFC3339", allow_hyphen_values = true)]
    pub expires_at: Option<String>,
    /// Create a key that never expires
    #[arg(long)]
    pub no_expiry: bool,
    /// How long the key keeps working after it expires [default: 7d]
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub grace: Option<String>,
    /// How long before expiry verification reports the key as expiring [default: 14d]
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub warn_before: Option<String>,
    /// Reject POST /v1/self/rotate for this key and its successors, so only an operator rotates it
    #[arg(long)]
    pub no_self_rotation: bool,
    /// How long the key's rotation chain may last, from now, before it can no longer rotate
    /// itself, such as 180d [default: 365d]
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub max_chain_lifetime: Option<String>,
    /// Named policy whose lifetime, grace period, warning window, overlap and self-rotation rules
    /// the key gets; the options above override single values [default: default]
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only keys of this owner
    #[arg(long)]
    pub owner: Option<String>,
    /// Only keys in this state now: active, expiring, grace, superseded, expired, rotated or revoked
    #[arg(long)]
    pub state: Option<String>,
    /// Only keys still accepted that expire within this time from now, such as 30d
    #[arg(long, value_name = "DURATION")]
    pub expiring_within: Option<String>,
    /// Only keys still accepted and unused for this long (stale keys), such as 90d
    #[arg(long, value_name = "DURATION")]
    pub unused_for: Option<String>,
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Key id: the 12 characters after the token prefix
    pub key_id: String,
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Key id of the key to rotate
    pub key_id: String,
    /// How long the old key keeps working at most, such as 1d or 0s [default: the default
    /// overlap of the key's policy, 1d for the default policy]
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub overlap: Option<String>,
    /// End the overlap this long after the successor's first use, if that comes before the end
    /// set by --overlap, such as 1h [default: the key's policy's value, else none]
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub overlap_after_first_use: Option<String>,
    /// Replace an existing successor that was never used instead of failing
    #[arg(long)]
    pub replace_unused_successor: bool,
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("selection").required(true).args(["key_id", "owner", "policy"])))]
pub struct RevokeArgs {
    /// Key id of the key to revoke
    pub key_id: Option<String>,
    /// Revoke every key of this owner that is not revoked yet, in one transaction
    #[arg(long)]
    pub owner: Option<String>,
    /// Revoke every key that references this named policy and is not revoked yet, in one
    /// transaction
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// List the keys that would be revoked, with their state, and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Reason recorded with the revocation and in the audit log
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Scope the token must grant; repeat for several
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MigrationReportArgs {
    /// Only keys of this owner
    #[arg(long)]
    pub owner: Option<String>,
    /// Report the progress of rotation requests instead: each requested key, whether it was
    /// rotated, whether its successor was used, and its deadline
    #[arg(long)]
    pub rotation_requests: bool,
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// Only events of this key
    #[arg(long = "key", value_name = "KEY_ID")]
    pub key_id: Option<String>,
    /// Only events of this type, such as authn_token_revoked
    #[arg(long, value_name = "TYPE")]
    pub event: Option<String>,
    /// Only events at or after this instant, in RFC 3339 such as 2026-12-01T00:00:00Z
    #[arg(long, value_name = "RFC3339", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Only events before this instant, in RFC 3339
    #[arg(long, value_name = "RFC3339", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Only events with a sequence number greater than this, such as the newest one of a backup
    #[arg(long = "after", value_name = "SEQ")]
    pub after_seq: Option<i64>,
    /// Print a JSON array instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the admin API, /v1/verify, health checks and metrics
    #[arg(long, env = "KEYTURN_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDRESS")]
    pub listen: std::net::SocketAddr,
    /// Address of the gateway endpoint /v1/auth for nginx or Envoy; bind it where only the gateway
    /// can connect [default: not served]
    #[arg(long, env = "KEYTURN_GATEWAY_LISTEN", value_name = "ADDRESS")]
    pub gateway_listen: Option<std::net::SocketAddr>,
    /// Largest request body, in bytes
    #[arg(long, default_value_t = 65_536, value_name = "BYTES")]
    pub max_body_bytes: usize,
    /// Largest total size of a request's header names and values, in bytes
    #[arg(long, default_value_t = 16_384, value_name = "BYTES")]
    pub max_header_bytes: usize,
    /// How long one request may take before it is answered with 408, such as 10s
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub request_timeout: String,
    /// How long a connection may take to send a request's headers, or stay idle between
    /// requests, before it is closed, such as 10s
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub header_read_timeout: String,
    /// Proxy whose X-Forwarded-For header names the client on the API listener: an IP address or
    /// a CIDR network such as 10.0.0.0/8. Repeat the option for several, or separate them with
    /// commas in the variable [default: none, so the client is the socket peer]
    #[arg(long = "trusted-proxy", env = "KEYTURN_TRUSTED_PROXIES", value_delimiter = ',', value_name = "CIDR")]
    pub trusted_proxies: Vec<String>,
    /// Reject the failed verifications of a client address with 429 once it fails more often
    /// than --guard-max-failures within --guard-window
    #[arg(long, env = "KEYTURN_GUARD", value_enum, default_value = "on", value_name = "on|off")]
    pub guard: Switch,
    /// Record the lifecycle events that time alone causes (a key entering its warning window or
    /// grace period, expiring, its overlap window or rotation deadline passing) in the background
    #[arg(long, env = "KEYTURN_SCHEDULER", value_enum, default_value = "on", value_name = "on|off")]
    pub scheduler: Switch,
    /// How often the scheduler runs, such as 30s or 5m
    #[arg(long, env = "KEYTURN_SCHEDULE_INTERVAL", default_value = "30s", value_name = "DURATION")]
    pub schedule_interval: String,
    /// Failed verifications allowed per client address within the guard window, 1 to 100000
    #[arg(
        long,
        env = "KEYTURN_GUARD_MAX_FAILURES",
        default_value_t = 20,
        value_name = "COUNT",
        allow_hyphen_values = true
    )]
    pub guard_max_failures: u32,
    /// How long failures are counted from a client address's first failure, 1s to 24h
    #[arg(
        long,
        env = "KEYTURN_GUARD_WINDOW",
        default_value = "60s",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub guard_window: String,
    /// How long a blocked client address gets 429 for its failed verifications, 1s to 24h
    #[arg(
        long,
        env = "KEYTURN_GUARD_COOLDOWN",
        default_value = "60s",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub guard_cooldown: String,
    /// Run the webhook delivery worker, which sends the outbox's messages to the endpoints of
    /// `keyturn webhooks add`
    #[arg(long, env = "KEYTURN_WEBHOOKS", value_enum, default_value = "on", value_name = "on|off")]
    pub webhooks: Switch,
}

/// A setting that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    // A server logs its starts and stops; a one-shot command only its warnings.
    let default_level = if serving { SERVE_LOG_LEVEL } else { DEFAULT_LOG_LEVEL };
    if let Err(error) = init_logging(cli.global.log_level.as_deref(), default_level, cli.global.log_format) {
        return report(&error);
    }

    let mut builder = if serving {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return report(&CliError::new(format!("failed to start the async runtime: {error}"))),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => report(&error),
    }
}

/// Runs one command and returns its exit code; `Err` means exit code 2.
async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let global = &cli.global;
    let done = match cli.command {
        Command::Init => setup::init(global).await,
        Command::Keys(KeysCommand::Create(args)) => commands::create(global, &args).await,
        Command::Keys(KeysCommand::List(args)) => commands::list(global, &args).await,
        Command::Keys(KeysCommand::Show(args)) => commands::show(global, &args).await,
        Command::Keys(KeysCommand::Rotate(args)) => commands::rotate(global, &args).await,
        Command::Policies(PoliciesCommand::Apply(args)) => policies::apply(global, &args).await,
        Command::Policies(PoliciesCommand::List(args)) => policies::list(global, &args).await,
        Command::Policies(PoliciesCommand::Show(args)) => policies::show(global, &args).await,
        Command::Keys(KeysCommand::Revoke(args)) => commands::revoke(global, &args).await,
        Command::Keys(KeysCommand::Verify(args)) => return verify::run(global, &args).await,
        Command::Keys(KeysCommand::MigrationReport(args)) => commands::migration_report(global, &args).await,
        Command::Audit(AuditCommand::List(args)) => commands::audit_list(global, &args).await,
        Command::Audit(AuditCommand::Verify(args)) => return audit::verify(global, &args).await,
        Command::Audit(AuditCommand::Export(args)) => audit::export(global, &args).await,
        Command::Serve(args) => serve::run(global, &args).await,
        Command::Store(StoreCommand::Copy(args)) => commands::store_copy(&args).await,
        Command::Store(StoreCommand::Backup(args)) => commands::store_backup(global, &args).await,
        Command::Keys(KeysCommand::ReportLeak(args)) => incident::report_leak(global, &args).await,
        Command::Pepper(command) => pepper::run(global, &command).await,
        Command::Webhooks(command) => webhooks::run(global, &command).await,
        Command::Keys(KeysCommand::RequestRotation(args)) => schedule::request_rotation(global, &args).await,
        Command::Schedule(ScheduleCommand::Run(args)) => schedule::run(global, &args).await,
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// Installs the stderr log subscriber. `--log-level` takes precedence over `RUST_LOG`, and
/// without either `default_level` applies. An invalid `--log-level` is an error, but an invalid
/// `RUST_LOG` only a warning, since other programs read that variable too.
fn init_logging(level: Option<&str>, default_level: &str, format: LogFormat) -> Result<(), CliError> {
    let filter = match (level, std::env::var(EnvFilter::DEFAULT_ENV)) {
        (Some(level), _) => EnvFilter::try_new(level).map_err(|error| {
            CliError::new(format!("invalid --log-level {level:?}: {error}; use a level such as warn or debug"))
        })?,
        (None, Ok(value)) if !value.trim().is_empty() => EnvFilter::try_new(&value).unwrap_or_else(|error| {
            eprintln!("warning: ignoring invalid {}={value:?}: {error}", EnvFilter::DEFAULT_ENV);
            EnvFilter::new(default_level)
        }),
        (None, _) => EnvFilter::new(default_level),
    };
    // A constant directive always parses.
    let filter = filter.add_directive(keyturn_store::SILENCE_PGPASS_WARNING.parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn report(error: &CliError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(EXIT_ERROR)
}
