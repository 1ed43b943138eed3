"""Several keyturn processes on one PostgreSQL database behave like one: two `keyturn serve`
instances and the example Flask app under `gunicorn -w 2`, each with its own cache, all over
loopback HTTP against a private PostgreSQL cluster that each test starts and stops itself.

- A revocation through one instance reaches every other process within 1 s, in each of 100
  trials.
- Of 50 concurrent rotations of one key through both instances, exactly one succeeds.
- When PostgreSQL stops under load, a verification without a fresh cache entry gets 503, never
  "allowed" for a revoked key and never "invalid" for a valid one; no mutation reports success
  without being stored; and once PostgreSQL is back, every process recovers without a restart.

The propagation figures are printed, and written as JSON to the file that
KEYTURN_PROPAGATION_REPORT names, for docs/benchmarks.md.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from conftest import (
    REQUEST_TIMEOUT,
    Cluster,
    loopback_session,
    run_cli,
    run_gunicorn,
    run_server,
)

SERVE_PATTERN = r"serving the API on (http://[0-9.:]+)\n"

TRIALS = 100
REVOCATION_BOUND = 1.0
# Bounds of each polling phase, so that no trial can hang.
TRIAL_TIMEOUT = 5.0
POLL_THREADS = 4


@dataclass
class Deployment:
    """The processes of one test: two `keyturn serve` instances and gunicorn, on one database."""

    environ: dict[str, str]
    admin: str
    verifier: str
    instances: list[str] = field(default_factory=list)
    flask: str = ""


def deploy(stack: ExitStack, cluster: Cluster, tmp_path: Path, keyturn_bin: Path) -> Deployment:
    pepper = "1:" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    environ = {
        "KEYTURN_DATABASE_URL": cluster.url,
        "KEYTURN_PEPPER": pepper,
        "EXAMPLE_EXPOSE_PID": "1",
        "PYTHONUNBUFFERED": "1",
    }
    run_cli(keyturn_bin, ["init"], environ)
    admin = create_with_cli(keyturn_bin, environ, "operator", "keyturn:admin")
    verifier = create_with_cli(keyturn_bin, environ, "verifier", "keyturn:verify")

    deployment = Deployment(environ, admin, verifier)
    for name in ("a", "b"):
        command = [str(keyturn_bin), "serve", "--listen", "127.0.0.1:0"]
        log_path = tmp_path / f"serve-{name}.log"
        (url,) = stack.enter_context(run_server(command, environ, log_path, SERVE_PATTERN))
        deployment.instances.append(url)
    deployment.flask = stack.enter_context(
        run_gunicorn(environ, tmp_path / "gunicorn.log", preload=False)
    )
    return deployment


def create_with_cli(keyturn_bin: Path, environ: dict[str, str], name: str, scope: str) -> str:
    args = ["keys", "create", "--name", name, "--scope", scope, "--json"]
    return json.loads(run_cli(keyturn_bin, args, environ).stdout)["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_key(session: requests.Session, instance: str, admin: str, name: str) -> dict[str, Any]:
    response = session.post(
        f"{instance}/v1/keys",
        json={"name": name, "scopes": ["orders:read"]},
        headers=bearer(admin),
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return response.json()


def verify(session: requests.Session, instance: str, verifier: str, token: str) -> str:
    """Return the outcome `/v1/verify` of ``instance`` reports for ``token``."""
    response = session.post(
        f"{instance}/v1/verify",
        json={"token": token, "scopes": ["orders:read"]},
        headers=bearer(verifier),
        timeout=REQUEST_TIMEOUT,
    )
    if response.status_code == 503:
        return "store_unavailable"
    assert response.status_code == 200, response.text
    return response.json()["outcome"]


def flask_outcome(session: requests.Session, flask: str, token: str) -> tuple[int, str]:
    """Return the worker pid and the outcome of one request to the Flask app."""
    response = session.get(
        f"{flask}/orders",
        headers={**bearer(token), "Connection": "close"},
        timeout=REQUEST_TIMEOUT,
    )
    pid = int(response.headers["X-Worker-Pid"])
    if response.status_code == 200:
        return pid, "allowed"
    return pid, json.loads(response.content)["code"]


def until_every_process(
    deployment: Deployment, token: str, accepts: bool, started: float
) -> dict[str, float]:
    """Poll the other instance and both gunicorn workers until each accepts (or rejects) the
    token, and return the seconds after ``started`` at which each first did.

    Fails when a process answers the other way to a request sent after it first agreed, or when
    they do not all agree within TRIAL_TIMEOUT. Several threads poll at once, so that both sync
    workers stay busy; a response is judged by when its request was sent, because a thread may
    record its response after another thread recorded a later one.
    """
    other = deployment.instances[1]
    # Per process: (sent, received, outcome, agrees) of every answer.
    answers: dict[str, list[tuple[float, float, str, bool]]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def record(process: str, sent: float, outcome: str, allowed: bool) -> None:
        received = time.monotonic() - started
        with lock:
            answers.setdefault(process, []).append((sent, received, outcome, allowed == accepts))
            agreed = [name for name, rows in answers.items() if any(row[3] for row in rows)]
            if len(agreed) == 3:
                stop.set()

    def poll_instance() -> None:
        with loopback_session() as session:
            while not stop.is_set() and time.monotonic() - started < TRIAL_TIMEOUT:
                sent = time.monotonic() - started
                outcome = verify(session, other, deployment.verifier, token)
                record("instance b", sent, outcome, outcome == "active")

    def poll_flask() -> None:
        with loopback_session() as session:
            while not stop.is_set() and time.monotonic() - started < TRIAL_TIMEOUT:
                sent = time.monotonic() - started
                pid, outcome = flask_outcome(session, deployment.flask, token)
                record(f"worker {pid}", sent, outcome, outcome == "allowed")

    with ThreadPoolExecutor(max_workers=POLL_THREADS) as pool:
        futures = [pool.submit(poll_instance)]
        futures += [pool.submit(poll_flask) for _ in range(POLL_THREADS - 1)]
        for future in futures:
            future.result(timeout=TRIAL_TIMEOUT + REQUEST_TIMEOUT)

    first: dict[str, float] = {}
    for process, rows in answers.items():
        agreeing = [received for _, received, _, agrees in rows if agrees]
        if not agreeing:
            continue
        first[process] = min(agreeing)
        late = [row for row in rows if not row[3] and row[0] > first[process]]
        assert late == [], f"{process} went back after {first[process]:.3f} s: {late}"
    assert len(first) == 3, f"processes that agreed within {TRIAL_TIMEOUT} s: {first}"
    return first


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_revocation_reaches_every_process(
    cluster: Cluster, tmp_path: Path, keyturn_bin: Path
) -> None:
    with ExitStack() as stack, loopback_session() as session:
        deployment = deploy(stack, cluster, tmp_path, keyturn_bin)
        revoking = deployment.instances[0]
        delays: list[float] = []
        for trial in range(TRIALS):
            created = create_key(session, revoking, deployment.admin, f"trial {trial}")
            token, key_id = created["token"], created["key_id"]
            until_every_process(deployment, token, accepts=True, started=time.monotonic())

            started = time.monotonic()
            response = session.post(
                f"{revoking}/v1/keys/{key_id}/revoke",
                json={"reason": "propagation trial"},
                headers=bearer(deployment.admin),
                timeout=REQUEST_TIMEOUT,
            )
            assert response.status_code == 200, response.text
            # The revoking process rejects the key on its very next verification.
            assert verify(session, revoking, deployment.verifier, token) == "revoked"
            first = until_every_process(deployment, token, accepts=False, started=started)
            delay = max(first.values())
            assert delay < REVOCATION_BOUND, f"trial {trial}: {first}"
            delays.append(delay)

    report = {
        "trials": len(delays),
        "min_ms": round(min(delays) * 1000, 1),
        "p50_ms": round(statistics.median(delays) * 1000, 1),
        "p90_ms": round(percentile(delays, 0.9) * 1000, 1),
        "p99_ms": round(percentile(delays, 0.99) * 1000, 1),
        "max_ms": round(max(delays) * 1000, 1),
    }
    print(f"revocation propagation on PostgreSQL: {json.dumps(report)}")
    if os.environ.get("KEYTURN_PROPAGATION_REPORT"):
        Path(os.environ["KEYTURN_PROPAGATION_REPORT"]).write_text(json.dumps(report) + "\n")


def test_concurrent_rotations_one_wins(cluster: Cluster, tmp_path: Path, keyturn_bin: Path) -> None:
    with ExitStack() as stack, loopback_session() as session:
        deployment = deploy(stack, cluster, tmp_path, keyturn_bin)
        created = create_key(session, deployment.instances[0], deployment.admin, "contended")
        key_id = created["key_id"]

        def rotate(attempt: int) -> int:
            instance = deployment.instances[attempt % 2]
            with loopback_session() as own:
                response = own.post(
                    f"{instance}/v1/keys/{key_id}/rotate",
                    json={"overlap": "1h"},
                    headers=bearer(deployment.admin),
                    timeout=REQUEST_TIMEOUT * 4,
                )
            assert response.status_code in (201, 409), response.text
            if response.status_code == 409:
                assert response.json()["code"] == "already_rotated", response.text
            return response.status_code

        with ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(pool.map(rotate, range(50)))
        assert statuses.count(201) == 1, statuses
        assert statuses.count(409) == 49, statuses

        keys = session.get(
            f"{deployment.instances[1]}/v1/keys",
            params={"limit": 500},
            headers=bearer(deployment.admin),
            timeout=REQUEST_TIMEOUT,
        ).json()["keys"]
        successors = [key for key in keys if key["predecessor_id"] == key_id]
        assert len(successors) == 1, successors
        events = session.get(
            f"{deployment.instances[1]}/v1/audit",
            params={"key_id": key_id, "event": "authn_token_rotated"},
            headers=bearer(deployment.admin),
            timeout=REQUEST_TIMEOUT,
        ).json()["events"]
        assert len(events) == 1, events


@dataclass
class OutageLog:
    """What the clients saw while PostgreSQL was down: verification outcomes per process, and
    the key ids that creations reported as stored."""

    outcomes: list[tuple[str, str]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    failed_creations: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def test_outage_answers_503_and_recovers(
    cluster: Cluster, tmp_path: Path, keyturn_bin: Path
) -> None:
    with ExitStack() as stack, loopback_session() as session:
        deployment = deploy(stack, cluster, tmp_path, keyturn_bin)
        first, second = deployment.instances
        valid = create_key(session, first, deployment.admin, "valid")["token"]
        revoked = create_key(session, first, deployment.admin, "revoked")
        session.post(
            f"{first}/v1/keys/{revoked['key_id']}/revoke",
            headers=bearer(deployment.admin),
            timeout=REQUEST_TIMEOUT,
        ).raise_for_status()
        until_every_process(deployment, revoked["token"], accepts=False, started=time.monotonic())

        log = OutageLog()
        stop = threading.Event()

        def verify_load() -> None:
            with loopback_session() as own:
                while not stop.is_set():
                    for name, token in (("valid", valid), ("revoked", revoked["token"])):
                        outcome = verify(own, second, deployment.verifier, token)
                        _, flask = flask_outcome(own, deployment.flask, token)
                        with log.lock:
                            log.outcomes.append((name, outcome))
                            log.outcomes.append((name, flask))

        def create_load() -> None:
            with loopback_session() as own:
                attempt = 0
                while not stop.is_set():
                    attempt += 1
                    response = own.post(
                        f"{first}/v1/keys",
                        json={"name": f"during outage {attempt}", "scopes": ["orders:read"]},
                        headers=bearer(deployment.admin),
                        timeout=REQUEST_TIMEOUT * 2,
                    )
                    with log.lock:
                        if response.status_code == 201:
                            log.created.append(response.json()["key_id"])
                        else:
                            log.failed_creations.append(response.status_code)

        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [pool.submit(verify_load), pool.submit(verify_load), pool.submit(create_load)]
            time.sleep(0.5)
            cluster.stop()
            # Longer than the cache's 1 s staleness bound, so answers without the store are seen.
            time.sleep(3.0)
            outage_outcomes = len(log.outcomes)
            cluster.start()
            time.sleep(0.5)
            stop.set()
            for future in futures:
                future.result(timeout=60)

        assert outage_outcomes > 0
        for name, outcome in log.outcomes:
            if name == "valid":
                assert outcome in ("active", "allowed", "store_unavailable"), outcome
            else:
                # Past 20 rejections from 127.0.0.1, a worker's brute-force guard rejects with 429.
                assert outcome in ("revoked", "too_many_requests", "store_unavailable"), outcome
        assert ("valid", "store_unavailable") in log.outcomes, "no 503 was seen during the outage"
        assert set(log.failed_creations) <= {503}, log.failed_creations

        # Recovery without restarting any keyturn process: every creation that reported success
        # is stored, and new keys work everywhere.
        deadline = time.monotonic() + 10.0
        while True:
            response = session.post(
                f"{second}/v1/keys",
                json={"name": "after outage", "scopes": ["orders:read"]},
                headers=bearer(deployment.admin),
                timeout=REQUEST_TIMEOUT,
            )
            if response.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.status_code == 201, response.text
        after = response.json()["token"]
        until_every_process(deployment, after, accepts=True, started=time.monotonic())
        for key_id in log.created:
            shown = session.get(
                f"{second}/v1/keys/{key_id}",
                headers=bearer(deployment.admin),
                timeout=REQUEST_TIMEOUT,
            )
            assert shown.status_code == 200, f"creation of {key_id} was reported but not stored"
