"""How long a revocation takes to reach every worker of a gunicorn server on one SQLite file.
The server runs the example app under ``gunicorn -w 2 --preload``, and the `keyturn` CLI revokes
each key in another process, as in ``python/tests/test_gunicorn.py``, whose helpers this script
reuses.

Each trial creates a key, polls until both workers have accepted it (so both have it cached),
waits a random pause of up to one poll interval, revokes the key, and polls until both workers
reject it. Without the pause, every trial would start right after a poll of the change
sequence, so every delay would be close to a whole poll interval. The delay of a trial runs from just before the
`keyturn keys revoke` process starts to the first rejection by the slower worker, so it includes
the CLI's own start-up and is an upper bound of the delay after the commit. The figures use the
format of the PostgreSQL test in ``python/tests/test_postgres.py``. All traffic goes to
127.0.0.1.

Run with ``python bench/propagation_bench.py --keyturn-bin target/release/keyturn --json
propagation-sqlite.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python" / "tests"))

from conftest import run_cli, run_gunicorn
from test_gunicorn import pids, poll, server_environ

# The default interval at which each worker polls the store's change sequence.
POLL_INTERVAL_SECONDS = 0.25
# Most polling phases after a revocation before a trial fails.
POLL_PHASES = 3


def main() -> int:
    args = parse_args()
    keyturn_bin = Path(args.keyturn_bin)
    delays: list[float] = []
    with tempfile.TemporaryDirectory(prefix="keyturn-propagation-") as directory:
        root = Path(directory)
        # Every trial ends with hundreds of rejected requests from 127.0.0.1, after which the
        # brute-force guard would reject with 429 instead of 401, so the guard is off.
        environ = {
            **server_environ(root),
            "RUST_LOG": "warn",
            "FLASK_KEYTURN_GUARD": "false",
        }
        run_cli(keyturn_bin, ["init"], environ)
        with run_gunicorn(environ, root / "gunicorn.log", preload=True) as base_url:
            url = f"{base_url}/orders"
            for trial in range(args.trials):
                delays.append(run_trial(keyturn_bin, environ, url, trial))

    report = {
        "trials": len(delays),
        "min_ms": round(min(delays) * 1000, 1),
        "p50_ms": round(statistics.median(delays) * 1000, 1),
        "p90_ms": round(percentile(delays, 0.9) * 1000, 1),
        "p99_ms": round(percentile(delays, 0.99) * 1000, 1),
        "max_ms": round(max(delays) * 1000, 1),
    }
    print(f"revocation propagation on SQLite, 2 gunicorn workers: {json.dumps(report)}")
    if args.json:
        Path(args.json).write_text(json.dumps(report) + "\n")
    return 0


def run_trial(
    keyturn_bin: Path, environ: dict[str, str], url: str, trial: int
) -> float:
    """Return the seconds from the start of a revocation until both workers reject the key."""
    created = run_cli(
        keyturn_bin,
        [
            "keys",
            "create",
            "--name",
            f"trial {trial}",
            "--scope",
            "orders:read",
            "--json",
        ],
        environ,
    )
    issued = json.loads(created.stdout)
    accepted = poll(url, issued["token"], lambda answers: len(pids(answers, 200)) >= 2)
    if len(pids(accepted, 200)) < 2:
        raise SystemExit(
            f"trial {trial}: one worker served every request before the revocation"
        )

    time.sleep(random.uniform(0, POLL_INTERVAL_SECONDS))
    started = time.monotonic()
    run_cli(keyturn_bin, ["keys", "revoke", issued["key_id"]], environ)

    # One worker can take every request of a polling phase on a busy machine, so a phase that
    # saw only one worker reject the key is followed by another, up to POLL_PHASES in all.
    first_rejections: dict[int, float] = {}
    for _ in range(POLL_PHASES):
        phase_started = time.monotonic() - started
        answers = poll(
            url, issued["token"], lambda answers: len(pids(answers, 401)) >= 2
        )
        for answer in answers:
            if answer.status == 401:
                first_rejections.setdefault(answer.pid, phase_started + answer.received)
        if len(first_rejections) >= 2:
            return max(first_rejections.values())
    raise SystemExit(f"trial {trial}: not every worker rejected the revoked key")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keyturn-bin", required=True, help="the keyturn binary")
    parser.add_argument("--trials", type=int, default=50, help="revocations to time")
    parser.add_argument("--json", help="file to write the figures to, as JSON")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    return args


if __name__ == "__main__":
    sys.exit(main())
