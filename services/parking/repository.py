"""The parking schema (its tables) and the queries on lots, lanes, devices, tariffs, vehicles."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Time,
    UniqueConstraint,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID, insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from shared.idempotency import idempotency_keys_table
from shared.inbox import processed_events_table
from shared.outbox import outbox_table

metadata = MetaData()
outbox = outbox_table(metadata)
idempotency_keys = idempotency_keys_table(metadata)
processed_events = processed_events_table(metadata)

Record: TypeAlias = Row[*tuple[Any, ...]]

OPEN_STATUSES = ("open", "awaiting_payment")

lots = Table(
    "lots",
    metadata,
    Column("lot_id", String(20), primary_key=True),
    Column("name", String(120), nullable=False),
    Column("district", String(60), nullable=False),
    Column("address", String(200), nullable=False),
    Column("motorbike_capacity", Integer, nullable=False),
    Column("car_capacity", Integer, nullable=False),
)

lanes = Table(
    "lanes",
    metadata,
    Column("lane_id", String(30), primary_key=True),
    Column("lot_id", String(20), ForeignKey("lots.lot_id"), nullable=False),
    Column("direction", String(5), nullable=False),
    Column("vehicle_type", String(10)),
    Column("enabled", Boolean, nullable=False, server_default="true"),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(40), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("lot_id", String(20), ForeignKey("lots.lot_id"), nullable=False),
    Column("lane_id", String(30), ForeignKey("lanes.lane_id")),
    Column("secret", String(100), nullable=False),
    Column("enabled", Boolean, nullable=False, server_default="true"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
)

tariffs = Table(
    "tariffs",
    metadata,
    Column("tariff_id", String(60), primary_key=True),
    Column("vehicle_type", String(10), nullable=False),
    Column("lot_id", String(20), ForeignKey("lots.lot_id")),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("first_block_minutes", Integer, nullable=False),
    Column("first_block_price", BigInteger, nullable=False),
    Column("per_hour_price", BigInteger, nullable=False),
    Column("night_turn_price", BigInteger, nullable=False),
    Column("grace_minutes", Integer, nullable=False),
    Column("daily_cap", BigInteger),
    Column("day_starts_at", Time, nullable=False),
    Column("day_ends_at", Time, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint(
        "vehicle_type",
        "lot_id",
        "effective_from",
        name="tariffs_one_version_per_instant",
        postgresql_nulls_not_distinct=True,
    ),
)

vehicles = Table(
    "vehicles",
    metadata,
    Column("vehicle_id", UUID(as_uuid=True), primary_key=True),
    Column("plate_key", String(20), nullable=False, unique=True),
    Column("plate", String(20), nullable=False),
    Column("vehicle_type", String(10), nullable=False),
    Column("owner_id", String(100), nullable=False),
    Column("wallet_account_id", UUID(as_uuid=True), nullable=False),
    Column("rfid_tag", String(64), unique=True),
    Column("registered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", UUID(as_uuid=True), primary_key=True),
    Column("lot_id", String(20), ForeignKey("lots.lot_id"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("vehicle_type", String(10), nullable=False),
    Column("plate_key", String(20), nullable=False),
    Column("plate", String(20), nullable=False),
    Column("entry_method", String(12), nullable=False),
    Column("entry_lane_id", String(30), nullable=False),
    Column("entry_device_id", String(40)),
    Column("entry_at", DateTime(timezone=True), nullable=False),
    Column("entry_recorded_at", DateTime(timezone=True), nullable=False),
    Column("entry_confidence", Float),
    Column("entry_image_ref", String(200)),
    Column("vehicle_id", UUID(as_uuid=True)),
    Column("wallet_account_id", UUID(as_uuid=True)),
    Column("hold_id", UUID(as_uuid=True)),
    Column("hold_amount", BigInteger),
    Column("hold_status", String(24)),
    Column("review_reasons", ARRAY(String(40)), nullable=False, server_default="{}"),
    Column("exit_lane_id", String(30)),
    Column("exit_device_id", String(40)),
    Column("exit_at", DateTime(timezone=True)),
    Column("exit_recorded_at", DateTime(timezone=True)),
    Column("exit_confidence", Float),
    Column("exit_image_ref", String(200)),
    Column("exit_offline", Boolean, nullable=False, server_default="false"),
    Column("fee", BigInteger),
    Column("priced", JSONB),
    Column("settlement", String(10)),
    Column("paid_amount", BigInteger, nullable=False, server_default="0"),
    Column("debt_status", String(12)),
    Column("debt_next_attempt_at", DateTime(timezone=True)),
    Column("payment_request_id", UUID(as_uuid=True)),
    Column("payment_reference", String(25)),
    Column("payment_qr", String(512)),
    Column("payment_amount", BigInteger),
    Column("payment_requested_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index(
    "sessions_one_open_per_plate",
    sessions.c.lot_id,
    sessions.c.plate_key,
    unique=True,
    postgresql_where=sessions.c.status != "closed",
)
Index("sessions_by_lot_exit", sessions.c.lot_id, sessions.c.exit_at)
Index("sessions_by_plate_entry", sessions.c.plate_key, sessions.c.entry_at)
Index("sessions_by_payment_request", sessions.c.payment_request_id)
Index(
    "sessions_holds_to_release",
    sessions.c.session_id,
    postgresql_where=sessions.c.hold_status == "release_pending",
)
Index(
    "sessions_debts",
    sessions.c.debt_next_attempt_at,
    postgresql_where=sessions.c.debt_status == "outstanding",
)
Index(
    "sessions_debts_by_plate",
    sessions.c.plate_key,
    postgresql_where=sessions.c.debt_status == "outstanding",
)

session_payments = Table(
    "session_payments",
    metadata,
    Column("transfer_id", UUID(as_uuid=True), primary_key=True),
    Column("session_id", UUID(as_uuid=True), ForeignKey("sessions.session_id"), nullable=False),
    Column("lot_id", String(20), nullable=False),
    Column("kind", String(12), nullable=False),
    Column("amount", BigInteger, nullable=False),  # signed: refunds are negative
    Column("reference", String(64)),
    Column("posted_at", DateTime(timezone=True), nullable=False),
)
Index("session_payments_by_session", session_payments.c.session_id)

ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    Column("transfer_id", UUID(as_uuid=True), primary_key=True),
    Column("lot_id", String(64), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("amount", BigInteger, nullable=False),  # signed: into the lot's revenue is positive
    Column("hold_id", UUID(as_uuid=True)),
    Column("payment_request_id", UUID(as_uuid=True)),
    Column("original_transfer_id", UUID(as_uuid=True)),
    Column("posted_at", DateTime(timezone=True), nullable=False),
)
Index("ledger_transfers_by_lot_time", ledger_transfers.c.lot_id, ledger_transfers.c.posted_at)

overrides = Table(
    "overrides",
    metadata,
    Column("override_id", UUID(as_uuid=True), primary_key=True),
    Column("session_id", UUID(as_uuid=True), ForeignKey("sessions.session_id"), nullable=False),
    Column("lot_id", String(20), nullable=False),
    Column("action", String(20), nullable=False),
    Column("operator", String(60), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("fee_before", BigInteger),
    Column("fee_after", BigInteger),
    Column("refund_amount", BigInteger, nullable=False, server_default="0"),
    Column("refund_status", String(20)),
    Column("details", JSONB, nullable=False, server_default="{}"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index("overrides_by_lot_time", overrides.c.lot_id, overrides.c.created_at)
Index("overrides_by_session", overrides.c.session_id)

disputes = Table(
    "disputes",
    metadata,
    Column("dispute_id", UUID(as_uuid=True), primary_key=True),
    Column("session_id", UUID(as_uuid=True), ForeignKey("sessions.session_id"), nullable=False),
    Column("status", String(10), nullable=False),
    Column("reason", String(20), nullable=False),
    Column("detail", Text, nullable=False),
    Column("claimed_entry_at", DateTime(timezone=True)),
    Column("claimed_exit_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolution_note", String(500)),
    Column("override_id", UUID(as_uuid=True), ForeignKey("overrides.override_id")),
)
Index(
    "disputes_one_open_per_session",
    disputes.c.session_id,
    unique=True,
    postgresql_where=disputes.c.status == "open",
)


async def use_consistent_snapshot(session: AsyncSession) -> None:
    await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))


# Lots and lanes ---------------------------------------------------------------------------------


async def upsert_lots(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    statement = insert(lots).values(list(rows))
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[lots.c.lot_id],
            set_={c.name: statement.excluded[c.name] for c in lots.c if c.name != "lot_id"},
        )
    )


async def list_lots(session: AsyncSession) -> Sequence[Record]:
    return (await session.execute(select(lots).order_by(lots.c.lot_id))).all()


async def get_lot(session: AsyncSession, lot_id: str) -> Record | None:
    return (await session.execute(select(lots).where(lots.c.lot_id == lot_id))).first()


async def upsert_lanes(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    statement = insert(lanes).values(list(rows))
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[lanes.c.lane_id],
            set_={c.name: statement.excluded[c.name] for c in lanes.c if c.name != "lane_id"},
        )
    )


async def list_lanes(session: AsyncSession, lot_id: str | None = None) -> Sequence[Record]:
    query = select(lanes).order_by(lanes.c.lane_id)
    if lot_id is not None:
        query = query.where(lanes.c.lot_id == lot_id)
    return (await session.execute(query)).all()


async def get_lane(session: AsyncSession, lane_id: str) -> Record | None:
    return (await session.execute(select(lanes).where(lanes.c.lane_id == lane_id))).first()


# Devices ----------------------------------------------------------------------------------------

DEVICE_PUBLIC = (
    devices.c.device_id,
    devices.c.kind,
    devices.c.lot_id,
    devices.c.lane_id,
    devices.c.enabled,
    devices.c.created_at,
    devices.c.revoked_at,
)


async def insert_device(session: AsyncSession, **values: Any) -> Record | None:
    """The new device, or None when the id is taken."""
    row: Record | None = (
        await session.execute(
            insert(devices)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[devices.c.device_id])
            .returning(*DEVICE_PUBLIC)
        )
    ).first()
    return row


async def get_device(session: AsyncSession, device_id: str) -> Record | None:
    return (await session.execute(select(devices).where(devices.c.device_id == device_id))).first()


async def list_devices(session: AsyncSession, lot_id: str | None) -> Sequence[Record]:
    query = select(*DEVICE_PUBLIC).order_by(devices.c.device_id)
    if lot_id is not None:
        query = query.where(devices.c.lot_id == lot_id)
    return (await session.execute(query)).all()


async def revoke_device(session: AsyncSession, device_id: str) -> Record | None:
    row: Record | None = (
        await session.execute(
            update(devices)
            .where(devices.c.device_id == device_id)
            .values(enabled=False, revoked_at=func.coalesce(devices.c.revoked_at, func.now()))
            .returning(*DEVICE_PUBLIC)
        )
    ).first()
    return row


# Tariffs ----------------------------------------------------------------------------------------


async def insert_tariffs(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Tariff versions are immutable: an id already there is left as it is."""
    await session.execute(insert(tariffs).values(list(rows)).on_conflict_do_nothing())


