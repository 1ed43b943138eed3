"""Selecting keys by named policy from Flask: `flask keys revoke --policy` and `flask keys
request-rotation --policy`, their dry runs, and the errors for an unknown policy or a policy
given together with another selector. The policy is stored with the `keyturn` CLI on the same
database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import example, run_cli
from flask.testing import FlaskCliRunner

from keyturn import InvalidInputError, IssuedKey
from keyturn.testing import KeyturnTestEnv

CI_POLICY = '[policies.ci]\nmax_lifetime = "30d"\ngrace = "2d"\n'


@pytest.fixture
def cli(keyturn_env: KeyturnTestEnv) -> FlaskCliRunner:
    app = example.create_app({**keyturn_env.config, "TESTING": True})
    return app.test_cli_runner()


def invoke_json(cli: FlaskCliRunner, *args: str) -> Any:
    result = cli.invoke(args=["keys", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def ci_keys(keyturn_env: KeyturnTestEnv, keyturn_bin: Path, tmp_path: Path) -> list[IssuedKey]:
    """Stores the policy ci and creates two keys under it and one under the default policy."""
    policies = tmp_path / "policies.toml"
    policies.write_text(CI_POLICY)
    run_cli(keyturn_bin, ["policies", "apply", str(policies)], keyturn_env.environ)
    return [
        keyturn_env.create_key("bot 1", policy="ci"),
        keyturn_env.create_key("bot 2", policy="ci"),
        keyturn_env.create_key("web"),
    ]


def test_revoke_by_policy(
    cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv, keyturn_bin: Path, tmp_path: Path
) -> None:
    first, second, other = ci_keys(keyturn_env, keyturn_bin, tmp_path)

    dry = invoke_json(cli, "revoke", "--policy", "ci", "--dry-run")
    dry_text = cli.invoke(args=["keys", "revoke", "--policy", "ci", "--dry-run"])
    assert sorted(key["key_id"] for key in dry["keys"]) == sorted(
        [first.key.key_id, second.key.key_id]
    )
    assert "dry run: 2 key(s) selected, 2 would be revoked" in dry_text.stdout
    assert keyturn_env.get_key(first).state == "active"

    report = invoke_json(cli, "revoke", "--policy", "ci", "--reason", "runner leak")

    assert (report["revoked"], report["already_revoked"]) == (2, 0)
    assert keyturn_env.get_key(second).to_dict()["revocation_reason"] == "runner leak"
    assert keyturn_env.get_key(other).state == "active"
    native = keyturn_env.keyring.revoke_policy("ci", dry_run=True)
    assert [key["state"] for key in native["keys"]] == ["revoked", "revoked"]


def test_request_rotation_by_policy(
    cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv, keyturn_bin: Path, tmp_path: Path
) -> None:
    first, second, other = ci_keys(keyturn_env, keyturn_bin, tmp_path)

    dry = invoke_json(cli, "request-rotation", "--policy", "ci", "--by", "7d", "--dry-run")
    done = invoke_json(cli, "request-rotation", "--policy", "ci", "--by", "7d")

    selected = sorted([first.key.key_id, second.key.key_id])
    assert sorted(entry["key_id"] for entry in dry) == selected
    assert sorted(entry["key_id"] for entry in done) == selected
    assert {entry["status"] for entry in done} == {"requested"}
    assert keyturn_env.get_key(first).state == "rotation_requested"
    assert keyturn_env.get_key(other).state == "active"


def test_policy_selection_errors(cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv) -> None:
    issued = keyturn_env.create_key("web", owner="team-a")
    cases = [
        (["revoke", "--policy", "missing"], 'policy "missing" does not exist'),
        (["revoke", "--policy", "missing", "--dry-run"], 'policy "missing" does not exist'),
        (
            ["request-rotation", "--policy", "missing", "--by", "1d"],
            'policy "missing" does not exist',
        ),
        (["revoke", "--policy", "default", "--owner", "team-a"], "exactly one of"),
        (["revoke", issued.key.key_id, "--policy", "default"], "exactly one of"),
        (
            ["request-rotation", "--policy", "default", "--owner", "team-a", "--by", "1d"],
            "exactly one of",
        ),
        (
            ["request-rotation", issued.key.key_id, "--policy", "default", "--by", "1d"],
            "exactly one of",
        ),
    ]
    for args, message in cases:
        result = cli.invoke(args=["keys", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert keyturn_env.get_key(issued).state == "active"
    with pytest.raises(InvalidInputError):
        keyturn_env.keyring.revoke_policy("Not A Name")
    with pytest.raises(InvalidInputError):
        keyturn_env.keyring.request_rotation(policy="missing", by="1d")
    with pytest.raises(InvalidInputError):
        keyturn_env.keyring.request_rotation(policy="default", owner="team-a", by="1d")
