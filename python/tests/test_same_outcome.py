"""One token, one outcome, wherever it is checked: the Flask extension under gunicorn, the axum
layer, the gateway endpoint `/v1/auth` and `POST /v1/verify` of `keyturn serve`, all on one SQLite
file and all over loopback HTTP.

The keys are made in the past with a manual clock, days away from every lifecycle boundary, so
each stays in its state for the whole test at the wall-clock instant every server reads. For each
case the Flask route, the axum route and `/v1/auth` must send the same status (204 where a route
sends 200), the same headers and, on rejection, the same body. `/v1/verify` must report the same
outcome, lifecycle headers and rejection in its JSON body.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from conftest import (
    REQUEST_TIMEOUT,
    loopback_session,
    run_cli,
    run_gunicorn,
    run_server,
    with_bad_checksum,
    with_unknown_key_id,
    with_wrong_secret,
)

from keyturn._native import IssuedKey, Keyring, ManualClock

# Headers that describe the connection or the server rather than the decision.
TRANSPORT_HEADERS = {"date", "server", "content-length", "connection", "keep-alive"}
# Identity headers that only `/v1/auth` sends, for the gateway to pass to its upstream.
GATEWAY_IDENTITY_HEADERS = {"keyturn-key-id", "keyturn-owner", "keyturn-scopes"}


@dataclass(frozen=True)
class Case:
    """One request: how the credential is presented, and the expected result of every front end."""

    name: str
    status: int
    outcome: str
    headers: Mapping[str, str]
    query: str = ""
    # The token `/v1/verify` checks, or None when the case has no token to send it.
    verify_token: str | None = None


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def decision_headers(response: requests.Response, *, allowed: bool) -> dict[str, str]:
    """The response headers that carry the decision, names in lower case."""
    dropped = TRANSPORT_HEADERS | GATEWAY_IDENTITY_HEADERS
    if allowed:
        # The route's own handler chooses the content type and caching of a successful response.
        # `/v1/auth` marks its response `no-store`, so no gateway reuses it for another request.
        dropped = dropped | {"content-type", "cache-control"}
    return {
        name.lower(): value
        for name, value in response.headers.items()
        if name.lower() not in dropped
    }


def answer(response: requests.Response) -> Answer:
    allowed = response.status_code in (200, 204)
    return Answer(
        response.status_code, decision_headers(response, allowed=allowed), response.content
    )


@pytest.fixture
def axum_example() -> Path:
    """The axum example binary named by KEYTURN_AXUM_EXAMPLE, which `make test-python` builds."""
    value = os.environ.get("KEYTURN_AXUM_EXAMPLE")
    if not value:
        if os.environ.get("CI"):
            pytest.fail("KEYTURN_AXUM_EXAMPLE is not set; CI must run `make test-python`")
        pytest.skip(
            "KEYTURN_AXUM_EXAMPLE is not set; run `make test-python`, which builds the example"
        )
    path = Path(value)
    if not path.is_file():
        build = "cargo build -p keyturn-http --example axum"
        pytest.fail(f"KEYTURN_AXUM_EXAMPLE={value} is not a file; run `{build}`")
    return path


def make_keys(environ: Mapping[str, str]) -> dict[str, IssuedKey]:
    """Create one key per lifecycle state, at instants days away from each of its boundaries."""
    now = datetime.now(timezone.utc)
    clock = ManualClock(now)
    keyring = Keyring(
        database_url=environ["KEYTURN_DATABASE_URL"], pepper=environ["KEYTURN_PEPPER"], clock=clock
    )

    def create(name: str, days_ago: int, scopes: list[str]) -> IssuedKey:
        clock.set(now - timedelta(days=days_ago))
        return keyring.create(
            name, owner="acme", scopes=scopes, expires_in="90d", grace="7d", warn_before="14d"
        )

    keys = {
        "active": create("active", 1, ["orders:read"]),
        "expiring": create("expiring", 80, ["orders:read"]),
        "grace": create("grace", 93, ["orders:read"]),
        "expired": create("expired", 100, ["orders:read"]),
        "other scope": create("other scope", 1, ["customers:read"]),
        "administration": create("administration", 1, ["keyturn:keys:read"]),
        "verifier": create("verifier", 1, ["keyturn:verify"]),
        "revoked": create("revoked", 2, ["orders:read"]),
        "superseded": create("superseded", 3, ["orders:read"]),
        "overlap ended": create("overlap ended", 10, ["orders:read"]),
    }
    keyring.revoke(keys["revoked"].key.key_id, reason="leaked")
    clock.set(now - timedelta(days=2))
    keyring.rotate(keys["superseded"].key.key_id, overlap="7d")
    clock.set(now - timedelta(days=5))
    keyring.rotate(keys["overlap ended"].key.key_id, overlap="1d")
    keyring.close()
    return keys


def cases(keys: dict[str, IssuedKey]) -> list[Case]:
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def with_key(name: str, status: int, outcome: str, token: str | None = None) -> Case:
        token = token if token is not None else keys[name].token
        return Case(name, status, outcome, bearer(token), verify_token=token)

    active = keys["active"].token
    unknown, wrong_secret = with_unknown_key_id(active), with_wrong_secret(active)
    bad_checksum = with_bad_checksum(active)
    return [
        with_key("active", 200, "active"),
        with_key("expiring", 200, "expiring"),
        with_key("grace", 200, "grace"),
        with_key("superseded", 200, "superseded"),
        with_key("overlap ended", 401, "rotated"),
        with_key("expired", 401, "expired"),
        with_key("revoked", 401, "revoked"),
        with_key("other scope", 403, "insufficient_scope"),
        with_key("administration", 403, "insufficient_scope"),
        Case("unknown key id", 401, "invalid", bearer(unknown), verify_token=unknown),
        Case("wrong secret", 401, "invalid", bearer(wrong_secret), verify_token=wrong_secret),
        Case("bad checksum", 401, "invalid", bearer(bad_checksum), verify_token=bad_checksum),
        Case(
            "malformed", 401, "invalid", bearer("kt_live_nonsense"), verify_token="kt_live_nonsense"
        ),
        Case("X-API-Key header", 200, "active", {"X-API-Key": active}),
        Case("lower-case scheme", 200, "active", {"Authorization": f"bearer {active}"}),
        Case("missing credentials", 401, "missing_credentials", {}),
        Case("other scheme", 401, "missing_credentials", {"Authorization": "Basic dXNlcjpwYXNz"}),
        Case("same token twice", 200, "active", {**bearer(active), "X-API-Key": active}),
        Case(
            "two different tokens",
            400,
            "invalid_request",
            {**bearer(active), "X-API-Key": keys["grace"].token},
        ),
        Case("token in query", 400, "invalid_request", {}, query=f"api_key={active}"),
    ]


def test_front_ends_agree_on_outcome(tmp_path: Path, keyturn_bin: Path, axum_example: Path) -> None:
    pepper = "1:" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    environ = {
        "KEYTURN_DATABASE_URL": f"sqlite://{tmp_path / 'keyturn.db'}",
        "KEYTURN_PEPPER": pepper,
        "PYTHONUNBUFFERED": "1",
    }
    run_cli(keyturn_bin, ["init"], environ)
    keys = make_keys(environ)
    verifier = keys["verifier"].token

    serve_command = [
        str(keyturn_bin),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
    ]
    serve_pattern = r"serving the API on (http://[0-9.:]+)\n.*serving the gateway endpoint on (http://[0-9.:]+)\n"
    with (
        run_gunicorn(environ, tmp_path / "gunicorn.log", preload=False) as flask_url,
        run_server(serve_command, environ, tmp_path / "serve.log", serve_pattern) as (
            api_url,
            gateway_url,
        ),
        run_server(
            [str(axum_example), "127.0.0.1:0"],
            environ,
            tmp_path / "axum.log",
            r"serving on (http://[0-9.:]+)\n",
        ) as (axum_url,),
        loopback_session() as session,
    ):
        for case in cases(keys):
            check_case(session, case, flask_url, axum_url, gateway_url, api_url, verifier)


def check_case(
    session: requests.Session,
    case: Case,
    flask_url: str,
    axum_url: str,
    gateway_url: str,
    api_url: str,
    verifier: str,
) -> None:
    path = f"/orders?{case.query}" if case.query else "/orders"
    flask = answer(
        session.get(flask_url + path, headers=dict(case.headers), timeout=REQUEST_TIMEOUT)
    )
    axum = answer(session.get(axum_url + path, headers=dict(case.headers), timeout=REQUEST_TIMEOUT))
    gateway_headers = {**case.headers, "X-Keyturn-Scopes": "orders:read", "X-Original-URI": path}
    gateway = answer(
        session.get(gateway_url + "/v1/auth", headers=gateway_headers, timeout=REQUEST_TIMEOUT)
    )

    assert flask.status == case.status, f"{case.name}: Flask sent {flask.status}: {flask.body!r}"
    allowed = case.status == 200
    assert axum.status == flask.status, f"{case.name}: axum sent {axum.status}: {axum.body!r}"
    assert gateway.status == (204 if allowed else flask.status), (
        f"{case.name}: /v1/auth sent {gateway.status}"
    )
    assert axum.headers == flask.headers, f"{case.name}: headers of axum and Flask differ"
    assert gateway.headers == flask.headers, f"{case.name}: headers of /v1/auth and Flask differ"
    if allowed:
        assert gateway.body == b"", case.name
    else:
        assert axum.body == flask.body, f"{case.name}: bodies of axum and Flask differ"
        assert gateway.body == flask.body, f"{case.name}: bodies of /v1/auth and Flask differ"
        assert json.loads(flask.body)["code"] == case.outcome, case.name

    if case.verify_token is None:
        return
    response = session.post(
        api_url + "/v1/verify",
        json={"token": case.verify_token, "scopes": ["orders:read"]},
        headers={"Authorization": f"Bearer {verifier}"},
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 200, (
        f"{case.name}: /v1/verify sent {response.status_code}: {response.text}"
    )
    verdict = response.json()
    assert verdict["allowed"] is allowed, case.name
    assert verdict["outcome"] == case.outcome, f"{case.name}: /v1/verify said {verdict['outcome']}"
    lifecycle = {name.lower(): value for name, value in verdict["headers"].items()}
    if allowed:
        assert lifecycle == flask.headers, (
            f"{case.name}: lifecycle headers of /v1/verify and Flask differ"
        )
        assert verdict["rejection"] is None, case.name
    else:
        rejection = verdict["rejection"]
        assert rejection["status"] == flask.status, case.name
        sent = {name.lower(): value for name, value in rejection["headers"].items()}
        assert sent == flask.headers, (
            f"{case.name}: rejection headers of /v1/verify and Flask differ"
        )
        assert rejection["body"].encode() == flask.body, (
            f"{case.name}: rejection body of /v1/verify differs"
        )
        assert lifecycle == {}, f"{case.name}: /v1/verify names lifecycle headers for a rejection"
