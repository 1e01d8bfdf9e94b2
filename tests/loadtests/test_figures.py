"""How the benchmarks judge a run: percentiles and the seconds the hypervisor left whole."""

from __future__ import annotations

from loadtests.figures import StealTimeline, percentile


def _timeline(steal_per_second: list[float]) -> StealTimeline:
    """Samples every 0.25 s from t = -1 s, 4,000 ticks per second, `steal_per_second[i]` of them
    stolen in second i - 1."""
    timeline = StealTimeline()
    total = stolen = 0
    for tick in range(4 * len(steal_per_second) + 1):
        timeline.samples.append((tick / 4 - 1, (total, stolen)))
        share = steal_per_second[min(tick // 4, len(steal_per_second) - 1)]
        total += 1000
        stolen += round(1000 * share)
    return timeline


def test_a_second_is_quiet_when_it_and_the_one_before_lost_under_the_threshold() -> None:
    # seconds:        -1    0     1     2     3     4
    steal = _timeline([0.0, 0.01, 0.20, 0.0, 0.02, 0.029])

    assert steal.quiet_seconds(start=0.0, seconds=5) == {0, 3, 4}


def test_seconds_without_samples_are_not_quiet() -> None:
    timeline = StealTimeline()

    assert timeline.quiet_seconds(start=0.0, seconds=3) == set()


def test_percentile_picks_the_value_below_which_the_fraction_lies() -> None:
    values = [float(v) for v in range(1, 101)]

    assert percentile(values, 0.99) == 100.0
    assert percentile(values, 0.50) == 51.0
    assert percentile([], 0.99) != percentile([], 0.99)  # NaN
