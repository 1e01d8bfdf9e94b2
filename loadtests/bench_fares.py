"""Fare engine benchmark: legs priced per second on one core, with transfer and cap state.

    python -m loadtests.bench_fares [--riders 3000] [--days 7] [--late 0.05] [--feed DIR]

Pure Python, no servers: what a fare worker does per tap once the tap is decoded. Each rider
(regular, student or worker, a `RiderLedger` each) rides a week of Hanoi commutes drawn from
the feed (bus → metro → bus with transfers inside and outside their windows, extra rides that
hit the daily cap); a share of taps arrives late and out of order, as offline gates upload
them, and is re-priced with its day. The process is pinned to one CPU. The target is ≥ 5,000
legs/s; it prints legs/s for the first pass (cold caches) and for a second pass over fresh
ledgers with warm lookups, which is the steady state of a long-running worker.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import random
import sys
import time
from pathlib import Path

from shared.fares.feed import HANOI, Feed, read_feed
from shared.fares.ledger import RiderLedger
from shared.fares.tariff import Leg

TARGET_LEGS_PER_S = 5_000
MONDAY_5AM = 1_794_175_200  # 2026-11-09 05:00 in Hanoi
CATEGORIES = ("regular", "student", "worker")


def commutes(feed: Feed, riders: int, days: int, seed: int = 7) -> list[tuple[int, Leg]]:
    """Every rider's taps for `days` days, in the order they happened."""
    rng = random.Random(seed)
    stops = feed.stops_on_routes
    network = feed.tariff.route_network
    lines: dict[str, list[str]] = {}
    for stop in stops.values():
        if network[stop.route_id] == "metro":
            lines.setdefault(stop.route_id, []).append(stop.stop_id)
    buses = sorted(route for route, net in network.items() if net != "metro")
    taps: list[tuple[int, int, Leg]] = []
    for rider in range(riders):
        for day in range(days):
            at = MONDAY_5AM + day * 86_400 + rng.randrange(0, 4 * 3600)
            for trip in range(rng.choice((2, 2, 3, 4, 6))):  # 6 trips hit the daily cap
                for ride in range(rng.choice((1, 2, 3))):
                    leg_id = f"{rider}-{day}-{trip}-{ride}"
                    if ride == 1:
                        line = rng.choice(sorted(lines))
                        entry, exit_ = rng.sample(lines[line], 2)
                        arrive = at + rng.randrange(300, 1800)
                        taps.append((at, rider, Leg(leg_id, line, at, arrive, entry, exit_)))
                        at = arrive
                    else:
                        bus = rng.choice(buses)
                        taps.append((at, rider, Leg(leg_id, bus, at, at)))
                    at += rng.randrange(120, 5400)  # some transfers fall outside the window
                at += rng.randrange(1800, 3 * 3600)
    taps.sort(key=lambda tap: tap[0])
    return [(rider, leg) for _, rider, leg in taps]


def arrival_order(
    taps: list[tuple[int, Leg]], late: float, seed: int = 11
) -> list[tuple[int, Leg]]:
    """The taps as uploaded: a `late` share arrives up to a few hundred taps later."""
    rng = random.Random(seed)
    keyed = [
        (index + (rng.randrange(50, 500) if rng.random() < late else 0), index, tap)
        for index, tap in enumerate(taps)
    ]
    keyed.sort()
    return [tap for _, _, tap in keyed]


def price_all(feed: Feed, stream: list[tuple[int, Leg]], riders: int) -> tuple[float, int, int]:
    ledgers = [
        RiderLedger(feed.tariff, CATEGORIES[rider % len(CATEGORIES)]) for rider in range(riders)
    ]
    charged = transfers = 0
    gc.collect()
    gc.freeze()  # as the services do after start-up: the feed and the taps are not garbage
    started = time.process_time()
    for rider, leg in stream:
        charge = ledgers[rider].add(leg)
        charged += charge.charged
        transfers += charge.journey_fare != charge.leg_fare
    elapsed = time.process_time() - started
    gc.unfreeze()
    return elapsed, charged, transfers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, default=3000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--late", type=float, default=0.05, help="share of taps arriving late")
    parser.add_argument("--feed", type=Path, default=HANOI)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    feed = read_feed(args.feed)
    stream = arrival_order(commutes(feed, args.riders, args.days), args.late)
    late = sum(
        1
        for (_, leg), (_, following) in itertools.pairwise(stream)
        if following.departed_at < leg.departed_at
    )
    print(f"{len(stream):,} legs, {args.riders:,} riders × {args.days} days, {late:,} out of order")
    ok = True
    totals = set()
    for label in ("cold", "warm"):
        elapsed, charged, transfers = price_all(feed, stream, args.riders)
        rate = len(stream) / elapsed
        totals.add(charged)
        ok = ok and rate >= TARGET_LEGS_PER_S
        print(
            f"{label}: {rate:,.0f} legs/s on one core ({elapsed / len(stream) * 1e6:.1f} µs/leg), "
            f"{transfers:,} transfers, {charged:,} VND charged"
        )
    in_order = price_all(feed, sorted(stream, key=lambda tap: tap[1].departed_at), args.riders)
    same = totals == {in_order[1]}
    print(f"same total in tap order: {'yes' if same else 'NO'}; target ≥ {TARGET_LEGS_PER_S:,}/s")
    return 0 if ok and same else 1


if __name__ == "__main__":
    sys.exit(main())
