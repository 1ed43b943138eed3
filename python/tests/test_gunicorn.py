"""The example app under gunicorn with two workers, with and without ``--preload``: keys created
and revoked by the `keyturn` CLI in another process apply in every worker, a revocation within
1 s (the default KEYTURN_MAX_STALENESS). All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from conftest import REQUEST_TIMEOUT, loopback_session, run_cli, run_gunicorn

# Bounds of each polling phase. Several client threads poll at once, so that both sync workers
# stay busy and each is sampled every few milliseconds. A single sequential client often reaches
# the same worker for hundreds of requests in a row.
CLIENT_THREADS = 4
MAX_REQUESTS = 2000
MAX_SECONDS = 20.0
REVOCATION_BOUND_SECONDS = 1.0


@dataclass(frozen=True)
class Answer:
    """One response: the worker that sent it, when the request was sent and the response
    received (seconds after the phase started), and its status and problem code."""

    pid: int
    sent: float
    received: float
    status: int
    code: str | None


def server_environ(tmp_path: Path) -> dict[str, str]:
    pepper = "1:" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    return {
        "KEYTURN_DATABASE_URL": f"sqlite://{tmp_path / 'keyturn.db'}",
        "KEYTURN_PEPPER": pepper,
        "EXAMPLE_EXPOSE_PID": "1",
        "RUST_LOG": "debug",
        "PYTHONUNBUFFERED": "1",
    }


def poll(url: str, token: str, done: Callable[[list[Answer]], bool]) -> list[Answer]:
    """Send requests from several threads, each on a new connection, until ``done(answers)``.

    Stops after MAX_REQUESTS requests or MAX_SECONDS, whichever comes first.
    """
    started = time.monotonic()
    answers: list[Answer] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with loopback_session() as session:
            while not stop.is_set() and time.monotonic() - started < MAX_SECONDS:
                sent = time.monotonic() - started
                response = session.get(
                    url,
                    headers={"Authorization": f"Bearer {token}", "Connection": "close"},
                    timeout=REQUEST_TIMEOUT,
                )
                received = time.monotonic() - started
                code = None
                if response.headers.get("Content-Type") == "application/problem+json":
                    code = json.loads(response.content)["code"]
                answer = Answer(
                    int(response.headers["X-Worker-Pid"]),
                    sent,
                    received,
                    response.status_code,
                    code,
                )
                with lock:
                    answers.append(answer)
                    if done(answers) or len(answers) >= MAX_REQUESTS:
                        stop.set()

    with ThreadPoolExecutor(max_workers=CLIENT_THREADS) as pool:
        futures = [pool.submit(client) for _ in range(CLIENT_THREADS)]
        for future in futures:
            future.result(timeout=MAX_SECONDS + REQUEST_TIMEOUT)
    return sorted(answers, key=lambda answer: answer.received)


def pids(answers: list[Answer], status: int | None = None) -> set[int]:
    return {answer.pid for answer in answers if status is None or answer.status == status}


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_cli_changes_reach_every_worker(tmp_path: Path, keyturn_bin: Path, preload: bool) -> None:
    environ = server_environ(tmp_path)
    run_cli(keyturn_bin, ["init"], environ)

    with run_gunicorn(environ, tmp_path / "gunicorn.log", preload=preload) as base_url:
        url = f"{base_url}/orders"
        created = run_cli(
            keyturn_bin,
            ["keys", "create", "--name", "gunicorn", "--scope", "orders:read", "--json"],
            environ,
        )
        token = json.loads(created.stdout)["token"]
        key_id = json.loads(created.stdout)["key_id"]

        accepted = poll(url, token, lambda answers: len(pids(answers)) >= 2)
        run_cli(keyturn_bin, ["keys", "revoke", key_id], environ)
        after_revoke = poll(url, token, lambda answers: len(pids(answers, 401)) >= 2)

    assert len(pids(accepted)) == 2, f"one worker answered all {len(accepted)} requests"
    assert [answer for answer in accepted if answer.status != 200] == []

    assert len(pids(after_revoke, 401)) == 2, f"answers after the revocation: {after_revoke}"
    for pid in pids(after_revoke):
        answers = [answer for answer in after_revoke if answer.pid == pid]
        first_rejection = next(answer for answer in answers if answer.status == 401)
        assert first_rejection.received < REVOCATION_BOUND_SECONDS, (pid, first_rejection)
        late_acceptances = [
            answer
            for answer in answers
            if answer.status == 200 and answer.sent >= REVOCATION_BOUND_SECONDS
        ]
        assert late_acceptances == [], pid
        rejections = [answer for answer in answers if answer.status != 200]
        assert (rejections[0].status, rejections[0].code) == (401, "revoked"), pid
        # Past 20 failures from 127.0.0.1, the worker's brute-force guard rejects with 429.
        codes = {(answer.status, answer.code) for answer in rejections}
        assert codes <= {(401, "revoked"), (429, "too_many_requests")}, (pid, codes)


def test_worker_exit_flushes_usage(tmp_path: Path, keyturn_bin: Path) -> None:
    # With an hour-long flush interval, only the immediate write of each worker's first use
    # reaches the database while the server runs; later use waits for each worker's atexit close().
    environ = {**server_environ(tmp_path), "FLASK_KEYTURN_FLUSH_INTERVAL": "1h"}
    run_cli(keyturn_bin, ["init"], environ)
    created = run_cli(
        keyturn_bin,
        ["keys", "create", "--name", "usage", "--scope", "orders:read", "--json"],
        environ,
    )
    token = json.loads(created.stdout)["token"]
    key_id = json.loads(created.stdout)["key_id"]

    with run_gunicorn(environ, tmp_path / "gunicorn.log", preload=True) as base_url:
        first = poll(f"{base_url}/orders", token, lambda answers: len(pids(answers)) >= 2)
        time.sleep(0.5)
        shown_while_running = run_cli(keyturn_bin, ["keys", "show", key_id, "--json"], environ)
        time.sleep(0.05)
        later = poll(f"{base_url}/orders", token, lambda answers: len(pids(answers)) >= 2)
        shown_before_stop = run_cli(keyturn_bin, ["keys", "show", key_id, "--json"], environ)
    shown_after_stop = run_cli(keyturn_bin, ["keys", "show", key_id, "--json"], environ)

    assert {answer.status for answer in first + later} == {200}
    assert len(pids(first)) == 2, "both workers must have used the key before the snapshot"
    running = json.loads(shown_while_running.stdout)
    assert running["first_used_at"] is not None, "the first use is written at once"
    assert json.loads(shown_before_stop.stdout)["last_used_at"] == running["last_used_at"]
    stopped = json.loads(shown_after_stop.stdout)
    assert instant(stopped["last_used_at"]) > instant(running["last_used_at"])


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
