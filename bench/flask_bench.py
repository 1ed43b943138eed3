"""Requests per second of one trivial Flask route, called through the WSGI interface in this
process, with no API key check and behind three ways of checking one:

- ``baseline``: no check.
- ``keyturn``: the ``KeyTurn`` extension on a SQLite file, with a key created by keyturn.
- ``sha512_sqlite``: a ``before_request`` hook that hashes the presented key with SHA-512 and
  looks it up with ``sqlite3`` over a connection that the app keeps open, on every request.
  djangorestframework-api-key hashes keys this way since version 3.0.0; this hook skips the
  Django ORM, so it is faster than that library.
- ``httpauth_scrypt``: Flask-HTTPAuth's ``HTTPTokenAuth`` with ``check_password_hash`` against a
  hash made by ``werkzeug.security.generate_password_hash`` with its default method (scrypt in
  Werkzeug 3). It takes tens of milliseconds per request, so it runs far fewer requests.

Each app is called with a prepared WSGI environ, so no socket, HTTP parser or server thread is
measured. Every variant sends the same ``Authorization: Bearer`` header and gets the same body.
The baseline, keyturn and SHA-512 rounds are interleaved, so a change in machine load affects
all three alike, and the median round counts. Each round also records the CPU time per request
of the calling thread, which other processes on a loaded machine distort less than the rate.
It leaves out keyturn's background thread, which polls the store every 250 ms and writes usage
counters once a second. Tokens stay in memory: nothing here prints one.

Run with ``python bench/flask_bench.py --json flask.json`` in a virtualenv that has keyturn
(built with ``maturin develop --release``) and Flask-HTTPAuth installed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from flask import Flask, Response, g, request
from flask_httpauth import HTTPTokenAuth
from keyturn import Keyring
from keyturn.flask import KeyTurn, close_keyrings_under
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.test import EnvironBuilder

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

PATH = "/hello"
BODY = "hello"
# Keys in the SHA-512 table besides the one presented, so the lookup searches a real index.
OTHER_KEYS = 1_000


class Round(NamedTuple):
    """One round of requests: its rate, and the CPU time per request of the calling thread, which
    a loaded machine distorts less than the rate."""

    rps: float
    cpu_us: float


@dataclass
class Variant:
    """One app to measure, the header that authenticates to it, and one that must be rejected."""

    name: str
    app: WsgiApp
    token: str
    wrong_token: str | None


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="keyturn-flask-bench-") as directory:
        root = Path(directory)
        fast = [
            Variant("baseline", baseline_app(), "none", None),
            keyturn_variant(root),
            sha512_variant(root),
        ]
        slow = httpauth_variant()
        for variant in [*fast, slow]:
            check_variant(variant)

        results = measure_interleaved(fast, args.requests, args.rounds)
        results[slow.name] = measure(slow, args.slow_requests, rounds=1)
        close_keyrings_under(root)

    report = summarise(results)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def baseline_app() -> Flask:
    app = Flask("baseline")
    app.get(PATH)(hello)
    return app


def keyturn_variant(root: Path) -> Variant:
    database = f"sqlite://{root / 'keyturn.db'}"
    pepper = "1:" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    creator = Keyring(database_url=database, pepper=pepper, create_if_missing=True)
    token = creator.create("flask benchmark").token
    creator.close()

    app = Flask("keyturn")
    app.config.update(KEYTURN_DATABASE_URL=database, KEYTURN_PEPPER=pepper)
    KeyTurn(app)
    app.get(PATH)(hello)
    return Variant("keyturn", app, token, altered(token))


def sha512_variant(root: Path) -> Variant:
    connection = sqlite3.connect(root / "api_keys.db", check_same_thread=False)
    connection.execute(
        "CREATE TABLE api_keys (prefix TEXT PRIMARY KEY, hashed_key TEXT NOT NULL, "
        "revoked INTEGER NOT NULL DEFAULT 0, expires_at REAL)"
    )
    keys = [
        f"{secrets.token_hex(4)}.{secrets.token_urlsafe(24)}"
        for _ in range(OTHER_KEYS + 1)
    ]
    connection.executemany(
        "INSERT INTO api_keys (prefix, hashed_key, expires_at) VALUES (?, ?, ?)",
        [(key.split(".")[0], sha512_hex(key), time.time() + 86_400) for key in keys],
    )
    connection.commit()

    app = Flask("sha512_sqlite")

    @app.before_request
    def check_key() -> Response | None:
        key = bearer_token()
        prefix, _, _ = key.partition(".")
        row = connection.execute(
            "SELECT hashed_key, revoked, expires_at FROM api_keys WHERE prefix = ?",
            (prefix,),
        ).fetchone()
        if row is None or row[1] or (row[2] is not None and row[2] <= time.time()):
            return Response("invalid key", status=401)
        if not hmac.compare_digest(sha512_hex(key), row[0]):
            return Response("invalid key", status=401)
        g.api_key_prefix = prefix
        return None

    app.get(PATH)(hello)
    token = keys[0]
    return Variant("sha512_sqlite", app, token, altered(token))


def httpauth_variant() -> Variant:
    key_id = secrets.token_hex(4)
    token = f"{key_id}.{secrets.token_urlsafe(24)}"
    hashes = {key_id: generate_password_hash(token)}
    auth = HTTPTokenAuth(scheme="Bearer")

    @auth.verify_token
    def verify(presented: str) -> str | None:
        stored = hashes.get(presented.partition(".")[0])
        if stored is not None and check_password_hash(stored, presented):
            return key_id
        return None

    app = Flask("httpauth_scrypt")
    app.get(PATH)(auth.login_required(hello))
    return Variant("httpauth_scrypt", app, token, altered(token))


def hello() -> str:
    return BODY


def bearer_token() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


def altered(token: str) -> str:
    """Return the token with its last character changed, which every variant must reject."""
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def sha512_hex(key: str) -> str:
    return hashlib.sha512(key.encode()).hexdigest()


def environ_for(token: str) -> dict[str, Any]:
    builder = EnvironBuilder(path=PATH, headers={"Authorization": f"Bearer {token}"})
    try:
        return builder.get_environ()
    finally:
        builder.close()


def call(app: WsgiApp, environ: dict[str, Any]) -> tuple[str, bytes]:
    """Call the app once and return its status line and body."""
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    chunks = app(dict(environ), start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return statuses[0], body


def check_variant(variant: Variant) -> None:
    """Fail unless the app serves the route with the right key and rejects a wrong one."""
    status, body = call(variant.app, environ_for(variant.token))
    if not status.startswith("200") or body != BODY.encode():
        raise SystemExit(
            f"{variant.name}: the route returned {status} instead of 200 {BODY!r}"
        )
    if variant.wrong_token is not None:
        status, _ = call(variant.app, environ_for(variant.wrong_token))
        if not status.startswith("401"):
            raise SystemExit(f"{variant.name}: a wrong key got {status} instead of 401")


def run_requests(variant: Variant, count: int) -> tuple[float, float]:
    """Send ``count`` requests and return the elapsed seconds and this thread's CPU seconds;
    fail on any status but 200."""
    environ = environ_for(variant.token)
    app = variant.app
    statuses: list[str] = []
    append = statuses.append

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        append(status)

    started = time.perf_counter()
    cpu_started = time.thread_time()
    for _ in range(count):
        chunks = app(dict(environ), start_response)
        for _chunk in chunks:
            pass
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    elapsed = time.perf_counter() - started
    cpu = time.thread_time() - cpu_started

    failed = [status for status in statuses if not status.startswith("200")]
    if failed:
        raise SystemExit(
            f"{variant.name}: {len(failed)} of {count} requests failed: {failed[0]}"
        )
    return elapsed, cpu


def measure(variant: Variant, count: int, rounds: int) -> list[Round]:
    """Return the requests per second and CPU time of each round of ``count`` requests."""
    rounds_measured = []
    for _ in range(rounds):
        elapsed, cpu = run_requests(variant, count)
        rounds_measured.append(Round(count / elapsed, cpu / count * 1e6))
    return rounds_measured


def measure_interleaved(
    variants: list[Variant], count: int, rounds: int
) -> dict[str, list[Round]]:
    """Warm every variant up, then run their rounds in turn and return each one's rounds."""
    for variant in variants:
        run_requests(variant, max(count // 10, 1))
    results: dict[str, list[Round]] = {variant.name: [] for variant in variants}
    for _ in range(rounds):
        for variant in variants:
            results[variant.name] += measure(variant, count, rounds=1)
    return results


def summarise(results: dict[str, list[Round]]) -> dict[str, Any]:
    """Compute the median rate and CPU time of each variant, its added cost over the baseline,
    and the ratios the targets name."""
    variants: dict[str, Any] = {}
    baseline_us = 1e6 / statistics.median(r.rps for r in results["baseline"])
    baseline_cpu_us = statistics.median(r.cpu_us for r in results["baseline"])
    for name, rounds in results.items():
        rps = statistics.median(r.rps for r in rounds)
        cpu_us = statistics.median(r.cpu_us for r in rounds)
        variants[name] = {
            "requests_per_second": round(rps, 1),
            "microseconds_per_request": round(1e6 / rps, 2),
            "added_microseconds": round(1e6 / rps - baseline_us, 2),
            "cpu_microseconds_per_request": round(cpu_us, 2),
            "added_cpu_microseconds": round(cpu_us - baseline_cpu_us, 2),
            "rounds": len(rounds),
            "rounds_rps": [round(r.rps, 1) for r in rounds],
        }
    keyturn_added = variants["keyturn"]["added_microseconds"]
    sha512_added = variants["sha512_sqlite"]["added_microseconds"]
    scrypt_added = variants["httpauth_scrypt"]["added_microseconds"]
    ratios = {
        "keyturn_rps_over_baseline": round(
            variants["keyturn"]["requests_per_second"]
            / variants["baseline"]["requests_per_second"],
            3,
        ),
        "keyturn_added_over_sha512_added": round(keyturn_added / sha512_added, 3),
        "keyturn_added_over_scrypt_added": round(keyturn_added / scrypt_added, 5),
        "cpu_keyturn_over_baseline": round(
            variants["baseline"]["cpu_microseconds_per_request"]
            / variants["keyturn"]["cpu_microseconds_per_request"],
            3,
        ),
        "cpu_keyturn_added_over_sha512_added": round(
            variants["keyturn"]["added_cpu_microseconds"]
            / variants["sha512_sqlite"]["added_cpu_microseconds"],
            3,
        ),
    }
    return {"ratios": ratios, "variants": variants}


def print_report(report: dict[str, Any]) -> None:
    ratios = report["ratios"]
    print("Flask through WSGI, one process")
    for label, key in (
        ("keyturn rps / baseline rps", "keyturn_rps_over_baseline"),
        ("keyturn added / SHA-512 lookup added", "keyturn_added_over_sha512_added"),
        ("keyturn added / scrypt added", "keyturn_added_over_scrypt_added"),
        ("CPU: baseline / keyturn", "cpu_keyturn_over_baseline"),
        ("CPU: keyturn added / SHA-512 added", "cpu_keyturn_added_over_sha512_added"),
    ):
        print(f"  {label + ':':<40} {ratios[key]}")
    header = ("variant", "req/s", "us/req", "added us", "CPU us", "added CPU")
    print("  {:<16} {:>10} {:>10} {:>10} {:>10} {:>10}".format(*header))
    for name, figures in report["variants"].items():
        print(
            f"  {name:<16} {figures['requests_per_second']:>10.1f} "
            f"{figures['microseconds_per_request']:>10.2f} "
            f"{figures['added_microseconds']:>10.2f} "
            f"{figures['cpu_microseconds_per_request']:>10.2f} "
            f"{figures['added_cpu_microseconds']:>10.2f}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=20_000,
        help="requests per round of the fast variants",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of each fast variant"
    )
    parser.add_argument(
        "--slow-requests", type=int, default=30, help="requests of the scrypt variant"
    )
    parser.add_argument("--json", help="file to write the figures to, as JSON")
    args = parser.parse_args()
    for name in ("requests", "rounds", "slow_requests"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


if __name__ == "__main__":
    sys.exit(main())
