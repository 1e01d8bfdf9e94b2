"""Rows of the holds table: the terms a hold was placed with, settling it, the expired ones."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.repository import Record, holds
from shared.db import Database


@dataclass(frozen=True, slots=True)
class HoldTerms:
    """What a hold was placed with: none of it ever changes."""

    id: uuid.UUID
    wallet_account_id: uuid.UUID
    holds_account_id: uuid.UUID
    amount: int
    source: str
    lot_id: str | None
    hold_transfer_id: uuid.UUID
    expires_at: datetime
    created_at: datetime

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> HoldTerms:
        return cls(*(row[name] for name in HOLD_TERMS))


HOLD_TERMS = tuple(field.name for field in fields(HoldTerms))
_HOLD_TERMS = f"SELECT {', '.join(HOLD_TERMS)} FROM holds WHERE id = $1"


async def get_hold_terms(db: Database, hold_id: uuid.UUID) -> HoldTerms | None:
    """No lock needed: the terms never change (the *_once function locks the hold)."""
    row = await db.fetchrow(_HOLD_TERMS, hold_id)
    return None if row is None else HoldTerms.of(row)


async def get_hold(session: AsyncSession, hold_id: uuid.UUID) -> Record | None:
    return (await session.execute(select(holds).where(holds.c.id == hold_id))).first()


async def settle_hold(session: AsyncSession, hold_id: uuid.UUID, **values: Any) -> Record:
    row: Record = (
        await session.execute(
            update(holds)
            .where(holds.c.id == hold_id)
            .values(settled_at=func.now(), **values)
            .returning(holds)
        )
    ).one()
    return row


async def lock_expired_holds(session: AsyncSession, limit: int) -> list[Record]:
    """Pending holds past their expiry; rows another worker or request holds are skipped."""
    return list(
        (
            await session.execute(
                select(holds)
                .where(holds.c.status == "pending", holds.c.expires_at <= func.now())
                .order_by(holds.c.expires_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )
