//! End-to-end tests of `keyturn keys request-rotation` and `keyturn schedule run --once` against
//! a real SQLite file and pepper file in a temporary directory. The binary uses the system
//! clock, so the scheduler tests wait for a key with a 1 s lifetime to expire or a key of a
//! policy that rotates every second to reach that age.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

struct Deployment {
    dir: TempDir,
    database: PathBuf,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Deployment {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        let database = dir.path().join("keyturn.db");
        let deployment = Deployment { dir, database };
        let init = deployment.run(&["init"]);
        assert_eq!(init.code, 0, "init failed: {}", init.stderr);
        deployment
    }

    fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_keyturn"))
            .args(args)
            .current_dir(self.dir.path())
            .env("KEYTURN_DATABASE_URL", &self.database)
            .env("USER", "tester")
            .env_remove("KEYTURN_PEPPER")
            .env_remove("KEYTURN_PEPPER_FILE")
            .env_remove("KEYTURN_TOKEN_PREFIX")
            .env_remove("RUST_LOG")
            .output()
            .expect("run keyturn");
        let run = Run {
            code: output.status.code().expect("keyturn exited by a signal"),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        };
        assert!(!run.stderr.contains("panicked"), "keyturn panicked: {}", run.stderr);
        run
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let run = self.run(&args);
        assert_eq!(run.code, 0, "{args:?} failed: {}", run.stderr);
        serde_json::from_str(&run.stdout).expect("stdout is JSON")
    }

    /// Returns the audit rows of one event type.
    fn audit_rows(&self, event: &str) -> Vec<Value> {
        let rows = self.json(&["audit", "list"]);
        rows.as_array().unwrap().iter().filter(|row| row["event"] == event).cloned().collect()
    }

    fn create(&self, extra: &[&str]) -> String {
        let mut args = vec!["keys", "create", "--name", "billing", "--owner", "billing"];
        args.extend_from_slice(extra);
        self.json(&args)["key_id"].as_str().unwrap().to_owned()
    }
}

#[test]
fn request_rotation_dry_run_then_real() {
    let deployment = Deployment::new();
    let key_id = deployment.create(&[]);
    let revoked = deployment.create(&[]);
    assert_eq!(deployment.run(&["keys", "revoke", &revoked]).code, 0);

    let dry = deployment.run(&["keys", "request-rotation", "--owner", "billing", "--by", "14d", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.contains(&format!("would request rotation of key {key_id} by ")), "{}", dry.stdout);
    assert!(dry.stdout.contains(&format!("skipped key {revoked}: revoked")), "{}", dry.stdout);
    assert!(dry.stdout.contains("1 of 2 keys would be requested"), "{}", dry.stdout);
    assert_eq!(deployment.json(&["keys", "show", &key_id])["state"], "active");

    let args = ["keys", "request-rotation", &key_id, "--by", "2099-01-01T00:00:00Z", "--reason", "vendor breach"];
    let done = deployment.json(&args);
    assert_eq!(done[0]["status"], "requested");
    assert_eq!(done[0]["rotation_deadline"], "2099-01-01T00:00:00Z");

    let shown = deployment.json(&["keys", "show", &key_id]);
    assert_eq!(shown["state"], "rotation_requested");
    assert_eq!(shown["rotation_deadline"], "2099-01-01T00:00:00Z");
    let audit = deployment.audit_rows("authn_token_rotation_requested");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["reason"], "vendor breach");

    let report = deployment.json(&["keys", "migration-report", "--rotation-requests"]);
    assert_eq!(report.as_array().unwrap().len(), 1);
    assert_eq!(report[0]["key_id"], key_id.as_str());
    assert_eq!(report[0]["rotated"], false);
    assert_eq!(report[0]["rotation_deadline"], "2099-01-01T00:00:00Z");
    let text = deployment.run(&["keys", "migration-report", "--rotation-requests"]);
    assert!(text.stdout.contains("deadline 2099-01-01T00:00:00Z, not rotated"), "{}", text.stdout);
    assert!(text.stdout.contains("0 of 1 keys rotated, 0 successors used"), "{}", text.stdout);
}

#[test]
fn request_rotation_rejects_bad_arguments() {
    let deployment = Deployment::new();
    let key_id = deployment.create(&[]);

    let past = deployment.run(&["keys", "request-rotation", &key_id, "--by", "2020-01-01T00:00:00Z"]);
    assert_eq!(past.code, 2);
    assert!(past.stderr.contains("not after now"), "{}", past.stderr);
    let garbage = deployment.run(&["keys", "request-rotation", &key_id, "--by", "soon"]);
    assert_eq!(garbage.code, 2);
    assert!(garbage.stderr.contains("--by: invalid rotation deadline"), "{}", garbage.stderr);
    let both = deployment.run(&["keys", "request-rotation", &key_id, "--owner", "billing", "--by", "1d"]);
    assert_eq!(both.code, 2);
    let neither = deployment.run(&["keys", "request-rotation", "--by", "1d"]);
    assert_eq!(neither.code, 2);
    assert_eq!(deployment.json(&["keys", "show", &key_id])["rotation_deadline"], Value::Null);
}

#[test]
fn schedule_run_once_records_expiry() {
    let deployment = Deployment::new();
    let key_id = deployment.create(&["--expires-in", "1s", "--grace", "0s", "--warn-before", "0s"]);
    std::thread::sleep(std::time::Duration::from_millis(1_100));

    let first = deployment.run(&["schedule", "run", "--once"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stdout.contains(&format!("recorded authn_token_expired for key {key_id}")), "{}", first.stdout);

    let second = deployment.json(&["schedule", "run", "--once"]);
    assert_eq!(second["recorded"], Value::Array(Vec::new()));
    assert!(second["from"].is_string());
    let audit = deployment.audit_rows("authn_token_expired");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["actor"], "system");

    let without_once = deployment.run(&["schedule", "run"]);
    assert_eq!(without_once.code, 2);
}

#[test]
fn schedule_run_once_requests_cadence_rotation() {
    let deployment = Deployment::new();
    let policies = deployment.dir.path().join("policies.toml");
    std::fs::write(&policies, "[policies.ci]\nmax_lifetime = \"30d\"\nrotate_every = \"1s\"\n").unwrap();
    let applied = deployment.run(&["policies", "apply", policies.to_str().unwrap()]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    let key_id = deployment.create(&["--policy", "ci"]);
    let plain = deployment.create(&[]);
    let expires_at = deployment.json(&["keys", "show", &key_id])["expires_at"].clone();
    std::thread::sleep(std::time::Duration::from_millis(1_100));

    let first = deployment.run(&["schedule", "run", "--once"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let line = format!(
        "requested rotation of key {key_id} by {} (rotation cadence of policy ci)",
        expires_at.as_str().unwrap()
    );
    assert!(first.stdout.contains(&line), "{}", first.stdout);
    assert!(first.stdout.contains("requested 1 rotations by policy cadence"), "{}", first.stdout);

    let second = deployment.json(&["schedule", "run", "--once"]);
    assert_eq!(second["rotations_requested"], Value::Array(Vec::new()));
    let shown = deployment.json(&["keys", "show", &key_id]);
    assert_eq!(shown["state"], "rotation_requested");
    assert_eq!(shown["rotation_deadline"], expires_at);
    assert_eq!(shown["expires_at"], expires_at);
    assert_eq!(deployment.json(&["keys", "show", &plain])["state"], "active");
    let audit = deployment.audit_rows("authn_token_rotation_requested");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["actor"], "system");
    assert_eq!(audit[0]["reason"], "rotation cadence of policy ci");
}
