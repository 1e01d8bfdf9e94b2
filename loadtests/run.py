"""`make loadtest`: start the stack if needed, create riders and gates, run Locust headless for a
fixed duration and offered rate, write CSV and HTML reports, and enforce `slo.toml`.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "var" / "loadtest"
SERVICE_PORTS = (8001, 8002, 8003, 8004, 8080)


def stack_ready() -> bool:
    try:
        return all(
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            for port in SERVICE_PORTS
        )
    except httpx.HTTPError:
        return False


def start_stack() -> subprocess.Popen[bytes]:
    log = (REPORTS / "stack.log").open("ab")
    stack = subprocess.Popen(
        [sys.executable, "-m", "citypass.stack", "run"],
        cwd=ROOT,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not stack_ready():
        if stack.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the local stack did not start; see {REPORTS / 'stack.log'}")
        time.sleep(1)
    return stack


def check_slo(stats_csv: Path, slo_path: Path, *, latency: bool = True) -> list[str]:
    slo = tomllib.loads(slo_path.read_text())["validation"]
    rows = {row["Name"]: row for row in csv.DictReader(stats_csv.open())}
    breaches = []
    total = sum(int(rows[name]["Request Count"]) for name in slo["requests"] if name in rows)
    failed = sum(int(rows[name]["Failure Count"]) for name in slo["requests"] if name in rows)
    if total == 0:
        return ["no validation request was made"]
    ratio = failed / total
    if ratio > slo["max_failure_ratio"]:
        breaches.append(f"failure ratio {ratio:.4f} > {slo['max_failure_ratio']}")
    for name in slo["requests"] if latency else ():
        if name in rows and float(rows[name]["99%"]) > slo["p99_ms"]:
            breaches.append(f"{name}: p99 {rows[name]['99%']} ms > {slo['p99_ms']} ms")
    print(f"validation requests: {total}, failed: {failed} ({ratio:.4%})")
    for name in slo["requests"]:
        if name in rows:
            row = rows[name]
            print(
                f"  {name:22} n={row['Request Count']:>6}  p50={row['50%']:>5} ms  "
                f"p95={row['95%']:>5} ms  p99={row['99%']:>5} ms  "
                f"rps={float(row['Requests/s']):.1f}"
            )
    return breaches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", default=os.environ.get("LOADTEST_DURATION", "60s"))
    parser.add_argument("--users", type=int, default=int(os.environ.get("LOADTEST_USERS", "200")))
    parser.add_argument("--riders", type=int, default=int(os.environ.get("LOADTEST_RIDERS", "200")))
    # Locust worker processes; the services need the other core on a 2-core machine.
    parser.add_argument(
        "--processes", type=int, default=int(os.environ.get("LOADTEST_PROCESSES", "1"))
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CI: enforce correctness (no unexpected decision); report latency without a verdict",
    )
    args = parser.parse_args(argv)
    REPORTS.mkdir(parents=True, exist_ok=True)
    stack = None if stack_ready() else start_stack()
    try:
        population = REPORTS / "population.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "loadtests.population",
                "--riders",
                str(args.riders),
                "--out",
                str(population),
            ],
            cwd=ROOT,
            check=True,
        )
        prefix = REPORTS / "validation"
        command = [
            str(Path(sys.executable).parent / "locust"),
            "-f",
            "loadtests/locustfile.py",
            "--headless",
            "--host",
            "http://127.0.0.1:8002",
            "--tags",
            "validation",
            "--users",
            str(args.users),
            "--spawn-rate",
            str(max(1, args.users // 5)),
            "--run-time",
            args.duration,
            "--csv",
            str(prefix),
            "--html",
            f"{prefix}.html",
            "--only-summary",
            "--stop-timeout",
            "5",
        ]
        if args.processes > 1:
            command += ["--processes", str(args.processes)]
        env = {**os.environ, "CITYPASS_POPULATION": str(population), "PYTHONPATH": str(ROOT)}
        subprocess.run(command, cwd=ROOT, env=env, check=False)
        breaches = check_slo(
            Path(f"{prefix}_stats.csv"), ROOT / "loadtests" / "slo.toml", latency=not args.smoke
        )
        print(f"reports: {prefix}_stats.csv, {prefix}.html")
        for breach in breaches:
            print(f"SLO breached: {breach}")
        return 1 if breaches else 0
    finally:
        if stack is not None:
            os.killpg(stack.pid, signal.SIGINT)
            stack.wait(60)


if __name__ == "__main__":
    sys.exit(main())
