"""Every SQL statement of the payments service.

Lock order, to keep concurrent money movements free of deadlocks: first the business row
(hold, original charge, payment request), then wallets (by id), then system accounts in the
order holds → bank clearing → revenue → suspense. `post_transfer` follows it by locking the
wallet leg first whichever side it is on.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any, TypeAlias

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    TextClause,
    bindparam,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID, insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Database, UniqueViolation
from shared.events import Event
from shared.idempotency import IdempotentRequest, idempotency_keys_table
from shared.inbox import processed_events_table
from shared.outbox import outbox_table

metadata = MetaData()
outbox = outbox_table(metadata)
idempotency_keys = idempotency_keys_table(metadata)
processed_events = processed_events_table(metadata)

Record: TypeAlias = Row[*tuple[Any, ...]]
Outcome: TypeAlias = Mapping[str, Any]  # an idempotent_outcome (see migration payments_0002)

# uuid5(namespace, code) names every system account, so no lookup is needed to find one.
SYSTEM_ACCOUNT_NAMESPACE = uuid.UUID("6f1c2a40-3d1e-4b8e-9a57-5b0c9e7d2f11")

accounts = Table(
    "accounts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("code", String(120), nullable=False, unique=True),
    Column("kind", String(30), nullable=False),
    Column("owner_id", String(120)),
    Column("shard", SmallInteger),
    Column("allow_negative", Boolean, nullable=False, server_default="false"),
    Column("balance", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

transfers = Table(
    "transfers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("debit_account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("credit_account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("wallet_account_id", UUID(as_uuid=True)),
    Column("source", String(10)),
    Column("lot_id", String(64)),
    Column("original_transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id")),
    Column("hold_id", UUID(as_uuid=True)),
    Column("payment_request_id", UUID(as_uuid=True)),
    Column("bank_notification_id", UUID(as_uuid=True)),
    Column("posted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

postings = Table(
    "postings",
    metadata,
    Column("transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id"), primary_key=True),
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), primary_key=True),
    Column("amount", BigInteger, nullable=False),
)

holds = Table(
    "holds",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("wallet_account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("holds_account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("captured_amount", BigInteger, nullable=False, server_default="0"),
    Column("status", String(10), nullable=False, server_default="pending"),
    Column("source", String(10), nullable=False),
    Column("lot_id", String(64)),
    Column("hold_transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id"), nullable=False),
    Column("capture_transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id")),
    Column("release_transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id")),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("settled_at", DateTime(timezone=True)),
)

payment_requests = Table(
    "payment_requests",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("reference", String(25), nullable=False, unique=True),
    Column("purpose", String(20), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("wallet_account_id", UUID(as_uuid=True), ForeignKey("accounts.id")),
    Column("lot_id", String(64)),
    Column("parking_session_id", String(64)),
    Column("qr_payload", String(512), nullable=False),
    Column("status", String(10), nullable=False, server_default="pending"),
    Column("paid_transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id")),
    Column("paid_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

bank_notifications = Table(
    "bank_notifications",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("bank_transaction_id", String(64), nullable=False, unique=True),
    Column("amount", BigInteger, nullable=False),
    Column("bank_bin", String(6), nullable=False),
    Column("account", String(19), nullable=False),
    Column("reference", String(25)),
    Column("description", String(255)),
    Column("occurred_at", DateTime(timezone=True)),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("outcome", String(10), nullable=False),
    Column("cause", String(30)),
    Column("payment_request_id", UUID(as_uuid=True), ForeignKey("payment_requests.id")),
    Column(
        "transfer_id",
        UUID(as_uuid=True),
        ForeignKey("transfers.id", deferrable=True, initially="DEFERRED"),
        nullable=False,
    ),
    Column("raw_body", LargeBinary),  # as the bank signed it (null before payments_0005)
)


# Accounts ---------------------------------------------------------------------------------------

ACCOUNT_COLUMNS = (
    accounts.c.id,
    accounts.c.code,
    accounts.c.kind,
    accounts.c.owner_id,
    accounts.c.allow_negative,
    accounts.c.balance,
)


@lru_cache(maxsize=4096)
def system_account_id(code: str) -> uuid.UUID:
    return uuid.uuid5(SYSTEM_ACCOUNT_NAMESPACE, code)


async def upsert_account(
    session: AsyncSession, *, code: str, kind: str, owner_id: str | None, allow_negative: bool
) -> Record:
    await session.execute(
        insert(accounts)
        .values(
            id=uuid.uuid4(), code=code, kind=kind, owner_id=owner_id, allow_negative=allow_negative
        )
        .on_conflict_do_nothing(index_elements=["code"])
    )
    return (await session.execute(select(*ACCOUNT_COLUMNS).where(accounts.c.code == code))).one()


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> Record | None:
    return (
        await session.execute(select(*ACCOUNT_COLUMNS).where(accounts.c.id == account_id))
    ).first()


async def get_accounts(session: AsyncSession, account_ids: Sequence[uuid.UUID]) -> list[Record]:
    return list(
        (
            await session.execute(select(*ACCOUNT_COLUMNS).where(accounts.c.id.in_(account_ids)))
        ).all()
    )


async def lock_accounts(session: AsyncSession, account_ids: Sequence[uuid.UUID]) -> None:
    """Row locks in id order, so two transactions never wait for each other in a cycle."""
    await session.execute(
        select(accounts.c.id)
        .where(accounts.c.id.in_(sorted(set(account_ids))))
        .order_by(accounts.c.id)
        .with_for_update()
    )


async def balance_of(session: AsyncSession, account_id: uuid.UUID) -> int:
    balance = await session.scalar(select(accounts.c.balance).where(accounts.c.id == account_id))
    return int(balance or 0)


# Posting a transfer -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SystemAccount:
    """A revenue, holds, clearing or suspense account; created on its first credit."""

    code: str
    kind: str
    owner_id: str | None = None
    shard: int | None = None

    @property
    def id(self) -> uuid.UUID:
        return system_account_id(self.code)


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a transfer: an existing account of one of `kinds`, or a system account."""

    account_id: uuid.UUID
    kinds: tuple[str, ...]
    system: SystemAccount | None = None

    @classmethod
    def of(cls, account: SystemAccount) -> Leg:
        return cls(account.id, (account.kind,), account)


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


