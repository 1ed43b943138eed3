"""Scheduler events reach a webhook receiver, end to end, on one SQLite store and on one
PostgreSQL database. Keys are placed so that every time-caused event (expiring soon, grace
entered, expired, overlap ended, rotation deadline reached) falls on a known boundary. At 1 ms
before each boundary and at the boundary, two scheduler processes run at once on the same store
with the clock set to that instant. Before the boundary nothing is recorded. At it each due event
is recorded, exactly once in the audit log, whose MAC chain still verifies. `keyturn webhooks
deliver --once` then sends every event to a receiver on 127.0.0.1 that checks each signature
itself and fails the first attempt of every message with 500.

The `keyturn` binary reads only the system clock, so each scheduler process of a step is a
Python process that runs the same `Keyring::run_scheduler` as `keyturn schedule run --once`,
through the native module, with a ManualClock set to the instant under test. Two real
`keyturn schedule run --once` processes run at the end, after every boundary, and must record
nothing more.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CLI_TIMEOUT,
    Cluster,
    Receiver,
    add_endpoint,
    clean_environ,
    deliveries,
    run_cli,
    run_receiver,
    wait_until,
)

from keyturn import Keyring, ManualClock

TIMED_EVENTS = {
    "authn_token_expiring_soon",
    "authn_token_grace_entered",
    "authn_token_expired",
    "authn_token_overlap_ended",
    "authn_token_rotation_deadline_reached",
}
MILLISECOND = timedelta(milliseconds=1)

# One scheduler instance. It creates the file named by its third argument once its keyring is
# open and then waits for the file named by its fourth argument, so that both instances of a step
# start their run together. It prints the run as JSON.
SCHEDULER_SCRIPT = """
import json, sys, time
from datetime import datetime
from pathlib import Path
from keyturn import Keyring, ManualClock

database_url, instant, ready_file, start_file = sys.argv[1:5]
keyring = Keyring(database_url=database_url, clock=ManualClock(datetime.fromisoformat(instant)))
Path(ready_file).touch()
deadline = time.monotonic() + 20
while not Path(start_file).exists() and time.monotonic() < deadline:
    time.sleep(0.005)
print(json.dumps(keyring.run_scheduler(), default=str), flush=True)
keyring.close()
"""


def run_two_schedulers(
    environ: dict[str, str], tmp_path: Path, instant: datetime
) -> list[list[dict[str, Any]]]:
    """Run two scheduler processes at ``instant`` at once and return the events each recorded."""
    step = tmp_path / f"step-{instant.timestamp():.3f}"
    step.mkdir()
    ready_files = [step / "ready-1", step / "ready-2"]
    args = [sys.executable, "-c", SCHEDULER_SCRIPT, environ["KEYTURN_DATABASE_URL"]]
    processes = [
        subprocess.Popen(
            [*args, instant.isoformat(), str(ready_file), str(step / "start")],
            env=clean_environ(environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ready_file in ready_files
    ]
    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while not all(path.exists() for path in ready_files) and time.monotonic() < deadline:
            if any(process.poll() is not None for process in processes):
                break
            time.sleep(0.005)
        (step / "start").touch()
        outputs = [process.communicate(timeout=CLI_TIMEOUT) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=CLI_TIMEOUT)

    runs = []
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, f"scheduler at {instant} failed: {stderr}"
        runs.append(json.loads(stdout)["recorded"])
    return runs


def timed_audit_rows(keyturn_bin: Path, environ: dict[str, str]) -> list[dict[str, Any]]:
    listed = json.loads(run_cli(keyturn_bin, ["audit", "list", "--json"], environ).stdout)
    return [row for row in listed if row["event"] in TIMED_EVENTS]


def place_keys(environ: dict[str, str], start: datetime) -> dict[datetime, set[tuple[str, str]]]:
    """Create the keys at ``start`` and return the (key id, event) pairs due at each boundary."""
    day = timedelta(days=1)
    keyring = Keyring(
        database_url=environ["KEYTURN_DATABASE_URL"],
        pepper=environ["KEYTURN_PEPPER"],
        clock=ManualClock(start),
    )
    expiring = keyring.create(
        "expiring", owner="team", expires_in="10d", grace="1d", warn_before="2d"
    )
    rotated = keyring.create("rotated", owner="team")
    keyring.rotate(rotated.key.key_id, overlap="1d")
    requested = keyring.create("requested", owner="team", grace="2d", warn_before="1d")
    keyring.request_rotation(key_ids=[requested.key.key_id], by=start + 3 * day)
    keyring.close()

    # The successor of the rotated key expires after 90 days, past the last boundary. The key
    # asked to rotate expires at its deadline, where its warning has already given way to the
    # request, so it enters grace then and expires 2 days later.
    expiring_id, rotated_id, requested_id = (
        expiring.key.key_id,
        rotated.key.key_id,
        requested.key.key_id,
    )
    return {
        start + day: {(rotated_id, "authn_token_overlap_ended")},
        start + 3 * day: {
            (requested_id, "authn_token_rotation_deadline_reached"),
            (requested_id, "authn_token_grace_entered"),
        },
        start + 5 * day: {(requested_id, "authn_token_expired")},
        start + 8 * day: {(expiring_id, "authn_token_expiring_soon")},
        start + 10 * day: {(expiring_id, "authn_token_grace_entered")},
        start + 11 * day: {(expiring_id, "authn_token_expired")},
    }


def random_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_environ(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The variables that point keyturn at a SQLite file or at a private PostgreSQL cluster."""
    if request.param == "sqlite":
        return {"KEYTURN_DATABASE_URL": f"sqlite://{tmp_path / 'keyturn.db'}"}

    cluster: Cluster = request.getfixturevalue("cluster")
    # No key file sits next to a PostgreSQL database, so every process, this one included, gets
    # the audit key and the webhook key from the environment.
    keys = {"KEYTURN_AUDIT_KEY": random_key(), "KEYTURN_WEBHOOK_KEY": random_key()}
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    return {"KEYTURN_DATABASE_URL": cluster.url, **keys}


