"""Every SQL statement of the parking service."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import SimpleNamespace
from typing import Any, TypeAlias

import orjson
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
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID, insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Database
from shared.events import Event
from shared.idempotency import idempotency_keys_table
from shared.inbox import processed_events_table
from shared.outbox import outbox_table

metadata = MetaData()
outbox = outbox_table(metadata)
idempotency_keys = idempotency_keys_table(metadata)
processed_events = processed_events_table(metadata)

Record: TypeAlias = Row[*tuple[Any, ...]]

OPEN_STATUSES = ("open", "awaiting_payment")
RECEIPT_LOOKUP_SCAN = 2000  # a plate's sessions a receipt code is checked against

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


# Sessions ---------------------------------------------------------------------------------------


# Built once: an alias of a wide table costs ~1 ms of CPU to build its column proxies.
_OWING = sessions.alias("owing")


def _outstanding_debt(plate_key: Any) -> Any:
    return (
        select(func.coalesce(func.sum(_OWING.c.fee - _OWING.c.paid_amount), 0))
        .where(_OWING.c.plate_key == plate_key, _OWING.c.debt_status == "outstanding")
        .scalar_subquery()
    )


async def insert_session(session: AsyncSession, **values: Any) -> Record | None:
    """The new session with `outstanding_debt` (what the plate owes from earlier sessions),
    or None when the plate already has an open one at the lot."""
    row: Record | None = (
        await session.execute(
            insert(sessions)
            .values(**values)
            .on_conflict_do_nothing(
                index_elements=[sessions.c.lot_id, sessions.c.plate_key],
                index_where=text("status <> 'closed'"),  # literal: must match the index
            )
            .returning(sessions, _outstanding_debt(values["plate_key"]).label("outstanding_debt"))
        )
    ).first()
    return row


async def plate_at_lot(session: AsyncSession, lot_id: str, plate_key: str) -> Record:
    """The plate's registration (vehicle_id null if none) and its open session at the lot
    (open_session_id null if none), in one round trip."""
    open_session = (
        select(sessions.c.session_id)
        .where(
            sessions.c.lot_id == lot_id,
            sessions.c.plate_key == plate_key,
            sessions.c.status != "closed",
        )
        .scalar_subquery()
    )
    probe = select(literal(plate_key).label("plate_key")).subquery("probe")
    row: Record = (
        await session.execute(
            select(
                open_session.label("open_session_id"),
                vehicles.c.vehicle_id,
                vehicles.c.wallet_account_id,
                vehicles.c.vehicle_type,
            )
            .select_from(probe)
            .outerjoin(vehicles, vehicles.c.plate_key == probe.c.plate_key)
        )
    ).one()
    return row


async def get_session(
    session: AsyncSession, session_id: uuid.UUID, *, lock: bool = False
) -> Record | None:
    query = select(sessions).where(sessions.c.session_id == session_id)
    if lock:
        # The lanes' lock on the session (they hold no row lock: see lane decisions below).
        await session.execute(
            text("SELECT pg_advisory_xact_lock(session_lock(:id))"), {"id": session_id}
        )
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def open_session_for_plate(
    session: AsyncSession, lot_id: str, plate_key: str
) -> Record | None:
    query = select(sessions).where(
        sessions.c.lot_id == lot_id,
        sessions.c.plate_key == plate_key,
        sessions.c.status != "closed",
    )
    return (await session.execute(query)).first()


async def last_exit_for_plate(
    session: AsyncSession, lot_id: str, plate_key: str, since: datetime
) -> Record | None:
    return (
        await session.execute(
            select(sessions)
            .where(
                sessions.c.lot_id == lot_id,
                sessions.c.plate_key == plate_key,
                sessions.c.status == "closed",
                sessions.c.exit_recorded_at >= since,
            )
            .order_by(sessions.c.exit_recorded_at.desc())
            .limit(1)
        )
    ).first()


async def update_session(session: AsyncSession, session_id: uuid.UUID, **values: Any) -> Record:
    row: Record = (
        await session.execute(
            update(sessions)
            .where(sessions.c.session_id == session_id)
            .values(**values, updated_at=func.now())
            .returning(sessions)
        )
    ).one()
    return row


async def outstanding_debt(session: AsyncSession, plate_key: str) -> int:
    return int(await session.scalar(select(_outstanding_debt(plate_key))) or 0)


async def closed_session_ids_of_plate(
    session: AsyncSession, plate_key: str, entered_since: datetime
) -> Sequence[uuid.UUID]:
    """The plate's closed sessions entered since then, newest first (at most a few thousand:
    a vehicle that parks twice a day has ~180 in 90 days)."""
    return (
        await session.scalars(
            select(sessions.c.session_id)
            .where(
                sessions.c.plate_key == plate_key,
                sessions.c.entry_at >= entered_since,
                sessions.c.status == "closed",
            )
            .order_by(sessions.c.entry_at.desc())
            .limit(RECEIPT_LOOKUP_SCAN)
        )
    ).all()


async def list_sessions(
    session: AsyncSession,
    *,
    lot_id: str | None,
    status: str | None,
    needs_review: bool | None,
    limit: int,
) -> Sequence[Record]:
    query = select(sessions).order_by(sessions.c.entry_at.desc()).limit(limit)
    if lot_id is not None:
        query = query.where(sessions.c.lot_id == lot_id)
    if status is not None:
        query = query.where(sessions.c.status == status)
    if needs_review is not None:
        reviewed = func.cardinality(sessions.c.review_reasons) > 0
        query = query.where(reviewed if needs_review else ~reviewed)
    return (await session.execute(query)).all()


async def open_counts(session: AsyncSession) -> Sequence[Record]:
    """Vehicles inside, per lot and type: what the Redis counters are rebuilt from."""
    return (
        await session.execute(
            select(sessions.c.lot_id, sessions.c.vehicle_type, func.count().label("inside"))
            .where(sessions.c.status != "closed")
            .group_by(sessions.c.lot_id, sessions.c.vehicle_type)
        )
    ).all()


async def debts_due(session: AsyncSession, now: datetime, limit: int) -> Sequence[Record]:
    """Debts to retry now, locked so that two replicas never collect the same one."""
    return (
        await session.execute(
            select(sessions)
            .where(
                sessions.c.debt_status == "outstanding",
                sessions.c.debt_next_attempt_at <= now,
            )
            .order_by(sessions.c.debt_next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()


async def holds_to_release(session: AsyncSession, limit: int) -> Sequence[Record]:
    """Closed sessions whose hold could not be voided when payments was unreachable."""
    return (
        await session.execute(
            select(sessions)
            .where(sessions.c.hold_status == "release_pending")
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()


async def sessions_exited_between(
    session: AsyncSession, lot_id: str, since: datetime, until: datetime
) -> Sequence[Record]:
    return (
        await session.execute(
            select(sessions)
            .where(
                sessions.c.lot_id == lot_id,
                sessions.c.exit_at >= since,
                sessions.c.exit_at < until,
            )
            .order_by(sessions.c.exit_at)
        )
    ).all()


# Money seen for sessions ------------------------------------------------------------------------


async def record_payment(session: AsyncSession, **values: Any) -> bool:
    """True the first time this transfer is recorded."""
    inserted = await session.execute(
        insert(session_payments)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(session_payments.c.transfer_id)
    )
    return inserted.first() is not None


async def payments_of_sessions(
    session: AsyncSession, session_ids: Sequence[uuid.UUID]
) -> Sequence[Record]:
    if not session_ids:
        return []
    return (
        await session.execute(
            select(session_payments).where(session_payments.c.session_id.in_(session_ids))
        )
    ).all()


async def payments_by_transfer(
    session: AsyncSession, transfer_ids: Sequence[uuid.UUID]
) -> Sequence[Record]:
    if not transfer_ids:
        return []
    return (
        await session.execute(
            select(session_payments).where(session_payments.c.transfer_id.in_(transfer_ids))
        )
    ).all()


async def session_payments_between(
    session: AsyncSession, lot_id: str, since: datetime, until: datetime
) -> Sequence[Record]:
    return (
        await session.execute(
            select(session_payments).where(
                session_payments.c.lot_id == lot_id,
                session_payments.c.posted_at >= since,
                session_payments.c.posted_at < until,
            )
        )
    ).all()


async def ledger_transfers_between(
    session: AsyncSession, lot_id: str, since: datetime, until: datetime
) -> Sequence[Record]:
    return (
        await session.execute(
            select(ledger_transfers)
            .where(
                ledger_transfers.c.lot_id == lot_id,
                ledger_transfers.c.posted_at >= since,
                ledger_transfers.c.posted_at < until,
            )
            .order_by(ledger_transfers.c.posted_at)
        )
    ).all()


async def sessions_of_requests(
    session: AsyncSession, payment_request_ids: Sequence[uuid.UUID]
) -> Sequence[Record]:
    if not payment_request_ids:
        return []
    return (
        await session.execute(
            select(sessions.c.session_id, sessions.c.payment_request_id).where(
                sessions.c.payment_request_id.in_(payment_request_ids)
            )
        )
    ).all()


# Overrides and disputes -------------------------------------------------------------------------


async def insert_override(session: AsyncSession, **values: Any) -> Record:
    row: Record = (
        await session.execute(insert(overrides).values(**values).returning(overrides))
    ).one()
    return row


async def get_override(session: AsyncSession, override_id: uuid.UUID) -> Record | None:
    return (
        await session.execute(select(overrides).where(overrides.c.override_id == override_id))
    ).first()


async def overrides_of_sessions(
    session: AsyncSession, session_ids: Sequence[uuid.UUID]
) -> Sequence[Record]:
    if not session_ids:
        return []
    return (
        await session.execute(select(overrides).where(overrides.c.session_id.in_(session_ids)))
    ).all()


async def overrides_between(
    session: AsyncSession, lot_id: str, since: datetime, until: datetime
) -> Sequence[Record]:
    return (
        await session.execute(
            select(overrides)
            .where(
                overrides.c.lot_id == lot_id,
                overrides.c.created_at >= since,
                overrides.c.created_at < until,
            )
            .order_by(overrides.c.created_at)
        )
    ).all()


async def insert_dispute(session: AsyncSession, **values: Any) -> Record | None:
    """The new dispute, or None when the session already has an open one."""
    row: Record | None = (
        await session.execute(
            insert(disputes)
            .values(**values)
            .on_conflict_do_nothing(
                index_elements=[disputes.c.session_id], index_where=text("status = 'open'")
            )
            .returning(disputes)
        )
    ).first()
    return row


async def get_dispute(
    session: AsyncSession, dispute_id: uuid.UUID, *, lock: bool = False
) -> Record | None:
    query = select(disputes).where(disputes.c.dispute_id == dispute_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def disputes_of_session(session: AsyncSession, session_id: uuid.UUID) -> Sequence[Record]:
    return (
        await session.execute(
            select(disputes)
            .where(disputes.c.session_id == session_id)
            .order_by(disputes.c.created_at)
        )
    ).all()


async def list_disputes(session: AsyncSession, status: str | None, limit: int) -> Sequence[Record]:
    query = select(disputes).order_by(disputes.c.created_at).limit(limit)
    if status is not None:
        query = query.where(disputes.c.status == status)
    return (await session.execute(query)).all()


async def update_dispute(session: AsyncSession, dispute_id: uuid.UUID, **values: Any) -> Record:
    row: Record = (
        await session.execute(
            update(disputes)
            .where(disputes.c.dispute_id == dispute_id)
            .values(**values)
            .returning(disputes)
        )
    ).one()
    return row


# Lane decisions ---------------------------------------------------------------------------------
#
# Entries and exits are the hot path: plain SQL on a connection of the asyncpg pool, in
# autocommit (asyncpg prepares each text once per connection and reuses it). The first
# statement claims the Idempotency-Key (`lane_key`, migration parking_0004: a session-level
# advisory lock, then the stored answer with a fresh snapshot) and reads what the decision
# needs; an exit's also locks its session (`lane_exit_begin`). The last statement
# writes the session, the payment seen, the outbox events and the answer, and commits them
# together; the locks are let go after it (`LaneConnection.close`), off the critical path.

_CLAIM = """
    c.claimed, c.fingerprint AS stored_fingerprint, c.status_code AS stored_status,
    c.media_type AS stored_media_type, c.body AS stored_body
