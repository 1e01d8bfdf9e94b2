"""The network the console names stations and checks travel times by: ticketing's versions,
kept in step by `NetworkSync` (a supervised worker, `network_refresh`), each version's
`NetworkMap` (stations, lines, distances) built once when it arrives. Without
`ticketing_url` (tests, a lab), `network_feed` is read once as the only version.

Without a network the console still runs: places show by their code and the impossible-travel
rule, which needs distances, stays silent.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from dataclasses import dataclass
from pathlib import Path

from shared.fares.lines import NetworkMap
from shared.fares.versions import NetworkVersions, follow_ticketing, local_versions

logger = logging.getLogger("citypass.operator.network")


@dataclass(frozen=True, slots=True)
class Maps:
    starts: tuple[float, ...]  # unix seconds each version takes effect, ascending
    maps: tuple[NetworkMap, ...]

    def at(self, when: float) -> NetworkMap | None:
        index = bisect.bisect_right(self.starts, when)
        return self.maps[index - 1] if index else None


def maps_of(versions: NetworkVersions) -> Maps:
    ordered = list(versions)
    return Maps(
        tuple(v.effective_from.timestamp() for v in ordered),
        tuple(NetworkMap.of(v.feed) for v in ordered),
    )


class OperatorNetwork:
    """The process's current maps, replaced whole on a change (readers never lock)."""

    def __init__(self) -> None:
        self.maps = Maps((), ())

    def at(self, when: float) -> NetworkMap | None:
        return self.maps.at(when)

    async def load(self, versions: NetworkVersions) -> None:
        self.maps = await asyncio.to_thread(maps_of, versions)
        logger.info("network versions held: %d", len(self.maps.maps))

    def local(self, feed: Path, currency: str) -> None:
        """One version from a feed on disk, in force since the epoch (no ticketing)."""
        self.maps = maps_of(local_versions(feed, currency))

    async def follow(self, ticketing_url: str, currency: str, interval_s: float) -> None:
        """The supervised worker: ticketing's versions, polled every `interval_s`."""
        await follow_ticketing(ticketing_url, currency, interval_s, self.load)
