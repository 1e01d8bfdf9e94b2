"""How the benchmarks turn measurements into the figures they print."""

from __future__ import annotations


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
