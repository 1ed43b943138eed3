"""Checks that no issued token, and no secret part of one, appears in any log.

The logs checked are Python logging at DEBUG in this process, its stdout and stderr, gunicorn's
output at ``--log-level debug`` with the app's loggers at DEBUG and ``RUST_LOG=debug``, and the
stderr of the `keyturn` CLI. NOTE: keyturn._native installs no log subscriber, so its Rust log
events are discarded in Python processes and these tests cannot cover what they would contain.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import (
    REQUEST_TIMEOUT,
    bearer,
    example,
    loopback_session,
    run_cli,
    run_gunicorn,
    split_token,
    with_wrong_secret,
)
from test_gunicorn import server_environ

from keyturn.testing import KeyturnTestEnv


def secrets_of(tokens: list[str]) -> list[str]:
    """Return each token and its secret part, the strings no log may contain."""
    values = []
    for token in tokens:
        values.append(token)
        values.append(split_token(token)[2])
    return values


def assert_absent(text: str, tokens: list[str], where: str) -> None:
    for value in secrets_of(tokens):
        assert value not in text, f"{where} contains a token or secret"


def test_test_client_requests_log_no_token(
    keyturn_env: KeyturnTestEnv,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUST_LOG", "debug")
    caplog.set_level(logging.DEBUG)
    app = example.create_app(keyturn_env.config)
    client = app.test_client()
    active = keyturn_env.create_key(scopes=["orders:read"])
    rotated = keyturn_env.create_key(scopes=["orders:read"])
    successor = keyturn_env.rotate_key(rotated, overlap="0s")
    revoked = keyturn_env.create_key(scopes=["orders:read"])
    keyturn_env.revoke_key(revoked)
    tokens = [active.token, rotated.token, successor.token, revoked.token]
    wrong = with_wrong_secret(active.token)

    statuses = [
        client.get("/orders", headers=bearer(active.token)).status_code,
        client.post("/orders", json={}, headers=bearer(active.token)).status_code,
        client.get("/orders", headers=bearer(wrong)).status_code,
        client.get("/orders", headers=bearer(rotated.token)).status_code,
        client.get("/orders", headers=bearer(revoked.token)).status_code,
        client.get(f"/orders?api_key={successor.token}").status_code,
        client.get(
            "/orders", headers={**bearer(active.token), "X-API-Key": successor.token}
        ).status_code,
    ]
    keyturn_env.keyring.flush()
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["keys", "list", "--json"])
    details = runner.invoke(args=["keys", "show", active.key.key_id])
    captured = capfd.readouterr()

    assert statuses == [200, 403, 401, 401, 401, 400, 400]
    assert_absent(caplog.text, [*tokens, wrong], "Python logging")
    assert_absent(captured.out + captured.err, [*tokens, wrong], "stdout or stderr")
    assert_absent(listed.output + details.output, tokens, "flask keys list and show")


def test_gunicorn_and_cli_log_no_token(tmp_path: Path, keyturn_bin: Path) -> None:
    environ = {**server_environ(tmp_path), "RUST_LOG": "debug"}
    cli_errors = [run_cli(keyturn_bin, ["init"], environ).stderr]
    log_path = tmp_path / "gunicorn.log"

    def create(name: str) -> dict[str, str]:
        result = run_cli(
            keyturn_bin,
            ["keys", "create", "--name", name, "--scope", "orders:read", "--json"],
            environ,
        )
        cli_errors.append(result.stderr)
        return json.loads(result.stdout)

    with run_gunicorn(environ, log_path, preload=False) as base_url, loopback_session() as session:
        active, revoked = create("active"), create("revoked")
        rotated_result = run_cli(
            keyturn_bin, ["keys", "rotate", active["key_id"], "--overlap", "0s", "--json"], environ
        )
        cli_errors.append(rotated_result.stderr)
        successor = json.loads(rotated_result.stdout)
        cli_errors.append(
            run_cli(keyturn_bin, ["keys", "revoke", revoked["key_id"]], environ).stderr
        )
        tokens = [active["token"], revoked["token"], successor["token"]]
        wrong = with_wrong_secret(successor["token"])

        url = f"{base_url}/orders"
        statuses = []
        for _ in range(4):
            for headers, query in (
                (bearer(successor["token"]), ""),
                (bearer(active["token"]), ""),
                (bearer(revoked["token"]), ""),
                (bearer(wrong), ""),
                ({}, f"?api_key={successor['token']}"),
            ):
                response = session.get(
                    url + query, headers={**headers, "Connection": "close"}, timeout=REQUEST_TIMEOUT
                )
                statuses.append(response.status_code)

    server_log = log_path.read_text(errors="replace")
    assert statuses == [200, 401, 401, 401, 400] * 4
    assert "[DEBUG]" in server_log, "gunicorn did not log at debug level"
    assert_absent(server_log, [*tokens, wrong], "gunicorn output")
    assert_absent("\n".join(cli_errors), tokens, "keyturn CLI stderr")
