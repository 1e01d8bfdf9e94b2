"""Calls of the PL/pgSQL *_once functions: one round trip per idempotent write.

The current text of every function of payments is in services/payments/sql/.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeAlias

from services.payments.repository.balances import SystemAccount
from services.payments.repository.journal import OutboxEvent, TransferDraft
from shared.db import Database, UniqueViolation
from shared.idempotency import IdempotentRequest

Outcome: TypeAlias = Mapping[str, Any]  # an idempotent_outcome (see migration payments_0002)


def _once(function: str, arity: int) -> str:
    return f"SELECT * FROM {function}({', '.join(f'${n}' for n in range(1, arity + 1))})"


_CHARGE_ONCE = _once("charge_once", 19)
_PLACE_HOLD_ONCE = _once("place_hold_once", 20)
_CAPTURE_HOLD_ONCE = _once("capture_hold_once", 21)
_VOID_HOLD_ONCE = _once("void_hold_once", 12)
_PARKING_PAYMENT_REQUEST_ONCE = _once("parking_payment_request_once", 11)
DUPLICATE_TRANSFER: Outcome = {"outcome": "duplicate_transfer", "detail": None}


async def _run_once(db: Database, statement: str, *args: object) -> Outcome:
    try:
        outcome = await db.fetchrow(statement, *args)
    except UniqueViolation as violation:
        if violation.constraint == "transfers_pkey":
            return DUPLICATE_TRANSFER
        raise
    assert outcome is not None
    return outcome


async def charge_once(
    db: Database,
    key: IdempotentRequest,
    draft: TransferDraft,
    revenue: SystemAccount,
    topic: str,
    event_key: str,
    event: OutboxEvent,
    template: str,
) -> Outcome:
    return await _run_once(
        db,
        _CHARGE_ONCE,
        *key.arguments(),
        draft.id,
        draft.debit.account_id,
        draft.amount,
        draft.source,
        draft.lot_id,
        revenue.id,
        revenue.code,
        revenue.kind,
        revenue.shard,
        event.id,
        topic,
        event_key,
        event.headers,
        event.payload,
        template,
    )


async def place_hold_once(
    db: Database,
    key: IdempotentRequest,
    draft: TransferDraft,
    ttl: timedelta,
    escrow: SystemAccount,
    topic: str,
    event_key: str,
    event: OutboxEvent,
    template: str,
) -> Outcome:
    return await _run_once(
        db,
        _PLACE_HOLD_ONCE,
        *key.arguments(),
        draft.hold_id,
        draft.id,
        draft.debit.account_id,
        draft.amount,
        draft.source,
        draft.lot_id,
        ttl,
        escrow.id,
        escrow.code,
        escrow.shard,
        event.id,
        topic,
        event_key,
        event.headers,
        event.payload,
        template,
    )


@dataclass(frozen=True, slots=True)
class PostedDraft:
    """A transfer the database will post, with its event."""

    draft: TransferDraft
    event: OutboxEvent


def _posting(posted: PostedDraft | None) -> tuple[object, ...]:
    """A transfer's id and event as the *_once functions take them (all NULL without one)."""
    if posted is None:
        return None, None, None, None
    return posted.draft.id, posted.event.id, posted.event.headers, posted.event.payload


async def capture_hold_once(
    db: Database,
    key: IdempotentRequest,
    hold_id: uuid.UUID,
    amount: int,
    revenue: SystemAccount | None,
    capture: PostedDraft | None,
    release: PostedDraft | None,
    topic: str,
    event_key: str | None,
    template: str | None,
) -> Outcome:
    return await _run_once(
        db,
        _CAPTURE_HOLD_ONCE,
        *key.arguments(),
        hold_id,
        amount,
        revenue and revenue.id,
        revenue and revenue.code,
        revenue and revenue.kind,
        revenue and revenue.shard,
        *_posting(capture),
        *_posting(release),
        topic,
        event_key,
        template,
    )


async def void_hold_once(
    db: Database,
    key: IdempotentRequest,
    hold_id: uuid.UUID,
    release: PostedDraft | None,
    topic: str,
    event_key: str | None,
    template: str | None,
) -> Outcome:
    return await _run_once(
        db,
        _VOID_HOLD_ONCE,
        *key.arguments(),
        hold_id,
        *_posting(release),
        topic,
        event_key,
        template,
    )


async def parking_payment_request_once(
    db: Database,
    key: IdempotentRequest,
    *,
    id: uuid.UUID,
    reference: str,
    amount: int,
    lot_id: str,
    parking_session_id: str,
    qr_payload: str,
    template: str,
) -> Outcome:
    return await _run_once(
        db,
        _PARKING_PAYMENT_REQUEST_ONCE,
        *key.arguments(),
        id,
        reference,
        amount,
        lot_id,
        parking_session_id,
        qr_payload,
        template,
    )
