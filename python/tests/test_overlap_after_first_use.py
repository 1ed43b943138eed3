"""Usage-aware overlap through the example app: a rotation with an overlap after first use ends
the old key's overlap window that long after the successor's first use, and a client that never
moves keeps working until the hard maximum. Flask's test client on a throwaway SQLite store with a
manual clock; the app and the test's keyring are separate keyrings on one store, as two processes
would be.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import bearer, problem
from flask.testing import FlaskClient

from keyturn import IssuedKey
from keyturn.testing import KeyturnTestEnv

AFTER_FIRST_USE = timedelta(hours=1)
# The app writes a successor's first use at once, in the background; this bounds the wait.
FLUSH_WAIT_SECONDS = 5.0


@pytest.fixture
def reader(keyturn_env: KeyturnTestEnv) -> IssuedKey:
    return keyturn_env.create_key("reader", scopes=["orders:read"])


def http_date(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")


def assert_superseded_until(response: Any, deadline: datetime) -> None:
    assert response.status_code == 200
    assert response.headers["API-Key-Status"] == "superseded"
    assert response.headers["API-Key-Expires"] == http_date(deadline)


def wait_for_overlap_end(keyturn_env: KeyturnTestEnv, key: IssuedKey, below: datetime) -> datetime:
    """Wait until the store shows an overlap end of ``key`` earlier than ``below``."""
    started = time.monotonic()
    while time.monotonic() - started < FLUSH_WAIT_SECONDS:
        end = keyturn_env.get_key(key).overlap_ends_at
        assert end is not None
        if end < below:
            return end
        time.sleep(0.05)
    raise AssertionError(f"the overlap end stayed at {below} for {FLUSH_WAIT_SECONDS} s")


def test_moved_client_ends_overlap_at_first_use(
    client: FlaskClient, keyturn_env: KeyturnTestEnv, reader: IssuedKey
) -> None:
    successor = keyturn_env.rotate_key(reader, overlap="7d", overlap_after_first_use="1h")
    hard_end = keyturn_env.get_key(reader).overlap_ends_at
    assert hard_end is not None
    keyturn_env.advance("1d")
    assert_superseded_until(client.get("/orders", headers=bearer(reader.token)), hard_end)

    first_use = keyturn_env.now()
    moved = client.get("/orders", headers=bearer(successor.token))
    assert moved.status_code == 200
    end = wait_for_overlap_end(keyturn_env, reader, below=hard_end)

    assert end == first_use + AFTER_FIRST_USE
    keyturn_env.set_time(end - timedelta(milliseconds=1))
    assert_superseded_until(client.get("/orders", headers=bearer(reader.token)), end)
    keyturn_env.set_time(end)
    rejected = client.get("/orders", headers=bearer(reader.token))
    assert rejected.status_code == 401
    assert problem(rejected)["code"] == "rotated"
    assert client.get("/orders", headers=bearer(successor.token)).status_code == 200

    events = [row.event for row in keyturn_env.keyring.audit(key_id=reader.key.key_id)]
    assert events.count("authn_token_overlap_shortened") == 1


def test_unmoved_client_works_until_hard_maximum(
    client: FlaskClient, keyturn_env: KeyturnTestEnv, reader: IssuedKey
) -> None:
    keyturn_env.rotate_key(reader, overlap="2d", overlap_after_first_use="1h")
    hard_end = keyturn_env.get_key(reader).overlap_ends_at
    assert hard_end is not None

    keyturn_env.advance("1d")
    assert_superseded_until(client.get("/orders", headers=bearer(reader.token)), hard_end)
    keyturn_env.set_time(hard_end - timedelta(milliseconds=1))
    assert_superseded_until(client.get("/orders", headers=bearer(reader.token)), hard_end)
    keyturn_env.set_time(hard_end)
    rejected = client.get("/orders", headers=bearer(reader.token))
    assert rejected.status_code == 401
    assert problem(rejected)["code"] == "rotated"


def test_create_under_named_policy(keyturn_env: KeyturnTestEnv) -> None:
    with pytest.raises(Exception, match="does not exist"):
        keyturn_env.create_key("bot", policy="missing")
    key = keyturn_env.create_key("bot", policy="default")
    assert key.key.policy == "default"
    assert key.key.to_dict()["policy"] == "default"
