"""Reference data for ticketing: Hanoi's network and fares (data/gtfs/hanoi) as the first
version, when there is none yet."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from services.ticketing.service import network
from services.ticketing.settings import TicketingSettings
from shared.db import Database
from shared.fares.feed import HANOI
from shared.ids import utcnow

# The first version is in force before any sale or tap this platform will ever price.
FIRST_VERSION_FROM = datetime(2000, 1, 1, tzinfo=UTC)


async def seed(settings: TicketingSettings) -> str:
    prepared = await asyncio.to_thread(network.prepare_feed, HANOI, settings.currency)
    database = Database(settings.database_url, "ticketing", pool_size=1)
    try:
        async with database.transaction() as session:
            loaded = await network.seed_version(session, prepared, FIRST_VERSION_FROM, utcnow())
    finally:
        await database.close()
    return "Hanoi's network and fares (first version)" if loaded else "network versions kept"
