"""Shared fixtures and helpers of the Python tests: the example app on a throwaway store, tokens
altered in one part with a valid checksum, the `keyturn` CLI binary, gunicorn over loopback, a
webhook receiver that checks signatures with its own implementation, and a private PostgreSQL
cluster per test.

The ``keyturn_env`` fixture comes from ``keyturn.testing``, which the installed package registers
as a pytest plugin, so these tests use it exactly as an application's test suite would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import string
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from keyturn.flask import KeyTurn, current_key
from keyturn.testing import KeyturnTestEnv

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parents[1]
EXAMPLE_APP = REPO_ROOT / "examples" / "flask_app" / "app.py"

# Token layout: <prefix>_<12-character key id>_<30-character secret><6-digit base62 CRC32>.
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
KEY_ID_LEN = 12
SECRET_LEN = 30
CHECKSUM_LEN = 6

# Bounds of every wait on a subprocess or server, so no test can hang.
SERVER_START_TIMEOUT = 20.0
SERVER_STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 30.0
REQUEST_TIMEOUT = 5.0
DELIVERY_TIMEOUT = 30.0


def load_example() -> ModuleType:
    """Import examples/flask_app/app.py under a unique module name."""
    spec = importlib.util.spec_from_file_location("keyturn_example_app", EXAMPLE_APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


def make_app(
    env: KeyturnTestEnv, extension: KeyTurn | None = None, **config: Any
) -> tuple[Flask, KeyTurn]:
    """Create a bare app with four views, configured for ``env``; KeyTurn is initialised last."""
    app = Flask(__name__)
    app.config.update({**env.config, "TESTING": True, **config})
    keyturn = extension or KeyTurn()

    @app.get("/plain")
    def plain() -> Any:
        key = current_key()
        return {"key_id": key.key_id if key else None}

    @app.get("/any-key")
    @keyturn.required
    def any_key() -> Any:
        key = keyturn.current_key()
        return {"key_id": key.key_id if key else None}

    @app.get("/writer")
    @keyturn.required(scopes=["orders:write"])
    def writer() -> Any:
        return {"ok": True}

    @app.get("/open")
    @keyturn.public
    def open_view() -> Any:
        return {"key_id": None if current_key() is None else "unexpected"}

    keyturn.init_app(app)
    return app, keyturn


@pytest.fixture
def app(keyturn_env: KeyturnTestEnv) -> Flask:
    """The example app on the test's throwaway store and manual clock."""
    application = example.create_app({**keyturn_env.config, "TESTING": True})
    return application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def checksum(body: str) -> str:
    """Return the 6-digit base62 CRC32 that ends a token whose other characters are ``body``."""
    value = zlib.crc32(body.encode("ascii"))
    digits = []
    for _ in range(CHECKSUM_LEN):
        digits.append(BASE62[value % 62])
        value //= 62
    return "".join(reversed(digits))


def split_token(token: str) -> tuple[str, str, str]:
    """Split a token into its prefix, key id and secret; the checksum is dropped."""
    body = token[:-CHECKSUM_LEN]
    secret = body[-SECRET_LEN:]
    key_id = body[-(SECRET_LEN + 1 + KEY_ID_LEN) : -(SECRET_LEN + 1)]
    prefix = body[: -(SECRET_LEN + 1 + KEY_ID_LEN + 1)]
    return prefix, key_id, secret


def build_token(prefix: str, key_id: str, secret: str) -> str:
    body = f"{prefix}_{key_id}_{secret}"
    return body + checksum(body)


def random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def with_wrong_secret(token: str) -> str:
    """Return the token with another secret and a valid checksum."""
    prefix, key_id, _ = split_token(token)
    return build_token(prefix, key_id, random_base62(SECRET_LEN))


def with_unknown_key_id(token: str) -> str:
    """Return the token with a key id that no key has and a valid checksum."""
    prefix, _, secret = split_token(token)
    return build_token(prefix, random_base62(KEY_ID_LEN), secret)


def with_bad_checksum(token: str) -> str:
    """Return the token with its last checksum digit changed."""
    last = token[-1]
    replacement = BASE62[(BASE62.index(last) + 1) % 62]
    return token[:-1] + replacement


