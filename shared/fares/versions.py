"""Versions of the network and its fares: which feed is in force at any instant, and how a
service keeps them in step with ticketing, which owns them.

Ticketing stores every imported feed as a version with the instant it takes effect
(`GET /v1/network/versions`, `GET /v1/network/versions/{id}/feed`). Every other process that
prices or checks a trip holds all versions in memory (`NetworkVersions`) and asks for the one
in force at the moment of the fact (`at(decided_at)`): a version published ahead applies at
its start without a restart or a message at that instant, and a tap uploaded late is priced by
the version that was in force when it happened, not by today's.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx

from shared.errors import ProblemError
from shared.fares.feed import Feed, read_feed
from shared.fares.reader import FeedRejected
from shared.http import service_client

log = logging.getLogger(__name__)


class NoNetwork(ProblemError):
    status, code, title = 503, "network_not_loaded", "No network version in force"


@dataclass(frozen=True, slots=True)
class NetworkVersion:
    id: str
    effective_from: datetime  # aware, UTC
    sha256: str  # of the feed's zip as stored
    feed: Feed


def feed_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class NetworkVersions:
    """Every known version, ordered by the instant it takes effect (immutable)."""

    def __init__(self, versions: Iterable[NetworkVersion] = ()) -> None:
        ordered = sorted(versions, key=lambda v: (v.effective_from, v.id))
        self._versions = tuple(ordered)
        self._starts = [v.effective_from for v in ordered]

    def __len__(self) -> int:
        return len(self._versions)

    def __iter__(self) -> Iterator[NetworkVersion]:
        return iter(self._versions)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(v.id for v in self._versions)

    def at(self, when: datetime) -> NetworkVersion:
        """The version in force at `when`: the latest one that started at or before it."""
        index = bisect.bisect_right(self._starts, when)
        if index == 0:
            raise NoNetwork(f"No network version is in force at {when.isoformat()}.")
        return self._versions[index - 1]

    def current(self) -> NetworkVersion:
        return self.at(datetime.now(UTC))

    def feed_at(self, when: datetime) -> Feed:
        return self.at(when).feed

    @classmethod
    def only(cls, feed: Feed, name: str) -> NetworkVersions:
        """One feed in force since the epoch: a process without ticketing (tests, a lab gate,
        the benchmarks) reading a feed from disk."""
        return cls([NetworkVersion(name, datetime(1970, 1, 1, tzinfo=UTC), "", feed)])


@dataclass(frozen=True, slots=True)
class VersionListing:
    id: str
    effective_from: datetime
    sha256: str


def parse_listing(payload: object) -> list[VersionListing]:
    """Ticketing's `GET /v1/network/versions` answer: `{"versions": [...]}`."""
    if not isinstance(payload, dict) or not isinstance(payload.get("versions"), list):
        raise ValueError("not a network version listing")
    return [
        VersionListing(
            str(item["id"]),
            datetime.fromisoformat(str(item["effective_from"]).replace("Z", "+00:00")),
            str(item["sha256"]),
        )
        for item in payload["versions"]
    ]


class VersionSource(Protocol):
    """Where a process's versions come from: ticketing over HTTP, or ticketing's own table."""

    async def listing(self) -> list[VersionListing]: ...

    async def feed(self, version_id: str) -> bytes: ...


class TicketingVersions:
    """Ticketing's public API: `GET /v1/network/versions` and `.../{id}/feed`."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def listing(self) -> list[VersionListing]:
        response = await self._http.get("/v1/network/versions")
        response.raise_for_status()
        return parse_listing(response.json())

    async def feed(self, version_id: str) -> bytes:
        response = await self._http.get(f"/v1/network/versions/{version_id}/feed")
        response.raise_for_status()
        return response.content


class NetworkSync:
    """Keeps a process's `NetworkVersions` equal to ticketing's list.

    A feed is downloaded once per version and checked against its digest and by `read_feed`
    (the same rules as at import); the versions already held are kept, so a refresh that finds
    nothing new costs one small GET. A version ticketing no longer lists is dropped. `source`
    is an HTTP client on ticketing's base URL, or any `VersionSource` (ticketing reads its
    own table).
    """

    def __init__(
        self,
        source: httpx.AsyncClient | VersionSource,
        *,
        currency: str,
        on_change: Callable[[NetworkVersions], Awaitable[None] | None] | None = None,
    ) -> None:
        self._source = (
            TicketingVersions(source) if isinstance(source, httpx.AsyncClient) else source
        )
        self._currency = currency
        self._on_change = on_change
        self.versions = NetworkVersions()

    async def refresh(self) -> NetworkVersions:
        listing = await self._source.listing()
        held = {v.id: v for v in self.versions}
        fresh: list[NetworkVersion] = []
        for item in listing:
            known = held.get(item.id)
            if known is not None and known.sha256 == item.sha256:
                fresh.append(known)
                continue
            data = await self._source.feed(item.id)
            if feed_digest(data) != item.sha256:
                raise ValueError(f"network version {item.id}: feed digest mismatch")
            feed = await asyncio.to_thread(read_feed, data, currency=self._currency)
            fresh.append(NetworkVersion(item.id, item.effective_from, item.sha256, feed))
        changed = {(v.id, v.sha256) for v in fresh} != {(v.id, v.sha256) for v in self.versions}
        if changed:
            self.versions = NetworkVersions(fresh)
            log.info("network versions now %s", [v.id for v in self.versions])
            if self._on_change is not None:
                outcome = self._on_change(self.versions)
                if outcome is not None:
                    await outcome
        return self.versions

    async def refresh_forever(self, interval_s: float) -> None:
        while True:
            try:
                await self.refresh()
            except (httpx.HTTPError, ValueError, FeedRejected) as error:
                log.warning("network versions not refreshed: %s", error)
            await asyncio.sleep(interval_s)


def local_versions(feed: Path, currency: str) -> NetworkVersions:
    """A feed on disk as the only version, in force since the epoch: a process without
    ticketing (tests, a lab gate)."""
    return NetworkVersions.only(read_feed(feed, currency=currency), f"local:{feed.name}")


async def follow_ticketing(
    ticketing_url: str,
    currency: str,
    interval_s: float,
    on_change: Callable[[NetworkVersions], Awaitable[None] | None],
) -> None:
    """The supervised worker every service but ticketing runs: ticketing's versions, polled
    every `interval_s`, handed to `on_change` when they change."""
    async with service_client(ticketing_url, timeout_s=10) as http:
        await NetworkSync(http, currency=currency, on_change=on_change).refresh_forever(interval_s)
