"""Lots and what belongs to them: lanes, occupancy, devices, tariffs and quotes; the demo seed.

No SQL here (see repository.py), no HTTP routes (see endpoints.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from services.parking import repository, session_queries
from services.parking.context import Parking, tariff_of, tariff_row
from services.parking.occupancy import Occupancy
from services.parking.repository import Record
from services.parking.schemas import (
    CapacityRead,
    DeviceCreate,
    DeviceCredentials,
    DeviceRead,
    Direction,
    LaneRead,
    LaneUpsert,
    LotRead,
    LotUpsert,
    OccupancyRead,
    PriceLineRead,
    QuoteRead,
    TariffCreate,
    TariffRead,
)
from services.parking.tariffs import (
    DEFAULT_TARIFFS,
    Tariff,
    TariffError,
    VehicleType,
    price_session,
)
from shared.devicesigning import new_secret
from shared.errors import Conflict, NotFound, Unprocessable
from shared.ids import utcnow

QUOTE_LIMIT = timedelta(days=31)
Changed = TypeVar("Changed")
# Lanes price from a tariff book cached for `cache_ttl` (seconds): a new version must be
# announced well before it applies, so that every replica prices with it from its first second.
TARIFF_NOTICE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class DemoLot:
    lot_id: str
    name: str
    district: str
    address: str
    motorbike_capacity: int
    car_capacity: int
    entry_lanes: int
    exit_lanes: int


DEMO_LOTS = (
    DemoLot("HK-01", "Bãi xe Hàng Bài", "Hoàn Kiếm", "Phố Hàng Bài", 300, 40, 1, 1),
    DemoLot("HK-02", "Bãi xe Lê Thạch (Hồ Gươm)", "Hoàn Kiếm", "Phố Lê Thạch", 500, 0, 2, 2),
    DemoLot("BD-01", "Bãi xe Hùng Vương", "Ba Đình", "Đường Hùng Vương", 200, 120, 2, 2),
    DemoLot("BD-02", "Bãi xe Công viên Thủ Lệ", "Ba Đình", "Đường Kim Mã", 400, 60, 1, 1),
)


# Lots and lanes ---------------------------------------------------------------------------------


async def change_reference(
    context: Parking, change: Callable[[AsyncSession], Awaitable[Changed]]
) -> Changed:
    """Write a change to lots, lanes or tariffs, then reload them: at once on this replica,
    within `cache_ttl` on the others (ReferenceData)."""
    async with context.db.transaction() as session:
        changed = await change(session)
    await context.reference.reload()
    return changed


def _lane_read(row: Record) -> LaneRead:
    return LaneRead(
        lane_id=row.lane_id,
        lot_id=row.lot_id,
        direction=Direction(row.direction),
        vehicle_type=VehicleType(row.vehicle_type) if row.vehicle_type else None,
        enabled=row.enabled,
    )


def _lot_read(row: Record, lanes: Sequence[Record]) -> LotRead:
    mine = [_lane_read(lane) for lane in lanes if lane.lot_id == row.lot_id]
    return LotRead(
        lot_id=row.lot_id,
        name=row.name,
        district=row.district,
        address=row.address,
        motorbike_capacity=row.motorbike_capacity,
        car_capacity=row.car_capacity,
        entry_lanes=sum(lane.direction is Direction.entry for lane in mine),
        exit_lanes=sum(lane.direction is Direction.exit for lane in mine),
        lanes=mine,
    )


def capacities(row: Record) -> dict[VehicleType, int]:
    return {VehicleType.MOTORBIKE: row.motorbike_capacity, VehicleType.CAR: row.car_capacity}


async def list_lots(session: AsyncSession) -> list[LotRead]:
    lanes = await repository.list_lanes(session)
    return [_lot_read(row, lanes) for row in await repository.list_lots(session)]


async def _lot_row(session: AsyncSession, lot_id: str) -> Record:
    row = await repository.get_lot(session, lot_id)
    if row is None:
        raise NotFound(f"No lot {lot_id}.", code="lot_not_found")
    return row


async def require_lot(session: AsyncSession, lot_id: str) -> None:
    await _lot_row(session, lot_id)


async def get_lot(session: AsyncSession, lot_id: str) -> LotRead:
    row = await _lot_row(session, lot_id)
    return _lot_read(row, await repository.list_lanes(session, lot_id))


async def upsert_lot(
    session: AsyncSession, context: Parking, lot_id: str, body: LotUpsert
) -> LotRead:
    await repository.upsert_lots(session, [{"lot_id": lot_id, **body.model_dump()}])
    row = await _lot_row(session, lot_id)
    await sync_lot_capacity(session, context.occupancy, [row])
    return _lot_read(row, await repository.list_lanes(session, lot_id))


async def upsert_lane(
    session: AsyncSession, lot_id: str, lane_id: str, body: LaneUpsert
) -> LaneRead:
    await _lot_row(session, lot_id)
    existing = await repository.get_lane(session, lane_id)
    if existing is not None and existing.lot_id != lot_id:
        raise Conflict(
            f"Lane {lane_id} belongs to lot {existing.lot_id}.", code="lane_in_other_lot"
        )
    await repository.upsert_lanes(
        session,
        [
            {
                "lane_id": lane_id,
                "lot_id": lot_id,
                "direction": body.direction.value,
                "vehicle_type": body.vehicle_type.value if body.vehicle_type else None,
                "enabled": body.enabled,
            }
        ],
    )
    row = await repository.get_lane(session, lane_id)
    assert row is not None
    return _lane_read(row)


async def occupancy(context: Parking, lot_id: str) -> OccupancyRead:
    if context.reference.lot(lot_id) is None:
        raise NotFound(f"No lot {lot_id}.", code="lot_not_found")
    counts = await context.occupancy.read(lot_id)
    return OccupancyRead(
        lot_id=lot_id,
        vehicles=[
            CapacityRead(
                vehicle_type=vehicle_type,
                capacity=count.capacity,
                occupied=count.occupied,
                free=count.free,
            )
            for vehicle_type, count in counts.items()
        ],
    )


async def sync_lot_capacity(
    session: AsyncSession, occupancy_counters: Occupancy, lots: Sequence[Record]
) -> None:
    """Capacities from PostgreSQL into Redis; occupancy counters rebuilt where missing."""
    for lot in lots:
        await occupancy_counters.set_capacity(lot.lot_id, capacities(lot))
    inside = {
        (row.lot_id, VehicleType(row.vehicle_type)): int(row.inside)
        for row in await session_queries.open_counts(session)
    }
    await occupancy_counters.rebuild_missing([lot.lot_id for lot in lots], inside)


async def sync_all_capacity(session: AsyncSession, occupancy_counters: Occupancy) -> None:
    await sync_lot_capacity(session, occupancy_counters, await repository.list_lots(session))


async def seed(session: AsyncSession, occupancy_counters: Occupancy) -> tuple[int, int, int]:
    """Demo lots with their lanes, and the city's default tariffs; idempotent."""
    await repository.upsert_lots(
        session,
        [
            {
                "lot_id": lot.lot_id,
                "name": lot.name,
                "district": lot.district,
                "address": lot.address,
                "motorbike_capacity": lot.motorbike_capacity,
                "car_capacity": lot.car_capacity,
            }
            for lot in DEMO_LOTS
        ],
    )
    lanes = [
        {
            "lane_id": f"{lot.lot_id}-{label}{number}",
            "lot_id": lot.lot_id,
            "direction": direction.value,
            "vehicle_type": None,
            "enabled": True,
        }
        for lot in DEMO_LOTS
        for direction, label, count in (
            (Direction.entry, "IN", lot.entry_lanes),
            (Direction.exit, "OUT", lot.exit_lanes),
        )
        for number in range(1, count + 1)
    ]
    await repository.upsert_lanes(session, lanes)
    await repository.insert_tariffs(session, [tariff_row(tariff) for tariff in DEFAULT_TARIFFS])
    await sync_all_capacity(session, occupancy_counters)
    return len(DEMO_LOTS), len(lanes), len(DEFAULT_TARIFFS)


