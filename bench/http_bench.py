"""Requests per second and latency percentiles of `keyturn serve` under wrk, on the gateway
listener: ``/v1/auth`` with a valid key, and ``/healthz``, which authenticates nothing, as the
ceiling of the same server. Both routes receive the same ``Authorization`` header, so they differ
only in the work done for it.

The script creates a store and a key with the `keyturn` CLI in a temporary directory and starts
the server on 127.0.0.1 with both listeners on free ports. It runs wrk against each route in
turn, alternating the routes when there are several rounds, and stops the server with SIGTERM. wrk reads the
token from an environment variable through a Lua script, so it never appears on a command line
or in any output. Without wrk, the script writes a report that says why it skipped.

Run with ``python bench/http_bench.py --keyturn-bin target/release/keyturn --json http.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROUTES = {"healthz": "/healthz", "auth": "/v1/auth"}
TOKEN_VAR = "KEYTURN_BENCH_TOKEN"
LUA_SCRIPT = f'wrk.headers["Authorization"] = "Bearer " .. os.getenv("{TOKEN_VAR}")\n'
SERVER_START_TIMEOUT = 20.0
SERVER_STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 30.0
GATEWAY_LINE = re.compile(r"serving the gateway endpoint on (http://[0-9.:]+)")
UNIT_MICROSECONDS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def main() -> int:
    args = parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        reason = (
            "wrk is not installed (apt-get install wrk); skipped the HTTP benchmark"
        )
        print(reason)
        write_json(args.json, {"skipped": reason})
        return 0

    with tempfile.TemporaryDirectory(prefix="keyturn-http-bench-") as directory:
        root = Path(directory)
        environ = {
            **os.environ,
            "KEYTURN_DATABASE_URL": f"sqlite://{root / 'keyturn.db'}",
            "RUST_LOG": "warn",
        }
        environ.pop("KEYTURN_PEPPER", None)
        environ.pop("KEYTURN_PEPPER_FILE", None)
        run_cli(args.keyturn_bin, ["init"], environ)
        created = run_cli(
            args.keyturn_bin, ["keys", "create", "--name", "wrk", "--json"], environ
        )
        token = json.loads(created)["token"]
        script = root / "bearer.lua"
        script.write_text(LUA_SCRIPT)

        with serve(args.keyturn_bin, environ, root / "serve.log") as base_url:
            check_routes(base_url, token)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ROUTES}
            for _ in range(args.rounds):
                for name, path in ROUTES.items():
                    run = run_wrk(wrk, args, f"{base_url}{path}", script, token)
                    runs[name].append(run)

    report = summarise(runs, args)
    print_report(report)
    write_json(args.json, report)
    return 0


def run_cli(binary: str, arguments: list[str], environ: dict[str, str]) -> str:
    """Run the keyturn CLI and return its stdout, which may hold a token and is never printed."""
    completed = subprocess.run(
        [binary, *arguments],
        env=environ,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"keyturn {arguments[0]} failed: {completed.stderr.strip()}")
    return completed.stdout


class serve:
    """Run `keyturn serve` with the gateway listener on free loopback ports; stop it on exit."""

    def __init__(self, binary: str, environ: dict[str, str], log: Path) -> None:
        self.command = [
            binary,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ]
        self.environ = environ
        self.log = log
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> str:
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.environ,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            match = GATEWAY_LINE.search(line)
            if match:
                return match.group(1)
        self.__exit__()
        raise SystemExit(
            f"keyturn serve did not start; see {self.log.read_text()[-2000:]}"
        )

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=SERVER_STOP_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()


def check_routes(base_url: str, token: str) -> None:
    """Fail unless /healthz returns 200 and /v1/auth returns 204 for the key."""
    expected = {"healthz": 200, "auth": 204}
    for name, path in ROUTES.items():
        headers = {"Authorization": f"Bearer {token}"}
        with urllib.request.urlopen(
            urllib.request.Request(f"{base_url}{path}", headers=headers), timeout=5
        ) as response:
            if response.status != expected[name]:
                raise SystemExit(
                    f"{path} returned {response.status}, expected {expected[name]}"
                )


def run_wrk(
    wrk: str, args: argparse.Namespace, url: str, script: Path, token: str
) -> dict[str, Any]:
    command = [
        wrk,
        f"--threads={args.threads}",
        f"--connections={args.connections}",
        f"--duration={args.duration}s",
        f"--timeout={args.timeout}s",
        "--latency",
        f"--script={script}",
        url,
    ]
    completed = subprocess.run(
        command,
        env={**os.environ, TOKEN_VAR: token},
        capture_output=True,
        text=True,
        timeout=args.duration + 30,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"wrk failed on {url}: {completed.stderr.strip()}")
    return parse_wrk(completed.stdout, url)


def parse_wrk(output: str, url: str) -> dict[str, Any]:
    """Read requests per second and the latency distribution from wrk's report."""
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} responses were not 2xx or 3xx")
    socket_errors = re.search(r"Socket errors: (.*)", output)
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    if rate is None:
        raise SystemExit(
            f"cannot read Requests/sec from wrk's output for {url}:\n{output}"
        )
    latency = {}
    for percent, value, unit in re.findall(
        r"^\s+(50|75|90|99)%\s+([0-9.]+)(us|ms|s)\s*$", output, re.MULTILINE
    ):
        latency[f"p{percent}"] = float(value) * UNIT_MICROSECONDS[unit]
    requests = re.search(r"(\d+) requests in", output)
    return {
        "requests_per_second": float(rate.group(1)),
        "latency_us": latency,
        "requests": int(requests.group(1)) if requests else None,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


def summarise(
    runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace
) -> dict[str, Any]:
    routes = {}
    for name, results in runs.items():
        routes[name] = {
            "path": ROUTES[name],
            "requests_per_second": round(
                statistics.median(run["requests_per_second"] for run in results), 1
            ),
            "latency_us": {
                percentile: round(
                    statistics.median(run["latency_us"][percentile] for run in results),
                    1,
                )
                for percentile in ("p50", "p90", "p99")
            },
            "runs": results,
        }
    ratio = (
        routes["auth"]["requests_per_second"] / routes["healthz"]["requests_per_second"]
    )
    return {
        "ratios": {"auth_rps_over_healthz_rps": round(ratio, 3)},
        "routes": routes,
        "wrk": {
            "threads": args.threads,
            "connections": args.connections,
            "duration_seconds": args.duration,
            "rounds": args.rounds,
        },
    }


def print_report(report: dict[str, Any]) -> None:
    print("keyturn serve under wrk, gateway listener on 127.0.0.1")
    print(
        f"  /v1/auth rps / /healthz rps: {report['ratios']['auth_rps_over_healthz_rps']:.3f}"
    )
    print(f"  {'route':<10} {'req/s':>10} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9}")
    for route in report["routes"].values():
        latency = route["latency_us"]
        print(
            f"  {route['path']:<10} {route['requests_per_second']:>10.1f} "
            f"{latency['p50']:>9.1f} {latency['p90']:>9.1f} {latency['p99']:>9.1f}"
        )


def write_json(path: str | None, report: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=2) + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--keyturn-bin", required=True, help="the keyturn binary, a release build"
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds of each wrk run"
    )
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs of each route")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="open connections")
    parser.add_argument(
        "--timeout", type=int, default=5, help="seconds before wrk counts a timeout"
    )
    parser.add_argument("--json", help="file to write the figures to, as JSON")
    args = parser.parse_args()
    for name in ("duration", "rounds", "threads", "connections", "timeout"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


if __name__ == "__main__":
    sys.exit(main())
