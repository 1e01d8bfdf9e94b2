"""VietQR payment requests and the bank notifications that pay them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.repository import Record, bank_notifications, payment_requests


async def insert_payment_request(session: AsyncSession, **values: Any) -> Record:
    row: Record = (
        await session.execute(
            payment_requests.insert().values(**values).returning(payment_requests)
        )
    ).one()
    return row


async def get_payment_request(session: AsyncSession, request_id: uuid.UUID) -> Record | None:
    return (
        await session.execute(select(payment_requests).where(payment_requests.c.id == request_id))
    ).first()


async def lock_payment_request_by_reference(session: AsyncSession, reference: str) -> Record | None:
    return (
        await session.execute(
            select(payment_requests)
            .where(payment_requests.c.reference == reference)
            .with_for_update()
        )
    ).first()


async def mark_payment_request_paid(
    session: AsyncSession, request_id: uuid.UUID, transfer_id: uuid.UUID
) -> Record:
    row: Record = (
        await session.execute(
            update(payment_requests)
            .where(payment_requests.c.id == request_id)
            .values(status="paid", paid_transfer_id=transfer_id, paid_at=func.now())
            .returning(payment_requests)
        )
    ).one()
    return row


async def insert_notification(session: AsyncSession, **values: Any) -> bool:
    """False when the bank already sent this transaction (the first one stays)."""
    inserted = await session.execute(
        insert(bank_notifications)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["bank_transaction_id"])
        .returning(bank_notifications.c.id)
    )
    return inserted.first() is not None


async def get_notification(session: AsyncSession, bank_transaction_id: str) -> Record:
    return (
        await session.execute(
            select(bank_notifications).where(
                bank_notifications.c.bank_transaction_id == bank_transaction_id
            )
        )
    ).one()
