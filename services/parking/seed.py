"""Demo data for parking: lots in Hoàn Kiếm and Ba Đình with their lanes, the city tariffs,
and the lots' capacities in Redis."""

from __future__ import annotations

from services.parking.lots import seed as seed_lots
from services.parking.occupancy import Occupancy
from services.parking.settings import ParkingSettings
from shared import redis as redis_kit
from shared.db import Database


async def seed(settings: ParkingSettings) -> str:
    database = Database(settings.database_url, "parking", pool_size=1)
    redis = redis_kit.connect(settings.redis_url)
    try:
        async with database.transaction() as session:
            lots, lanes, tariffs = await seed_lots(session, Occupancy(redis))
    finally:
        await redis.aclose()
        await database.close()
    return f"{lots} parking lots, {lanes} lanes, {tariffs} tariffs"
