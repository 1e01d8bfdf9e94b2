"""How the benchmarks turn measurements into the figures they print."""

from __future__ import annotations


def percentile(ordered: list[float], fraction: float) -> float:
    """The value `fraction` of the way through sorted values (0.99 for p99); NaN if none."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