def problem(response: Any) -> dict[str, Any]:
    """Decode a problem+json body."""
    return json.loads(response.data if hasattr(response, "data") else response.content)


# ---------------------------------------------------------------------------------------------
# The keyturn CLI binary and gunicorn
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def keyturn_bin() -> Path:
    """The `keyturn` binary named by KEYTURN_BIN; tests that need it skip when it is unset."""
    value = os.environ.get("KEYTURN_BIN")
    if not value:
        pytest.skip("KEYTURN_BIN is not set; run `make test-python`, which builds the keyturn CLI")
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"KEYTURN_BIN={value} is not a file; run `cargo build --bin keyturn`")
    return path


def clean_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """Return this process's environment without KEYTURN_* variables, plus ``extra``."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith("KEYTURN_")}
    environ.update(extra)
    return environ


def run_cli(
    keyturn_bin: Path, args: list[str], environ: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run the `keyturn` CLI and return its result; a non-zero exit fails the test."""
    result = subprocess.run(
        [str(keyturn_bin), *args],
        env=clean_environ(environ),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"keyturn {' '.join(args)} failed: {result.stderr}"
    return result


def loopback_session() -> requests.Session:
    """A requests session that ignores proxy variables, so traffic stays on 127.0.0.1."""
    session = requests.Session()
    session.trust_env = False
    return session


@contextmanager
def run_gunicorn(
    environ: Mapping[str, str],
    log_path: Path,
    *,
    preload: bool,
    app: str = "gunicorn_app:application",
) -> Iterator[str]:
    """Run the example app under gunicorn with 2 workers on a free loopback port.

    ``app`` is the WSGI entry point in python/tests, by default the example app.

    Yields the base URL. gunicorn writes its output and the app's to ``log_path``. The server is
    stopped with SIGTERM when the block ends, and killed if it has not exited in time.
    """
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-w",
        "2",
        "--no-control-socket",
        "--bind",
        "127.0.0.1:0",
        "--chdir",
        str(TESTS_DIR),
        "--log-level",
        "debug",
        "--graceful-timeout",
        "5",
    ]
    if preload:
        command.append("--preload")
    command.append(app)

    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_environ(environ),
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{wait_for_port(process, log_path)}"
    finally:
        stop_server(process)


def wait_for_port(process: subprocess.Popen[bytes], log_path: Path) -> int:
    """Return the port from gunicorn's "Listening at" line, waiting up to the start timeout."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    pattern = re.compile(rb"Listening at: http://127\.0\.0\.1:(\d+)")
    while time.monotonic() < deadline:
        match = pattern.search(log_path.read_bytes())
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            output = log_path.read_text(errors="replace")
            raise AssertionError(f"gunicorn exited with {process.returncode}:\n{output}")
        time.sleep(0.05)
    raise AssertionError(f"gunicorn did not listen within {SERVER_START_TIMEOUT} s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop a server started by this module: SIGTERM, then SIGKILL to its process group."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=SERVER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        # The server runs in its own session, so its process group holds only its workers.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=SERVER_STOP_TIMEOUT)


@contextmanager
def run_server(
    command: list[str], environ: Mapping[str, str], log_path: Path, pattern: str
) -> Iterator[list[str]]:
    """Run a server whose output announces its addresses, and yield the groups of ``pattern``
    once its output matches."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_environ(environ),
            start_new_session=True,
        )
    try:
        yield wait_for_addresses(process, log_path, pattern)
    finally:
        stop_server(process)


def wait_for_addresses(process: subprocess.Popen[bytes], log_path: Path, pattern: str) -> list[str]:
    """Return the base URLs that ``pattern`` finds in the log, waiting for all of its groups."""
    compiled = re.compile(pattern.encode())
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        match = compiled.search(log_path.read_bytes())
        if match:
            return [group.decode() for group in match.groups()]
        if process.poll() is not None:
            output = log_path.read_text(errors="replace")
            raise AssertionError(f"{process.args} exited with {process.returncode}:\n{output}")
        time.sleep(0.05)
    raise AssertionError(f"{process.args} did not listen within {SERVER_START_TIMEOUT} s")


