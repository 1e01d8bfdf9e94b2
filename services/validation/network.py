"""The network versions a validation process holds, as the gate path needs them.

Ticketing owns the versions (`shared.fares.versions`); every process keeps a copy with
`NetworkSync` (a supervised worker, `network_refresh`), or, without `ticketing_url` (tests, a
lab gate), reads `network_feed` once as the only version, in force since the epoch: the same
`read_feed` → `NetworkVersions` path. On a change the fare tables and maps are rebuilt in a
thread and swapped in whole; a decision then looks up the version in force at its own time
(`at(decided_at)`), so a version published ahead applies at its start without a rebuild, and
a decision rebuilt later (the relay) or uploaded late (an offline gate) is priced by the
version then in force.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.validation.rules import FareTable
from shared.fares.lines import NetworkMap
from shared.fares.reader import FeedRejected
from shared.fares.versions import NetworkSync, NetworkVersions, NoNetwork, local_versions
from shared.fares.versions import follow_ticketing as follow
from shared.http import service_client

logger = logging.getLogger("citypass.validation.network")


@dataclass(frozen=True, slots=True)
class GateVersion:
    fares: FareTable
    map: NetworkMap


class GateNetworks:
    """Every held version, ordered by the instant it takes effect (immutable)."""

    def __init__(self, versions: Sequence[GateVersion] = ()) -> None:
        self.versions = tuple(sorted(versions, key=lambda v: v.fares.effective_from))
        self._starts = [v.fares.effective_from for v in self.versions]
        self.stations = frozenset(code for v in self.versions for code in v.map.stations)
        self.routes = frozenset(r.code for v in self.versions for r in v.map.bus_routes)

    def version_at(self, when: float) -> GateVersion:
        index = bisect.bisect_right(self._starts, when)
        if index == 0:
            raise NoNetwork(
                "No network version is in force: validation cannot price or check a trip "
                "(ticketing unreachable, or no version imported yet)."
            )
        return self.versions[index - 1]

    def at(self, when: float) -> FareTable:
        """The fare table in force at `when` (unix seconds)."""
        return self.version_at(when).fares

    def current(self) -> GateVersion:
        return self.version_at(time.time())

    def spanning(self, start: float, end: float) -> list[FareTable]:
        """The table in force at `start` and every one starting before `end` (a bundle)."""
        first = max(0, bisect.bisect_right(self._starts, start) - 1)
        last = bisect.bisect_left(self._starts, end)
        return [v.fares for v in self.versions[first:last]]


def gate_networks(versions: NetworkVersions) -> GateNetworks:
    """CPU work (every station pair priced): run it in a thread."""
    built = []
    for version in versions:
        start = int(version.effective_from.timestamp())
        priced_at = max(start, int(time.time()))
        fares = FareTable.from_feed(version.id, start, version.feed, priced_at)
        built.append(GateVersion(fares, NetworkMap.of(version.feed)))
    return GateNetworks(built)


class Networks:
    """The process's current `GateNetworks`, replaced whole on a change (readers never lock)."""

    def __init__(self) -> None:
        self.held = GateNetworks()
        self.versions = NetworkVersions()  # as held, for the fare worker's RiderLedger

    def at(self, when: float) -> FareTable:
        return self.held.at(when)

    async def load(self, versions: NetworkVersions) -> None:
        self.held = await asyncio.to_thread(gate_networks, versions)
        self.versions = versions
        logger.info("network versions held: %s", [v.fares.version for v in self.held.versions])

    def local(self, feed: Path, currency: str) -> None:
        """One version from a feed on disk, in force since the epoch (no ticketing)."""
        self.versions = local_versions(feed, currency)
        self.held = gate_networks(self.versions)


async def follow_ticketing(
    networks: Networks, ticketing_url: str, currency: str, interval_s: float
) -> None:
    await follow(ticketing_url, currency, interval_s, networks.load)


async def load_once(
    networks: Networks, ticketing_url: str | None, feed: Path | None, currency: str
) -> None:
    """At start (and for the seed): ticketing's versions now if it answers, else the feed."""
    if ticketing_url:
        async with service_client(ticketing_url, timeout_s=10) as http:
            sync = NetworkSync(http, currency=currency, on_change=networks.load)
            try:
                await sync.refresh()
            except (httpx.HTTPError, ValueError, FeedRejected) as error:  # the worker retries
                logger.warning("network versions not loaded yet: %s", error)
    elif feed is not None:
        await asyncio.to_thread(networks.local, feed, currency)
    else:
        logger.warning("no ticketing_url and no network_feed: every decision answers 503")
