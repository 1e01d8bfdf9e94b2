"""Parking rules. No SQL here (see repository.py), no HTTP (see endpoints.py)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.parking import repository
from services.parking.schemas import LotRead
from shared.errors import NotFound

DEMO_LOTS = (
    LotRead(
        lot_id="HK-01",
        name="Bãi xe Hàng Bài",
        district="Hoàn Kiếm",
        address="Phố Hàng Bài",
        motorbike_capacity=300,
        car_capacity=40,
        entry_lanes=1,
        exit_lanes=1,
    ),
    LotRead(
        lot_id="HK-02",
        name="Bãi xe Lê Thạch (Hồ Gươm)",
        district="Hoàn Kiếm",
        address="Phố Lê Thạch",
        motorbike_capacity=500,
        car_capacity=0,
        entry_lanes=2,
        exit_lanes=2,
    ),
    LotRead(
        lot_id="BD-01",
        name="Bãi xe Hùng Vương",
        district="Ba Đình",
        address="Đường Hùng Vương",
        motorbike_capacity=200,
        car_capacity=120,
        entry_lanes=2,
        exit_lanes=2,
    ),
    LotRead(
        lot_id="BD-02",
        name="Bãi xe Công viên Thủ Lệ",
        district="Ba Đình",
        address="Đường Kim Mã",
        motorbike_capacity=400,
        car_capacity=60,
        entry_lanes=1,
        exit_lanes=1,
    ),
)


async def seed_lots(session: AsyncSession) -> int:
    await repository.upsert_lots(session, [lot.model_dump() for lot in DEMO_LOTS])
    return len(DEMO_LOTS)


async def list_lots(session: AsyncSession) -> list[LotRead]:
    return [LotRead.model_validate(dict(row)) for row in await repository.list_lots(session)]


async def get_lot(session: AsyncSession, lot_id: str) -> LotRead:
    row = await repository.get_lot(session, lot_id)
    if row is None:
        raise NotFound(f"No lot {lot_id}.", code="lot_not_found")
    return LotRead.model_validate(dict(row))