"""
_FRESH = "c.claimed AND c.body IS NULL"  # the key is ours and has no answer yet

ENTRY_BEGIN = f"""
SELECT {_CLAIM}, s.session_id AS open_session_id,
       v.vehicle_id, v.wallet_account_id, v.vehicle_type, d.owed AS outstanding_debt
  FROM lane_key($1, $2, $3) c
  LEFT JOIN sessions s
    ON {_FRESH} AND s.lot_id = $4 AND s.plate_key = $5 AND s.status <> 'closed'
  LEFT JOIN vehicles v ON {_FRESH} AND v.plate_key = $5
  LEFT JOIN LATERAL (
      SELECT coalesce(sum(o.fee - o.paid_amount), 0)::bigint AS owed FROM sessions o
       WHERE {_FRESH} AND o.plate_key = $5 AND o.debt_status = 'outstanding'
  ) d ON true
"""

EXIT_BEGIN = f"""
SELECT {_CLAIM}, c.session FROM lane_exit_begin($1, $2, $3, $4, $5) c
"""

PLATE_AT_LOT = """
SELECT s.session_id AS open_session_id, v.vehicle_id, v.wallet_account_id, v.vehicle_type,
       (SELECT coalesce(sum(o.fee - o.paid_amount), 0)::bigint FROM sessions o
         WHERE o.plate_key = $2 AND o.debt_status = 'outstanding') AS outstanding_debt
  FROM (SELECT 1) AS one
  LEFT JOIN sessions s ON s.lot_id = $1 AND s.plate_key = $2 AND s.status <> 'closed'
  LEFT JOIN vehicles v ON v.plate_key = $2
