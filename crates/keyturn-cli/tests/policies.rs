//! The `policies` commands and the policy options of `keys create` and `keys rotate`, run as the
//! real binary on a SQLite database in a temporary directory.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

struct Deployment {
    dir: TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Deployment {
    fn new() -> Self {
        let deployment = Deployment { dir: tempfile::tempdir().unwrap() };
        let init = deployment.run(&["init"]);
        assert_eq!(init.code, 0, "{}", init.stderr);
        deployment
    }

    fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_keyturn"))
            .args(args)
            .current_dir(self.dir.path())
            .env("KEYTURN_DATABASE_URL", self.dir.path().join("keyturn.db"))
            .env("USER", "tester")
            .env_remove("KEYTURN_PEPPER")
            .env_remove("KEYTURN_PEPPER_FILE")
            .env_remove("KEYTURN_TOKEN_PREFIX")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let run = Run {
            code: output.status.code().unwrap(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        run
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let run = self.run(&args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        serde_json::from_str(&run.stdout).unwrap()
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, text).unwrap();
        path
    }

    fn apply(&self, text: &str, options: &[&str]) -> Run {
        let path = self.file("policies.toml", text);
        let mut args = vec!["policies", "apply", path.to_str().unwrap()];
        args.extend_from_slice(options);
        self.run(&args)
    }

    fn audit_count(&self, event: &str) -> usize {
        let rows = self.json(&["audit", "list"]);
        rows.as_array().unwrap().iter().filter(|row| row["event"] == event).count()
    }
}

const CI: &str = "[policies.ci]\nmax_lifetime = \"30d\"\ngrace = \"2d\"\nrotate_every = \"20d\"\n";

#[test]
fn apply_dry_run_then_apply() {
    let deployment = Deployment::new();

    let dry = deployment.apply(CI, &["--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.contains("policy ci: added"), "{}", dry.stdout);
    assert!(dry.stdout.contains("nothing was written"), "{}", dry.stdout);
    assert_eq!(deployment.json(&["policies", "list"]).as_array().unwrap().len(), 1, "only the built-in default");

    let applied = deployment.apply(CI, &[]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    let shown = deployment.json(&["policies", "show", "ci"]);
    assert_eq!(shown["max_lifetime"], "30d");
    assert_eq!(shown["grace"], "2d");
    assert_eq!(shown["warn_before"], "14d", "a missing field takes the default policy's value");
    assert_eq!(deployment.audit_count("authz_policy_changed"), 1);

    let again = deployment.apply(CI, &[]);
    assert!(again.stdout.contains("policy ci: unchanged"), "{}", again.stdout);
    assert_eq!(deployment.audit_count("authz_policy_changed"), 1);
}

#[test]
fn apply_to_existing_counts_and_updates_keys() {
    let deployment = Deployment::new();
    deployment.apply(CI, &[]);
    let key = deployment.json(&["keys", "create", "--name", "bot", "--policy", "ci"]);
    assert_eq!(key["policy"], "ci");
    let key_id = key["key_id"].as_str().unwrap();

    let shorter = CI.replace("30d", "25d");
    let dry = deployment.apply(&shorter, &["--dry-run", "--apply-to-existing"]);
    assert!(dry.stdout.contains("  max_lifetime: 30d -> 25d"), "{}", dry.stdout);
    assert!(dry.stdout.contains("keys that would get new instants: 1"), "{}", dry.stdout);
    assert_eq!(deployment.json(&["keys", "show", key_id])["expires_at"], key["expires_at"]);

    let applied = deployment.apply(&shorter, &["--apply-to-existing"]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert!(applied.stdout.contains("keys that got new instants: 1"), "{}", applied.stdout);
    let updated = deployment.json(&["keys", "show", key_id]);
    assert_ne!(updated["expires_at"], key["expires_at"]);
}

#[test]
fn apply_rejects_invalid_files() {
    let deployment = Deployment::new();
    let cases = [
        ("[policies.ci\nmax_lifetime = 1", "invalid policy file"),
        ("[policies.ci]\nlifetime = \"30d\"\n", "unknown field"),
        ("[policies.Bad]\nmax_lifetime = \"30d\"\n", "invalid policy name"),
        ("[policies.ci]\nmax_lifetime = \"0s\"\n", "max_lifetime"),
        ("[policies.ci]\ngrace = \"91d\"\n", "maximum grace period"),
        ("[policies.ci]\nmax_lifetime = \"30d\"\nrotate_every = \"30d\"\n", "rotate_every"),
        ("[policies.ci]\nmax_lifetime = \"soon\"\n", "invalid duration"),
    ];
    for (text, expected) in cases {
        let run = deployment.apply(text, &[]);
        assert_eq!(run.code, 2, "{text}: {}", run.stdout);
        assert!(run.stderr.contains(expected), "{text}: {}", run.stderr);
    }
    assert_eq!(deployment.audit_count("authz_policy_changed"), 0);
}

#[test]
fn apply_error_hides_token_values() {
    let deployment = Deployment::new();
    let token = "kt_live_abcdefABCDEF_0123456789abcdefghijklmnopqrstuvwxyzAB";
    let run = deployment.apply(&format!("[policies.ci]\nself_rotation = \"{token}\"\n"), &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);
    assert!(!run.stderr.contains("abcdefABCDEF"), "{}", run.stderr);
}

#[test]
fn remove_referenced_policy_refused() {
    let deployment = Deployment::new();
    deployment.apply(CI, &[]);
    deployment.json(&["keys", "create", "--name", "bot", "--policy", "ci"]);

    for args in [&["--dry-run"][..], &[]] {
        let run = deployment.apply("", args);
        assert_eq!(run.code, 2, "{args:?}");
        assert!(run.stderr.contains("policy ci is still referenced by 1 key"), "{args:?}: {}", run.stderr);
    }
    assert_eq!(deployment.json(&["policies", "show", "ci"])["max_lifetime"], "30d");
}

#[test]
fn create_with_unknown_policy_fails() {
    let deployment = Deployment::new();
    let run = deployment.run(&["keys", "create", "--name", "bot", "--policy", "missing"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("policy \"missing\" does not exist"), "{}", run.stderr);
    let run = deployment.run(&["policies", "show", "missing"]);
    assert_eq!(run.code, 2);
}

#[test]
fn rotate_sets_overlap_after_first_use() {
    let deployment = Deployment::new();
    let key = deployment.json(&["keys", "create", "--name", "bot"]);
    let key_id = key["key_id"].as_str().unwrap();

    let run = deployment.run(&["keys", "rotate", key_id, "--overlap", "1h", "--overlap-after-first-use", "2h"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("overlap_after_first_use"), "{}", run.stderr);

    let rotated = deployment.json(&["keys", "rotate", key_id, "--overlap", "7d", "--overlap-after-first-use", "1h"]);
    assert_eq!(rotated["predecessor"]["overlap_after_first_use"], "1h");
}

#[test]
fn revoke_by_policy_dry_run_then_revoke() {
    let deployment = Deployment::new();
    deployment.apply(CI, &[]);
    let first = deployment.json(&["keys", "create", "--name", "bot", "--policy", "ci"]);
    let second = deployment.json(&["keys", "create", "--name", "bot 2", "--policy", "ci"]);
    let other = deployment.json(&["keys", "create", "--name", "web"]);
    let id = |key: &Value| key["key_id"].as_str().unwrap().to_owned();
    let audit_before = deployment.json(&["audit", "list"]);

    let dry = deployment.run(&["keys", "revoke", "--policy", "ci", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.contains("dry run: 2 key(s) selected, 2 would be revoked"), "{}", dry.stdout);
    assert!(dry.stdout.contains(&id(&first)) && dry.stdout.contains(&id(&second)), "{}", dry.stdout);
    assert!(!dry.stdout.contains(&id(&other)), "{}", dry.stdout);
    assert_eq!(deployment.json(&["audit", "list"]), audit_before, "a dry run writes nothing");
    assert_eq!(deployment.json(&["keys", "show", &id(&first)])["state"], "active");

    let report = deployment.json(&["keys", "revoke", "--policy", "ci", "--reason", "ci runner leaked"]);
    assert_eq!((report["revoked"].as_u64(), report["already_revoked"].as_u64()), (Some(2), Some(0)));
    for key in [&first, &second] {
        let shown = deployment.json(&["keys", "show", &id(key)]);
        assert_eq!(
            (shown["state"].as_str(), shown["revocation_reason"].as_str()),
            (Some("revoked"), Some("ci runner leaked"))
        );
    }
    assert_eq!(deployment.json(&["keys", "show", &id(&other)])["state"], "active");
    let rows = deployment.json(&["audit", "list", "--key", &id(&first)]);
    let revocation = rows.as_array().unwrap().iter().find(|row| row["event"] == "authn_token_revoked").unwrap();
    assert_eq!(revocation["details"]["bulk"]["policy"], "ci", "{revocation}");
}

#[test]
fn select_by_unknown_or_mixed_policy_fails() {
    let deployment = Deployment::new();
    let key = deployment.json(&["keys", "create", "--name", "web"]);
    let audit_before = deployment.json(&["audit", "list"]);
    for args in [
        vec!["keys", "revoke", "--policy", "missing", "--dry-run"],
        vec!["keys", "revoke", "--policy", "missing"],
        vec!["keys", "request-rotation", "--policy", "missing", "--by", "14d"],
    ] {
        let run = deployment.run(&args);
        assert_eq!(run.code, 2, "{args:?}");
        assert!(run.stderr.contains("policy \"missing\" does not exist"), "{args:?}: {}", run.stderr);
    }
    let invalid = deployment.run(&["keys", "revoke", "--policy", "Not Valid"]);
    assert_eq!(invalid.code, 2);
    assert!(invalid.stderr.contains("policy name"), "{}", invalid.stderr);
    for args in [
        vec!["keys", "revoke", "--policy", "default", "--owner", "billing"],
        vec!["keys", "request-rotation", "--policy", "default", "--by", "14d", key["key_id"].as_str().unwrap()],
    ] {
        let run = deployment.run(&args);
        assert_eq!(run.code, 2, "{args:?}");
        assert!(run.stderr.contains("cannot be used with"), "{args:?}: {}", run.stderr);
    }
    assert_eq!(deployment.json(&["audit", "list"]), audit_before);
    // The built-in default policy exists without being stored.
    let dry = deployment.json(&["keys", "revoke", "--policy", "default", "--dry-run"]);
    let listed = dry["keys"].as_array().unwrap();
    assert!(listed.iter().any(|listed| listed["key_id"] == key["key_id"]), "{dry}");
    assert!(listed.iter().all(|listed| listed["state"] != "revoked"), "{dry}");
}

#[test]
fn request_rotation_by_policy() {
    let deployment = Deployment::new();
    deployment.apply(CI, &[]);
    let bot = deployment.json(&["keys", "create", "--name", "bot", "--policy", "ci"]);
    deployment.json(&["keys", "create", "--name", "web"]);
    let bot_id = bot["key_id"].as_str().unwrap();

    let dry = deployment.json(&["keys", "request-rotation", "--policy", "ci", "--by", "7d", "--dry-run"]);
    assert_eq!(dry.as_array().unwrap().len(), 1);
    assert_eq!((dry[0]["key_id"].as_str(), dry[0]["status"].as_str()), (Some(bot_id), Some("requested")));
    assert_eq!(deployment.audit_count("authn_token_rotation_requested"), 0);

    let done = deployment.json(&["keys", "request-rotation", "--policy", "ci", "--by", "7d"]);
    assert_eq!((done[0]["key_id"].as_str(), done[0]["status"].as_str()), (Some(bot_id), Some("requested")));
    assert_eq!(deployment.audit_count("authn_token_rotation_requested"), 1);
}
