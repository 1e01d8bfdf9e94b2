"""The journal: posting a two-leg transfer with its event (one call of the engine), reading it
back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.repository import Record, transfers
from services.payments.repository.balances import Leg
from shared.events import Event


@dataclass(frozen=True, slots=True)
class TransferDraft:
    """A two-leg transfer to post: `amount` leaves `debit` and reaches `credit`."""

    id: uuid.UUID
    kind: str
    amount: int
    debit: Leg
    credit: Leg
    wallet_account_id: uuid.UUID | None = None
    source: str | None = None
    lot_id: str | None = None
    original_transfer_id: uuid.UUID | None = None
    hold_id: uuid.UUID | None = None
    payment_request_id: uuid.UUID | None = None
    bank_notification_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event as the outbox row stores it."""

    id: str
    headers: str  # JSON [[name, value], …]
    payload: bytes

    @classmethod
    def of(cls, event: Event) -> OutboxEvent:
        headers = [[name, value.decode()] for name, value in event.headers()]
        return cls(event.id, orjson.dumps(headers).decode(), event.value())


@dataclass(frozen=True, slots=True)
class PostedTransfer:
    debit_balance: int
    credit_balance: int
    posted_at: datetime


_POST_TRANSFER = text(
    "SELECT * FROM post_transfer(:id, :kind, :amount, :debit, :debit_kinds, :credit,"
    " :credit_kinds, :credit_code, :credit_kind, :credit_owner, :credit_shard, :wallet, :source,"
    " :lot, :original, :hold, :payment_request, :bank_notification, :event, :topic, :event_key,"
    " :headers, :payload)"
)


async def post_transfer(
    session: AsyncSession, draft: TransferDraft, topic: str, event_key: str, event: OutboxEvent
) -> Record:
    """Post `draft` with its outbox event (PL/pgSQL `post_transfer`): the two new balances and
    posted_at, or the refusal (nothing written then)."""
    system = None if draft.wallet_account_id == draft.credit.account_id else draft.credit.system
    connection = await session.connection()
    result = await connection.execute(
        _POST_TRANSFER,
        {
            "id": draft.id,
            "kind": draft.kind,
            "amount": draft.amount,
            "debit": draft.debit.account_id,
            "debit_kinds": list(draft.debit.kinds),
            "credit": draft.credit.account_id,
            "credit_kinds": list(draft.credit.kinds),
            "credit_code": system and system.code,
            "credit_kind": system and system.kind,
            "credit_owner": system and system.owner_id,
            "credit_shard": system and system.shard,
            "wallet": draft.wallet_account_id,
            "source": draft.source,
            "lot": draft.lot_id,
            "original": draft.original_transfer_id,
            "hold": draft.hold_id,
            "payment_request": draft.payment_request_id,
            "bank_notification": draft.bank_notification_id,
            "event": event.id,
            "topic": topic,
            "event_key": event_key,
            "headers": event.headers,
            "payload": event.payload,
        },
    )
    return result.one()


async def lock_transfer(session: AsyncSession, transfer_id: uuid.UUID) -> Record | None:
    """The transfer, locked against concurrent refunds of it (the journal row never changes)."""
    return (
        await session.execute(
            select(transfers).where(transfers.c.id == transfer_id).with_for_update()
        )
    ).first()


async def refunded_total(session: AsyncSession, original_transfer_id: uuid.UUID) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(transfers.c.amount), 0)).where(
            transfers.c.original_transfer_id == original_transfer_id,
            transfers.c.kind == "refund",
        )
    )
    return int(total or 0)