def test_scheduler_events_reach_receiver(
    store_environ: dict[str, str], tmp_path: Path, keyturn_bin: Path
) -> None:
    environ = {
        **store_environ,
        "KEYTURN_PEPPER": "1:" + random_key(),
        "KEYTURN_WEBHOOK_RETRY_BASE": "50ms",
        "KEYTURN_WEBHOOK_TIMEOUT": "5s",
        "KEYTURN_WEBHOOK_MAX_ATTEMPTS": "10",
    }
    run_cli(keyturn_bin, ["init"], environ)
    # A delivery is first due at its event's instant and `keyturn webhooks deliver` reads the
    # system clock, so the controlled clock runs 12 days behind it and every boundary has passed
    # by the time the deliveries are sent.
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=12)

    with run_receiver(Receiver(failures=1)) as receiver:
        add_endpoint(keyturn_bin, environ, receiver)
        due = place_keys(environ, start)
        first_runs = run_two_schedulers(environ, tmp_path, start)
        assert first_runs == [[], []]

        for boundary, expected in sorted(due.items()):
            before = run_two_schedulers(environ, tmp_path, boundary - MILLISECOND)
            assert before == [[], []], f"recorded 1 ms before {boundary}"
            runs = run_two_schedulers(environ, tmp_path, boundary)
            recorded = [(event["key_id"], event["event"]) for run in runs for event in run]
            assert sorted(recorded) == sorted(expected), f"recorded at {boundary}"
            for event in runs[0] + runs[1]:
                assert event["boundary"].startswith(boundary.strftime("%Y-%m-%dT%H:%M:%S"))

        # The system clock is past every boundary now, so two `keyturn schedule run --once`
        # processes at once have nothing left to record.
        command = [str(keyturn_bin), "schedule", "run", "--once", "--json"]
        cli_runs = [
            subprocess.Popen(command, env=clean_environ(environ), stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        for process in cli_runs:
            stdout, _ = process.communicate(timeout=CLI_TIMEOUT)
            assert process.returncode == 0
            assert json.loads(stdout)["recorded"] == []

        audit = timed_audit_rows(keyturn_bin, environ)
        run_cli(keyturn_bin, ["audit", "verify"], environ)
        audited = [(row["key_id"], row["event"]) for row in audit]
        every_event = set().union(*due.values())
        assert sorted(audited) == sorted(every_event), "each event once in the audit log"

        def all_delivered() -> bool:
            run_cli(keyturn_bin, ["webhooks", "deliver", "--once"], environ)
            return all(d["state"] == "delivered" for d in deliveries(keyturn_bin, environ))

        wait_until(all_delivered, "every delivery")
        expected_messages = deliveries(keyturn_bin, environ)
        attempts = list(receiver.attempts)

    assert all(attempt.signature_ok for attempt in attempts), attempts
    audit_seqs = {row["seq"] for row in audit}
    delivered_seqs = {
        json.loads(attempt.body)["data"]["audit_seq"] for attempt in receiver.delivered()
    }
    assert audit_seqs <= delivered_seqs, "a scheduler event was not delivered"
    message_ids_by_seq: dict[int, set[str]] = {}
    for attempt in attempts:
        payload = json.loads(attempt.body)
        message_ids_by_seq.setdefault(payload["data"]["audit_seq"], set()).add(attempt.msg_id)
    for seq, message_ids in message_ids_by_seq.items():
        assert len(message_ids) == 1, f"audit row {seq} was sent as {message_ids}"
    for message in expected_messages:
        tries = [attempt for attempt in attempts if attempt.msg_id == message["msg_id"]]
        assert [attempt.status for attempt in tries][:2] == [500, 204], message
        assert len({attempt.body for attempt in tries}) == 1
        assert json.loads(tries[0].body)["type"] == message["event"]
