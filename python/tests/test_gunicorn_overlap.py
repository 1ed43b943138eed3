"""Usage-aware overlap end to end: the example app under gunicorn with two workers, keys rotated
by the `keyturn` CLI in another process, and the real clock. A client that moves to the successor
makes the old key stop working exactly one overlap-after-first-use after the successor's first
use, and not before. A client that never moves keeps working until the hard maximum. The usage
flush interval is an hour, so only the immediate write of a first use can shorten the overlap
while the server runs. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from conftest import REQUEST_TIMEOUT, loopback_session, run_cli, run_gunicorn
from test_gunicorn import server_environ

AFTER_FIRST_USE = timedelta(seconds=3)
# How long the overlap window may last at most, in the test that shortens it.
HARD_OVERLAP = "60s"
# The hard overlap of the test whose successor is never used: short, so the test ends soon.
SHORT_OVERLAP = timedelta(seconds=6)
# How long polling runs on each side of a deadline.
AROUND_DEADLINE = timedelta(seconds=1)
# How long the test waits for the shortened overlap end to reach the store.
WAIT_SECONDS = 10.0
REJECTIONS_AFTER = 5


@dataclass(frozen=True)
class Answer:
    sent: datetime
    received: datetime
    status: int
    headers: dict[str, str]
    code: str | None


def now() -> datetime:
    return datetime.now(timezone.utc)


def http_date(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def get(url: str, token: str) -> Answer:
    with loopback_session() as session:
        sent = now()
        response = session.get(
            url,
            headers={"Authorization": f"Bearer {token}", "Connection": "close"},
            timeout=REQUEST_TIMEOUT,
        )
        received = now()
    code = None
    if response.headers.get("Content-Type") == "application/problem+json":
        code = json.loads(response.content)["code"]
    return Answer(sent, received, response.status_code, dict(response.headers), code)


def poll_around(url: str, token: str, deadline: datetime) -> list[Answer]:
    """Send requests one after another from a second before ``deadline`` until a second after it
    or until REJECTIONS_AFTER requests sent after it, whichever comes first. The brute-force guard
    returns 429 after 20 failures from one address, so the rejections stay below that."""
    while now() < deadline - AROUND_DEADLINE:
        time.sleep(0.05)
    answers: list[Answer] = []
    while now() < deadline + AROUND_DEADLINE:
        answers.append(get(url, token))
        if sum(answer.sent >= deadline for answer in answers) >= REJECTIONS_AFTER:
            break
    return answers


def check_deadline(answers: list[Answer], deadline: datetime) -> None:
    """Every answer received before ``deadline`` allows the old key, superseded until then, and
    every request sent at or after it is rejected as rotated."""
    before = [answer for answer in answers if answer.received < deadline]
    after = [answer for answer in answers if answer.sent >= deadline]
    assert before and after, f"no requests on both sides of {deadline}: {answers}"
    for answer in before:
        assert answer.status == 200, answer
        assert answer.headers["API-Key-Status"] == "superseded", answer
        assert answer.headers["API-Key-Expires"] == http_date(deadline), answer
    for answer in after:
        assert (answer.status, answer.code) == (401, "rotated"), answer


def show(keyturn_bin: Path, key_id: str, environ: dict[str, str]) -> dict[str, Any]:
    result = run_cli(keyturn_bin, ["keys", "show", key_id, "--json"], environ)
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def create_and_rotate(
    keyturn_bin: Path, environ: dict[str, str], overlap: str
) -> tuple[str, str, str, datetime]:
    """Create a key and rotate it; return its key id, both tokens and the hard overlap end."""
    created = run_cli(
        keyturn_bin,
        ["keys", "create", "--name", "overlap", "--scope", "orders:read", "--json"],
        environ,
    )
    key = json.loads(created.stdout)
    rotated = run_cli(
        keyturn_bin,
        [
            *("keys", "rotate", key["key_id"], "--overlap", overlap),
            *("--overlap-after-first-use", f"{int(AFTER_FIRST_USE.total_seconds())}s", "--json"),
        ],
        environ,
    )
    successor = json.loads(rotated.stdout)
    hard_end = parse_instant(successor["predecessor"]["overlap_ends_at"])
    return key["key_id"], key["token"], successor["token"], hard_end


def test_moved_client_ends_overlap_under_gunicorn(tmp_path: Path, keyturn_bin: Path) -> None:
    environ = {**server_environ(tmp_path), "FLASK_KEYTURN_FLUSH_INTERVAL": "1h"}
    run_cli(keyturn_bin, ["init"], environ)
    key_id, old_token, new_token, hard_end = create_and_rotate(keyturn_bin, environ, HARD_OVERLAP)

    with run_gunicorn(environ, tmp_path / "gunicorn.log", preload=False) as base_url:
        url = f"{base_url}/orders"
        unmoved = get(url, old_token)
        assert unmoved.status == 200
        assert unmoved.headers["API-Key-Status"] == "superseded"
        assert unmoved.headers["API-Key-Expires"] == http_date(hard_end)

        moved = get(url, new_token)
        assert moved.status == 200
        started = time.monotonic()
        while time.monotonic() - started < WAIT_SECONDS:
            end = parse_instant(show(keyturn_bin, key_id, environ)["overlap_ends_at"])
            if end < hard_end:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the overlap end stayed at {hard_end} for {WAIT_SECONDS} s")

        # The first use is the worker's instant of that verification, so the new end lies one
        # overlap-after-first-use after a moment between the request and its response.
        tolerance = timedelta(milliseconds=1)
        assert moved.sent - tolerance <= end - AFTER_FIRST_USE <= moved.received + tolerance
        answers = poll_around(url, old_token, end)
        assert get(url, new_token).status == 200

    check_deadline(answers, end)


def test_unmoved_client_keeps_hard_maximum_under_gunicorn(
    tmp_path: Path, keyturn_bin: Path
) -> None:
    environ = {**server_environ(tmp_path), "FLASK_KEYTURN_FLUSH_INTERVAL": "1h"}
    run_cli(keyturn_bin, ["init"], environ)
    overlap = f"{int(SHORT_OVERLAP.total_seconds())}s"

    with run_gunicorn(environ, tmp_path / "gunicorn.log", preload=True) as base_url:
        # Rotated once the server listens, so its start-up cannot eat into the short overlap.
        key_id, old_token, _, hard_end = create_and_rotate(keyturn_bin, environ, overlap)
        answers = poll_around(f"{base_url}/orders", old_token, hard_end)

    check_deadline(answers, hard_end)
    assert show(keyturn_bin, key_id, environ)["overlap_ends_at"] is not None
