"""Fare engine benchmark: legs priced per second on one core, with transfer and cap state.

    python -m loadtests.bench_fares [--riders 3000] [--days 7] [--late 0.05] [--feed DIR]
    python -m loadtests.bench_fares --worker [--riders 600]     # the fare worker on Valkey

Pure Python, no servers: what a fare worker does per tap once the tap is decoded. Each rider
(regular, student or worker, a `RiderLedger` each) rides a week of Hanoi commutes drawn from
the feed (bus → metro → bus with transfers inside and outside their windows, extra rides that
hit the daily cap); a share of taps arrives late and out of order, as offline gates upload
them, and is re-priced with its day. The process is pinned to one CPU. The target is ≥ 5,000
legs/s; it prints legs/s for the first pass (cold caches) and for a second pass over fresh
ledgers with warm lookups, which is the steady state of a long-running worker.

`--worker` measures the fare worker itself (services/validation/fare_accounts.py) on a fresh
Valkey: each leg is an accepted event's data read as the worker reads it, turned into its leg,
priced into the ticket's fare account and saved with its postings and event by the
compare-and-set script (one round trip). 64 tickets are in flight at once, each in tap
order; the figure is the worker process's CPU per leg (Valkey's own CPU is not in it).
Payments' HTTP call is not in it either (bench_charges measures payments).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import random
import sys
import tempfile
import time
import uuid
from collections import defaultdict
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


def accepted_data(leg: Leg, rider: int, wallet: str) -> tuple[str, dict[str, object]]:
    """The event data a gate publishes for the tap that closes `leg` (see decisions.py)."""
    from services.validation.events import iso

    ticket = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-rider-{rider}"))
    metro = bool(leg.from_stop)
    entry = {
        "validation_id": leg.leg_id,
        "station": leg.from_stop,
        "entered_at": iso(leg.departed_at),
    }
    return ticket, {
        "validation_id": f"{leg.leg_id}-x" if metro else leg.leg_id,
        "ticket_id": ticket,
        "kind": "stored_value",
        "action": "exit" if metro else "tap",
        "station": leg.to_stop or None,
        "line": leg.route_id if metro else None,
        "route": None if metro else leg.route_id,
        "rider_category": CATEGORIES[rider % len(CATEGORIES)],
        "decided_at": iso(leg.arrived_at),
        "wallet_account_id": wallet,
        "entry": entry if metro else None,
    }


async def worker_pass(
    feed: Feed, stream: list[tuple[int, Leg]], redis_url: str
) -> tuple[float, float]:
    """CPU seconds and wall seconds of the fare worker pricing `stream` into Valkey."""
    from services.validation import events
    from services.validation.fare_accounts import FareAccounts, leg_of
    from shared import redis as redis_kit
    from shared.events import VALIDATION_ACCEPTED
    from shared.fares.versions import NetworkVersions

    versions = NetworkVersions.only(feed, "hanoi")
    redis = redis_kit.connect(redis_url)
    hot = redis_kit.PipelinedRedis(redis_url)
    accounts = FareAccounts(redis, lambda: versions, hot)
    wallet = str(uuid.uuid4())
    lanes: dict[int, list[tuple[str, dict[str, object]]]] = defaultdict(list)
    for rider, leg in stream:
        lanes[rider % 64].append(accepted_data(leg, rider, wallet))

    async def lane(items: list[tuple[str, dict[str, object]]]) -> None:
        for ticket, data in items:
            decided = events.Decided.model_validate(data)
            found = leg_of(VALIDATION_ACCEPTED, decided, versions.current().feed)
            assert found is not None
            await accounts.apply(
                ticket, wallet, decided.rider_category, found[0], str(data["validation_id"])
            )

    gc.collect()
    gc.freeze()
    started, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane(items) for items in lanes.values()))
    elapsed, wall = time.process_time() - started, time.perf_counter() - wall
    gc.unfreeze()
    await redis.aclose()
    await hot.close()
    return elapsed, wall


async def run(riders: int = 600, days: int = 7, late: float = 0.05) -> dict[str, float]:
    """`make bench`'s section: the pure engine (warm) and the fare worker on a fresh Valkey."""
    from citypass.servers import LocalServers, free_port

    feed = read_feed(HANOI)
    stream = arrival_order(commutes(feed, riders, days), late)
    price_all(feed, stream, riders)  # warm the lookups, as a running worker has them
    engine, _, _ = price_all(feed, stream, riders)
    with tempfile.TemporaryDirectory(prefix="citypass-bench-fares-") as tmp:
        servers = LocalServers(Path(tmp), free_port(), free_port(), free_port())
        servers.start_valkey()
        try:
            elapsed, wall = await worker_pass(feed, stream, servers.redis_url)
        finally:
            servers.stop()
    return {
        "engine_legs_per_s": len(stream) / engine,
        "worker_legs_per_s_of_cpu": len(stream) / elapsed,
        "worker_us_per_leg": elapsed / len(stream) * 1e6,
        "worker_legs_per_s_wall": len(stream) / wall,
    }


def worker_main(riders: int, days: int, late: float) -> int:
    figures = asyncio.run(run(riders, days, late))
    print(
        f"fare worker with Valkey state: {figures['worker_legs_per_s_of_cpu']:,.0f} legs/s of "
        f"worker CPU ({figures['worker_us_per_leg']:.0f} µs/leg), "
        f"{figures['worker_legs_per_s_wall']:,.0f} legs/s wall; "
        f"engine alone {figures['engine_legs_per_s']:,.0f} legs/s"
    )
    return 0 if figures["worker_legs_per_s_of_cpu"] >= TARGET_LEGS_PER_S else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, default=3000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--late", type=float, default=0.05, help="share of taps arriving late")
    parser.add_argument("--feed", type=Path, default=HANOI)
    parser.add_argument("--worker", action="store_true", help="the fare worker on Valkey")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    if args.worker:
        return worker_main(args.riders, args.days, args.late)
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