# One round trip: the *_once functions of migration payments_0002 --------------------------------


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


@dataclass(frozen=True, slots=True)
class PostedDraft:
    """A transfer the database will post, with its event."""

    draft: TransferDraft
    event: OutboxEvent


async def capture_hold_once(
    db: Database,
    key: IdempotentRequest,
    hold_id: uuid.UUID,
    amount: int,
    capture: PostedDraft | None,
    revenue: SystemAccount | None,
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
        capture and capture.draft.id,
        revenue and revenue.id,
        revenue and revenue.code,
        revenue and revenue.kind,
        revenue and revenue.shard,
        capture and capture.event.id,
        capture and capture.event.headers,
        capture and capture.event.payload,
        release and release.draft.id,
        release and release.event.id,
        release and release.event.headers,
        release and release.event.payload,
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
        release and release.draft.id,
        release and release.event.id,
        release and release.event.headers,
        release and release.event.payload,
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


# Holds ------------------------------------------------------------------------------------------


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


# Payment requests and bank notifications --------------------------------------------------------


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


# Ledger invariant -------------------------------------------------------------------------------


async def use_consistent_snapshot(session: AsyncSession) -> None:
    """Every following read sees one instant of the ledger (first statement of the transaction)."""
    await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))


async def ledger_totals(session: AsyncSession) -> Record:
    return (
        await session.execute(
            text(
                "SELECT (SELECT coalesce(sum(amount), 0) FROM postings) AS postings_total,"
                " (SELECT coalesce(sum(balance), 0) FROM accounts) AS balances_total,"
                " (SELECT count(*) FROM accounts) AS accounts_checked,"
                " (SELECT count(*) FROM transfers) AS transfers_checked"
            )
        )
    ).one()


_UNBALANCED_TRANSFERS = """
SELECT t.id AS transfer_id, count(p.account_id) AS legs,
       coalesce(sum(p.amount), 0) AS postings_total
  FROM transfers t LEFT JOIN postings p ON p.transfer_id = t.id
 WHERE t.posted_at >= CAST(:since AS timestamptz) AND t.posted_at < CAST(:until AS timestamptz)
 GROUP BY t.id, t.amount, t.debit_account_id, t.credit_account_id
HAVING count(p.account_id) <> 2
    OR coalesce(sum(p.amount), 0) <> 0
    OR count(*) FILTER (
           WHERE (p.account_id = t.debit_account_id AND p.amount = -t.amount)
              OR (p.account_id = t.credit_account_id AND p.amount = t.amount)) <> 2
 ORDER BY t.id
 LIMIT :limit
"""


async def unbalanced_transfers(
    session: AsyncSession, since: datetime, until: datetime, limit: int
) -> list[Record]:
    rows = await session.execute(
        text(_UNBALANCED_TRANSFERS), {"since": since, "until": until, "limit": limit}
    )
    return list(rows.all())


