"""Demo data for parking: a few lots in Hoàn Kiếm and Ba Đình."""

from __future__ import annotations

from services.parking import service
from services.parking.settings import ParkingSettings
from shared.db import Database


async def seed(settings: ParkingSettings) -> str:
    database = Database(settings.database_url, "parking", pool_size=1)
    try:
        async with database.transaction() as session:
            count = await service.seed_lots(session)
    finally:
        await database.close()
    return f"{count} parking lots"