# ---------------------------------------------------------------------------------------------
# A webhook receiver on 127.0.0.1 that checks Standard Webhooks signatures itself
# ---------------------------------------------------------------------------------------------


@dataclass
class Attempt:
    msg_id: str
    timestamp: str
    body: bytes
    signature_ok: bool
    status: int


@dataclass
class Receiver:
    """A webhook receiver that responds to each message's first ``failures`` attempts with
    ``failure_status`` and later ones with 204."""

    failures: int = 0
    failure_status: int = 500
    secrets: list[bytes] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def verify(self, msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
        signed = f"{msg_id}.{timestamp}.".encode() + body
        expected = [
            base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
            for secret in self.secrets
        ]
        for part in header.split(" "):
            version, _, signature = part.partition(",")
            if version == "v1" and any(hmac.compare_digest(signature, e) for e in expected):
                return True
        return False

    def answer(self, msg_id: str, timestamp: str, body: bytes, header: str) -> int:
        with self.lock:
            earlier = sum(1 for attempt in self.attempts if attempt.msg_id == msg_id)
            status = self.failure_status if earlier < self.failures else 204
            ok = self.verify(msg_id, timestamp, body, header)
            self.attempts.append(Attempt(msg_id, timestamp, body, ok, status))
        return status

    def delivered(self) -> list[Attempt]:
        with self.lock:
            return [attempt for attempt in self.attempts if attempt.status == 204]


@contextmanager
def run_receiver(receiver: Receiver, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            status = receiver.answer(
                self.headers.get("webhook-id", ""),
                self.headers.get("webhook-timestamp", ""),
                body,
                self.headers.get("webhook-signature", ""),
            )
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls is not None else "http"
    receiver.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def add_endpoint(keyturn_bin: Path, environ: dict[str, str], receiver: Receiver) -> str:
    added = run_cli(
        keyturn_bin,
        ["webhooks", "add", receiver.url, "--allow-private-network", "--json"],
        environ,
    )
    endpoint = json.loads(added.stdout)
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    receiver.secrets.append(base64.b64decode(secret.removeprefix("whsec_")))
    return str(endpoint["id"])


def deliveries(keyturn_bin: Path, environ: dict[str, str], *flags: str) -> list[dict[str, Any]]:
    listed = run_cli(keyturn_bin, ["webhooks", "deliveries", "--json", *flags], environ)
    result: list[dict[str, Any]] = json.loads(listed.stdout)
    return result


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {DELIVERY_TIMEOUT} s waiting for {what}")


# ---------------------------------------------------------------------------------------------
# A private PostgreSQL cluster per test
# ---------------------------------------------------------------------------------------------

CLUSTER_SCRIPT = REPO_ROOT / "scripts" / "postgres-test-server"
CLUSTER_TIMEOUT = 300.0


@dataclass
class Cluster:
    """A private PostgreSQL cluster in a directory of its own, reachable at ``url``."""

    directory: Path
    url: str

    def stop(self) -> None:
        run_script("stop", self.directory)

    def start(self) -> None:
        """Start the cluster again, on the port it had before."""
        url = run_script("start", self.directory)
        assert url == self.url, f"the cluster came back at {url}, not {self.url}"


def run_script(command: str, directory: Path) -> str:
    result = subprocess.run(
        [str(CLUSTER_SCRIPT), command, str(directory)],
        capture_output=True,
        text=True,
        timeout=CLUSTER_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"postgres-test-server {command} failed:\n{result.stderr}")
    return result.stdout.strip()


class ClusterError(Exception):
    pass


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A fresh PostgreSQL cluster; the test skips when none can be started, and fails under CI."""
    # The server runs as the postgres user when the tests run as root, so the directory must be
    # one that user can reach.
    directory = Path(tempfile.mkdtemp(prefix="keyturn-pytest-postgres.", dir="/tmp"))
    try:
        url = run_script("start", directory)
    except ClusterError as error:
        shutil.rmtree(directory, ignore_errors=True)
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {error}")
        pytest.skip(f"no PostgreSQL cluster could be started: {error}")
    try:
        yield Cluster(directory, url)
    finally:
        try:
            run_script("stop", directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
