"""Demo and reference data for ticketing: the fare products of DESIGN.md."""

from __future__ import annotations

from services.ticketing.service import products
from services.ticketing.settings import TicketingSettings
from shared.db import Database


async def seed(settings: TicketingSettings) -> str:
    database = Database(settings.database_url, "ticketing", pool_size=1)
    try:
        async with database.transaction() as session:
            count = await products.seed_products(session)
    finally:
        await database.close()
    return f"{count} fare products"
