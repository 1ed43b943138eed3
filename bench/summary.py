"""Print one table of the figures that `make bench` collected: the ratios and their targets
first, then the absolute figures, with the machine, the date and the load average.

It reads from the output directory (``target/bench`` by default): ``flask.json``,
``http.json``, ``scale.json``, ``propagation-sqlite.json``, ``propagation-postgres.json`` and
``load-start.txt``, and criterion's estimates under ``target/criterion`` that were written after
the run started (``started``). A missing file shows as "not run". The table is also written to
``summary.md`` in the output directory.

Run with ``python bench/summary.py target/bench``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

# Criterion benchmarks shown in the table, with what each one measures.
CRITERION = [
    ("hmac_sha256_of_token", "one HMAC-SHA256 of a token (the floor)"),
    ("token_parse", "token parse"),
    ("verify_cached", "verify, cache hit, without the runtime (as Python calls it)"),
    ("verify_cache_hit_polled", "verify, cache hit, polled directly"),
    ("verify_cache_hit", "verify, cache hit, through block_on"),
    ("verify_unknown_id_cached", "verify, unknown key id remembered"),
    ("verify_malformed", "verify, malformed token"),
    ("verify_sqlite_read", "verify, strict mode (one SQLite read)"),
    ("sqlite/verify_cold_miss", "verify, cold miss on SQLite"),
    ("sqlite/create", "create on SQLite"),
    ("sqlite/rotate", "rotate on SQLite"),
    ("sqlite/revoke", "revoke on SQLite"),
    ("postgres/verify_cold_miss", "verify, cold miss on PostgreSQL"),
    ("postgres/create", "create on PostgreSQL"),
    ("postgres/rotate", "rotate on PostgreSQL"),
    ("postgres/revoke", "revoke on PostgreSQL"),
]
# Startup with the large store may take this many times as long as with the small one and still
# count as not growing with the number of keys. The margin absorbs run-to-run noise.
STARTUP_GROWTH_LIMIT = 1.5


def main() -> int:
    args = parse_args()
    out = Path(args.output)
    started = out / "started"
    since = started.stat().st_mtime if started.exists() else 0.0
    criterion = read_criterion(Path(args.criterion), since)
    flask = read_json(out / "flask.json")
    http = read_json(out / "http.json")
    scale = read_json(out / "scale.json")
    propagation = {
        "SQLite, 2 gunicorn workers": read_json(out / "propagation-sqlite.json"),
        "PostgreSQL, 2 instances and 2 workers": read_json(
            out / "propagation-postgres.json"
        ),
    }

    rows: list[tuple[str, str, str, str]] = []
    rows += ratio_rows(flask, http, scale, criterion)
    rows += absolute_rows(flask, http, scale, criterion, propagation)

    lines = header(out) + table(rows)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    (out / "summary.md").write_text(text)
    return 0


def ratio_rows(
    flask: dict[str, Any] | None,
    http: dict[str, Any] | None,
    scale: dict[str, Any] | None,
    criterion: dict[str, float],
) -> list[tuple[str, str, str, str]]:
    rows = []
    if flask:
        ratios = flask["ratios"]
        rows.append(
            check(
                "Flask: keyturn req/s / no-check req/s",
                ratios["keyturn_rps_over_baseline"],
                ">= 0.90",
                lambda value: value >= 0.90,
            )
        )
        rows.append(
            check(
                "Flask: keyturn added cost / SHA-512 lookup added cost",
                ratios["keyturn_added_over_sha512_added"],
                "<= 0.20",
                lambda value: value <= 0.20,
            )
        )
        for label, key in (
            ("Flask, CPU time: no-check / keyturn", "cpu_keyturn_over_baseline"),
            (
                "Flask, CPU time: keyturn added / SHA-512 added",
                "cpu_keyturn_added_over_sha512_added",
            ),
        ):
            if key in ratios:
                rows.append((label, f"{ratios[key]}", "", ""))
        rows.append(
            (
                "Flask: keyturn added cost / scrypt added cost",
                f"{ratios['keyturn_added_over_scrypt_added']:.5f}",
                "",
                "",
            )
        )
    else:
        rows.append(("Flask ratios", "not run", ">= 0.90, <= 0.20", ""))
    if http and "ratios" in http:
        rows.append(
            check(
                "HTTP: /v1/auth req/s / /healthz req/s",
                http["ratios"]["auth_rps_over_healthz_rps"],
                ">= 0.80",
                lambda value: value >= 0.80,
            )
        )
    else:
        reason = http["skipped"] if http else "not run"
        rows.append(("HTTP: /v1/auth req/s / /healthz req/s", reason, ">= 0.80", ""))
    floor = criterion.get("hmac_sha256_of_token")
    for bench_id in ("verify_cached", "verify_cache_hit_polled", "verify_cache_hit"):
        if floor and bench_id in criterion:
            rows.append(
                (
                    f"criterion: {bench_id} / one HMAC",
                    f"{criterion[bench_id] / floor:.2f}",
                    "",
                    "",
                )
            )
    if scale:
        small, large = scale["startup_ms"]["small"], scale["startup_ms"]["large"]
        growth = large["median"] / small["median"]
        rows.append(
            check(
                f"Scale: startup with {large['keys']:,} keys / with {small['keys']:,} keys",
                round(growth, 2),
                f"<= {STARTUP_GROWTH_LIMIT} (does not grow)",
                lambda value: value <= STARTUP_GROWTH_LIMIT,
            )
        )
        rows.append(
            check(
                f"Scale: cold verify p99 with {scale['keys']:,} keys, keys in use (us)",
                scale["cold_verify_us"]["p99"],
                "< 100",
                lambda value: value < 100,
            )
        )
    else:
        rows.append(("Scale", "not run", "p99 < 100 us; startup flat", ""))
    return rows


def absolute_rows(
    flask: dict[str, Any] | None,
    http: dict[str, Any] | None,
    scale: dict[str, Any] | None,
    criterion: dict[str, float],
    propagation: dict[str, dict[str, Any] | None],
) -> list[tuple[str, str, str, str]]:
    rows = []
    if flask:
        for name, figures in flask["variants"].items():
            cpu = figures.get("cpu_microseconds_per_request")
            cpu_text = "" if cpu is None else f"; CPU {cpu:.1f} us"
            rate = f"{figures['requests_per_second']:,.0f}"
            rows.append(
                (
                    f"Flask {name}: req/s (added us/request)",
                    f"{rate} ({figures['added_microseconds']:+.2f}){cpu_text}",
                    "",
                    "",
                )
            )
    if http and "routes" in http:
        for route in http["routes"].values():
            latency = route["latency_us"]
            percentiles = "/".join(f"{latency[p]:.0f}" for p in ("p50", "p90", "p99"))
            rows.append(
                (
                    f"HTTP {route['path']}: req/s; p50/p90/p99 latency (us)",
                    f"{route['requests_per_second']:,.0f}; {percentiles}",
                    "",
                    "",
                )
            )
    for bench_id, description in CRITERION:
        if bench_id in criterion:
            rows.append(
                (
                    f"criterion {bench_id}: {description}",
                    duration(criterion[bench_id]),
                    "",
                    "",
                )
            )
    if "postgres/create" not in criterion:
        rows.append(
            (
                "criterion postgres/*",
                "not run (no PostgreSQL server)",
                "",
                "",
            )
        )
    if scale:
        rows += scale_rows(scale)
    for name, report in propagation.items():
        if report:
            value = (
                f"p50 {report['p50_ms']} / p90 {report['p90_ms']} / p99 {report['p99_ms']} / "
                f"max {report['max_ms']} ms over {report['trials']} trials"
            )
        else:
            value = "not run"
        rows.append((f"Revocation propagation, {name}", value, "<= 1000 ms", ""))
    return rows


def scale_rows(scale: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    keys = scale["keys"]
    cold, warm, first_use, memory = (
        scale["cold_verify_us"],
        scale["warm_verify_us"],
        scale.get("first_use_verify_us"),
        scale["memory"],
    )
    small, large = scale["startup_ms"]["small"], scale["startup_ms"]["large"]
    rate = f"{scale['create_keys_per_second']:,.0f} keys/s"
    return [
        (
            f"Scale: create {keys:,} keys",
            f"{scale['create_seconds']} s ({rate}), {scale['database_megabytes']} MB",
            "",
            "",
        ),
        (
            "Scale: cold verify p50/p99/max (us)",
            f"{cold['p50']}/{cold['p99']}/{cold['max']} over {cold['samples']:,}",
            "",
            "",
        ),
        (
            "Scale: warm verify p50/p99/max (us)",
            f"{warm['p50']}/{warm['p99']}/{warm['max']} over {warm['samples']:,}",
            "",
            "",
        ),
        (
            "Scale: cold verify of never-used keys p50/p99/max (us)",
            "not run, every key was used"
            if first_use is None
            else f"{first_use['p50']}/{first_use['p99']}/{first_use['max']} "
            f"over {first_use['samples']:,}",
            "",
            "",
        ),
        (
            "Scale: memory per cached key (bytes)",
            f"{memory['bytes_per_cached_key']:.0f} (slope up to {memory['cached_keys']:,} keys)",
            "",
            "",
        ),
        (
            "Scale: startup median (ms), small / large store",
            f"{small['median']} ({small['keys']:,} keys) / {large['median']} ({large['keys']:,} keys)",
            "",
            "",
        ),
    ]


def check(name: str, value: float, target: str, met: Any) -> tuple[str, str, str, str]:
    return (name, f"{value}", target, "met" if met(value) else "MISSED")


def duration(nanoseconds: float) -> str:
    if nanoseconds >= 1e6:
        return f"{nanoseconds / 1e6:.2f} ms"
    if nanoseconds >= 1e3:
        return f"{nanoseconds / 1e3:.1f} us"
    return f"{nanoseconds:.0f} ns"


def header(out: Path) -> list[str]:
    load_start = read_text(out / "load-start.txt") or "unknown"
    load_end = os.getloadavg()
    return [
        "keyturn benchmark summary",
        "",
        f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"load average (1, 5, 15 min) at start: {load_start}; at end: "
        + ", ".join(f"{value:.2f}" for value in load_end),
        "",
    ]


def table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    lines = ["| figure | value | target | status |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {value} | {target} | {status} |"
        for name, value, target, status in rows
    ]
    return lines


def cpu_model() -> str:
    try:
        output = subprocess.run(
            ["lscpu"], check=False, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return platform.processor() or "unknown CPU"
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def read_criterion(root: Path, since: float) -> dict[str, float]:
    """Return the median of each benchmark in nanoseconds, from estimates written after ``since``."""
    medians = {}
    for bench_id, _ in CRITERION:
        path = root / bench_id / "new" / "estimates.json"
        if path.exists() and path.stat().st_mtime >= since:
            medians[bench_id] = json.loads(path.read_text())["median"]["point_estimate"]
    return medians


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def read_text(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="directory with the benchmark outputs")
    parser.add_argument(
        "--criterion", default="target/criterion", help="criterion's output directory"
    )
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
