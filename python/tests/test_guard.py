"""The brute-force guard through the Flask extension. A client address that fails too often gets
429 with Retry-After, and its valid keys are still served. Each block is audited once, without a
token, and the cooldown ends it. X-Forwarded-For is read only from trusted proxies, and invalid
config keys are rejected.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import bearer, problem, with_wrong_secret
from flask import Flask
from flask.testing import FlaskClient

from keyturn import ConfigurationError, KeyturnError
from keyturn.flask import KeyTurn
from keyturn.testing import KeyturnTestEnv

CLIENT = "203.0.113.7"
MAX_FAILURES = 3


def make_app(env: KeyturnTestEnv, **config: Any) -> Flask:
    """Create an app with one protected view and the guard at MAX_FAILURES failures a minute."""
    app = Flask(__name__)
    app.config.update(
        {**env.config, "TESTING": True, "KEYTURN_GUARD_MAX_FAILURES": MAX_FAILURES, **config}
    )
    keyturn = KeyTurn()

    @app.get("/orders")
    @keyturn.required
    def orders() -> Any:
        return {"orders": []}

    keyturn.init_app(app)
    return app


def get(client: FlaskClient, token: str, remote_addr: str, forwarded_for: str | None = None) -> Any:
    headers = bearer(token)
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return client.get("/orders", headers=headers, environ_base={"REMOTE_ADDR": remote_addr})


def guard_events(app: Flask) -> list[dict[str, Any]]:
    keyring = app.extensions["keyturn"].keyring
    keyring.flush()
    return [event.to_dict() for event in keyring.audit(event="authn_token_fail_max")]


def test_blocked_client_gets_429(keyturn_env: KeyturnTestEnv) -> None:
    app = make_app(keyturn_env)
    client = app.test_client()
    issued = keyturn_env.create_key()
    wrong = with_wrong_secret(issued.token)

    for attempt in range(MAX_FAILURES):
        assert get(client, wrong, CLIENT).status_code == 401, f"failure {attempt + 1}"
    response = get(client, wrong, CLIENT)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "60"
    assert response.headers["Content-Type"] == "application/problem+json"
    body = problem(response)
    assert body["code"] == "too_many_requests"
    assert body["status"] == 429
    assert "key_id" not in body

    assert get(client, issued.token, CLIENT).status_code == 200, "a valid key was throttled"
    assert get(client, wrong, "203.0.113.8").status_code == 401, "another address was throttled"


def test_block_audited_once_without_token(keyturn_env: KeyturnTestEnv) -> None:
    app = make_app(keyturn_env)
    client = app.test_client()
    issued = keyturn_env.create_key()
    wrong = with_wrong_secret(issued.token)
    for _ in range(MAX_FAILURES + 5):
        get(client, wrong, CLIENT)

    events = guard_events(app)
    assert len(events) == 1, events
    event = events[0]
    assert event["client_addr"] == CLIENT
    assert event["key_id"] is None
    assert event["actor"] == "system"
    assert event["details"]["failures"] == MAX_FAILURES + 1
    assert event["details"]["max_failures"] == MAX_FAILURES
    text = json.dumps(event)
    for token in (issued.token, wrong):
        assert token[-36:] not in text, "the audit event contains a token secret"


def test_block_after_cooldown_audited_again(keyturn_env: KeyturnTestEnv) -> None:
    app = make_app(keyturn_env, KEYTURN_GUARD_COOLDOWN="30s")
    client = app.test_client()
    wrong = with_wrong_secret(keyturn_env.create_key().token)
    for _ in range(MAX_FAILURES + 1):
        get(client, wrong, CLIENT)
    assert get(client, wrong, CLIENT).headers["Retry-After"] == "30"

    keyturn_env.advance("30s")
    assert get(client, wrong, CLIENT).status_code == 401, "the block outlasted its cooldown"
    for _ in range(MAX_FAILURES):
        get(client, wrong, CLIENT)
    assert len(guard_events(app)) == 2


def test_forwarded_for_read_only_from_trusted_proxy(keyturn_env: KeyturnTestEnv) -> None:
    app = make_app(keyturn_env, KEYTURN_TRUSTED_PROXIES=["10.0.0.0/8"])
    client = app.test_client()
    wrong = with_wrong_secret(keyturn_env.create_key().token)

    # An untrusted peer cannot move its failures to other addresses by inventing the header.
    for index in range(MAX_FAILURES):
        assert get(client, wrong, CLIENT, forwarded_for=f"198.51.100.{index}").status_code == 401
    assert get(client, wrong, CLIENT, forwarded_for="198.51.100.99").status_code == 429

    # Behind the proxy, the client is the address the proxy appended, not one the client wrote.
    for _ in range(MAX_FAILURES):
        response = get(client, wrong, "10.0.0.2", forwarded_for="192.0.2.1, 198.51.100.7")
        assert response.status_code == 401
    assert get(client, wrong, "10.0.0.3", forwarded_for="198.51.100.7").status_code == 429
    assert get(client, wrong, "10.0.0.2", forwarded_for="198.51.100.8").status_code == 401

    clients = sorted(event["client_addr"] for event in guard_events(app))
    assert clients == ["198.51.100.7", CLIENT]


def test_guard_off_never_throttles(keyturn_env: KeyturnTestEnv) -> None:
    app = make_app(keyturn_env, KEYTURN_GUARD=False)
    client = app.test_client()
    wrong = with_wrong_secret(keyturn_env.create_key().token)
    statuses = {get(client, wrong, CLIENT).status_code for _ in range(MAX_FAILURES * 5)}
    assert statuses == {401}
    assert guard_events(app) == []


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("KEYTURN_GUARD_MAX_FAILURES", 0, "1 to 100000"),
        ("KEYTURN_GUARD_MAX_FAILURES", -5, "-5"),
        ("KEYTURN_GUARD_MAX_FAILURES", 10**12, "1 to 100000"),
        ("KEYTURN_GUARD_MAX_FAILURES", True, "KEYTURN_GUARD_MAX_FAILURES is True"),
        ("KEYTURN_GUARD_MAX_FAILURES", "20", "KEYTURN_GUARD_MAX_FAILURES is '20'"),
        ("KEYTURN_GUARD_WINDOW", "0s", "guard window"),
        ("KEYTURN_GUARD_WINDOW", "1500ms", "whole seconds"),
        ("KEYTURN_GUARD_COOLDOWN", "2d", "1s to 24h"),
        ("KEYTURN_GUARD", "off", "KEYTURN_GUARD is 'off'"),
        ("KEYTURN_TRUSTED_PROXIES", ["10.0.0.0/8", "proxy.internal"], "proxy.internal"),
        ("KEYTURN_TRUSTED_PROXIES", ["10.0.0.1/8"], "10.0.0.0/8"),
        ("KEYTURN_TRUSTED_PROXIES", "10.0.0.0/8", "KEYTURN_TRUSTED_PROXIES is '10.0.0.0/8'"),
    ],
)
def test_invalid_guard_config_rejected(
    keyturn_env: KeyturnTestEnv, key: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        make_app(keyturn_env, **{key: value})
    assert message in str(raised.value)


def test_unparsable_guard_duration_rejected(keyturn_env: KeyturnTestEnv) -> None:
    with pytest.raises(KeyturnError, match="guard_window"):
        make_app(keyturn_env, KEYTURN_GUARD_WINDOW="a minute")
