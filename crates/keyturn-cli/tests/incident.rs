//! End-to-end tests of the incident and pepper commands of the `keyturn` binary: `keys revoke
//! --owner`, `keys report-leak` and `pepper status|add|retire`, each against a real SQLite file
//! and pepper file in a temporary directory. Every output of every run is kept, so each test can
//! check that no token and no pepper reached it.

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

const USER: &str = "tester";

struct Deployment {
    dir: TempDir,
    database: PathBuf,
    /// Extra environment variables of every run.
    env: Vec<(String, String)>,
    outputs: RefCell<Vec<String>>,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {} stdout {:?} stderr {:?}", self.code, self.stdout, self.stderr)
    }
}

impl Deployment {
    fn new() -> Self {
        Self::with_env(Vec::new())
    }

    fn with_env(env: Vec<(String, String)>) -> Self {
        Self::with_env_in(|_| env)
    }

    /// Creates a deployment whose extra environment `env` builds from its directory.
    fn with_env_in(env: impl FnOnce(&std::path::Path) -> Vec<(String, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("keyturn.db");
        let env = env(dir.path());
        let deployment = Deployment { dir, database, env, outputs: RefCell::default() };
        let init = deployment.run(&["init"], "");
        assert_eq!(init.code, 0, "{init:?}");
        deployment
    }

    fn pepper_file(&self) -> PathBuf {
        self.dir.path().join("keyturn.pepper")
    }

    fn run(&self, args: &[&str], stdin: &str) -> Run {
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
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Err(error) = pipe.write_all(stdin.as_bytes()) {
            assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {error}");
        }
        drop(pipe);
        let Output { status, stdout, stderr } = child.wait_with_output().unwrap();
        let run = Run {
            code: status.code().unwrap(),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        };
        assert!(!run.stderr.contains("panicked"), "{run:?}");
        self.outputs.borrow_mut().push(format!("{}\n{}", run.stdout, run.stderr));
        run
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let run = self.run(&args, "");
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        serde_json::from_str(&run.stdout).unwrap()
    }

    /// Creates a key and returns its key id and token. The token output is not kept.
    fn create(&self, owner: &str) -> (String, String) {
        let run = self.run(&["keys", "create", "--name", "billing sync", "--owner", owner, "--json"], "");
        assert_eq!(run.code, 0, "{run:?}");
        self.outputs.borrow_mut().pop();
        let key: Value = serde_json::from_str(&run.stdout).unwrap();
        (key["key_id"].as_str().unwrap().to_owned(), key["token"].as_str().unwrap().to_owned())
    }

    fn state(&self, key_id: &str) -> Value {
        self.json(&["keys", "show", key_id])
    }

    fn snapshot(&self) -> (String, String) {
        (self.json(&["keys", "list"]).to_string(), self.json(&["audit", "list"]).to_string())
    }

    /// Asserts that no kept output contains any of `secrets`.
    fn assert_never_printed(&self, secrets: &[&str]) {
        for output in self.outputs.borrow().iter() {
            for secret in secrets {
                assert!(!output.contains(secret), "a secret appeared in an output: {output}");
            }
        }
    }

    fn pepper_values(&self) -> Vec<String> {
        let text = fs::read_to_string(self.pepper_file()).unwrap();
        pepper_values(&text)
    }
}

fn pepper_values(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| line.split_once(':').unwrap().1.to_owned())
        .collect()
}

fn pepper_ids(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| line.split_once(':').unwrap().0.to_owned())
        .collect()
}

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn assert_error(run: &Run, needle: &str) {
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.starts_with("error: ") && run.stderr.contains(needle), "expected {needle:?}: {run:?}");
}

