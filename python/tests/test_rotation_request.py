"""A rotation request end to end: the `keyturn` CLI asks two clients' keys to be rotated, the
example app runs under gunicorn with a clock the test moves, and `keyturn serve` takes the
self-rotation. The client that rotates keeps working with its successor; the one that does not
is warned with ``API-Key-Status: rotation-requested`` and the deadline, then with grace headers,
and is rejected at the deadline plus the grace period exactly, not 1 ms before. All traffic
goes to 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
import requests
from conftest import (
    REQUEST_TIMEOUT,
    bearer,
    example,
    loopback_session,
    run_cli,
    run_gunicorn,
    run_server,
)
from flask.testing import FlaskCliRunner

from keyturn import InvalidInputError
from keyturn.testing import KeyturnTestEnv

SERVE_PATTERN = r"serving the API on (http://[0-9.:]+)\n"


def http_date(instant: datetime) -> str:
    return format_datetime(instant.astimezone(timezone.utc), usegmt=True)


def rfc3339(instant: datetime) -> str:
    return (
        instant.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def test_rotation_request_end_to_end(tmp_path: Path, keyturn_bin: Path) -> None:
    clock_file = tmp_path / "clock"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    clock_file.write_text(rfc3339(now))
    pepper = "1:" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    environ = {
        "KEYTURN_DATABASE_URL": f"sqlite://{tmp_path / 'keyturn.db'}",
        "KEYTURN_PEPPER": pepper,
        "KEYTURN_TEST_CLOCK_FILE": str(clock_file),
        "PYTHONUNBUFFERED": "1",
    }
    run_cli(keyturn_bin, ["init"], environ)

    def create(name: str) -> dict[str, str]:
        args = ["keys", "create", "--name", name, "--owner", "partners", "--scope", "orders:read"]
        return json.loads(run_cli(keyturn_bin, [*args, "--grace", "1d", "--json"], environ).stdout)

    rotating = create("rotating client")
    lagging = create("lagging client")
    deadline = now + timedelta(days=3)
    grace_end = deadline + timedelta(days=1)
    request = ["keys", "request-rotation", "--owner", "partners", "--by", rfc3339(deadline)]
    requested = json.loads(
        run_cli(keyturn_bin, [*request, "--reason", "partner breach", "--json"], environ).stdout
    )
    assert {entry["status"] for entry in requested} == {"requested"}

    serve = [str(keyturn_bin), "serve", "--listen", "127.0.0.1:0", "--scheduler", "off"]
    with (
        run_server(serve, environ, tmp_path / "serve.log", SERVE_PATTERN) as (api,),
        run_gunicorn(
            environ, tmp_path / "gunicorn.log", preload=False, app="gunicorn_clock_app:application"
        ) as flask,
        loopback_session() as session,
    ):

        def get(token: str, at: datetime) -> requests.Response:
            clock_file.write_text(rfc3339(at))
            return session.get(f"{flask}/orders", headers=bearer(token), timeout=REQUEST_TIMEOUT)

        warned = get(lagging["token"], now + timedelta(hours=1))
        assert warned.status_code == 200
        assert warned.headers["API-Key-Status"] == "rotation-requested"
        assert warned.headers["API-Key-Expires"] == http_date(deadline)

        rotated = session.post(
            f"{api}/v1/self/rotate", headers=bearer(rotating["token"]), timeout=REQUEST_TIMEOUT
        )
        assert rotated.status_code == 201, rotated.text
        successor = rotated.json()["token"]
        moved = get(successor, now + timedelta(hours=2))
        assert moved.status_code == 200
        assert "API-Key-Status" not in moved.headers

        just_before = get(lagging["token"], deadline - timedelta(milliseconds=1))
        assert just_before.headers["API-Key-Status"] == "rotation-requested"
        at_deadline = get(lagging["token"], deadline)
        assert at_deadline.status_code == 200
        assert at_deadline.headers["API-Key-Status"] == "grace"
        assert at_deadline.headers["API-Key-Expires"] == http_date(grace_end)

        last_moment = get(lagging["token"], grace_end - timedelta(milliseconds=1))
        assert last_moment.status_code == 200
        assert last_moment.headers["API-Key-Status"] == "grace"
        rejected = get(lagging["token"], grace_end)
        assert rejected.status_code == 401
        assert rejected.json()["code"] == "expired"

        still_working = get(successor, grace_end)
        assert still_working.status_code == 200
        assert "API-Key-Status" not in still_working.headers

    run_cli(keyturn_bin, ["schedule", "run", "--once"], environ)
    audit = json.loads(run_cli(keyturn_bin, ["audit", "list", "--json"], environ).stdout)
    events = [row["event"] for row in audit]
    assert events.count("authn_token_rotation_requested") == 2
    assert "authn_token_self_rotated" in events


@pytest.fixture
def cli(keyturn_env: KeyturnTestEnv) -> FlaskCliRunner:
    app = example.create_app({**keyturn_env.config, "TESTING": True})
    return app.test_cli_runner()


def test_flask_request_rotation_command(cli: FlaskCliRunner, keyturn_env: KeyturnTestEnv) -> None:
    kept = keyturn_env.keyring.create("kept", owner="partners")
    revoked = keyturn_env.keyring.create("revoked", owner="partners")
    keyturn_env.keyring.revoke(revoked.key.key_id)
    deadline = keyturn_env.now() + timedelta(days=3)

    dry = cli.invoke(
        args=["keys", "request-rotation", "--owner", "partners", "--by", "3d", "--dry-run"]
    )
    assert dry.exit_code == 0, dry.output
    assert f"would request rotation of key {kept.key.key_id} by " in dry.output
    assert f"skipped key {revoked.key.key_id}: revoked" in dry.output
    assert "1 of 2 keys would be requested" in dry.output
    assert keyturn_env.get_key(kept).state == "active"

    args = ["keys", "request-rotation", kept.key.key_id, "--by", rfc3339(deadline), "--json"]
    done = cli.invoke(args=args)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)[0]["status"] == "requested"
    info = keyturn_env.get_key(kept)
    assert info.state == "rotation_requested"
    assert info.rotation_deadline == deadline
    assert info.expires_at == deadline

    listed = cli.invoke(args=["keys", "list", "--state", "rotation_requested", "--json"])
    assert [key["key_id"] for key in json.loads(listed.stdout)] == [kept.key.key_id]


def test_flask_request_rotation_rejects_bad_input(cli: FlaskCliRunner) -> None:
    both = cli.invoke(
        args=["keys", "request-rotation", "AAAAAAAAAAAA", "--owner", "x", "--by", "1d"]
    )
    assert both.exit_code == 2
    assert "exactly one of" in both.output
    garbage = cli.invoke(args=["keys", "request-rotation", "--owner", "x", "--by", "soon"])
    assert garbage.exit_code == 2
    assert "invalid rotation deadline" in garbage.output
    assert "Traceback" not in garbage.output


def test_flask_headers_after_rotation_request(keyturn_env: KeyturnTestEnv) -> None:
    app = example.create_app({**keyturn_env.config, "TESTING": True})
    issued = keyturn_env.keyring.create("client", scopes=["orders:read"])
    deadline = keyturn_env.now() + timedelta(days=2)
    keyturn_env.keyring.request_rotation(key_ids=[issued.key.key_id], by=deadline)

    with app.test_client() as client:
        response = client.get("/orders", headers=bearer(issued.token))
        assert response.status_code == 200
        assert response.headers["API-Key-Status"] == "rotation-requested"
        assert response.headers["API-Key-Expires"] == http_date(deadline)


def test_native_request_rotation_validates(keyturn_env: KeyturnTestEnv) -> None:
    issued = keyturn_env.keyring.create("client")
    with pytest.raises(InvalidInputError):
        keyturn_env.keyring.request_rotation(key_ids=[issued.key.key_id], by=keyturn_env.now())
    with pytest.raises(InvalidInputError):
        keyturn_env.keyring.request_rotation(owner="x", key_ids=[issued.key.key_id], by="1d")
    done = keyturn_env.keyring.request_rotation(key_ids=[issued.key.key_id], by=timedelta(days=1))
    assert done[0]["status"] == "requested"
    run = keyturn_env.keyring.run_scheduler()
    assert run["recorded"] == []
