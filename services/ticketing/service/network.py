"""Network and fare versions: ticketing owns them. An import is read whole by `read_feed` (or
refused with every problem), stored as a canonical zip with the instant it takes effect, and
never changed; every replica holds all versions in memory (`NetworkSync` over its own table)
and prices with the one in force at the moment of the sale.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.ticketing import repository
from services.ticketing.schemas import (
    NetworkLine,
    NetworkOperator,
    NetworkRead,
    NetworkStation,
    NetworkVersionList,
    NetworkVersionRead,
)
from shared.db import Database
from shared.errors import NotFound, ProblemError
from shared.fares.feed import Feed, feed_zip, read_feed
from shared.fares.lines import route_mode
from shared.fares.reader import Table
from shared.fares.versions import NetworkSync, NetworkVersion, VersionListing, feed_digest
from shared.ids import new_id

SUMMARY_FILES = {
    "agencies": "agency.txt",
    "stops": "stops.txt",
    "routes": "routes.txt",
    "fare_products": "fare_products.txt",
    "fare_leg_rules": "fare_leg_rules.txt",
    "fare_transfer_rules": "fare_transfer_rules.txt",
    "fare_caps": "citypass_fare_caps.txt",
}


class EffectiveFromInPast(ProblemError):
    status, code, title = 409, "effective_from_in_past", "A version cannot start in the past"


class EffectiveFromTaken(ProblemError):
    status, code, title = 409, "effective_from_taken", "Another version starts at that instant"


@dataclass(frozen=True, slots=True)
class PreparedFeed:
    """A feed that passed `read_feed`, as it will be stored."""

    data: bytes  # the canonical zip
    sha256: str
    summary: dict[str, Any]


def prepare_feed(source: Path | bytes, currency: str) -> PreparedFeed:
    """Read and check a feed (a zip's bytes or a directory; CPU work: run it in a thread);
    FeedRejected with every problem when it is bad."""
    feed = read_feed(source, currency=currency)
    data = feed_zip(feed)
    return PreparedFeed(data, feed_digest(data), summary(feed))


def summary(feed: Feed) -> dict[str, Any]:
    info = feed.tables.get("feed_info.txt", Table("", (), ())).rows
    counts = {
        key: len(feed.tables[name].rows)
        for key, name in SUMMARY_FILES.items()
        if name in feed.tables
    }
    return {
        "feed_version": info[0].get("feed_version") if info else "",
        "currency": feed.currency,
        "timezone": str(feed.tariff.timezone),
        "products_on_sale": len(feed.products),
        **counts,
    }


def version_read(row: Any) -> NetworkVersionRead:
    return NetworkVersionRead(
        id=row.id,
        effective_from=row.effective_from,
        sha256=row.sha256,
        imported_at=row.imported_at,
        summary=row.summary,
    )


async def import_version(
    session: AsyncSession,
    feed: PreparedFeed,
    effective_from: datetime,
    now: datetime,
    tolerance: timedelta,
) -> tuple[NetworkVersionRead, bool]:
    """Store a version; True when it is new. The same feed at the same instant is the same
    version (an import retried); another feed at a taken instant, or an instant already
    priced, is refused."""
    await repository.lock_network_versions(session)
    taken = await repository.network_version_at(session, effective_from)
    if taken is not None:
        if taken.sha256 != feed.sha256:
            raise EffectiveFromTaken(
                f"Version {taken.id} already takes effect at {effective_from.isoformat()}; "
                "choose another instant.",
                version_id=str(taken.id),
            )
        return version_read(taken), False
    if effective_from < now - tolerance:
        raise EffectiveFromInPast(
            f"effective_from {effective_from.isoformat()} is in the past: what happened since "
            "was priced by the version then in force. Give a future instant (or none: now).",
        )
    return await _insert(session, feed, effective_from, now), True


async def _insert(
    session: AsyncSession, feed: PreparedFeed, effective_from: datetime, now: datetime
) -> NetworkVersionRead:
    version = NetworkVersionRead(
        id=new_id(),
        effective_from=effective_from,
        sha256=feed.sha256,
        imported_at=now,
        summary=feed.summary,
    )
    await repository.insert_network_version(session, feed=feed.data, **version.model_dump())
    return version


async def list_versions(session: AsyncSession) -> NetworkVersionList:
    return NetworkVersionList(
        versions=[version_read(row) for row in await repository.list_network_versions(session)]
    )


async def version_feed(session: AsyncSession, version_id: uuid.UUID) -> bytes:
    data = await repository.network_feed(session, version_id)
    if data is None:
        raise NotFound(f"No network version {version_id}.", code="network_version_not_found")
    return data


class StoredVersions:
    """Ticketing's own table as the source of its `NetworkSync`."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def listing(self) -> list[VersionListing]:
        async with self._database.transaction() as session:
            rows = await repository.list_network_versions(session)
        return [VersionListing(str(r.id), r.effective_from, r.sha256) for r in rows]

    async def feed(self, version_id: str) -> bytes:
        async with self._database.transaction() as session:
            return await version_feed(session, uuid.UUID(version_id))


def network_sync(database: Database, currency: str) -> NetworkSync:
    return NetworkSync(StoredVersions(database), currency=currency)


async def seed_version(
    session: AsyncSession, feed: PreparedFeed, effective_from: datetime, now: datetime
) -> bool:
    """The first version (`make run`, docker-compose's seed), when there is none yet."""
    await repository.lock_network_versions(session)
    if await repository.list_network_versions(session):
        return False
    await _insert(session, feed, effective_from, now)
    return True


def network_read(version: NetworkVersion) -> NetworkRead:
    """What a rider's app shows of the version in force: operators, lines and stations."""
    tables = version.feed.tables
    route_of_trip = {row.get("trip_id"): row.get("route_id") for row in tables["trips.txt"].rows}
    lines_at: dict[str, list[str]] = {}
    for row in tables["stop_times.txt"].rows:
        route = route_of_trip.get(row.get("trip_id"), "")
        calling = lines_at.setdefault(row.get("stop_id"), [])
        if route not in calling:
            calling.append(route)
    return NetworkRead(
        version_id=uuid.UUID(version.id),
        effective_from=version.effective_from,
        feed_version=summary(version.feed)["feed_version"],
        currency=version.feed.currency,
        timezone=str(version.feed.tariff.timezone),
        operators=[
            NetworkOperator(
                id=row.get("agency_id"), name=row.get("agency_name"), url=row.get("agency_url")
            )
            for row in tables["agency.txt"].rows
        ],
        lines=[
            NetworkLine(
                id=row.get("route_id"),
                name=row.get("route_long_name") or row.get("route_short_name"),
                mode=route_mode(row.get("route_type")),
                operator_id=row.get("agency_id"),
            )
            for row in tables["routes.txt"].rows
        ],
        stations=[
            NetworkStation(
                id=row.get("stop_id"),
                name=row.get("stop_name"),
                lat=float(row.get("stop_lat")) if row.get("stop_lat") else None,
                lon=float(row.get("stop_lon")) if row.get("stop_lon") else None,
                lines=lines_at.get(row.get("stop_id"), []),
            )
            for row in tables["stops.txt"].rows
        ],
    )