# Devices ----------------------------------------------------------------------------------------


def _device_read(row: Record) -> DeviceRead:
    return DeviceRead.model_validate(row, from_attributes=True)


async def provision_device(
    session: AsyncSession, context: Parking, body: DeviceCreate
) -> DeviceCredentials:
    await _lot_row(session, body.lot_id)
    if body.lane_id is not None:
        lane = await repository.get_lane(session, body.lane_id)
        if lane is None or lane.lot_id != body.lot_id:
            raise Unprocessable(
                f"Lot {body.lot_id} has no lane {body.lane_id}.", code="unknown_lane"
            )
    secret = new_secret()
    row = await repository.insert_device(
        session,
        device_id=body.device_id,
        kind=body.kind.value,
        lot_id=body.lot_id,
        lane_id=body.lane_id,
        secret=secret,
    )
    if row is None:
        raise Conflict(f"Device {body.device_id} exists already.", code="device_exists")
    context.devices.forget(body.device_id)
    return DeviceCredentials(**_device_read(row).model_dump(), secret=secret)


async def list_devices(session: AsyncSession, lot_id: str | None) -> list[DeviceRead]:
    return [_device_read(row) for row in await repository.list_devices(session, lot_id)]


async def revoke_device(session: AsyncSession, context: Parking, device_id: str) -> DeviceRead:
    row = await repository.revoke_device(session, device_id)
    if row is None:
        raise NotFound(f"No device {device_id}.", code="device_not_found")
    context.devices.forget(device_id)
    return _device_read(row)