"""

VEHICLE_BY_ID = "SELECT * FROM vehicles WHERE vehicle_id = $1"
VEHICLE_BY_RFID = "SELECT * FROM vehicles WHERE rfid_tag = $1"
LOCK_SESSION = "SELECT * FROM lane_lock_session($1)"
LOCK_OPEN_SESSION = "SELECT * FROM lane_open_session($1, $2)"
LAST_EXIT_FOR_PLATE = """
SELECT session_id, exit_at FROM sessions
 WHERE lot_id = $1 AND plate_key = $2 AND status = 'closed' AND exit_recorded_at >= $3
 ORDER BY exit_recorded_at DESC LIMIT 1
"""

# $1-$5: the events (ids, topics, keys, headers as JSON, payloads); $6-$9: the answer's key,
# scope, fingerprint and body. `gate`: the row without which nothing is written.
_EVENTS_AND_ANSWER = """
events AS (
    INSERT INTO outbox (event_id, topic, key, headers, payload)
    SELECT e.event_id::uuid, e.topic, e.key, e.headers::jsonb, e.payload
      FROM gate, unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[])
           AS e(event_id, topic, key, headers, payload)
),
answer AS (
    INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, media_type, body)
    SELECT $6, $7, $8, 200, 'application/json', $9 FROM gate
)
SELECT count(*) FROM gate
"""

STORE_ANSWER = f"WITH gate AS (SELECT 1), {_EVENTS_AND_ANSWER}"

SESSION_COLUMNS = (
    "session_id",
    "lot_id",
    "status",
    "vehicle_type",
    "plate_key",
    "plate",
    "entry_method",
    "entry_lane_id",
    "entry_device_id",
    "entry_at",
    "entry_recorded_at",
    "entry_confidence",
    "entry_image_ref",
    "vehicle_id",
    "wallet_account_id",
    "hold_id",
    "hold_amount",
    "hold_status",
    "review_reasons",
)
_NEW_SESSION = ", ".join(SESSION_COLUMNS)
_NEW_VALUES = ", ".join(f"${n}" for n in range(10, 10 + len(SESSION_COLUMNS)))

# Nothing is written when the plate entered through another lane at the same moment.
INSERT_SESSION = f"""
WITH gate AS (
    INSERT INTO sessions ({_NEW_SESSION}) VALUES ({_NEW_VALUES})
    ON CONFLICT (lot_id, plate_key) WHERE status <> 'closed' DO NOTHING
    RETURNING session_id
),
{_EVENTS_AND_ANSWER}
"""

# What a decision may change on a session, in this order from $11 (see `session_changes`).
UPDATABLE_COLUMNS = (
    "status",
    "plate",
    "plate_key",
    "exit_lane_id",
    "exit_device_id",
    "exit_at",
    "exit_recorded_at",
    "exit_confidence",
    "exit_image_ref",
    "exit_offline",
    "fee",
    "priced",
    "review_reasons",
    "settlement",
    "paid_amount",
    "hold_status",
    "debt_status",
    "debt_next_attempt_at",
    "payment_request_id",
    "payment_reference",
    "payment_qr",
    "payment_amount",
    "payment_requested_at",
    "closed_at",
)
_SETS = ",\n        ".join(
    f"{name} = ${n}::text::jsonb" if name == "priced" else f"{name} = ${n}"
    for n, name in enumerate(UPDATABLE_COLUMNS, 11)
)
_PAYMENT = 11 + len(UPDATABLE_COLUMNS)  # transfer id, kind, amount, reference, posted at

# $10: the session; a payment seen for it is recorded once (`record_payment`).
UPDATE_SESSION = f"""
WITH gate AS (
    UPDATE sessions SET
        {_SETS},
        updated_at = now()
     WHERE session_id = $10
    RETURNING session_id, lot_id
),
payment AS (
    INSERT INTO session_payments
        (transfer_id, session_id, lot_id, kind, amount, reference, posted_at)
    SELECT ${_PAYMENT}, gate.session_id, gate.lot_id, ${_PAYMENT + 1}, ${_PAYMENT + 2},
           ${_PAYMENT + 3}, ${_PAYMENT + 4}
      FROM gate WHERE ${_PAYMENT}::uuid IS NOT NULL
    ON CONFLICT DO NOTHING
),
{_EVENTS_AND_ANSWER}
"""


def outbox_arrays(
    events: Sequence[tuple[str, str, Event]],
) -> tuple[list[str], list[str], list[str], list[str], list[bytes]]:
    """Outbox rows as the five arrays the lane statements take (as `add_event` writes them)."""
    return (
        [event.id for _, _, event in events],
        [topic for topic, _, _ in events],
        [key for _, key, _ in events],
        [
            orjson.dumps([[name, value.decode()] for name, value in event.headers()]).decode()
            for _, _, event in events
        ],
        [event.value() for _, _, event in events],
    )


def updatable_values(state: dict[str, Any]) -> list[Any]:
    values = [state[name] for name in UPDATABLE_COLUMNS]
    priced = state["priced"]
    values[_PRICED] = None if priced is None else orjson.dumps(priced).decode()
    return values


_PRICED = UPDATABLE_COLUMNS.index("priced")


async def lane_outstanding_debt(connection: Any, plate_key: str) -> int:
    owed = await connection.fetchval(
        "SELECT coalesce(sum(fee - paid_amount), 0)::bigint FROM sessions"
        " WHERE plate_key = $1 AND debt_status = 'outstanding'",
        plate_key,
    )
    return int(owed)


def session_state(record: Any) -> SimpleNamespace:
    """A session row read on a lane connection, as the decision rules read rows."""
    state = SimpleNamespace(**{name: record[name] for name in SESSION_FIELDS})
    if isinstance(state.priced, str):  # a plain asyncpg connection gives JSON as text
        state.priced = orjson.loads(state.priced)
    return state


SESSION_FIELDS = tuple(column.name for column in sessions.c)


@asynccontextmanager
async def raw_connection(database: Database) -> AsyncIterator[Any]:
    """A connection of the service's plain asyncpg pool (`Database.raw_pool`), in autocommit:
    each statement commits on its own."""
    pool = await database.raw_pool()
    async with pool.acquire() as connection:
        yield connection


UNLOCK_ALL = "SELECT pg_advisory_unlock_all()"


class LaneConnection:
    """A lane decision's connection: its statements commit one by one, and the advisory locks
    they take (session-level) are let go by `close` before it goes back to the pool."""

    def __init__(self, pool: Any, connection: Any) -> None:
        self.pool = pool
        self.connection = connection

    @classmethod
    async def open(cls, database: Database) -> LaneConnection:
        pool = await database.raw_pool()
        return cls(pool, await pool.acquire())

    async def close(self) -> None:
        try:
            # fetchval, not execute: a prepared statement (execute without arguments would be
            # parsed and planned by PostgreSQL every time, ~45 µs of its CPU per decision).
            await self.connection.fetchval(UNLOCK_ALL)
        except BaseException:
            self.connection.terminate()  # its locks end with it
            raise
        finally:
            await self.pool.release(self.connection)

    def close_soon(self) -> None:
        """`close` after the lane has its answer: the locks outlive the commit by a moment."""
        task = asyncio.get_running_loop().create_task(self.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()


# The ledger transfer and its event id, once: a redelivered event writes nothing.
RECORD_LEDGER_EVENT = """
WITH first AS (
    INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2::uuid)
    ON CONFLICT DO NOTHING RETURNING event_id
)
INSERT INTO ledger_transfers
    (transfer_id, lot_id, kind, amount, hold_id, payment_request_id, original_transfer_id,
     posted_at)
SELECT $3, $4, $5, $6, $7, $8, $9, $10 FROM first
ON CONFLICT DO NOTHING
"""


async def record_ledger_event(
    database: Database,
    consumer: str,
    event_id: str,
    *,
    transfer_id: uuid.UUID,
    lot_id: str,
    kind: str,
    amount: int,
    hold_id: uuid.UUID | None,
    payment_request_id: uuid.UUID | None,
    original_transfer_id: uuid.UUID | None,
    posted_at: datetime,
) -> None:
    async with raw_connection(database) as connection:
        await connection.execute(
            RECORD_LEDGER_EVENT,
            consumer,
            event_id,
            transfer_id,
            lot_id,
            kind,
            amount,
            hold_id,
            payment_request_id,
            original_transfer_id,
            posted_at,
        )