/// Changes the first secret character of a token and fixes its checksum, so it parses but its
/// secret does not match.
fn token_with_wrong_secret(token: &str) -> String {
    const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
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

#[test]
fn revoke_owner_dry_run_then_revoke() {
    let deployment = Deployment::new();
    let (first, first_token) = deployment.create("billing");
    let (second, _) = deployment.create("billing");
    let (other, _) = deployment.create("search");
    let earlier = deployment.run(&["keys", "revoke", &second, "--reason", "rotated out"], "");
    assert_eq!(earlier.code, 0, "{earlier:?}");
    let before = deployment.snapshot();

    let dry = deployment.run(&["keys", "revoke", "--owner", "billing", "--dry-run"], "");
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("dry run: 2 key(s) selected, 1 would be revoked"), "{dry:?}");
    assert!(dry.stdout.contains(&first) && dry.stdout.contains(&second) && !dry.stdout.contains(&other));
    let dry_json = deployment.json(&["keys", "revoke", "--owner", "billing", "--dry-run"]);
    assert_eq!(dry_json["dry_run"], true);
    assert_eq!(dry_json["keys"].as_array().unwrap().len(), 2);
    assert_eq!(deployment.snapshot(), before, "a dry run writes nothing");

    let report = deployment.json(&["keys", "revoke", "--owner", "billing", "--reason", "incident 12"]);

    assert_eq!((report["revoked"].as_u64(), report["already_revoked"].as_u64()), (Some(1), Some(1)));
    let revoked = deployment.state(&first);
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["revocation_reason"], "incident 12");
    assert_eq!(deployment.state(&second)["revocation_reason"], "rotated out");
    assert_eq!(deployment.state(&other)["state"], "active");
    let verify = deployment.run(&["keys", "verify", "--json"], &format!("{first_token}\n"));
    assert_eq!(verify.code, 1, "{verify:?}");
    let audit = deployment.json(&["audit", "list", "--key", &first]);
    let revocation = audit.as_array().unwrap().iter().find(|row| row["event"] == "authn_token_revoked").unwrap();
    assert_eq!(revocation["actor"], format!("cli:{USER}"));

    let again = deployment.json(&["keys", "revoke", "--owner", "billing"]);
    assert_eq!((again["revoked"].as_u64(), again["already_revoked"].as_u64()), (Some(0), Some(2)));
    let single = deployment.run(&["keys", "revoke", &other, "--reason", "done"], "");
    assert_eq!(single.code, 0, "{single:?}");
    assert!(single.stdout.starts_with(&format!("revoked key {other} at ")), "{single:?}");
    assert_eq!(deployment.run(&["keys", "revoke"], "").code, 2);
    assert_eq!(deployment.run(&["keys", "revoke", &other, "--owner", "billing"], "").code, 2);
    let blank = deployment.run(&["keys", "revoke", "--owner", " "], "");
    assert_error(&blank, "invalid owner");
    deployment.assert_never_printed(&[&first_token]);
}

#[test]
fn report_leak_revokes_and_never_echoes_tokens() {
    let deployment = Deployment::new();
    let (leaked, leaked_token) = deployment.create("billing");
    let (revoked, revoked_token) = deployment.create("billing");
    let (kept, kept_token) = deployment.create("billing");
    assert_eq!(deployment.run(&["keys", "revoke", &revoked], "").code, 0);
    let forged = token_with_wrong_secret(&kept_token);
    let garbage = "kt_live_thisisnotatokenatall_0123456789";
    let stdin = format!("\n  {leaked_token}  \n\n{revoked_token}\n{forged}\n{garbage}\n");

    let run = deployment.run(
        &["keys", "report-leak", "--source", "secret scanner", "--reason", "pasted in chat", "--log-level", "debug"],
        &stdin,
    );

    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("line 2: key {leaked}: revoked now")), "{run:?}");
    assert!(run.stdout.contains(&format!("line 4: key {revoked}: already revoked")), "{run:?}");
    assert!(run.stdout.contains(&format!("line 5: key {kept}: not a keyturn key of this store")), "{run:?}");
    assert!(run.stdout.contains("line 6: not a keyturn key of this store: the line is not a keyturn token"), "{run:?}");
    let state = deployment.state(&leaked);
    assert_eq!(state["state"], "revoked");
    assert_eq!(state["revocation_reason"], "leak reported: pasted in chat");
    assert_eq!(deployment.state(&kept)["state"], "active");

    let audit = deployment.json(&["audit", "list"]);
    let leaks: Vec<&Value> =
        audit.as_array().unwrap().iter().filter(|row| row["event"] == "authn_token_leak_reported").collect();
    assert_eq!(leaks.len(), 2, "{audit}");
    assert_eq!(leaks[0]["key_id"], leaked.as_str());
    assert_eq!(leaks[0]["details"]["source"], "secret scanner");
    assert_eq!(leaks[0]["details"]["line"], 2);
    assert_eq!(leaks[1]["key_id"], revoked.as_str());

    let json = deployment.run(&["keys", "report-leak", "--json"], &format!("{leaked_token}\n"));
    let results: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(results[0]["status"], "already_revoked");
    assert_eq!(results[0]["line"], 1);
    let database = fs::read(&deployment.database).unwrap();
    for token in [&leaked_token, &revoked_token, &forged, garbage] {
        let found = database.windows(token.len()).any(|window| window == token.as_bytes());
        assert!(!found, "the database file contains a reported token");
    }
    deployment.assert_never_printed(&[&leaked_token, &revoked_token, &kept_token, &forged, garbage]);
}