# Tariffs ----------------------------------------------------------------------------------------


def _tariff_read(row: Record) -> TariffRead:
    return TariffRead.model_validate(row, from_attributes=True)


async def list_tariffs(
    session: AsyncSession, lot_id: str | None, vehicle_type: VehicleType | None
) -> list[TariffRead]:
    rows = await repository.list_tariffs(
        session, lot_id, vehicle_type.value if vehicle_type else None
    )
    return [_tariff_read(row) for row in rows]


async def tariffs_for(
    session: AsyncSession, lot_id: str, vehicle_type: VehicleType
) -> list[Tariff]:
    """The city's and the lot's versions for one vehicle type: what prices a session."""
    return [
        tariff_of(row._mapping)
        for row in await repository.list_tariffs(session, lot_id, vehicle_type.value)
    ]


async def create_tariff(session: AsyncSession, body: TariffCreate) -> TariffRead:
    """A new dated version; the past is never rewritten, so it takes effect in the future."""
    if body.effective_from <= utcnow():
        raise Unprocessable(
            "A tariff takes effect in the future; sessions already priced keep their rules.",
            code="tariff_in_past",
        )
    if body.effective_from < utcnow() + TARIFF_NOTICE:
        raise Unprocessable(
            f"Announce a tariff at least {TARIFF_NOTICE} ahead: every lane must know it first.",
            code="tariff_too_soon",
        )
    if body.lot_id is not None:
        await _lot_row(session, body.lot_id)
    tariff = tariff_of(dict(body))  # the values as given: model_dump writes times as text
    row = await repository.insert_tariff(session, **tariff_row(tariff))
    if row is None:
        raise Conflict(
            f"Tariff {body.tariff_id} exists, or another version takes effect at that instant.",
            code="tariff_exists",
        )
    return _tariff_read(row)


def price_lines(lines: Sequence[dict[str, object]]) -> list[PriceLineRead]:
    return [PriceLineRead.model_validate(line) for line in lines]


async def quote(
    session: AsyncSession,
    lot_id: str,
    vehicle_type: VehicleType,
    entry_at: datetime,
    exit_at: datetime,
) -> QuoteRead:
    await _lot_row(session, lot_id)
    try:
        priced = price_session(
            entry_at,
            exit_at,
            vehicle_type,
            await tariffs_for(session, lot_id, vehicle_type),
            lot_id=lot_id,
        )
    except TariffError as error:
        raise Unprocessable(str(error), code=error.code) from None
    data = priced.to_dict()
    return QuoteRead(
        lot_id=lot_id,
        vehicle_type=vehicle_type,
        entry_at=priced.entry_at,
        exit_at=priced.exit_at,
        total=priced.total,
        lines=price_lines(data["lines"]),  # type: ignore[arg-type]
    )
