"""`make bench`: the platform's figures in one table, with the machine they were measured on.

Each section starts its own real servers and services (PostgreSQL, Valkey, Kafka, uvicorn),
so sections do not disturb each other. Targets come from the issues; a figure below its
target is printed as such, never hidden.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from loadtests import bench_charges, bench_fares, bench_operator, bench_parking, bench_validation
from loadtests.figures import cpu_times, steal_share, wait_for_quiet

Section = tuple[str, Callable[[], Coroutine[Any, Any, dict[str, float]]]]

# (section, figure) -> (at least | at most, target), from the issues.
TARGETS: dict[tuple[str, str], tuple[str, float]] = {
    # Requests sent ÷ (first send → last answer): an offered rate served in full reads a hair
    # under it, so within 1 % counts as served (a server that fell behind shows it in p99).
    ("validation", "rate_1000_achieved_per_s"): ("≥", 990.0),
    ("validation", "rate_1000_server_p99_ms"): ("≤", 10.0),
    ("validation", "saturated_ratio_to_noop"): ("≥", 0.50),
    ("validation", "offline_decisions_per_s_per_core"): ("≥", 3000.0),
    ("payments", "charges_per_s"): ("≥", 500.0),
    ("payments", "p99_ms"): ("≤", 50.0),
    ("payments", "ledger_ok"): ("≥", 1.0),
    ("parking", "decisions_per_s"): ("≥", 200.0),
    ("parking", "p99_ms"): ("≤", 50.0),
    ("operator", "p99_s"): ("≤", 1.0),
    ("fares", "worker_legs_per_s_of_cpu"): ("≥", 5000.0),
}


def verdict(section: str, metric: str, value: float) -> tuple[str, str]:
    """The target column and `met`/`MISSED` (blank where the issues set no target)."""
    target = TARGETS.get((section, metric))
    if target is None:
        return "", ""
    sign, bound = target
    met = value >= bound if sign == "≥" else value <= bound
    return f"{sign} {bound:,.2f}", "met" if met else "MISSED"


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores, {model}; Python {platform.python_version()}; "
        f"load average before the run: {load}"
    )


def validation_args() -> argparse.Namespace:
    return argparse.Namespace(
        url=None,
        admin_token=None,
        kafka=None,
        seconds=8.0,
        saturation_seconds=6.0,
        rates=(250, 500, 1000),
        profile=None,
        fare_worker="separate",
    )


def sections(only: set[str]) -> list[Section]:
    everything: list[Section] = [
        ("validation", lambda: bench_validation.local_run(validation_args())),
        ("payments", lambda: bench_charges.run(None, clients=16, seconds=10)),
        ("parking", lambda: bench_parking.run(None, None, rate=200.0, seconds=20.0)),
        # The target rate is past this machine's capacity: also show a rate it can serve.
        ("parking-100/s", lambda: bench_parking.run(None, None, rate=100.0, seconds=20.0)),
        ("operator", lambda: bench_operator.run(events=3000, rate=200.0)),
        ("fares", lambda: bench_fares.run()),
    ]
    return [s for s in everything if not only or s[0].split("-")[0] in only]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated sections")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=180.0,
        help="before each section, wait up to this many seconds for the hypervisor to steal "
        "under 3 %% of the CPU (0: do not wait); the steal during the section is printed anyway",
    )
    args = parser.parse_args(argv)
    only = {name for name in args.only.split(",") if name}
    print(f"CityPass benchmarks — {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(machine())
    rows: list[tuple[str, str, Any]] = []
    for name, measure in sections(only):
        print(f"\n… {name}", flush=True)
        if args.quiet_wait > 0:
            waited, steal = wait_for_quiet(args.quiet_wait)
            print(f"  waited {waited:.0f} s for a quiet machine (steal {steal:.0%})", flush=True)
        before = cpu_times()
        figures = uvloop.run(measure())  # the load generator on the services' event loop
        figures["cpu_steal_share"] = steal_share(before, cpu_times())
        rows += [(name, metric, value) for metric, value in figures.items()]
    width = max(len(metric) for _, metric, _ in rows) if rows else 10
    print(f"\n{'section':11} {'figure':{width}} {'value':>12}  {'target':>10}  verdict")
    for section, metric, value in rows:
        shown = f"{value:,.2f}" if isinstance(value, float) else str(value)
        target, outcome = verdict(section, metric, float(value))
        print(f"{section:11} {metric:{width}} {shown:>12}  {target:>10}  {outcome}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
