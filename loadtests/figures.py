"""How the benchmarks turn measurements into the figures they print."""

from __future__ import annotations

import asyncio
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


class StealTimeline:
    """The hypervisor's steal share second by second during a run, sampled by a task on the load
    generator's loop: which seconds of a run the machine was whole for.

    A diagnostic, never a verdict: the targets are judged on every decision of the run."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, tuple[int, int]]] = []  # (perf_counter, cpu_times)

    async def run(self) -> None:
        while True:
            self.samples.append((time.perf_counter(), cpu_times()))
            await asyncio.sleep(self.interval_s)

    def quiet_seconds(self, start: float, seconds: int, threshold: float = 0.03) -> set[int]:
        """Seconds `i` of the run (from `start`) in which, and in the second before which, less
        than `threshold` of the CPU was stolen (a queue built up in a stolen second drains in
        the next)."""
        steal: dict[int, float] = {}
        for second in range(-1, seconds):
            begin, end = start + second, start + second + 1
            inside = [sample for at, sample in self.samples if begin <= at <= end]
            if len(inside) >= 2:
                steal[second] = steal_share(inside[0], inside[-1])
        return {
            second
            for second in range(seconds)
            if steal.get(second, 1.0) < threshold and steal.get(second - 1, 1.0) < threshold
        }
