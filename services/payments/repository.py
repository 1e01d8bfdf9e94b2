"""Every SQL statement of the payments service."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Boolean, Column, DateTime, MetaData, String, Table, func, select
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from shared.idempotency import idempotency_keys_table
from shared.inbox import processed_events_table
from shared.outbox import outbox_table

metadata = MetaData()
outbox = outbox_table(metadata)
idempotency_keys = idempotency_keys_table(metadata)
processed_events = processed_events_table(metadata)

accounts = Table(
    "accounts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("code", String(120), nullable=False, unique=True),
    Column("kind", String(30), nullable=False),
    Column("owner_id", String(120)),
    Column("allow_negative", Boolean, nullable=False, server_default="false"),
    Column("balance", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


async def upsert_account(
    session: AsyncSession, *, code: str, kind: str, owner_id: str | None, allow_negative: bool
) -> Row[tuple[uuid.UUID, str, str, str | None, bool, int]]:
    await session.execute(
        insert(accounts)
        .values(
            id=uuid.uuid4(), code=code, kind=kind, owner_id=owner_id, allow_negative=allow_negative
        )
        .on_conflict_do_nothing(index_elements=["code"])
    )
    return await get_account_by_code(session, code)


async def get_account_by_code(
    session: AsyncSession, code: str
) -> Row[tuple[uuid.UUID, str, str, str | None, bool, int]]:
    row = (
        await session.execute(
            select(
                accounts.c.id,
                accounts.c.code,
                accounts.c.kind,
                accounts.c.owner_id,
                accounts.c.allow_negative,
                accounts.c.balance,
            ).where(accounts.c.code == code)
        )
    ).one()
    return row


async def get_account(
    session: AsyncSession, account_id: uuid.UUID
) -> Row[tuple[uuid.UUID, str, str, str | None, bool, int]] | None:
    return (
        await session.execute(
            select(
                accounts.c.id,
                accounts.c.code,
                accounts.c.kind,
                accounts.c.owner_id,
                accounts.c.allow_negative,
                accounts.c.balance,
            ).where(accounts.c.id == account_id)
        )
    ).first()
