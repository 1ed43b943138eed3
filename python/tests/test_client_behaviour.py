"""The client-facing behaviour of an API protected by keyturn, one test per row of the behaviour
table, checked against the example app through Flask's test client on a throwaway SQLite store
with a manual clock.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CLI_TIMEOUT,
    bearer,
    build_token,
    example,
    problem,
    split_token,
    with_bad_checksum,
    with_unknown_key_id,
    with_wrong_secret,
)
from flask.testing import FlaskClient

from keyturn import IssuedKey
from keyturn.testing import KeyturnTestEnv

INVALID_TOKEN_CHALLENGE = 'Bearer realm="api", error="invalid_token"'


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check the parts every problem response shares and return its decoded body."""
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers
    body = problem(response)
    assert body["type"] == f"urn:keyturn:problem:{code}"
    assert body["code"] == code
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def http_date(instant: datetime) -> str:
    """Format an instant as an HTTP-date, rounded down to the second."""
    return instant.astimezone(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")


def assert_lifecycle(response: Any, status: str, deadline: datetime) -> None:
    assert response.status_code == 200
    assert response.headers["API-Key-Status"] == status
    expires = response.headers["API-Key-Expires"]
    assert expires == http_date(deadline)
    assert parsedate_to_datetime(expires) == deadline.replace(microsecond=0)


@pytest.fixture
def reader(keyturn_env: KeyturnTestEnv) -> IssuedKey:
    """A key with orders:read that expires in 30 days, with the default 14-day warning window."""
    return keyturn_env.create_key("reader", scopes=["orders:read"], expires_in="30d")


# ---------------------------------------------------------------------------------------------
# Requests without a usable credential
# ---------------------------------------------------------------------------------------------


def test_no_credential_is_401(client: FlaskClient) -> None:
    response = client.get("/orders")

    assert_problem(response, 401, "missing_credentials")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_missing_credential_bytes_from_native(
    client: FlaskClient, keyturn_env: KeyturnTestEnv
) -> None:
    expected = keyturn_env.keyring.authenticate([], [], [], ["orders:read"], None)

    response = client.get("/orders")

    assert response.data == expected.body
    sent = [(name, value) for name, value in response.headers if name != "Content-Length"]
    assert sent == expected.headers


def test_basic_scheme_counts_as_missing(client: FlaskClient) -> None:
    missing = client.get("/orders")

    response = client.get("/orders", headers={"Authorization": "Basic dXNlcjpwYXNz"})

    assert_problem(response, 401, "missing_credentials")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.data == missing.data


def test_lowercase_bearer_accepted(client: FlaskClient, reader: IssuedKey) -> None:
    response = client.get("/orders", headers={"Authorization": f"bearer {reader.token}"})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        ("Authorization", "Bearer   {token}  "),
        ("Authorization", " Bearer\t{token}\t"),
        ("X-API-Key", "  {token} "),
    ],
)
def test_spaces_around_token_ignored(
    client: FlaskClient, reader: IssuedKey, header: tuple[str, str]
) -> None:
    name, template = header

    response = client.get("/orders", headers={name: template.format(token=reader.token)})

    assert response.status_code == 200


