//! Checks that `--log-format json` writes one JSON object per log line, for log shippers.

use std::process::Command;

#[test]
fn json_log_format_writes_objects() {
    let dir = tempfile::tempdir().unwrap();
    let keyturn = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyturn"));
        command
            .current_dir(dir.path())
            .env_remove("KEYTURN_DATABASE_URL")
            .env_remove("KEYTURN_PEPPER")
            .env_remove("KEYTURN_PEPPER_FILE")
            .env_remove("RUST_LOG");
        command
    };
    assert!(keyturn().arg("init").output().unwrap().status.success());

    let output = keyturn().args(["--log-format", "json", "--log-level", "info", "keys", "list"]).output().unwrap();

    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "no log line at info level");
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(value["target"].as_str().unwrap().starts_with("keyturn"), "{line}");
    }
}