#[test]
fn report_leak_rejects_bad_input() {
    let deployment = Deployment::new();
    let (_, token) = deployment.create("billing");
    let before = deployment.snapshot();

    let many = format!("{token}\n").repeat(1_001);
    assert_error(&deployment.run(&["keys", "report-leak"], &many), "at most 1000 tokens");
    let long = format!("{token}\n{}\n", "x".repeat(600));
    let run = deployment.run(&["keys", "report-leak"], &long);
    assert_error(&run, "line 2 is 600 bytes long");
    assert_error(&deployment.run(&["keys", "report-leak"], "\n  \n"), "stdin contains no token");
    let long_source = "s".repeat(200);
    assert_error(&deployment.run(&["keys", "report-leak", "--source", &long_source], &token), "invalid source");

    assert_eq!(deployment.snapshot(), before, "a rejected report writes nothing");
    deployment.assert_never_printed(&[&token, &"x".repeat(600)]);
}

#[test]
fn pepper_add_rewrites_file_atomically() {
    let deployment = Deployment::new();
    let path = deployment.pepper_file();
    let inode = fs::metadata(&path).unwrap().ino();
    let (old_key, _) = deployment.create("billing");

    let status = deployment.json(&["pepper", "status"]);
    assert_eq!(status["current"], "1");
    assert_eq!(status["live_keys"], 2, "the bootstrap admin key and one key: {status}");

    let added = deployment.run(&["pepper", "add", "--make-current"], "");

    assert_eq!(added.code, 0, "{added:?}");
    assert!(added.stdout.contains("added pepper 2"), "{added:?}");
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(pepper_ids(&text), vec!["2", "1"]);
    assert!(text.starts_with("# keyturn pepper ring"), "comments are kept");
    assert_eq!(mode(&path), 0o600);
    assert_ne!(fs::metadata(&path).unwrap().ino(), inode, "the file is replaced, not edited in place");
    let files: Vec<String> =
        fs::read_dir(deployment.dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!files.iter().any(|name| name.ends_with(".tmp")), "{files:?}");

    let (new_key, _) = deployment.create("billing");
    let status = deployment.json(&["pepper", "status"]);
    assert_eq!(status["current"], "2");
    assert_eq!(status["live_keys_under_current"], 1);
    assert_eq!(status["live_keys"], 3);
    let text_status = deployment.run(&["pepper", "status"], "");
    assert!(text_status.stdout.contains("rehash progress: 1 of 3"), "{text_status:?}");
    assert_ne!(old_key, new_key);

    let last = deployment.run(&["pepper", "add", "--id", "2027a"], "");
    assert_eq!(last.code, 0, "{last:?}");
    assert_eq!(pepper_ids(&fs::read_to_string(&path).unwrap()), vec!["2", "1", "2027a"]);
    let before = fs::read_to_string(&path).unwrap();
    assert_error(&deployment.run(&["pepper", "add", "--id", "1"], ""), "already in the ring");
    assert_error(&deployment.run(&["pepper", "add", "--print"], ""), "--print is for KEYTURN_PEPPER");
    assert_error(&deployment.run(&["pepper", "add", "--id", "bad id"], ""), "--id");
    assert_eq!(fs::read_to_string(&path).unwrap(), before, "a refused add changes nothing");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    assert_error(&deployment.run(&["pepper", "add"], ""), "chmod 600");
    assert_eq!(fs::read_to_string(&path).unwrap(), before);

    let values = deployment.pepper_values();
    deployment.assert_never_printed(&values.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn pepper_add_with_variable_prints_only_new_entry() {
    let probe = Deployment::new();
    let existing = fs::read_to_string(probe.pepper_file()).unwrap();
    let entry = existing.lines().find(|line| line.starts_with("1:")).unwrap().to_owned();
    let deployment = Deployment::with_env(vec![("KEYTURN_PEPPER".into(), entry.clone())]);
    let secret = entry.split_once(':').unwrap().1.to_owned();

    let refused = deployment.run(&["pepper", "add", "--make-current"], "");
    assert_error(&refused, "KEYTURN_PEPPER is set, so keyturn cannot edit the ring");
    assert!(refused.stdout.is_empty(), "{refused:?}");

    let printed = deployment.run(&["pepper", "add", "--make-current", "--print"], "");

    assert_eq!(printed.code, 0, "{printed:?}");
    let lines: Vec<&str> = printed.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{printed:?}");
    assert!(lines[0].starts_with("2:") && lines[0].len() > 40, "{printed:?}");
    assert!(printed.stderr.contains("put the new entry first"), "{printed:?}");
    assert!(!deployment.pepper_file().exists(), "no pepper file is written");
    let outputs = deployment.outputs.borrow().clone();
    assert!(outputs.iter().all(|output| !output.contains(&secret)), "the existing pepper was printed");
}

#[test]
fn pepper_retire_refuses_then_forces() {
    let deployment = Deployment::new();
    let path = deployment.pepper_file();
    let (old_key, old_token) = deployment.create("billing");
    assert_eq!(deployment.run(&["pepper", "add", "--make-current"], "").code, 0);
    let (new_key, _) = deployment.create("billing");
    let before = (deployment.snapshot(), fs::read_to_string(&path).unwrap());

    assert_error(&deployment.run(&["pepper", "retire", "2"], ""), "is the current pepper");
    assert_error(&deployment.run(&["pepper", "retire", "9"], ""), "not in the ring");
    let refused = deployment.run(&["pepper", "retire", "1"], "");
    assert_error(&refused, "still hashes 2 live key(s)");
    assert!(refused.stderr.contains(&old_key), "{refused:?}");
    let dry = deployment.run(&["pepper", "retire", "1", "--dry-run"], "");
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("hashes 2 live key(s)") && dry.stdout.contains(&old_key), "{dry:?}");
    assert!(!dry.stdout.contains(&new_key), "{dry:?}");
    assert_eq!((deployment.snapshot(), fs::read_to_string(&path).unwrap()), before, "refusals write nothing");

    let forced = deployment.run(&["pepper", "retire", "1", "--force"], "");

    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(forced.stdout.contains("revoked 2 live key(s)"), "{forced:?}");
    assert_eq!(pepper_ids(&fs::read_to_string(&path).unwrap()), vec!["2"]);
    assert_eq!(mode(&path), 0o600);
    let old = deployment.state(&old_key);
    assert_eq!(old["state"], "revoked");
    assert_eq!(old["revocation_reason"], "pepper retired");
    assert_eq!(deployment.state(&new_key)["state"], "active");
    let audit = deployment.json(&["audit", "list"]);
    let retired: Vec<&Value> =
        audit.as_array().unwrap().iter().filter(|row| row["event"] == "authn_pepper_retired").collect();
    assert_eq!(retired.len(), 1, "{audit}");
    assert_eq!(retired[0]["details"]["pepper_id"], "1");
    assert_eq!(retired[0]["details"]["revoked_keys"], 2);
    let verify = deployment.run(&["keys", "verify"], &format!("{old_token}\n"));
    assert_eq!(verify.code, 1, "{verify:?}");
    let status = deployment.json(&["pepper", "status"]);
    assert_eq!(status["live_keys"], status["live_keys_under_current"]);

    let values = deployment.pepper_values();
    deployment.assert_never_printed(&values.iter().map(String::as_str).collect::<Vec<_>>());
    deployment.assert_never_printed(&[&old_token]);
}

/// A PostgreSQL database created for one test and dropped at its end.
struct PostgresDatabase {
    server: String,
    name: String,
    url: String,
}

impl PostgresDatabase {
    /// Creates a database, or returns `None` when no test server is configured outside CI.
    fn create() -> Option<Self> {
        let Ok(server) = std::env::var("KEYTURN_TEST_POSTGRES_URL") else {
            assert!(std::env::var_os("CI").is_none(), "CI must set KEYTURN_TEST_POSTGRES_URL");
            eprintln!("skipping: KEYTURN_TEST_POSTGRES_URL is not set; run `scripts/with-postgres cargo test`");
            return None;
        };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let name = format!("kt_incident_{}_{nanos}", std::process::id());
        let (base, _) = server.rsplit_once('/').expect("the server URL names a database");
        let url = format!("{base}/{name}");
        let database = PostgresDatabase { server, name, url };
        database.execute(&format!("CREATE DATABASE \"{}\"", database.name));
        Some(database)
    }

    fn execute(&self, sql: &str) {
        use sqlx::{Connection, PgConnection};

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut admin = PgConnection::connect(&self.server).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut admin).await.unwrap();
            admin.close().await.unwrap();
        });
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        self.execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
    }
}

