//! End-to-end tests of the `keyturn` binary. Each test runs the built executable against a real
//! SQLite file and pepper file in its own temporary directory. The keyturn variables of the
//! calling environment are cleared, so only what a test sets reaches the binary.

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

const USER: &str = "tester";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// One keyturn deployment in a temporary directory. Every stderr of every run is kept, so a
/// test can check at the end that no token reached it.
struct Deployment {
    dir: TempDir,
    database: PathBuf,
    stderr_log: RefCell<Vec<String>>,
    tokens: RefCell<Vec<String>>,
}

/// The result of one run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Deployment {
    /// Creates a directory and runs `keyturn init` in it. The bootstrap admin token that init
    /// prints is remembered for the check of stderr.
    fn new() -> Self {
        let deployment = Self::uninitialised();
        let run = deployment.run(&["init"]);
        assert_eq!(run.code, 0, "init failed: {}", run.stderr);
        let token = printed_token(&run).expect("init printed no bootstrap admin token");
        deployment.tokens.borrow_mut().push(token);
        deployment
    }

    fn uninitialised() -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        let database = dir.path().join("keyturn.db");
        Deployment { dir, database, stderr_log: RefCell::default(), tokens: RefCell::default() }
    }

    fn pepper_file(&self) -> PathBuf {
        self.dir.path().join("keyturn.pepper")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyturn"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("KEYTURN_DATABASE_URL", &self.database)
            .env("USER", USER)
            .env("LOGNAME", USER)
            .env_remove("KEYTURN_PEPPER")
            .env_remove("KEYTURN_PEPPER_FILE")
            .env_remove("KEYTURN_TOKEN_PREFIX")
            .env_remove("RUST_LOG");
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_command(self.command(args), None)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.run_command(self.command(args), Some(stdin))
    }

    fn run_command(&self, command: Command, stdin: Option<&str>) -> Run {
        self.run_command_with_bytes(command, stdin.unwrap_or_default().as_bytes())
    }

    fn run_command_with_bytes(&self, mut command: Command, stdin: &[u8]) -> Run {
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start keyturn");
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // keyturn stops reading input that exceeds its limit, so the rest may find the pipe closed.
        if let Err(error) = pipe.write_all(stdin) {
            assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {error}");
        }
        drop(pipe);
        let Output { status, stdout, stderr } = child.wait_with_output().expect("wait for keyturn");
        self.record(status, stdout, stderr)
    }

    /// Runs a command whose stdout is closed before it writes, as when the reading end of a
    /// pipe exits early.
    fn run_with_closed_stdout(&self, args: &[&str]) -> Run {
        let mut command = self.command(args);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start keyturn");
        drop(child.stdout.take().expect("stdout pipe"));
        let Output { status, stdout, stderr } = child.wait_with_output().expect("wait for keyturn");
        self.record(status, stdout, stderr)
    }

    /// Runs a command whose stdout is /dev/full, where every write fails with ENOSPC.
    fn run_with_full_stdout(&self, command: &mut Command) -> Run {
        let full = fs::OpenOptions::new().write(true).open("/dev/full").expect("open /dev/full");
        command.stdin(Stdio::null()).stdout(full).stderr(Stdio::piped());
        let Output { status, stdout, stderr } = command.output().expect("run keyturn");
        self.record(status, stdout, stderr)
    }

    fn record(&self, status: std::process::ExitStatus, stdout: Vec<u8>, stderr: Vec<u8>) -> Run {
        let run = Run {
            code: status.code().expect("keyturn exited by a signal"),
            stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
        };
        assert!(!run.stderr.contains("panicked"), "keyturn panicked: {}", run.stderr);
        self.stderr_log.borrow_mut().push(run.stderr.clone());
        run
    }

    /// Runs a command with `--json`, expects exit code 0 and returns the parsed output. Any
    /// `token` in the output is remembered for the check of stderr.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let run = self.run(&args);
        assert_eq!(run.code, 0, "{args:?} failed: {}", run.stderr);
        let value: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
        if let Some(token) = value["token"].as_str() {
            self.tokens.borrow_mut().push(token.to_owned());
        }
        value
    }

    /// Creates a key and returns its key id and token.
    fn create(&self, extra: &[&str]) -> (String, String) {
        let mut args = vec!["keys", "create", "--name", "billing"];
        args.extend_from_slice(extra);
        let key = self.json(&args);
        (key["key_id"].as_str().unwrap().to_owned(), key["token"].as_str().unwrap().to_owned())
    }

    fn verify(&self, token: &str, scopes: &[&str]) -> (i32, Value) {
        let mut args = vec!["keys", "verify", "--json"];
        for scope in scopes {
            args.extend(["--scope", scope]);
        }
        let run = self.run_with_stdin(&args, &format!("{token}\n"));
        let value = serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("verify output: {run:?}"));
        (run.code, value)
    }

    /// Returns the key list and the audit log as JSON text, to compare before and after a failed
    /// command.
    fn snapshot(&self) -> (String, String) {
        (self.json(&["keys", "list"]).to_string(), self.json(&["audit", "list"]).to_string())
    }

    fn assert_no_token_in_stderr(&self) {
        let tokens = self.tokens.borrow();
        assert!(!tokens.is_empty(), "no token was collected");
        for stderr in self.stderr_log.borrow().iter() {
            for token in tokens.iter() {
                assert!(!stderr.contains(token.as_str()), "a token appeared in stderr: {stderr}");
                // All but the first secret character, which `token_with_wrong_secret` changes.
                let secret_tail = &token[token.len() - 35..token.len() - 6];
                assert!(!stderr.contains(secret_tail), "a secret appeared in stderr: {stderr}");
            }
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {} stdout {:?} stderr {:?}", self.code, self.stdout, self.stderr)
    }
}

/// Asserts that a run failed with exit code 2 and one `error:` line that contains `needle`.
/// Returns the token that a run printed on a line of its own, if any.
fn printed_token(run: &Run) -> Option<String> {
    run.stdout.lines().find(|line| line.starts_with("kt_live_")).map(str::to_owned)
}

