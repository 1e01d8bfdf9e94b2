"""Every SQL statement of the parking service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from shared.idempotency import idempotency_keys_table
from shared.inbox import processed_events_table
from shared.outbox import outbox_table

metadata = MetaData()
outbox = outbox_table(metadata)
idempotency_keys = idempotency_keys_table(metadata)
processed_events = processed_events_table(metadata)

lots = Table(
    "lots",
    metadata,
    Column("lot_id", String(20), primary_key=True),
    Column("name", String(120), nullable=False),
    Column("district", String(60), nullable=False),
    Column("address", String(200), nullable=False),
    Column("motorbike_capacity", Integer, nullable=False),
    Column("car_capacity", Integer, nullable=False),
    Column("entry_lanes", Integer, nullable=False),
    Column("exit_lanes", Integer, nullable=False),
)


async def upsert_lots(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    statement = insert(lots).values(list(rows))
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[lots.c.lot_id],
            set_={c.name: statement.excluded[c.name] for c in lots.c if c.name != "lot_id"},
        )
    )


async def list_lots(session: AsyncSession) -> Sequence[RowMapping]:
    return (await session.execute(select(lots).order_by(lots.c.lot_id))).mappings().all()


async def get_lot(session: AsyncSession, lot_id: str) -> RowMapping | None:
    return (await session.execute(select(lots).where(lots.c.lot_id == lot_id))).mappings().first()
