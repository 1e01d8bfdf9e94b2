"""The journal: posting a two-leg transfer with its event in one statement, reading it back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import LargeBinary, String, TextClause, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
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
class PostedTransfer:
    debit_balance: int
    credit_balance: int
    posted_at: datetime


_DEBIT = """
debit AS (
    UPDATE accounts SET balance = accounts.balance - CAST(:amount AS bigint){after}
    WHERE accounts.id = CAST(:debit_id AS uuid)
      AND accounts.kind = ANY(CAST(:debit_kinds AS varchar[]))
      AND (accounts.allow_negative OR accounts.balance >= CAST(:amount AS bigint))
    RETURNING accounts.id, accounts.balance
)"""

_CREDIT_EXISTING = """
credit AS (
    UPDATE accounts SET balance = accounts.balance + CAST(:amount AS bigint){after}
    WHERE accounts.id = CAST(:credit_id AS uuid)
      AND accounts.kind = ANY(CAST(:credit_kinds AS varchar[]))
    RETURNING accounts.id, accounts.balance
)"""

_CREDIT_SYSTEM = """
credit AS (
    INSERT INTO accounts AS a (id, code, kind, owner_id, shard, balance)
    SELECT CAST(:credit_id AS uuid), CAST(:credit_code AS varchar), CAST(:credit_kind AS varchar),
           CAST(:credit_owner AS varchar), CAST(:credit_shard AS smallint),
           CAST(:amount AS bigint)
      FROM debit
    ON CONFLICT (id) DO UPDATE SET balance = a.balance + excluded.balance
    RETURNING a.id, a.balance
)"""

_JOURNAL = """
transfer AS (
    INSERT INTO transfers (id, kind, amount, debit_account_id, credit_account_id,
                           wallet_account_id, source, lot_id, original_transfer_id, hold_id,
                           payment_request_id, bank_notification_id)
    SELECT CAST(:transfer_id AS uuid), CAST(:kind AS varchar), CAST(:amount AS bigint),
           debit.id, credit.id, CAST(:wallet_id AS uuid), CAST(:source AS varchar),
           CAST(:lot_id AS varchar), CAST(:original_transfer_id AS uuid), CAST(:hold_id AS uuid),
           CAST(:payment_request_id AS uuid), CAST(:bank_notification_id AS uuid)
      FROM debit, credit
    RETURNING id, posted_at
),
legs AS (
    INSERT INTO postings (transfer_id, account_id, amount)
    SELECT transfer.id, leg.account_id, leg.amount
      FROM transfer,
           (VALUES (CAST(:debit_id AS uuid), -CAST(:amount AS bigint)),
                   (CAST(:credit_id AS uuid), CAST(:amount AS bigint))) AS leg(account_id, amount)
),
event AS (
    INSERT INTO outbox (event_id, topic, key, headers, payload)
    SELECT CAST(:event_id AS uuid), CAST(:topic AS varchar), CAST(:event_key AS varchar),
           CAST(:headers AS jsonb), CAST(:payload AS bytea)
      FROM transfer
)
SELECT debit.balance AS debit_balance, credit.balance AS credit_balance, transfer.posted_at
  FROM debit, credit, transfer"""


@cache
def _transfer_statement(*, wallet_credit_first: bool, credit_system: bool) -> TextClause:
    """One round trip: both balances, the journal row, its two postings and its event."""
    if wallet_credit_first:
        ctes = [_CREDIT_EXISTING.format(after=""), _DEBIT.format(after=" FROM credit")]
    else:
        credit = _CREDIT_SYSTEM if credit_system else _CREDIT_EXISTING.format(after=" FROM debit")
        ctes = [_DEBIT.format(after=""), credit]
    sql = "WITH " + ",".join([*ctes, _JOURNAL.removeprefix("\n")])
    types = [
        bindparam("debit_kinds", type_=ARRAY(String)),
        bindparam("headers", type_=JSONB),
        bindparam("payload", type_=LargeBinary),
    ]
    if wallet_credit_first or not credit_system:
        types.append(bindparam("credit_kinds", type_=ARRAY(String)))
    return text(sql).bindparams(*types)


async def post_transfer(
    session: AsyncSession, draft: TransferDraft, topic: str, event_key: str, event: Event
) -> PostedTransfer | None:
    """Post `draft` with its outbox event; None when the debit is refused or an account is
    missing (nothing is written then)."""
    wallet_credit_first = (
        draft.wallet_account_id is not None and draft.wallet_account_id == draft.credit.account_id
    )
    system = draft.credit.system
    parameters: dict[str, Any] = {
        "amount": draft.amount,
        "debit_id": draft.debit.account_id,
        "debit_kinds": list(draft.debit.kinds),
        "credit_id": draft.credit.account_id,
        "transfer_id": draft.id,
        "kind": draft.kind,
        "wallet_id": draft.wallet_account_id,
        "source": draft.source,
        "lot_id": draft.lot_id,
        "original_transfer_id": draft.original_transfer_id,
        "hold_id": draft.hold_id,
        "payment_request_id": draft.payment_request_id,
        "bank_notification_id": draft.bank_notification_id,
        "event_id": event.id,
        "topic": topic,
        "event_key": event_key,
        "headers": [[name, value.decode()] for name, value in event.headers()],
        "payload": event.value(),
    }
    if system is not None and not wallet_credit_first:
        parameters |= {
            "credit_code": system.code,
            "credit_kind": system.kind,
            "credit_owner": system.owner_id,
            "credit_shard": system.shard,
        }
    else:
        parameters["credit_kinds"] = list(draft.credit.kinds)
    statement = _transfer_statement(
        wallet_credit_first=wallet_credit_first,
        credit_system=system is not None and not wallet_credit_first,
    )
    connection = await session.connection()
    row = (await connection.execute(statement, parameters)).first()
    if row is None:
        return None
    return PostedTransfer(int(row.debit_balance), int(row.credit_balance), row.posted_at)


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
