"""Testing support for applications that use keyturn: a throwaway key store and a manual clock,
so a test suite can check how its API and its clients behave when a key expires, enters grace,
is rotated or revoked, without sleeping.

``KeyturnTestEnv`` owns a SQLite database in a directory of the caller's choice, a fresh random
pepper and a ``ManualClock``. Its ``config`` makes an app use all three and read every key from
the database (``KEYTURN_STRICT``), so a key created, rotated or revoked through the env applies to
the next request. With an app factory::

    def test_expiring_key_warns(keyturn_env):
        app = create_app(keyturn_env.config)
        issued = keyturn_env.create_key(scopes=["orders:read"], expires_in="30d")
        keyturn_env.advance("20d")
        response = app.test_client().get("/orders", headers=keyturn_env.headers(issued))
        assert response.headers["API-Key-Status"] == "expiring"

For an app created at import time, ``keyturn_env.init_app(app)`` applies the config and
initialises keyturn on it again. This module is also a pytest plugin, registered through the
``pytest11`` entry point, which provides the ``keyturn_env``, ``keyturn_clock`` and
``make_keyturn_env`` fixtures.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask

from keyturn._native import IssuedKey, KeyInfo, Keyring, ManualClock
from keyturn.flask import KeyTurn, close_keyrings_under

__all__ = ["KeyturnTestEnv", "keyturn_clock", "keyturn_env", "make_keyturn_env"]

#: A key given by its key id, as a ``KeyInfo`` or as the ``IssuedKey`` that created it.
KeyRef = str | KeyInfo | IssuedKey


class KeyturnTestEnv:
    """A throwaway key store with its own pepper and a clock that moves only when a test moves it.

    ``directory`` receives the database file. It must exist and should be a temporary directory,
    such as pytest's ``tmp_path``. ``start`` sets the clock, which otherwise starts at the current
    time. ``token_prefix`` is the prefix of the tokens the env issues, and ``config`` gives the app
    the same prefix.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        start: datetime | None = None,
        token_prefix: str = "kt_live",
    ) -> None:
        self.clock = ManualClock(start)
        self.database_path = Path(directory).resolve() / "keyturn-test.db"
        self.database_url = f"sqlite://{self.database_path}"
        self.token_prefix = token_prefix
        self._pepper = "1:" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        self.keyring = Keyring(
            database_url=self.database_url,
            pepper=self._pepper,
            token_prefix=token_prefix,
            strict=True,
            create_if_missing=True,
            clock=self.clock,
        )
        # Listing opens the store, which creates the database file now. The app's own keyring
        # never creates one, so a request sent before the first key would otherwise fail.
        self.keyring.list()

    def __repr__(self) -> str:
        return f"KeyturnTestEnv(database_path={str(self.database_path)!r})"

    @property
    def config(self) -> dict[str, Any]:
        """The Flask config that points keyturn at this env: pass it to the app factory."""
        return {
            "KEYTURN_DATABASE_URL": self.database_url,
            "KEYTURN_PEPPER": self._pepper,
            "KEYTURN_PEPPER_FILE": None,
            "KEYTURN_TOKEN_PREFIX": self.token_prefix,
            "KEYTURN_STRICT": True,
            "KEYTURN_CLOCK": self.clock,
        }

    @property
    def environ(self) -> dict[str, str]:
        """Environment variables that point the ``keyturn`` CLI or a subprocess at this env."""
        return {
            "KEYTURN_DATABASE_URL": self.database_url,
            "KEYTURN_PEPPER": self._pepper,
            "KEYTURN_TOKEN_PREFIX": self.token_prefix,
        }

    def init_app(self, app: Flask) -> None:
        """Apply ``config`` to an existing app and initialise keyturn on it again."""
        app.config.update(self.config)
        KeyTurn().init_app(app)

    def create_key(
        self,
        name: str = "test key",
        *,
        scopes: Sequence[str] = (),
        **options: Any,
    ) -> IssuedKey:
        """Create a key now on the env's clock; ``options`` are those of ``Keyring.create``."""
        return self.keyring.create(name, scopes=scopes, **options)

    def rotate_key(self, key: KeyRef, **options: Any) -> IssuedKey:
        """Rotate a key; ``options`` are those of ``Keyring.rotate``, such as ``overlap``."""
        return self.keyring.rotate(_key_id(key), **options)

    def revoke_key(self, key: KeyRef, *, reason: str | None = None) -> KeyInfo:
        """Revoke a key at once."""
        return self.keyring.revoke(_key_id(key), reason=reason)

    def get_key(self, key: KeyRef) -> KeyInfo:
        """Read a key with its state at the env's current time."""
        return self.keyring.get(_key_id(key))

    def now(self) -> datetime:
        return self.clock.now()

    def advance(self, duration: timedelta | str) -> None:
        """Move the clock forward by a duration such as ``"15d"``, ``"1h30m"`` or a timedelta."""
        self.clock.advance(duration)

    def set_time(self, instant: datetime) -> None:
        """Move the clock to ``instant``, a timezone-aware datetime."""
        self.clock.set(instant)

    def headers(self, key: IssuedKey | str) -> dict[str, str]:
        """Return the ``Authorization`` header that sends a token, given as text or IssuedKey."""
        token = key.token if isinstance(key, IssuedKey) else key
        return {"Authorization": f"Bearer {token}"}

    def close(self) -> None:
        """Stop the background work of the env and of every app keyring on its database.

        The database file stays until its directory goes.
        """
        self.keyring.close()
        close_keyrings_under(self.database_path.parent)


def _key_id(key: KeyRef) -> str:
    if isinstance(key, IssuedKey):
        return key.key.key_id
    if isinstance(key, KeyInfo):
        return key.key_id
    return key


# The pytest fixtures are defined only when pytest is importable, so the module also works in
# test suites that use another runner.
try:
    import pytest
except ImportError:  # pragma: no cover - pytest is absent only outside pytest runs
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def make_keyturn_env() -> Iterator[Callable[..., KeyturnTestEnv]]:
        """Return a factory of ``KeyturnTestEnv``; each env gets its own temporary directory.

        The factory takes the keyword arguments of ``KeyturnTestEnv`` other than ``directory``.
        Every env it made is closed, and its directory removed, when the test ends.
        """
        envs: list[KeyturnTestEnv] = []
        directories: list[tempfile.TemporaryDirectory[str]] = []

        def make(**options: Any) -> KeyturnTestEnv:
            directory = tempfile.TemporaryDirectory(prefix="keyturn-test-")
            directories.append(directory)
            env = KeyturnTestEnv(directory.name, **options)
            envs.append(env)
            return env

        yield make
        for env in envs:
            env.close()
        for directory in directories:
            directory.cleanup()

    @pytest.fixture
    def keyturn_env(make_keyturn_env: Callable[..., KeyturnTestEnv]) -> KeyturnTestEnv:
        """Provide a ``KeyturnTestEnv`` with the clock at the current time."""
        return make_keyturn_env()

    @pytest.fixture
    def keyturn_clock(keyturn_env: KeyturnTestEnv) -> ManualClock:
        """Provide the ``ManualClock`` of the test's ``keyturn_env``."""
        return keyturn_env.clock
