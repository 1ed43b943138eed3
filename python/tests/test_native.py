"""Tests of the native module on its own: concurrent first use from several threads, and
``keyturn.init`` on a database whose pepper file was lost."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import keyturn

FIRST_USE_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    import keyturn

    keyring = keyturn.Keyring(database_url=sys.argv[1])
    threads = [
        threading.Thread(target=keyring.verify, args=("kt_live_x",), daemon=True)
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    print("alive" if any(thread.is_alive() for thread in threads) else "done", flush=True)
    """
)


def test_threads_share_first_use_without_deadlock(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/keyturn.db"
    keyturn.init(database)

    # A deadlock would hang the interpreter, so the threads run in a child process with a timeout.
    result = subprocess.run(
        [sys.executable, "-c", FIRST_USE_SCRIPT, database],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


def test_init_keeps_keys_when_pepper_lost(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/keyturn.db"
    _, pepper_path, created = keyturn.init(database)
    assert created
    assert pepper_path is not None
    keyring = keyturn.Keyring(database_url=database)
    issued = keyring.create("survivor")
    keyring.close()
    Path(pepper_path).rename(tmp_path / "pepper.bak")

    with pytest.raises(keyturn.ConfigurationError, match="restore the pepper file"):
        keyturn.init(database)

    assert not Path(pepper_path).exists()
    (tmp_path / "pepper.bak").rename(pepper_path)
    assert keyturn.Keyring(database_url=database).verify(issued.token).allowed


PEPPER = "1:" + "A" * 43 + "="


def test_invalid_postgres_settings_fail_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYTURN_POSTGRES_MAX_CONNECTIONS", "0")
    with pytest.raises(keyturn.ConfigurationError, match="KEYTURN_POSTGRES_MAX_CONNECTIONS"):
        keyturn.Keyring(database_url="postgres://app@127.0.0.1:1/keyturn", pepper=PEPPER)


def test_silent_store_answers_unavailable_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    # A listener that accepts connections and never answers, as a hung database server does.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        monkeypatch.setenv("KEYTURN_POSTGRES_CONNECT_TIMEOUT", "30s")
        url = f"postgres://app@127.0.0.1:{port}/keyturn"
        keyring = keyturn.Keyring(database_url=url, pepper=PEPPER)

        started = time.monotonic()
        with pytest.raises(keyturn.StoreUnavailableError):
            keyring.verify("kt_live_x")
        first = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(keyturn.StoreUnavailableError):
            keyring.verify("kt_live_x")
        second = time.monotonic() - started

    # The open gives up after 2 s instead of the 30 s connect timeout, and the next request
    # within a second answers at once instead of trying again.
    assert 1.5 < first < 10, first
    assert second < 1, second


def test_authenticate_wsgi_matches_authenticate(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/keyturn.db"
    keyturn.init(database)
    keyring = keyturn.Keyring(database_url=database, trusted_proxies=["10.0.0.0/8"])
    try:
        token = keyring.create("wsgi", scopes=["orders:read"]).token
        keyring.sync()
        header = f"Bearer {token}"
        for scopes in ([], ["orders:read"], ["orders:write"]):
            client = keyring.client_addr("10.0.0.5", ["198.51.100.7"])
            expected = keyring.authenticate([header], [], [], scopes, client)
            result = keyring.authenticate_wsgi(header, None, [], scopes, "10.0.0.5", "198.51.100.7")
            assert (result.allowed, result.code, result.status) == (
                expected.allowed,
                expected.code,
                expected.status,
            )
            assert result.headers == expected.headers
            assert result.body == expected.body

        missing = keyring.authenticate_wsgi(None, None, [], [], None, None)
        assert (missing.allowed, missing.code, missing.status) == (
            False,
            "missing_credentials",
            401,
        )
        assert missing.key is None
    finally:
        keyring.close()


def test_auth_result_key_is_one_object(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/keyturn.db"
    keyturn.init(database)
    keyring = keyturn.Keyring(database_url=database)
    try:
        issued = keyring.create("same key")
        result = keyring.verify(issued.token)
        assert result.allowed
        assert result.key is result.key
        assert result.key.key_id == issued.key.key_id
    finally:
        keyring.close()