def test_api_key_header_accepted(client: FlaskClient, reader: IssuedKey) -> None:
    response = client.get("/orders", headers={"X-API-Key": reader.token})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda token: token[:20] + " " + token[20:], id="inner-space"),
        pytest.param(lambda token: token[:20] + "\x01" + token[20:], id="control-char"),
        pytest.param(lambda token: token[:20] + "\x7f" + token[21:], id="delete-char"),
        pytest.param(lambda token: token[:-1] + "é", id="non-ascii"),
        pytest.param(lambda token: "", id="empty"),
        pytest.param(lambda token: "A" * 16384, id="16-kib"),
    ],
)
def test_malformed_credential_is_401_invalid(
    client: FlaskClient, reader: IssuedKey, mangle: Any
) -> None:
    value = mangle(reader.token)

    for headers in (bearer(value), {"X-API-Key": value}):
        response = client.get("/orders", headers=headers)

        body = assert_problem(response, 401, "invalid")
        assert response.headers["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
        assert "key_id" not in body


def test_bare_bearer_scheme_is_401_invalid(client: FlaskClient) -> None:
    response = client.get("/orders", headers={"Authorization": "Bearer"})

    assert_problem(response, 401, "invalid")


def test_two_different_credentials_is_400(
    client: FlaskClient, keyturn_env: KeyturnTestEnv, reader: IssuedKey
) -> None:
    other = keyturn_env.create_key("other", scopes=["orders:read"])

    response = client.get("/orders", headers={**bearer(reader.token), "X-API-Key": other.token})

    body = assert_problem(response, 400, "invalid_request")
    assert "WWW-Authenticate" not in response.headers
    assert reader.token not in body["detail"]
    assert other.token not in body["detail"]


def test_repeated_authorization_header_rejected(
    client: FlaskClient, keyturn_env: KeyturnTestEnv, reader: IssuedKey
) -> None:
    other = keyturn_env.create_key("other", scopes=["orders:read"])
    headers = [
        ("Authorization", f"Bearer {reader.token}"),
        ("Authorization", f"Bearer {other.token}"),
    ]

    response = client.get("/orders", headers=headers)

    # WSGI joins repeated headers into one value with commas, which is no valid token.
    assert_problem(response, 401, "invalid")


def test_same_credential_twice_accepted(client: FlaskClient, reader: IssuedKey) -> None:
    response = client.get("/orders", headers={**bearer(reader.token), "X-API-Key": reader.token})

    assert response.status_code == 200


@pytest.mark.parametrize("parameter", ["api_key", "access_token", "TOKEN"])
def test_token_in_query_is_400(client: FlaskClient, reader: IssuedKey, parameter: str) -> None:
    response = client.get(
        f"/orders?page=1&{parameter}={reader.token}", headers=bearer(reader.token)
    )

    body = assert_problem(response, 400, "invalid_request")
    assert parameter in body["detail"]
    assert reader.token not in response.get_data(as_text=True)
    for name, value in response.headers:
        assert reader.token not in value, name


# ---------------------------------------------------------------------------------------------
# Tokens that identify no key
# ---------------------------------------------------------------------------------------------


def test_unknown_wrong_and_corrupt_tokens_identical(client: FlaskClient, reader: IssuedKey) -> None:
    _, key_id, _ = split_token(reader.token)
    variants = {
        "unknown key id": with_unknown_key_id(reader.token),
        "wrong secret": with_wrong_secret(reader.token),
        "bad checksum": with_bad_checksum(reader.token),
    }

    responses = {
        name: client.get("/orders", headers=bearer(token)) for name, token in variants.items()
    }

    first = responses["unknown key id"]
    assert_problem(first, 401, "invalid")
    assert first.headers["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    assert key_id not in first.get_data(as_text=True)
    for name, response in responses.items():
        assert response.data == first.data, name
        assert list(response.headers) == list(first.headers), name


def test_checksum_helper_matches_issued_token(reader: IssuedKey) -> None:
    prefix, key_id, secret = split_token(reader.token)

    assert prefix == "kt_live"
    assert key_id == reader.key.key_id
    assert with_wrong_secret(reader.token) != reader.token
    assert f"{prefix}_{key_id}_{secret}" == reader.token[:-6]
    # The helper that rebuilds tokens must produce the checksum keyturn issued.
    assert build_token(prefix, key_id, secret) == reader.token


# ---------------------------------------------------------------------------------------------
# Key lifecycle
# ---------------------------------------------------------------------------------------------


def test_active_key_has_no_lifecycle_headers(client: FlaskClient, reader: IssuedKey) -> None:
    response = client.get("/orders", headers=bearer(reader.token))

    assert response.status_code == 200
    assert "API-Key-Status" not in response.headers
    assert "API-Key-Expires" not in response.headers


def test_expiring_key_reports_expiry(
    client: FlaskClient, keyturn_env: KeyturnTestEnv, reader: IssuedKey
) -> None:
    keyturn_env.advance("20d")

    response = client.get("/orders", headers=bearer(reader.token))

    assert reader.key.expires_at is not None
    assert_lifecycle(response, "expiring", reader.key.expires_at)


def test_grace_key_reports_grace_end(
    client: FlaskClient, keyturn_env: KeyturnTestEnv, reader: IssuedKey
) -> None:
    keyturn_env.advance("31d")

    response = client.get("/orders", headers=bearer(reader.token))

    assert reader.key.grace_ends_at is not None
    assert_lifecycle(response, "grace", reader.key.grace_ends_at)


def test_superseded_key_reports_overlap_end(
    client: FlaskClient, keyturn_env: KeyturnTestEnv, reader: IssuedKey
) -> None:
    successor = keyturn_env.rotate_key(reader, overlap="2d")
    rotated = keyturn_env.get_key(reader)

    old = client.get("/orders", headers=bearer(reader.token))
    new = client.get("/orders", headers=bearer(successor.token))

    assert rotated.overlap_ends_at is not None
    assert_lifecycle(old, "superseded", rotated.overlap_ends_at)
    assert new.status_code == 200
    assert "API-Key-Status" not in new.headers


def test_superseded_key_reports_earliest_deadline(
    client: FlaskClient, keyturn_env: KeyturnTestEnv, reader: IssuedKey
) -> None:
    keyturn_env.advance("20d")
    keyturn_env.rotate_key(reader, overlap="15d")
    rotated = keyturn_env.get_key(reader)

    response = client.get("/orders", headers=bearer(reader.token))

    # The overlap ends after the key's expiry, so the expiry is the deadline to act before.
    assert rotated.overlap_ends_at is not None and reader.key.expires_at is not None
    assert rotated.overlap_ends_at > reader.key.expires_at
    assert_lifecycle(response, "superseded", reader.key.expires_at)


def test_rotated_key_after_overlap_is_401(
    client: FlaskClient, keyturn_env: KeyturnTestEnv, reader: IssuedKey
) -> None:
    keyturn_env.rotate_key(reader, overlap="2d")
    rotated = keyturn_env.get_key(reader).to_dict()
    keyturn_env.advance("3d")

    response = client.get("/orders", headers=bearer(reader.token))

    body = assert_problem(response, 401, "rotated")
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    assert body["key_id"] == reader.key.key_id
    assert body["overlap_ended_at"] == rotated["overlap_ends_at"]


def test_expired_key_after_grace_is_401(
    client: FlaskClient, keyturn_env: KeyturnTestEnv, reader: IssuedKey
) -> None:
    keyturn_env.advance("38d")

    response = client.get("/orders", headers=bearer(reader.token))

    body = assert_problem(response, 401, "expired")
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    assert body["key_id"] == reader.key.key_id
    assert body["expired_at"] == reader.key.to_dict()["expires_at"]


def test_revoked_key_is_401(
    client: FlaskClient, keyturn_env: KeyturnTestEnv, reader: IssuedKey
) -> None:
    revoked = keyturn_env.revoke_key(reader, reason="leaked in a build log")

    response = client.get("/orders", headers=bearer(reader.token))

    body = assert_problem(response, 401, "revoked")
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    assert body["key_id"] == reader.key.key_id
    assert body["revoked_at"] == revoked.to_dict()["revoked_at"]
    assert "leaked" not in body["detail"]


def test_insufficient_scope_is_403(client: FlaskClient, reader: IssuedKey) -> None:
    response = client.post(
        "/orders", json={"customer_id": 1, "item": "gear"}, headers=bearer(reader.token)
    )

    body = assert_problem(response, 403, "insufficient_scope")
    assert (
        response.headers["WWW-Authenticate"]
        == 'Bearer realm="api", error="insufficient_scope", scope="orders:write"'
    )
    assert body["scope"] == "orders:write"
    assert body["key_id"] == reader.key.key_id


def test_write_scope_creates_order(client: FlaskClient, keyturn_env: KeyturnTestEnv) -> None:
    writer = keyturn_env.create_key("writer", scopes=["orders:read", "orders:write"])

    created = client.post(
        "/orders",
        json={"customer_id": 1, "item": "gear", "quantity": 3},
        headers=bearer(writer.token),
    )
    listed = client.get("/orders", headers=bearer(writer.token))

    assert created.status_code == 201
    assert created.json is not None and created.json["item"] == "gear"
    assert listed.json is not None and len(listed.json) == 2


# ---------------------------------------------------------------------------------------------
# Routes and responses
# ---------------------------------------------------------------------------------------------


def test_public_route_needs_no_key(client: FlaskClient) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_protect_all_covers_undecorated_route(client: FlaskClient, reader: IssuedKey) -> None:
    without_key = client.get("/me")
    with_key = client.get("/me", headers=bearer(reader.token))

    assert_problem(without_key, 401, "missing_credentials")
    assert with_key.status_code == 200
    assert with_key.json is not None and with_key.json["key_id"] == reader.key.key_id


def test_unknown_route_answered_without_key(client: FlaskClient) -> None:
    not_found = client.get("/no-such-route")
    wrong_method = client.delete("/orders")

    assert not_found.status_code == 404
    assert wrong_method.status_code == 405


def test_no_response_sets_cookie(
    client: FlaskClient, keyturn_env: KeyturnTestEnv, reader: IssuedKey
) -> None:
    keyturn_env.advance("20d")
    responses = [
        client.get("/health"),
        client.get("/orders"),
        client.get("/orders", headers=bearer(reader.token)),
        client.get("/orders", headers=bearer(with_wrong_secret(reader.token))),
        client.get(f"/orders?api_key={reader.token}"),
        client.post("/orders", json={}, headers=bearer(reader.token)),
    ]

    for response in responses:
        assert "Set-Cookie" not in response.headers, response.status
        assert "Cookie" not in response.headers.get("Vary", ""), response.status


# ---------------------------------------------------------------------------------------------
# Store outage
# ---------------------------------------------------------------------------------------------

LOCK_SCRIPT = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA locking_mode=EXCLUSIVE")
connection.execute("BEGIN EXCLUSIVE")
connection.execute("SELECT count(*) FROM keys").fetchall()
print("locked", flush=True)
sys.stdin.read()
"""


@contextmanager
def locked_database(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on a SQLite database from another process.

    SQLite's locks are per process, so only another process can lock the app out. The lock is
    taken only while no connection of this process is open on the database.
    """
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCK_SCRIPT, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None
        line = locker.stdout.readline()
        assert line.strip() == "locked", (
            f"locking {path} failed: {locker.stderr and locker.stderr.read()}"
        )
        yield
    finally:
        if locker.stdin is not None:
            locker.stdin.close()
        try:
            locker.wait(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            locker.kill()
            locker.wait(timeout=CLI_TIMEOUT)


def test_store_unavailable_is_503(keyturn_env: KeyturnTestEnv) -> None:
    issued = keyturn_env.create_key("reader", scopes=["orders:read"])
    # Close the env's connections, so the other process can take the exclusive lock.
    keyturn_env.close()
    app = example.create_app(keyturn_env.config)
    client = app.test_client()

    # The app's keyring opens the database on its first request, which waits for the lock for
    # the store's busy timeout (5 s) and then fails.
    with locked_database(keyturn_env.database_path):
        response = client.get("/orders", headers=bearer(issued.token))

    assert_problem(response, 503, "store_unavailable")
    assert response.headers["Retry-After"] == "1"