fn assert_one_line_error(run: &Run, needle: &str) {
    assert_eq!(run.code, 2, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr: {run:?}");
    assert!(lines[0].starts_with("error: "), "{run:?}");
    assert!(lines[0].contains(needle), "expected {needle:?} in {run:?}");
}

fn assert_rfc3339(value: &Value, field: &str) {
    let text = value[field].as_str().unwrap_or_else(|| panic!("{field} is not a string in {value}"));
    assert!(text.ends_with('Z'), "{field} is not in UTC: {text}");
    assert_eq!(text.as_bytes().get(10), Some(&b'T'), "{field} is not an RFC 3339 date and time: {text}");
    assert!(text.len() >= 20, "{field} is too short for RFC 3339: {text}");
}

/// Builds a token with the prefix and key id of `token`, a different secret and a valid
/// checksum, so that it passes the format check and fails only on the secret.
fn token_with_wrong_secret(token: &str) -> String {
    let without_checksum = &token[..token.len() - 6];
    let (head, secret) = without_checksum.split_at(without_checksum.len() - 30);
    let replacement = if secret.starts_with('A') { "B" } else { "A" };
    let body = format!("{head}{replacement}{}", &secret[1..]);
    let mut checksum = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(checksum % 62) as usize];
        checksum /= 62;
    }
    format!("{body}{}", String::from_utf8(digits.to_vec()).unwrap())
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_creates_database_and_private_pepper() {
    let deployment = Deployment::uninitialised();
    let first = deployment.run(&["init"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(deployment.database.exists());
    assert_eq!(mode(&deployment.pepper_file()), 0o600);
    assert!(first.stdout.contains(&format!("created database {}", deployment.database.display())), "{first:?}");
    assert!(first.stdout.contains(&deployment.pepper_file().display().to_string()), "{first:?}");
    assert!(first.stderr.contains("development default"), "{first:?}");
    let audit_key_file = deployment.dir.path().join("keyturn.audit-key");
    assert!(first.stdout.contains(&format!("created audit key file {}", audit_key_file.display())), "{first:?}");
    assert_eq!(mode(&audit_key_file), 0o600);
    let webhook_key_file = deployment.dir.path().join("keyturn.webhook-key");
    assert!(first.stdout.contains(&format!("created webhook key file {}", webhook_key_file.display())), "{first:?}");
    assert_eq!(mode(&webhook_key_file), 0o600);

    let (key_id, _) = deployment.create(&[]);
    let pepper = fs::read(deployment.pepper_file()).unwrap();
    let audit_key = fs::read(&audit_key_file).unwrap();
    let second = deployment.run(&["init"]);
    assert_eq!(second.code, 0, "{second:?}");
    assert_eq!(second.stdout.matches("already exists").count(), 4, "{second:?}");
    assert_eq!(fs::read(deployment.pepper_file()).unwrap(), pepper);
    assert_eq!(fs::read(&audit_key_file).unwrap(), audit_key);

    // A lost audit key file is not replaced once the chain contains signed rows.
    fs::remove_file(&audit_key_file).unwrap();
    let third = deployment.run(&["init"]);
    assert_eq!(third.code, 2, "{third:?}");
    assert!(third.stderr.contains("already contains 2 signed audit rows"), "{third:?}");
    assert!(!audit_key_file.exists());
    assert_eq!(mode(&deployment.pepper_file()), 0o600);
    assert_eq!(deployment.json(&["keys", "show", &key_id])["key_id"], key_id.as_str());
}

#[test]
fn init_prints_bootstrap_admin_token_once() {
    let deployment = Deployment::uninitialised();
    let first = deployment.run(&["init"]);
    assert_eq!(first.code, 0, "{first:?}");
    let token = printed_token(&first).expect("init printed no token");
    deployment.tokens.borrow_mut().push(token.clone());
    assert!(first.stdout.contains("(bootstrap admin) with scope keyturn:admin"), "{first:?}");
    assert!(first.stderr.contains("only time the token is shown"), "{first:?}");

    let keys = deployment.json(&["keys", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["name"], "bootstrap admin");
    assert_eq!(keys[0]["scopes"], serde_json::json!(["keyturn:admin"]));
    assert!(token.contains(keys[0]["key_id"].as_str().unwrap()), "{token}");
    let events = deployment.json(&["audit", "list"]);
    assert_eq!(events[0]["event"], "authn_token_created");
    assert_eq!(events[0]["actor"], format!("cli:{USER}"));

    let (code, decision) = deployment.verify(&token, &["keyturn:keys:write", "keyturn:audit:read"]);
    assert_eq!(code, 0, "the admin scope grants every reserved scope: {decision}");

    let second = deployment.run(&["init"]);
    assert_eq!(second.code, 0, "{second:?}");
    assert_eq!(printed_token(&second), None, "{second:?}");
    assert_eq!(deployment.json(&["keys", "list"]).as_array().unwrap().len(), 1);
    deployment.assert_no_token_in_stderr();
}

#[test]
fn init_with_pepper_variable_writes_no_file() {
    let deployment = Deployment::uninitialised();
    let pepper = "1:c2VjcmV0LXBlcHBlci1mb3ItdGVzdHMtb25seS0zMmI=";
    let mut command = deployment.command(&["init"]);
    command.env("KEYTURN_PEPPER", pepper);
    let run = deployment.run_command(command, None);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("KEYTURN_PEPPER is set"), "{run:?}");
    assert!(!deployment.pepper_file().exists());
    assert!(!run.stdout.contains(pepper), "{run:?}");
    assert!(!run.stderr.contains(pepper), "{run:?}");
    assert!(printed_token(&run).is_some(), "init printed no bootstrap admin token: {run:?}");
}

#[test]
fn init_with_bad_pepper_path_creates_nothing() {
    let deployment = Deployment::uninitialised();
    let missing_dir = deployment.dir.path().join("missing");
    let mut command = deployment.command(&["init"]);
    command.env("KEYTURN_PEPPER_FILE", missing_dir.join("keyturn.pepper"));
    let failed = deployment.run_command(command, None);
    assert_one_line_error(&failed, &missing_dir.display().to_string());
    assert!(!deployment.database.exists(), "init created the database before the pepper failed");
    assert_eq!(printed_token(&failed), None, "{failed:?}");

    // A pepper file in a good directory is removed again when the database cannot be created.
    let explicit_pepper = deployment.dir.path().join("explicit.pepper");
    let mut command = deployment.command(&["init"]);
    command.env("KEYTURN_PEPPER_FILE", &explicit_pepper).env("KEYTURN_DATABASE_URL", missing_dir.join("keyturn.db"));
    assert_one_line_error(&deployment.run_command(command, None), "does not exist");
    assert!(!explicit_pepper.exists(), "init left a pepper file behind for a database it did not create");
    let entries: Vec<_> = fs::read_dir(deployment.dir.path()).unwrap().collect();
    assert!(entries.is_empty(), "failed init runs left files behind: {entries:?}");

    let retried = deployment.run(&["init"]);
    assert_eq!(retried.code, 0, "{retried:?}");
    let token = printed_token(&retried).expect("the retried init printed no bootstrap admin token");
    deployment.tokens.borrow_mut().push(token);
    let again = deployment.run(&["init"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(printed_token(&again), None, "a second successful init printed a token: {again:?}");
    assert_eq!(deployment.json(&["keys", "list"]).as_array().unwrap().len(), 1);
    deployment.assert_no_token_in_stderr();
}

#[test]
fn init_retry_creates_missing_admin_key() {
    let deployment = Deployment::uninitialised();
    // Writing the first line fails, after the database was created but before any key was.
    let failed = deployment.run_with_full_stdout(&mut deployment.command(&["init"]));
    assert_eq!(failed.code, 2, "{failed:?}");
    assert!(failed.stderr.contains("failed to write to stdout"), "{failed:?}");
    assert!(deployment.database.exists());
    assert_eq!(deployment.json(&["keys", "list"]), serde_json::json!([]));

    let retried = deployment.run(&["init"]);
    assert_eq!(retried.code, 0, "{retried:?}");
    assert!(retried.stdout.contains("already exists; left unchanged"), "{retried:?}");
    let token = printed_token(&retried).expect("init printed no bootstrap admin token for an empty database");
    deployment.tokens.borrow_mut().push(token.clone());
    let (code, decision) = deployment.verify(&token, &["keyturn:admin"]);
    assert_eq!(code, 0, "{decision}");

    let again = deployment.run(&["init"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(printed_token(&again), None, "a second successful init printed a token: {again:?}");
    assert_eq!(deployment.json(&["keys", "list"]).as_array().unwrap().len(), 1);
    deployment.assert_no_token_in_stderr();
}

/// Runs `keyturn init` four times at once on one new PostgreSQL database, as hosts of one
/// deployment starting together would: exactly one run creates and prints an admin key, and the
/// others print that the database already has keys. Skipped without `KEYTURN_TEST_POSTGRES_URL`.
#[test]
fn init_concurrently_on_postgres_creates_one_admin_key() {
    use sqlx::{Connection, PgConnection};

    let Ok(server) = std::env::var("KEYTURN_TEST_POSTGRES_URL") else {
        assert!(std::env::var_os("CI").is_none(), "CI must set KEYTURN_TEST_POSTGRES_URL");
        eprintln!("skipping: KEYTURN_TEST_POSTGRES_URL is not set; run `scripts/with-postgres cargo test`");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let name = format!("kt_init_{}_{nanos}", std::process::id());
    let admin_sql = |sql: String| {
        runtime.block_on(async {
            let mut admin = PgConnection::connect(&server).await.unwrap();
            sqlx::raw_sql(&sql).execute(&mut admin).await.unwrap();
            admin.close().await.unwrap();
        })
    };
    admin_sql(format!("CREATE DATABASE \"{name}\""));
    let (base, _) = server.rsplit_once('/').expect("the server URL names a database");
    let database_url = format!("{base}/{name}");
    let deployment = Deployment::uninitialised();
    let pepper = "1:c2VjcmV0LXBlcHBlci1mb3ItdGVzdHMtb25seS0zMmI=";

    let children: Vec<std::process::Child> = (0..4)
        .map(|_| {
            let mut command = deployment.command(&["init"]);
            command
                .env("KEYTURN_DATABASE_URL", &database_url)
                .env("KEYTURN_PEPPER", pepper)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            command.spawn().expect("start keyturn init")
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().expect("wait for keyturn init");
            Run {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        })
        .collect();
    let mut list = deployment.command(&["keys", "list", "--json"]);
    list.env("KEYTURN_DATABASE_URL", &database_url).env("KEYTURN_PEPPER", pepper);
    let listed = deployment.run_command(list, None);
    admin_sql(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));

    // Failure messages show stderr only, because stdout contains the issued tokens.
    for run in &runs {
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let tokens: Vec<String> = runs.iter().filter_map(printed_token).collect();
    assert_eq!(tokens.len(), 1, "{} of 4 runs printed an admin token", tokens.len());
    let skipped = runs.iter().filter(|run| run.stdout.contains("already has keys, so no admin key was created"));
    assert_eq!(skipped.count(), 3);
    assert_eq!(listed.code, 0, "{listed:?}");
    let keys: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
}

#[test]
fn command_before_init_says_to_run_init() {
    let deployment = Deployment::uninitialised();
    let run = deployment.run(&["keys", "list"]);
    assert_one_line_error(&run, "keyturn init");
    assert!(run.stderr.contains(&deployment.database.display().to_string()), "{run:?}");
    assert!(!deployment.database.exists());
}

#[test]
fn key_lifecycle_create_rotate_revoke() {
    let deployment = Deployment::new();
    let (key_id, token) = deployment.create(&["--owner", "team-a", "--scope", "orders:read", "--grace", "0s"]);
    assert!(token.starts_with(&format!("kt_live_{key_id}_")), "{token}");

    let shown = deployment.json(&["keys", "show", &key_id]);
    for field in [
        "key_id",
        "name",
        "owner",
        "scopes",
        "state",
        "created_at",
        "expires_at",
        "grace_ends_at",
        "revoked_at",
        "revocation_reason",
        "rotated_at",
        "overlap_ends_at",
        "successor_id",
        "predecessor_id",
        "first_used_at",
        "last_used_at",
        "metadata",
    ] {
        assert!(shown.get(field).is_some(), "field {field} missing from {shown}");
    }
    assert!(shown.get("token").is_none(), "show must not print a token: {shown}");
    assert_eq!(shown["owner"], "team-a");
    assert_eq!(shown["scopes"], serde_json::json!(["orders:read"]));
    assert_eq!(shown["state"], "active");
    assert_eq!(shown["grace"], "0s");
    assert_rfc3339(&shown, "created_at");
    assert_rfc3339(&shown, "expires_at");
    assert!(shown["revoked_at"].is_null());

    // The owner filter leaves out the bootstrap admin key that init created.
    let listed = deployment.json(&["keys", "list", "--owner", "team-a"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["key_id"], key_id.as_str());
    assert_rfc3339(&listed[0], "created_at");
    let table = deployment.run(&["keys", "list"]);
    assert!(table.stdout.lines().next().unwrap().starts_with("KEY ID"), "{table:?}");
    assert!(table.stdout.contains(&key_id), "{table:?}");

    let rotated = deployment.json(&["keys", "rotate", &key_id, "--overlap", "0s"]);
    let successor_id = rotated["key_id"].as_str().unwrap().to_owned();
    assert_ne!(successor_id, key_id);
    assert!(rotated["token"].as_str().unwrap().contains(&successor_id));
    assert_eq!(rotated["predecessor_id"], key_id.as_str());
    let old = deployment.json(&["keys", "show", &key_id]);
    assert_eq!(old["successor_id"], successor_id.as_str());
    assert_eq!(old["state"], "rotated", "a zero overlap ends the old key at once");

    let rotated = deployment.json(&["keys", "rotate", &successor_id]);
    let third_id = rotated["key_id"].as_str().unwrap().to_owned();
    assert_eq!(deployment.json(&["keys", "show", &successor_id])["state"], "superseded");
    assert_rfc3339(&rotated["predecessor"], "overlap_ends_at");

    let before = deployment.snapshot();
    let conflict = deployment.run(&["keys", "rotate", &successor_id]);
    assert_one_line_error(&conflict, &third_id);
    assert!(conflict.stderr.contains("--replace-unused-successor"), "{conflict:?}");
    assert_eq!(deployment.snapshot(), before);

    let replaced = deployment.json(&["keys", "rotate", &successor_id, "--replace-unused-successor"]);
    let fourth_id = replaced["key_id"].as_str().unwrap().to_owned();
    assert_eq!(deployment.json(&["keys", "show", &third_id])["state"], "revoked");
    assert_eq!(deployment.json(&["keys", "show", &successor_id])["successor_id"], fourth_id.as_str());

    let revoked = deployment.json(&["keys", "revoke", &fourth_id, "--reason", "leaked in a log"]);
    assert_eq!(revoked["state"], "revoked");
    let shown = deployment.json(&["keys", "show", &fourth_id]);
    assert_eq!(shown["state"], "revoked");
    assert_eq!(shown["revocation_reason"], "leaked in a log");
    assert_rfc3339(&shown, "revoked_at");
    let text = deployment.run(&["keys", "show", &fourth_id]);
    assert!(text.stdout.lines().any(|line| line.starts_with("state") && line.contains("revoked")), "{text:?}");

    let events = deployment.json(&["audit", "list", "--key", &successor_id]);
    let names: Vec<&str> = events.as_array().unwrap().iter().map(|event| event["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["authn_token_created", "authn_token_rotated", "authn_token_rotated"]);
    for event in events.as_array().unwrap() {
        assert_eq!(event["actor"], format!("cli:{USER}"));
        assert_eq!(event["key_id"], successor_id.as_str());
        assert_rfc3339(event, "at");
    }
    let events = deployment.json(&["audit", "list", "--key", &fourth_id]);
    let last = events.as_array().unwrap().last().unwrap();
    assert_eq!(last["event"], "authn_token_revoked");
    assert_eq!(last["reason"], "leaked in a log");
    let lines = deployment.run(&["audit", "list", "--key", &fourth_id]);
    assert!(
        lines.stdout.contains(&format!("authn_token_revoked  {fourth_id}  cli:{USER}  leaked in a log")),
        "{lines:?}"
    );

    deployment.assert_no_token_in_stderr();
}

#[test]
fn verify_exit_codes_and_outcomes() {
    let deployment = Deployment::new();
    let (key_id, token) = deployment.create(&["--scope", "orders:read"]);

    let (code, allowed) = deployment.verify(&token, &["orders:read"]);
    assert_eq!(code, 0, "{allowed}");
    assert_eq!(allowed["allowed"], true);
    assert_eq!(allowed["outcome"], "active");
    assert_eq!(allowed["key_id"], key_id.as_str());
    assert_eq!(allowed["headers"], serde_json::json!({}));
    assert_rfc3339(&allowed, "expires_at");

    let (code, scoped) = deployment.verify(&token, &["orders:write"]);
    assert_eq!(code, 1);
    assert_eq!(scoped["allowed"], false);
    assert_eq!(scoped["outcome"], "insufficient_scope");
    assert_eq!(scoped["missing_scopes"], serde_json::json!(["orders:write"]));

    let (code, wrong) = deployment.verify(&token_with_wrong_secret(&token), &[]);
    assert_eq!(code, 1);
    assert_eq!(wrong["outcome"], "invalid");
    assert!(wrong["key_id"].is_null(), "{wrong}");
    let (code, malformed) = deployment.verify(&token[..token.len() - 1], &[]);
    assert_eq!(code, 1);
    assert_eq!(malformed["outcome"], "invalid");

    let padded = deployment.run_with_stdin(&["keys", "verify"], &format!("  {token} \r\n"));
    assert_eq!(padded.code, 0, "{padded:?}");
    assert!(padded.stdout.starts_with("allowed: active"), "{padded:?}");
    assert!(!padded.stdout.contains(&token), "verify must not print the token: {padded:?}");
    assert!(!deployment.json(&["keys", "show", &key_id])["last_used_at"].is_null(), "usage was not recorded");

    deployment.json(&["keys", "revoke", &key_id]);
    let (code, revoked) = deployment.verify(&token, &[]);
    assert_eq!(code, 1);
    assert_eq!(revoked["outcome"], "revoked");
    assert_eq!(revoked["key_id"], key_id.as_str());

    let empty = deployment.run_with_stdin(&["keys", "verify"], "\n");
    assert_one_line_error(&empty, "no token");
    deployment.assert_no_token_in_stderr();
}

#[test]
fn verify_reads_all_of_stdin() {
    let deployment = Deployment::new();
    let (_, token) = deployment.create(&[]);
    let spaces = " ".repeat(5000);

    let two_words = deployment.run_with_stdin(&["keys", "verify", "--json"], &format!("{token}{spaces}garbage\n"));
    assert_eq!(two_words.code, 1, "text after the token was ignored: {two_words:?}");
    let decision: Value = serde_json::from_str(&two_words.stdout).unwrap();
    assert_eq!(decision["outcome"], "invalid");

    let padded = deployment.run_with_stdin(&["keys", "verify"], &format!("{spaces}{token}\n"));
    assert_eq!(padded.code, 0, "{padded:?}");

    let mut not_utf8 = token.clone().into_bytes();
    not_utf8.push(0xff);
    let rejected = deployment.run_command_with_bytes(deployment.command(&["keys", "verify", "--json"]), &not_utf8);
    assert_eq!(rejected.code, 1, "{rejected:?}");
    let decision: Value = serde_json::from_str(&rejected.stdout).unwrap();
    assert_eq!(decision["outcome"], "invalid");

    let too_long = deployment.run_with_stdin(&["keys", "verify"], &format!("{token}{}", " ".repeat(70_000)));
    assert_one_line_error(&too_long, "65536 bytes");
    let blank = deployment.run_with_stdin(&["keys", "verify"], &spaces);
    assert_one_line_error(&blank, "no token");
    deployment.assert_no_token_in_stderr();
}

#[test]
fn verify_reports_expiring_key_with_headers() {
    let deployment = Deployment::new();
    let (_, token) = deployment.create(&["--expires-in", "1d"]);
    let (code, decision) = deployment.verify(&token, &[]);
    assert_eq!(code, 0, "{decision}");
    assert_eq!(decision["outcome"], "expiring");
    assert_eq!(decision["headers"]["API-Key-Status"], "expiring");
    assert!(decision["headers"]["API-Key-Expires"].as_str().unwrap().ends_with("GMT"), "{decision}");
}

#[test]
fn no_expiry_key_stays_active() {
    let deployment = Deployment::new();
    let (key_id, token) = deployment.create(&["--no-expiry"]);
    let shown = deployment.json(&["keys", "show", &key_id]);
    assert!(shown["expires_at"].is_null(), "{shown}");
    assert!(shown["grace_ends_at"].is_null(), "{shown}");
    let (code, decision) = deployment.verify(&token, &[]);
    assert_eq!(code, 0);
    assert_eq!(decision["outcome"], "active");
    assert!(decision["expires_at"].is_null());

    let conflicting = deployment.run(&["keys", "create", "--name", "x", "--no-expiry", "--expires-in", "1d"]);
    assert_eq!(conflicting.code, 2, "{conflicting:?}");
    assert!(conflicting.stderr.contains("cannot be used with"), "{conflicting:?}");
}

#[test]
fn create_sets_self_rotation_policy() {
    let deployment = Deployment::new();
    let (default_key, _) = deployment.create(&[]);
    let (operator_key, _) = deployment.create(&["--no-self-rotation", "--max-chain-lifetime", "180d"]);

    let shown = deployment.json(&["keys", "show", &default_key]);
    assert_eq!(shown["self_rotation"], true, "{shown}");
    assert_eq!(shown["max_chain_lifetime"], "365d", "{shown}");
    let shown = deployment.json(&["keys", "show", &operator_key]);
    assert_eq!(shown["self_rotation"], false, "{shown}");
    assert_eq!(shown["max_chain_lifetime"], "180d", "{shown}");

    let zero = deployment.run(&["keys", "create", "--name", "x", "--max-chain-lifetime", "0s"]);
    assert_ne!(zero.code, 0, "{zero:?}");
    assert!(zero.stderr.contains("max_chain_lifetime"), "{zero:?}");
}

#[test]
fn list_filters_by_owner_and_state() {
    let deployment = Deployment::new();
    let (team_key, _) = deployment.create(&["--owner", "team-a"]);
    let (other_key, _) = deployment.create(&["--owner", "team-b", "--expires-in", "1d"]);

    let owned = deployment.json(&["keys", "list", "--owner", "team-a"]);
    assert_eq!(owned.as_array().unwrap().len(), 1);
    assert_eq!(owned[0]["key_id"], team_key.as_str());
    let expiring = deployment.json(&["keys", "list", "--state", "expiring"]);
    assert_eq!(expiring.as_array().unwrap().len(), 1);
    assert_eq!(expiring[0]["key_id"], other_key.as_str());
    assert_one_line_error(&deployment.run(&["keys", "list", "--state", "sleeping"]), "\"sleeping\"");
}

#[test]
fn token_prefix_option_sets_issued_and_accepted_prefix() {
    let deployment = Deployment::new();
    let (_, token) = deployment.create(&["--token-prefix", "acme_test"]);
    assert!(token.starts_with("acme_test_"), "{token}");

    let (code, default_prefix) = deployment.verify(&token, &[]);
    assert_eq!(code, 1);
    assert_eq!(default_prefix["outcome"], "invalid");
    let mut command = deployment.command(&["keys", "verify", "--json"]);
    command.env("KEYTURN_TOKEN_PREFIX", "acme_test");
    assert_eq!(deployment.run_command(command, Some(&token)).code, 0);
    assert_one_line_error(&deployment.run(&["keys", "list", "--token-prefix", "Bad-Prefix"]), "Bad-Prefix");
}

#[test]
fn bad_arguments_fail_without_writing() {
    let deployment = Deployment::new();
    let (revoked_id, _) = deployment.create(&[]);
    deployment.json(&["keys", "revoke", &revoked_id]);
    let unknown_id = "AAAAAAAAAAAA";
    let cases: &[(&[&str], &str)] = &[
        (&["keys", "create", "--name", "x", "--expires-in", "0s"], "0s"),
        (&["keys", "create", "--name", "x", "--expires-in", "-5d"], "-5d"),
        (&["keys", "create", "--name", "x", "--expires-in", "ninety days"], "ninety days"),
        (&["keys", "create", "--name", "x", "--grace", "1w"], "1w"),
        (&["keys", "create", "--name", "x", "--expires-at", "2020-01-01T00:00:00Z"], "2020-01-01T00:00:00Z"),
        (&["keys", "create", "--name", "x", "--expires-at", "tomorrow"], "tomorrow"),
        (&["keys", "create", "--name", "x", "--scope", "orders read"], "orders read"),
        (&["keys", "create", "--name", ""], "name"),
        (&["keys", "show", unknown_id], unknown_id),
        (&["keys", "show", "not-a-key"], "not-a-key"),
        (&["keys", "rotate", unknown_id], unknown_id),
        (&["keys", "rotate", &revoked_id], &revoked_id),
        (&["keys", "rotate", unknown_id, "--overlap", "soon"], "soon"),
        (&["keys", "revoke", unknown_id], unknown_id),
        (&["keys", "revoke", &revoked_id], &revoked_id),
        (&["audit", "list", "--key", "short"], "short"),
    ];

    let before = deployment.snapshot();
    for (args, needle) in cases {
        let run = deployment.run(args);
        assert_one_line_error(&run, needle);
    }
    let verify = deployment.run_with_stdin(&["keys", "verify", "--scope", "a b"], "kt_live_x\n");
    assert_one_line_error(&verify, "a b");
    assert_eq!(deployment.snapshot(), before);
}

#[test]
fn bad_environment_fails_with_path_and_fix() {
    let deployment = Deployment::new();
    deployment.create(&[]);
    let before = deployment.snapshot();
    let pepper_file = deployment.pepper_file();

    let missing_dir = deployment.dir.path().join("missing").join("keyturn.db");
    let mut command = deployment.command(&["keys", "list"]);
    command.env("KEYTURN_DATABASE_URL", &missing_dir);
    let run = deployment.run_command(command, None);
    assert_one_line_error(&run, &missing_dir.parent().unwrap().display().to_string());
    assert!(run.stderr.contains("mkdir -p"), "{run:?}");
    let mut command = deployment.command(&["init"]);
    command.env("KEYTURN_DATABASE_URL", &missing_dir);
    assert_one_line_error(&deployment.run_command(command, None), "does not exist");

    fs::set_permissions(&pepper_file, fs::Permissions::from_mode(0o644)).unwrap();
    let run = deployment.run(&["keys", "create", "--name", "x"]);
    assert_one_line_error(&run, &pepper_file.display().to_string());
    assert!(run.stderr.contains("0644"), "{run:?}");
    assert!(run.stderr.contains("chmod 600"), "{run:?}");
    fs::set_permissions(&pepper_file, fs::Permissions::from_mode(0o600)).unwrap();

    let pepper = fs::read(&pepper_file).unwrap();
    fs::remove_file(&pepper_file).unwrap();
    for args in [&["keys", "create", "--name", "x"][..], &["keys", "list"]] {
        assert_one_line_error(&deployment.run(args), &pepper_file.display().to_string());
    }
    let init = deployment.run(&["init"]);
    assert_one_line_error(&init, &pepper_file.display().to_string());
    assert!(init.stderr.contains("restore the pepper file"), "{init:?}");
    assert!(!pepper_file.exists(), "init replaced a lost pepper while keys depend on it");
    fs::write(&pepper_file, pepper).unwrap();
    fs::set_permissions(&pepper_file, fs::Permissions::from_mode(0o600)).unwrap();

    assert_eq!(deployment.snapshot(), before);
}

#[test]
fn debug_logs_contain_no_token() {
    let deployment = Deployment::new();
    let debug = |args: &[&str], stdin: Option<&str>| {
        let mut command = deployment.command(args);
        command.env("RUST_LOG", "trace");
        deployment.run_command(command, stdin)
    };

    let created = debug(&["keys", "create", "--name", "logged", "--scope", "a:b", "--json"], None);
    assert_eq!(created.code, 0, "{created:?}");
    assert!(created.stderr.contains("DEBUG") || created.stderr.contains("TRACE"), "no debug log: {created:?}");
    let created: Value = serde_json::from_str(&created.stdout).unwrap();
    let key_id = created["key_id"].as_str().unwrap();
    let token = created["token"].as_str().unwrap();
    deployment.tokens.borrow_mut().push(token.to_owned());

    let rotated = debug(&["keys", "rotate", key_id], None);
    assert_eq!(rotated.code, 0, "{rotated:?}");
    let successor_token = rotated.stdout.lines().find(|line| line.starts_with("kt_live_")).unwrap();
    deployment.tokens.borrow_mut().push(successor_token.to_owned());

    for (token, scope) in [(token, "a:b"), (successor_token, "a:c")] {
        let verified = debug(&["keys", "verify", "--scope", scope], Some(token));
        assert!(verified.code == 0 || verified.code == 1, "{verified:?}");
        let wrong = debug(&["keys", "verify"], Some(&token_with_wrong_secret(token)));
        assert_eq!(wrong.code, 1, "{wrong:?}");
        assert!(wrong.stderr.contains("secret mismatch"), "the token failed before its secret was checked: {wrong:?}");
    }
    debug(&["keys", "show", key_id], None);
    debug(&["audit", "list"], None);
    deployment.assert_no_token_in_stderr();
}

#[test]
fn lost_token_output_fails_with_key_id() {
    let deployment = Deployment::new();

    let created = deployment.run_with_closed_stdout(&["keys", "create", "--name", "bp", "--json"]);
    assert_one_line_error(&created, "Broken pipe");
    let listed = deployment.json(&["keys", "list"]);
    let created_id = listed.as_array().unwrap().iter().find(|key| key["name"] == "bp").unwrap()["key_id"].clone();
    let created_id = created_id.as_str().unwrap();
    assert!(created.stderr.contains(&format!("keyturn keys revoke {created_id}")), "{created:?}");
    assert_eq!(deployment.json(&["keys", "show", created_id])["state"], "active");

    let (key_id, _) = deployment.create(&[]);
    let rotated = deployment.run_with_full_stdout(&mut deployment.command(&["keys", "rotate", &key_id]));
    assert_one_line_error(&rotated, "revoke");
    let successor_id = deployment.json(&["keys", "show", &key_id])["successor_id"].as_str().unwrap().to_owned();
    assert!(rotated.stderr.contains(&format!("keyturn keys revoke {successor_id}")), "{rotated:?}");

    // Output without a token may stop quietly when the reader goes away, as in `| head -1`.
    let list = deployment.run_with_closed_stdout(&["keys", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    assert_eq!(list.stderr, "", "{list:?}");
    deployment.assert_no_token_in_stderr();
}

#[test]
fn text_output_escapes_free_text() {
    let deployment = Deployment::new();
    let name = "billing\u{202e}txt.exe\\n";
    let created = deployment.json(&["keys", "create", "--name", name, "--owner", "team\u{2028}a"]);
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    let created_at = deployment.json(&["keys", "show", &key_id])["created_at"].as_str().unwrap().to_owned();

    // The service rejects control characters in a new reason, but a database written by other
    // software may contain them, so the revocation goes to the store directly.
    let reason = "leaked\nstate              active\u{1b}[2K";
    revoke_in_store(&deployment.database, &key_id, &created_at, reason, "ops\nforged");

    let shown = deployment.run(&["keys", "show", &key_id]);
    assert_eq!(shown.code, 0, "{shown:?}");
    let state_lines: Vec<&str> = shown.stdout.lines().filter(|line| line.starts_with("state")).collect();
    assert_eq!(state_lines.len(), 1, "{shown:?}");
    assert!(state_lines[0].contains("revoked"), "{shown:?}");
    assert!(shown.stdout.contains("leaked\\nstate              active\\u{1b}[2K\n"), "{shown:?}");
    assert!(shown.stdout.contains("billing\\u{202e}txt.exe\\\\n\n"), "{shown:?}");
    assert!(shown.stdout.contains("team\\u{2028}a\n"), "{shown:?}");
    assert!(!shown.stdout.contains('\u{1b}'), "{shown:?}");

    let table = deployment.run(&["keys", "list"]);
    assert!(!table.stdout.contains('\u{202e}'), "{table:?}");
    assert!(!table.stdout.contains('\u{2028}'), "{table:?}");
    let audit = deployment.run(&["audit", "list", "--key", &key_id]);
    assert_eq!(audit.stdout.lines().count(), 3, "one header and two events: {audit:?}");
    assert!(audit.stdout.contains("cli:ops\\nforged  leaked\\nstate"), "{audit:?}");
    assert_eq!(deployment.json(&["keys", "show", &key_id])["revocation_reason"], reason);
}

/// Revokes a key through the store, which stores `reason` and `user` without the service's checks.
fn revoke_in_store(database: &Path, key_id: &str, at: &str, reason: &str, user: &str) {
    use keyturn_core::{Actor, AuditEventType, Instant, KeyId, NewAuditEvent};
    use keyturn_store::{DatabaseUrl, Revocation, SqliteOptions, SqliteStore, Store};

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let url = DatabaseUrl::parse(database.to_str().unwrap()).unwrap();
        let store = SqliteStore::open(&url, &SqliteOptions::default()).await.unwrap();
        let key_id = KeyId::parse(key_id).unwrap();
        let revoked_at = Instant::parse_rfc3339(at).unwrap();
        let event = NewAuditEvent::new(
            AuditEventType::AuthnTokenRevoked,
            revoked_at,
            Some(key_id.clone()),
            Actor::Cli(user.to_owned()),
        )
        .with_reason(Some(reason.to_owned()));
        let revocation = Revocation { key_id, revoked_at, reason: Some(reason.to_owned()), event };
        store.revoke_key(&revocation).await.unwrap();
    });
}

#[test]
fn store_copy_moves_keys_and_refuses_non_empty_target() {
    let deployment = Deployment::new();
    let created = deployment.run(&["keys", "create", "--name", "copied", "--scope", "orders:read", "--json"]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let token = serde_json::from_str::<Value>(&created.stdout).unwrap()["token"].as_str().unwrap().to_owned();
    deployment.tokens.borrow_mut().push(token.clone());
    let target = deployment.dir.path().join("copy.db");
    let target_url = format!("sqlite://{}", target.display());
    let source_url = format!("sqlite://{}", deployment.database.display());

    let copy = deployment.run(&["store", "copy", "--from", &source_url, "--to", &target_url]);
    assert_eq!(copy.code, 0, "{}", copy.stderr);
    assert!(copy.stdout.starts_with("copied 2 keys, 0 usage counters and 2 audit events"), "{}", copy.stdout);

    // The copy verifies the same token with the same pepper file.
    let mut verify = deployment.command(&["keys", "verify"]);
    verify.env("KEYTURN_DATABASE_URL", &target).env("KEYTURN_PEPPER_FILE", deployment.pepper_file());
    let verified = deployment.run_command_with_bytes(verify, token.as_bytes());
    assert_eq!(verified.code, 0, "{}", verified.stderr);

    let again = deployment.run(&["store", "copy", "--from", &source_url, "--to", &target_url]);
    assert_one_line_error(&again, "already holds 2 keys");
    let same = deployment.run(&["store", "copy", "--from", &source_url, "--to", &source_url]);
    assert_one_line_error(&same, "copy to another database");
    let bad = deployment.run(&["store", "copy", "--from", &source_url, "--to", "postgres://app:hunter2@/"]);
    assert_one_line_error(&bad, "--to: invalid database URL");
    assert!(!bad.stderr.contains("hunter2"), "{}", bad.stderr);
}

#[test]
fn store_copy_from_empty_file_creates_nothing() {
    let deployment = Deployment::new();
    let empty = deployment.dir.path().join("empty.db");
    std::fs::File::create(&empty).unwrap();
    let target = deployment.dir.path().join("copy.db");
    let empty_url = format!("sqlite://{}", empty.display());
    let target_url = format!("sqlite://{}", target.display());

    let copy = deployment.run(&["store", "copy", "--from", &empty_url, "--to", &target_url]);

    assert_one_line_error(&copy, "no keyturn tables");
    assert!(copy.stderr.contains(&empty.display().to_string()), "{}", copy.stderr);
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    assert!(!target.exists());
}

#[test]
fn store_backup_writes_private_verifiable_copy() {
    let deployment = Deployment::new();
    let created = deployment.run(&["keys", "create", "--name", "backed-up", "--json"]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let token = serde_json::from_str::<Value>(&created.stdout).unwrap()["token"].as_str().unwrap().to_owned();
    deployment.tokens.borrow_mut().push(token.clone());
    let backup = deployment.dir.path().join("backup.db");
    let backup_arg = backup.display().to_string();

    let run = deployment.run(&["store", "backup", "--to", &backup_arg]);

    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(&backup_arg), "{}", run.stdout);
    assert_eq!(fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600);
    // The backup verifies the same token and holds the whole signed audit chain.
    let audit_key = deployment.dir.path().join("keyturn.audit-key");
    let mut verify = deployment.command(&["keys", "verify"]);
    verify.env("KEYTURN_DATABASE_URL", &backup).env("KEYTURN_PEPPER_FILE", deployment.pepper_file());
    let verified = deployment.run_command_with_bytes(verify, token.as_bytes());
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    let mut audit = deployment.command(&["audit", "verify"]);
    audit.env("KEYTURN_DATABASE_URL", &backup).env("KEYTURN_AUDIT_KEY_FILE", &audit_key);
    let audited = deployment.run_command(audit, None);
    assert_eq!(audited.code, 0, "{}{}", audited.stdout, audited.stderr);
}

#[test]
fn audit_list_filters_by_event_and_time() {
    let deployment = Deployment::new();
    let created = deployment.run(&["keys", "create", "--name", "filtered", "--json"]);
    let created: Value = serde_json::from_str(&created.stdout).unwrap();
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    deployment.tokens.borrow_mut().push(created["token"].as_str().unwrap().to_owned());
    assert_eq!(deployment.run(&["keys", "revoke", &key_id, "--reason", "filter test"]).code, 0);

    let revoked = deployment.run(&["audit", "list", "--event", "authn_token_revoked", "--json"]);
    let future = deployment.run(&["audit", "list", "--since", "2999-01-01T00:00:00Z", "--json"]);
    let past = deployment.run(&["audit", "list", "--until", "2000-01-01T00:00:00Z", "--json"]);
    let after = deployment.run(&["audit", "list", "--after", "2", "--json"]);
    let unknown = deployment.run(&["audit", "list", "--event", "token_revoked"]);
    let reversed =
        deployment.run(&["audit", "list", "--since", "2027-01-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z"]);

    let rows: Vec<Value> = serde_json::from_str(&revoked.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{}", revoked.stdout);
    assert_eq!(rows[0]["key_id"], key_id.as_str());
    assert_eq!(future.stdout.trim(), "[]");
    assert_eq!(past.stdout.trim(), "[]");
    let after: Vec<Value> = serde_json::from_str(&after.stdout).unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["seq"], 3);
    assert_one_line_error(&unknown, "invalid --event \"token_revoked\"");
    assert_one_line_error(&reversed, "swap them");
}

#[test]
fn init_creates_configured_secret_files_and_signs_first_row() {
    let deployment = Deployment::uninitialised();
    let secrets = deployment.dir.path().join("secrets");
    fs::create_dir(&secrets).unwrap();
    let audit_key = secrets.join("keyturn.audit-key");
    let pepper = secrets.join("keyturn.pepper");
    let with_files = |args: &[&str]| {
        let mut command = deployment.command(args);
        command.env("KEYTURN_AUDIT_KEY_FILE", &audit_key).env("KEYTURN_PEPPER_FILE", &pepper);
        command
    };

    let init = deployment.run_command(with_files(&["init"]), None);
    deployment.tokens.borrow_mut().extend(printed_token(&init));
    let verify = deployment.run_command(with_files(&["audit", "verify"]), None);

    assert_eq!(init.code, 0, "{init:?}");
    assert!(init.stdout.contains(&format!("created audit key file {}", audit_key.display())), "{init:?}");
    assert_eq!(mode(&audit_key), 0o600);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(verify.stdout.starts_with("audit chain intact: 1 rows"), "{verify:?}");
}

#[test]
fn missing_audit_key_file_names_audit_key_settings() {
    let deployment = Deployment::new();
    let mut audit = deployment.command(&["audit", "verify"]);
    audit.env("KEYTURN_AUDIT_KEY_FILE", deployment.dir.path().join("gone.audit-key"));

    let run = deployment.run_command(audit, None);

    assert_one_line_error(&run, "set KEYTURN_AUDIT_KEY or KEYTURN_AUDIT_KEY_FILE");
}

#[test]
fn store_backup_refuses_existing_file_missing_directory_and_postgres() {
    let deployment = Deployment::new();
    let existing = deployment.dir.path().join("existing.db");
    fs::write(&existing, b"keep me").unwrap();
    let missing = deployment.dir.path().join("missing").join("backup.db");

    let over = deployment.run(&["store", "backup", "--to", &existing.display().to_string()]);
    let nowhere = deployment.run(&["store", "backup", "--to", &missing.display().to_string()]);
    let mut postgres = deployment.command(&["store", "backup", "--to", "pg.db"]);
    postgres.env("KEYTURN_DATABASE_URL", "postgres://app:hunter2@127.0.0.1:1/keyturn");
    let postgres = deployment.run_command(postgres, None);

    assert_one_line_error(&over, "already exists");
    assert_eq!(fs::read(&existing).unwrap(), b"keep me");
    assert_one_line_error(&nowhere, "directory does not exist");
    assert_one_line_error(&postgres, "pg_dump");
    assert!(!postgres.stderr.contains("hunter2"), "{}", postgres.stderr);
    assert!(!deployment.dir.path().join("pg.db").exists());
}

/// Runs raw SQL on a deployment's database behind keyturn's back, as an attacker with write
/// access to the database could.
fn tamper(database: &Path, sql: &str) {
    use sqlx::{ConnectOptions, Connection};

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(database).connect().await.unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    });
}

/// A deployment whose audit log holds seven signed rows: the bootstrap admin key, three keys, a
/// rotation (two rows) and a revocation.
fn audited_deployment() -> Deployment {
    let deployment = Deployment::new();
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let run = deployment.run(&["keys", "create", "--name", name, "--json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let created: Value = serde_json::from_str(&run.stdout).unwrap();
        deployment.tokens.borrow_mut().push(created["token"].as_str().unwrap().to_owned());
        ids.push(created["key_id"].as_str().unwrap().to_owned());
    }
    let rotated = deployment.run(&["keys", "rotate", &ids[0], "--json"]);
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    let revoked = deployment.run(&["keys", "revoke", &ids[1], "--reason", "leaked"]);
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    deployment
}

fn assert_chain_broken(run: &Run, needle: &str) {
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.starts_with("audit chain broken: "), "{run:?}");
    assert!(run.stderr.contains(needle), "expected {needle:?} in {run:?}");
}

#[test]
fn audit_verify_accepts_intact_chain() {
    let deployment = audited_deployment();
    assert!(deployment.dir.path().join("keyturn.audit-key").exists());
    let run = deployment.run(&["audit", "verify"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("audit chain intact: 7 rows, newest row 7 with MAC "), "{}", run.stdout);
}

#[test]
fn audit_verify_finds_each_kind_of_tampering() {
    let cases = [
        ("UPDATE audit_events SET reason = 'routine' WHERE seq = 7", "audit row 7 was edited"),
        (
            "UPDATE audit_events SET actor = 'cli:nobody', \
             canonical = replace(canonical, '\"actor\":\"cli:tester\"', '\"actor\":\"cli:nobody\"') WHERE seq = 3",
            "the MAC of audit row 3 does not match",
        ),
        ("DELETE FROM audit_events WHERE seq = 4", "audit row 4 was removed"),
        (
            "UPDATE audit_events SET seq = -3 WHERE seq = 3; UPDATE audit_events SET seq = 3 WHERE seq = 2; \
             UPDATE audit_events SET seq = 2 WHERE seq = -3",
            "audit row 2 holds the canonical text of row 3",
        ),
        (
            "INSERT INTO audit_events (seq, at, event, key_id, actor, client_addr, reason, details, canonical, mac) \
             SELECT 8, at, event, key_id, actor, client_addr, reason, details, replace(canonical, '\"seq\":7', \
             '\"seq\":8'), mac FROM audit_events WHERE seq = 7",
            "the MAC of audit row 8 does not match",
        ),
        ("UPDATE audit_events SET mac = NULL WHERE seq = 5", "audit row 5 has no MAC"),
    ];
    for (sql, needle) in cases {
        let deployment = audited_deployment();
        tamper(&deployment.database, sql);
        assert_chain_broken(&deployment.run(&["audit", "verify"]), needle);
    }
}

#[test]
fn audit_verify_checkpoint_detects_truncated_tail() {
    let deployment = audited_deployment();
    let export = deployment.run(&["audit", "export"]);
    assert_eq!(export.code, 0, "{export:?}");
    let lines: Vec<&str> = export.stdout.lines().collect();
    assert_eq!(lines.len(), 8, "seven rows and a checkpoint: {}", export.stdout);
    let checkpoint: Value = serde_json::from_str(lines[7]).unwrap();
    assert_eq!(checkpoint["checkpoint"]["seq"], 7);
    let exported = deployment.dir.path().join("audit.jsonl");
    fs::write(&exported, &export.stdout).unwrap();
    let exported = exported.to_str().unwrap();

    assert_eq!(deployment.run(&["audit", "verify", "--checkpoint", exported]).code, 0);
    tamper(&deployment.database, "DELETE FROM audit_events WHERE seq >= 5");
    // Without the checkpoint, a chain cut at its end still verifies.
    assert_eq!(deployment.run(&["audit", "verify"]).code, 0);
    let run = deployment.run(&["audit", "verify", "--checkpoint", exported]);
    assert_chain_broken(&run, "the audit chain ends at row 4, but the checkpoint names row 7");

    let bad = deployment.dir.path().join("bad.jsonl");
    fs::write(&bad, "{\"checkpoint\":{\"seq\":7}}\n").unwrap();
    assert_one_line_error(&deployment.run(&["audit", "verify", "--checkpoint", bad.to_str().unwrap()]), "has no MAC");
}

#[test]
fn audit_verify_needs_the_right_key() {
    let deployment = audited_deployment();
    let key_file = deployment.dir.path().join("keyturn.audit-key");
    let other = deployment.dir.path().join("other.audit-key");
    fs::copy(&key_file, &other).unwrap();
    fs::remove_file(&key_file).unwrap();
    assert_one_line_error(&deployment.run(&["audit", "verify"]), "no audit key is configured");

    // A different key cannot verify the chain.
    let text = fs::read_to_string(&other).unwrap();
    let last = text.lines().last().unwrap().to_owned();
    let (first, rest) = last.split_at(1);
    let flipped = format!("{}{rest}", if first == "A" { "B" } else { "A" });
    fs::write(&other, format!("{flipped}\n")).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).unwrap();
    let mut command = deployment.command(&["audit", "verify"]);
    command.env("KEYTURN_AUDIT_KEY_FILE", &other);
    let run = deployment.run_command(command, None);
    assert_chain_broken(&run, "the MAC of audit row 1 does not match");
}

#[test]
fn audit_export_filters_by_time() {
    let deployment = audited_deployment();
    let all = deployment.run(&["audit", "export"]);
    let first: Value = serde_json::from_str(all.stdout.lines().next().unwrap()).unwrap();
    let at = first["at"].as_str().unwrap();
    let none = deployment.run(&["audit", "export", "--until", at]);
    assert_eq!(none.code, 0, "{none:?}");
    let lines: Vec<&str> = none.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the checkpoint: {}", none.stdout);
    assert!(lines[0].contains("\"seq\":7"), "{}", lines[0]);
    let reversed = deployment.run(&["audit", "export", "--since", "2030-01-01T00:00:00Z", "--until", at]);
    assert_one_line_error(&reversed, "is not before --until");
}

#[test]
fn audit_events_reach_the_audit_log_target() {
    let deployment = Deployment::new();
    let mut command = deployment.command(&["--log-format", "json", "keys", "create", "--name", "shipped", "--json"]);
    command.env("RUST_LOG", "keyturn::audit=info");
    let run = deployment.run_command(command, None);
    assert_eq!(run.code, 0, "{run:?}");
    let created: Value = serde_json::from_str(&run.stdout).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    deployment.tokens.borrow_mut().push(token.clone());

    let record = run
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["target"] == "keyturn::audit")
        .unwrap_or_else(|| panic!("no keyturn::audit record: {}", run.stderr));
    assert_eq!(record["fields"]["event"], "authn_token_created", "{record}");
    assert_eq!(record["fields"]["key_id"], created["key_id"], "{record}");
    assert_eq!(record["fields"]["seq"], 2, "{record}");
    assert_eq!(record["fields"]["signed"], true, "{record}");
    assert!(!run.stderr.contains(&token), "{}", run.stderr);
}

/// Creates a database of its own on the PostgreSQL test server and returns its URL, or `None`
/// (a notice, or a failure under CI) when `KEYTURN_TEST_POSTGRES_URL` is not set.
fn postgres_database() -> Option<String> {
    use sqlx::Connection;

    let Ok(server) = std::env::var("KEYTURN_TEST_POSTGRES_URL") else {
        assert!(std::env::var_os("CI").is_none(), "CI must set KEYTURN_TEST_POSTGRES_URL");
        eprintln!("skipping: KEYTURN_TEST_POSTGRES_URL is not set; run `scripts/with-postgres cargo test`");
        return None;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let name = format!("kt_cli_{}_{nanos}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.unwrap();
        admin.close().await.unwrap();
    });
    let (base, _) = server.rsplit_once('/').expect("the server URL names a database");
    Some(format!("{base}/{name}"))
}

#[test]
fn init_on_postgres_rejects_new_pepper_for_existing_keys() {
    let Some(url) = postgres_database() else { return };
    let deployment = Deployment::uninitialised();
    let init = |pepper_file: &str| {
        let mut command = deployment.command(&["init"]);
        command.env("KEYTURN_DATABASE_URL", &url).env("KEYTURN_PEPPER_FILE", deployment.dir.path().join(pepper_file));
        deployment.run_command(command, None)
    };
    let first = init("first.pepper");
    assert_eq!(first.code, 0, "{first:?}");
    deployment.tokens.borrow_mut().push(printed_token(&first).unwrap());

    let second = init("second.pepper");
    assert_eq!(second.code, 2, "{second:?}");
    assert!(second.stderr.contains("already contains 1 key"), "{second:?}");
    assert!(!deployment.dir.path().join("second.pepper").exists());
}

#[test]
fn malformed_pgpass_line_is_not_logged() {
    let deployment = Deployment::uninitialised();
    let pgpass = deployment.dir.path().join("pgpass");
    fs::write(&pgpass, "127.0.0.1:1:keyturn:Pgpass-Secret-4417\n").unwrap();
    fs::set_permissions(&pgpass, fs::Permissions::from_mode(0o600)).unwrap();
    let pepper = format!("1:{}", "A".repeat(43) + "=");
    let mut command = deployment.command(&["keys", "list"]);
    command
        .env("KEYTURN_DATABASE_URL", "postgres://keyturn@127.0.0.1:1/keyturn")
        .env("KEYTURN_PEPPER", pepper)
        .env("KEYTURN_POSTGRES_CONNECT_TIMEOUT", "1s")
        .env("PGPASSFILE", &pgpass)
        .env("RUST_LOG", "trace");
    let run = deployment.run_command(command, None);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("Pgpass-Secret-4417"), "{}", run.stderr);
    assert!(!run.stdout.contains("Pgpass-Secret-4417"), "{}", run.stdout);
}

#[test]
fn serve_rejects_invalid_guard_and_proxy_values() {
    // No database exists, so a value that passed its check would fail on opening the store
    // instead, with another message; the process never starts serving.
    let deployment = Deployment::uninitialised();
    let cases: [(&[&str], &[&str]); 7] = [
        (&["--trusted-proxy", "10.0.0.300"], &["--trusted-proxy", "\"10.0.0.300\""]),
        (&["--trusted-proxy", "::1", "--trusted-proxy", "10.0.0.1/8"], &["--trusted-proxy", "10.0.0.0/8"]),
        (&["--guard-max-failures", "0"], &["--guard-max-failures", "1 to 100000"]),
        (&["--guard-max-failures", "-5"], &["--guard-max-failures", "-5"]),
        (&["--guard-window", "0s"], &["--guard-window", "1s to 24h"]),
        (&["--guard-cooldown", "2d"], &["--guard-cooldown", "1s to 24h"]),
        (&["--guard", "maybe"], &["--guard", "maybe"]),
    ];
    for (options, expected) in cases {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(options);
        let run = deployment.run(&args);
        assert_eq!(run.code, 2, "{options:?}: {run:?}");
        for text in expected {
            assert!(run.stderr.contains(text), "{options:?}: expected {text:?} in {:?}", run.stderr);
        }
    }
}

#[test]
fn serve_reads_trusted_proxies_variable() {
    let deployment = Deployment::uninitialised();
    let mut command = deployment.command(&["serve", "--listen", "127.0.0.1:0"]);
    command.env("KEYTURN_TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal");
    let run = deployment.run_command(command, None);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("\"proxy.internal\""), "{:?}", run.stderr);
}

#[test]
fn migration_report_shows_each_status() {
    let deployment = Deployment::new();
    let (moved_id, moved_token) = deployment.create(&["--owner", "team-a"]);
    let (both_id, both_token) = deployment.create(&["--owner", "team-a"]);
    let (waiting_id, waiting_token) = deployment.create(&["--owner", "team-b"]);
    let (ended_id, _) = deployment.create(&["--owner", "team-a"]);
    assert_eq!(deployment.verify(&moved_token, &[]).0, 0, "a use before the rotation");

    let rotate = |key_id: &str, overlap: &str| {
        let rotated = deployment.json(&["keys", "rotate", key_id, "--overlap", overlap]);
        (rotated["key_id"].as_str().unwrap().to_owned(), rotated["token"].as_str().unwrap().to_owned())
    };
    let (moved_successor, moved_successor_token) = rotate(&moved_id, "3d");
    let (both_successor, both_successor_token) = rotate(&both_id, "1d");
    let (waiting_successor, _) = rotate(&waiting_id, "2d");
    rotate(&ended_id, "0s");
    // Each run is its own process, which writes its usage when it exits. Starting a process takes
    // longer than a millisecond, so each use below has a later instant than the one before.
    for token in [&moved_token, &moved_successor_token, &both_successor_token, &both_token, &waiting_token] {
        assert_eq!(deployment.verify(token, &[]).0, 0);
    }

    let report = deployment.json(&["keys", "migration-report"]);
    let entries = report.as_array().unwrap();
    let ids: Vec<&str> = entries.iter().map(|entry| entry["key_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [both_id.as_str(), waiting_id.as_str(), moved_id.as_str()], "the soonest end first");
    let statuses: Vec<&str> = entries.iter().map(|entry| entry["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["both", "not_moved", "moved"]);
    let successors: Vec<&str> = entries.iter().map(|entry| entry["successor_id"].as_str().unwrap()).collect();
    assert_eq!(successors, [both_successor.as_str(), waiting_successor.as_str(), moved_successor.as_str()]);
    for entry in entries {
        assert_eq!(entry["uses_since_rotation"], 1, "one use after the rotation: {entry}");
        assert_eq!(entry["name"], "billing");
        assert!(entry["last_client_addr"].is_null(), "keys verify has no client address: {entry}");
        for field in ["rotated_at", "overlap_ends_at", "last_used_at"] {
            assert_rfc3339(entry, field);
        }
    }
    assert_rfc3339(&entries[0], "successor_first_used_at");
    assert!(entries[1]["successor_first_used_at"].is_null());
    assert_rfc3339(&entries[2], "successor_first_used_at");
    assert_eq!(entries[1]["owner"], "team-b");

    let team_b = deployment.json(&["keys", "migration-report", "--owner", "team-b"]);
    assert_eq!(team_b.as_array().unwrap().len(), 1);
    assert_eq!(team_b[0]["key_id"], waiting_id.as_str());
    let nobody = deployment.run(&["keys", "migration-report", "--owner", "nobody"]);
    assert_eq!((nobody.code, nobody.stdout.as_str()), (0, "no keys in their overlap window\n"));

    let table = deployment.run(&["keys", "migration-report"]);
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "one header and three keys: {table:?}");
    assert!(lines[0].starts_with("KEY ID"), "{table:?}");
    let status_column = lines[0].find("STATUS").unwrap();
    let uses_column = lines[0].find("USES SINCE ROTATION").unwrap();
    for (line, status) in lines[1..].iter().zip(["both ", "not_moved ", "moved "]) {
        assert_eq!(line.get(status_column..status_column + status.len()), Some(status), "{table:?}");
        assert_eq!(line.get(uses_column..uses_column + 2), Some("1 "), "{table:?}");
    }
    deployment.assert_no_token_in_stderr();
}

#[test]
fn migration_report_escapes_free_text() {
    let deployment = Deployment::new();
    let created = deployment.json(&["keys", "create", "--name", "billing\u{202e}txt", "--owner", "team\u{2028}a"]);
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    deployment.json(&["keys", "rotate", &key_id]);
    // A trusted proxy passes the client address on from X-Forwarded-For, so it is free text too.
    record_use_in_store(&deployment.database, &key_id, "192.0.2.1\n\u{1b}[2Kforged");

    let table = deployment.run(&["keys", "migration-report"]);

    assert_eq!(table.code, 0, "{table:?}");
    assert_eq!(table.stdout.lines().count(), 2, "one header and one key: {table:?}");
    assert!(table.stdout.contains("billing\\u{202e}txt"), "{table:?}");
    assert!(table.stdout.contains("team\\u{2028}a"), "{table:?}");
    assert!(table.stdout.contains("192.0.2.1\\n\\u{1b}[2Kforged"), "{table:?}");
    for raw in ['\u{202e}', '\u{2028}', '\u{1b}'] {
        assert!(!table.stdout.contains(raw), "{table:?}");
    }
    let report = deployment.json(&["keys", "migration-report"]);
    assert_eq!(report[0]["last_client_addr"], "192.0.2.1\n\u{1b}[2Kforged");
}

/// Records one allowed use of a key now, from `client_addr`, through the store, as a usage flush
/// of a server would.
fn record_use_in_store(database: &Path, key_id: &str, client_addr: &str) {
    use keyturn_core::{Clock, KeyId, Outcome, SystemClock};
    use keyturn_store::{DatabaseUrl, SqliteOptions, SqliteStore, Store, UsageRecord};

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let url = DatabaseUrl::parse(database.to_str().unwrap()).unwrap();
        let store = SqliteStore::open(&url, &SqliteOptions::default()).await.unwrap();
        let now = SystemClock.now();
        let usage = UsageRecord {
            key_id: KeyId::parse(key_id).unwrap(),
            first_used_at: now,
            last_used_at: now,
            last_client_addr: Some(client_addr.to_owned()),
            counts: vec![(Outcome::Superseded, 1)],
        };
        store.record_usage(&[usage]).await.unwrap();
    });
}

#[test]
fn audit_verify_passes_after_concurrent_changes() {
    use std::sync::Arc;

    use keyturn::core::{PepperRing, SystemClock};
    use keyturn::store::{DatabaseUrl, SqliteOptions, SqliteStore};
    use keyturn::{Caller, Config, Keyring, NewKey, RotateOptions};

    const WRITERS: usize = 4;
    const CHANGES_PER_WRITER: usize = 2_500;

    let deployment = Deployment::new();
    let key = keyturn::settings::read_audit_key_file(&deployment.dir.path().join("keyturn.audit-key")).unwrap();
    let ring = PepperRing::parse_file(&fs::read_to_string(deployment.pepper_file()).unwrap()).unwrap();
    let url = DatabaseUrl::parse(deployment.database.to_str().unwrap()).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            // Each writer has its own store instance and pool, as a separate process would.
            let store =
                SqliteStore::open(&url, &SqliteOptions::default()).await.unwrap().with_audit_key(Some(key.clone()));
            let keyring = Keyring::new(Arc::new(store), ring.clone(), Arc::new(SystemClock), Config::default());
            writers.push(tokio::spawn(async move {
                let caller = Caller::cli();
                let mut changes = 0;
                let mut live = Vec::new();
                while changes < CHANGES_PER_WRITER {
                    let new = NewKey { name: format!("writer {writer} key {changes}"), ..NewKey::default() };
                    let issued = keyring.create(new, &caller).await.unwrap();
                    changes += 1;
                    match changes % 5 {
                        0 => {
                            keyring.revoke(&issued.record.key_id, Some("test"), &caller).await.unwrap();
                            changes += 1;
                        }
                        1 | 2 => live.push(issued.record.key_id),
                        _ => {
                            if let Some(old) = live.pop() {
                                keyring.rotate(&old, &RotateOptions::default(), &caller).await.unwrap();
                                changes += 1;
                            }
                        }
                    }
                }
                keyring.shutdown().await;
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
    });

    let run = deployment.run(&["audit", "verify"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rows: usize = run.stdout.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(rows >= WRITERS * CHANGES_PER_WRITER, "{}", run.stdout);
}
