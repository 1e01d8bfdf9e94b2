"""How the benchmarks turn measurements into the figures they print."""

from __future__ import annotations

import time


def percentile(ordered: list[float], fraction: float) -> float:
    """The value `fraction` of the way through sorted values (0.99 for p99); NaN if none."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def cpu_times() -> tuple[int, int]:
    """(all, steal) CPU ticks of the machine so far, from /proc/stat; (0, 0) elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    steal = fields[7] if len(fields) > 7 else 0
    return sum(fields[:8]), steal


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the CPU time the hypervisor gave to other guests between two `cpu_times()`:
    on shared vCPUs it is capacity the servers and the load generator did not get."""
    elapsed = after[0] - before[0]
    return (after[1] - before[1]) / elapsed if elapsed > 0 else 0.0


def wait_for_quiet(
    max_wait_s: float, threshold: float = 0.03, window_s: float = 5.0
) -> tuple[float, float]:
    """Wait until the hypervisor steals less than `threshold` of the CPU over `window_s`, for at
    most `max_wait_s`: (seconds waited, steal share of the last window). Shared vCPUs are
    sometimes stolen by half for minutes; a section run then measures the neighbours."""
    started = time.monotonic()
    while True:
        before = cpu_times()
        time.sleep(window_s)
        steal = steal_share(before, cpu_times())
        waited = time.monotonic() - started
        if steal < threshold or waited >= max_wait_s:
            return waited, steal