async def accounts_not_matching_postings(session: AsyncSession, limit: int) -> list[Record]:
    rows = await session.execute(
        text(
            "SELECT a.id AS account_id, a.code, a.balance,"
            "       coalesce(s.total, 0) AS postings_total"
            "  FROM accounts a"
            "  LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings"
            "              GROUP BY account_id) s ON s.account_id = a.id"
            " WHERE a.balance <> coalesce(s.total, 0)"
            " ORDER BY a.code LIMIT :limit"
        ),
        {"limit": limit},
    )
    return list(rows.all())


# Reconciliation ---------------------------------------------------------------------------------


async def notifications_between(
    session: AsyncSession, since: datetime, until: datetime
) -> list[Record]:
    rows = await session.execute(
        select(
            bank_notifications.c.bank_transaction_id,
            bank_notifications.c.amount,
            bank_notifications.c.reference,
            bank_notifications.c.outcome,
            bank_notifications.c.cause,
            payment_requests.c.amount.label("expected_amount"),
            transfers.c.amount.label("transfer_amount"),
        )
        .select_from(
            bank_notifications.outerjoin(
                transfers, transfers.c.id == bank_notifications.c.transfer_id
            ).outerjoin(
                payment_requests, payment_requests.c.id == bank_notifications.c.payment_request_id
            )
        )
        .where(bank_notifications.c.received_at >= since, bank_notifications.c.received_at < until)
        .order_by(bank_notifications.c.received_at)
    )
    return list(rows.all())


async def clearing_movement_between(session: AsyncSession, since: datetime, until: datetime) -> int:
    """Money that arrived at the bank according to the ledger (clearing is debited for it)."""
    total = await session.scalar(
        select(func.coalesce(-func.sum(postings.c.amount), 0))
        .select_from(
            postings.join(transfers, transfers.c.id == postings.c.transfer_id).join(
                accounts, accounts.c.id == postings.c.account_id
            )
        )
        .where(
            accounts.c.kind == "bank_clearing",
            transfers.c.posted_at >= since,
            transfers.c.posted_at < until,
        )
    )
    return int(total or 0)


async def paid_requests_without_notification(
    session: AsyncSession, since: datetime, until: datetime
) -> list[Record]:
    credited = (
        select(bank_notifications.c.id)
        .where(
            bank_notifications.c.payment_request_id == payment_requests.c.id,
            bank_notifications.c.outcome == "credited",
            bank_notifications.c.transfer_id == payment_requests.c.paid_transfer_id,
        )
        .exists()
    )
    rows = await session.execute(
        select(payment_requests.c.id, payment_requests.c.reference, payment_requests.c.amount)
        .where(
            payment_requests.c.status == "paid",
            payment_requests.c.paid_at >= since,
            payment_requests.c.paid_at < until,
            ~credited,
        )
        .order_by(payment_requests.c.paid_at)
    )
    return list(rows.all())


async def unpaid_requests_between(
    session: AsyncSession, since: datetime, until: datetime
) -> tuple[int, int]:
    count, amount = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(payment_requests.c.amount), 0)).where(
                payment_requests.c.status == "pending",
                payment_requests.c.created_at >= since,
                payment_requests.c.created_at < until,
            )
        )
    ).one()
    return int(count), int(amount)


async def revenue_journal_between(
    session: AsyncSession, since: datetime, until: datetime
) -> list[Record]:
    """Charges, captures, VietQR payments and refunds per source and lot, from the journal."""
    rows = await session.execute(
        select(
            transfers.c.source,
            transfers.c.lot_id,
            transfers.c.kind,
            func.count().label("transfer_count"),
            func.sum(transfers.c.amount).label("amount"),
        )
        .where(
            transfers.c.kind.in_(("charge", "capture", "payment", "refund")),
            transfers.c.posted_at >= since,
            transfers.c.posted_at < until,
        )
        .group_by(transfers.c.source, transfers.c.lot_id, transfers.c.kind)
    )
    return list(rows.all())


async def revenue_postings_between(
    session: AsyncSession, since: datetime, until: datetime
) -> list[Record]:
    """Net postings on revenue sub-accounts, summed over the shards of each logical account."""
    rows = await session.execute(
        select(
            accounts.c.kind,
            accounts.c.owner_id,
            func.sum(postings.c.amount).label("amount"),
        )
        .select_from(
            postings.join(accounts, accounts.c.id == postings.c.account_id).join(
                transfers, transfers.c.id == postings.c.transfer_id
            )
        )
        .where(
            accounts.c.kind.in_(("transit_revenue", "parking_revenue")),
            transfers.c.posted_at >= since,
            transfers.c.posted_at < until,
        )
        .group_by(accounts.c.kind, accounts.c.owner_id)
    )
    return list(rows.all())
