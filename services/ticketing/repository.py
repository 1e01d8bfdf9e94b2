"""Every SQL statement of the ticketing service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, Boolean, Column, Integer, MetaData, String, Table, select
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

products = Table(
    "products",
    metadata,
    Column("code", String(40), primary_key=True),
    Column("name_vi", String(120), nullable=False),
    Column("name_en", String(120), nullable=False),
    Column("mode", String(10), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("price_vnd", Integer, nullable=False),
    Column("categories", ARRAY(String(20)), nullable=False),
    Column("validity_days", Integer),
    Column("rides", Integer),
    Column("lines", ARRAY(String(10)), nullable=False),
    Column("distance_priced", Boolean, nullable=False),
)


async def upsert_products(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    statement = insert(products).values(list(rows))
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[products.c.code],
            set_={c.name: statement.excluded[c.name] for c in products.c if c.name != "code"},
        )
    )


async def list_products(session: AsyncSession) -> Sequence[RowMapping]:
    return (await session.execute(select(products).order_by(products.c.code))).mappings().all()


async def get_product(session: AsyncSession, code: str) -> RowMapping | None:
    return (
        (await session.execute(select(products).where(products.c.code == code))).mappings().first()
    )