#[test]
fn incident_commands_on_postgres() {
    let Some(database) = PostgresDatabase::create() else { return };
    let deployment = Deployment::with_env_in(|dir| {
        vec![
            ("KEYTURN_DATABASE_URL".to_owned(), database.url.clone()),
            ("KEYTURN_PEPPER_FILE".to_owned(), dir.join("keyturn.pepper").display().to_string()),
        ]
    });
    let (first, first_token) = deployment.create("billing");
    let (second, second_token) = deployment.create("billing");
    let before = deployment.snapshot();

    let dry = deployment.json(&["keys", "revoke", "--owner", "billing", "--dry-run"]);
    assert_eq!(dry["keys"].as_array().unwrap().len(), 2);
    assert_eq!(deployment.snapshot(), before, "a dry run writes nothing");
    let leak = deployment.run(&["keys", "report-leak", "--source", "scanner"], &format!("{first_token}\n"));
    assert_eq!(leak.code, 0, "{leak:?}");
    assert!(leak.stdout.contains(&format!("line 1: key {first}: revoked now")), "{leak:?}");
    let report = deployment.json(&["keys", "revoke", "--owner", "billing", "--reason", "incident 3"]);
    assert_eq!((report["revoked"].as_u64(), report["already_revoked"].as_u64()), (Some(1), Some(1)));
    assert_eq!(deployment.state(&second)["revocation_reason"], "incident 3");

    assert_eq!(deployment.run(&["pepper", "add", "--make-current"], "").code, 0);
    let (third, _) = deployment.create("search");
    let status = deployment.json(&["pepper", "status"]);
    assert_eq!((status["live_keys"].as_u64(), status["live_keys_under_current"].as_u64()), (Some(2), Some(1)));
    let forced = deployment.run(&["pepper", "retire", "1", "--force"], "");
    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(forced.stdout.contains("revoked 1 live key(s)"), "the bootstrap admin key: {forced:?}");
    assert_eq!(pepper_ids(&fs::read_to_string(deployment.pepper_file()).unwrap()), vec!["2"]);
    assert_eq!(deployment.state(&third)["state"], "active");

    let unknown = deployment.run(&["keys", "revoke", "--policy", "missing", "--dry-run"], "");
    assert_error(&unknown, "policy \"missing\" does not exist");
    let by_policy = deployment.json(&["keys", "revoke", "--policy", "default", "--dry-run"]);
    let listed: Vec<&str> =
        by_policy["keys"].as_array().unwrap().iter().map(|key| key["key_id"].as_str().unwrap()).collect();
    assert!(listed.contains(&third.as_str()) && listed.contains(&first.as_str()), "{by_policy}");
    let requested = deployment.json(&["keys", "request-rotation", "--policy", "default", "--by", "7d"]);
    let third_entry = requested.as_array().unwrap().iter().find(|entry| entry["key_id"] == third.as_str()).unwrap();
    assert_eq!(third_entry["status"], "requested", "{requested}");
    let revoked = deployment.json(&["keys", "revoke", "--policy", "default", "--reason", "incident 4"]);
    assert_eq!(revoked["revoked"].as_u64(), Some(1), "{revoked}");
    assert_eq!(deployment.state(&third)["revocation_reason"], "incident 4");

    let values = deployment.pepper_values();
    let mut secrets: Vec<&str> = values.iter().map(String::as_str).collect();
    secrets.extend([first_token.as_str(), second_token.as_str()]);
    deployment.assert_never_printed(&secrets);
}