async def insert_tariff(session: AsyncSession, **values: Any) -> Record | None:
    """The new version, or None when its id or (type, lot, instant) is taken."""
    row: Record | None = (
        await session.execute(
            insert(tariffs).values(**values).on_conflict_do_nothing().returning(tariffs)
        )
    ).first()
    return row


async def list_tariffs(
    session: AsyncSession, lot_id: str | None, vehicle_type: str | None
) -> Sequence[Record]:
    """City defaults plus the lot's own versions (all of them without a lot)."""
    query = select(tariffs).order_by(
        tariffs.c.vehicle_type, tariffs.c.lot_id.nulls_first(), tariffs.c.effective_from
    )
    if lot_id is not None:
        query = query.where(or_(tariffs.c.lot_id.is_(None), tariffs.c.lot_id == lot_id))
    if vehicle_type is not None:
        query = query.where(tariffs.c.vehicle_type == vehicle_type)
    return (await session.execute(query)).all()


# Vehicles ---------------------------------------------------------------------------------------


async def insert_vehicle(session: AsyncSession, **values: Any) -> Record | None:
    """The new registration, or None when the plate or tag is registered already."""
    row: Record | None = (
        await session.execute(
            insert(vehicles).values(**values).on_conflict_do_nothing().returning(vehicles)
        )
    ).first()
    return row


async def get_vehicle(session: AsyncSession, vehicle_id: uuid.UUID) -> Record | None:
    return (
        await session.execute(select(vehicles).where(vehicles.c.vehicle_id == vehicle_id))
    ).first()


async def vehicle_by_plate(session: AsyncSession, plate_key: str) -> Record | None:
    return (
        await session.execute(select(vehicles).where(vehicles.c.plate_key == plate_key))
    ).first()


async def vehicle_by_rfid(session: AsyncSession, rfid_tag: str) -> Record | None:
    return (await session.execute(select(vehicles).where(vehicles.c.rfid_tag == rfid_tag))).first()
