"""SQLAlchemy queries on sessions and what hangs on them: payments seen, overrides, disputes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Result, Select, Table, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.parking.repository import (
    Record,
    disputes,
    ledger_transfers,
    overrides,
    session_payments,
    sessions,
)
from services.parking.session_state import Dispute, Override, PaymentSeen, SessionState

RECEIPT_LOOKUP_SCAN = 2000  # a plate's sessions a receipt code is checked against


# Sessions ---------------------------------------------------------------------------------------


def _state(row: Record | None) -> SessionState | None:
    return None if row is None else SessionState.of(row._mapping)


def _states(result: Result[Any]) -> list[SessionState]:
    return [SessionState.of(row) for row in result.mappings()]


async def get_session(
    session: AsyncSession, session_id: uuid.UUID, *, lock: bool = False
) -> SessionState | None:
    query = select(sessions).where(sessions.c.session_id == session_id)
    if lock:
        # The lanes' lock on the session (they hold no row lock: see lane_sql.py).
        await session.execute(
            text("SELECT pg_advisory_xact_lock(session_lock(:id))"), {"id": session_id}
        )
        query = query.with_for_update()
    return _state((await session.execute(query)).first())


async def open_session_for_plate(
    session: AsyncSession, lot_id: str, plate_key: str
) -> SessionState | None:
    query = select(sessions).where(
        sessions.c.lot_id == lot_id,
        sessions.c.plate_key == plate_key,
        sessions.c.status != "closed",
    )
    return _state((await session.execute(query)).first())


async def update_session(session: AsyncSession, session_id: uuid.UUID, **values: Any) -> None:
    await session.execute(
        update(sessions)
        .where(sessions.c.session_id == session_id)
        .values(**values, updated_at=func.now())
    )


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
) -> list[SessionState]:
    query = select(sessions).order_by(sessions.c.entry_at.desc()).limit(limit)
    if lot_id is not None:
        query = query.where(sessions.c.lot_id == lot_id)
    if status is not None:
        query = query.where(sessions.c.status == status)
    if needs_review is not None:
        reviewed = func.cardinality(sessions.c.review_reasons) > 0
        query = query.where(reviewed if needs_review else ~reviewed)
    return _states(await session.execute(query))


async def open_counts(session: AsyncSession) -> Sequence[Record]:
    """Vehicles inside, per lot and type: what the Redis counters are rebuilt from."""
    return (
        await session.execute(
            select(sessions.c.lot_id, sessions.c.vehicle_type, func.count().label("inside"))
            .where(sessions.c.status != "closed")
            .group_by(sessions.c.lot_id, sessions.c.vehicle_type)
        )
    ).all()


async def debts_due(session: AsyncSession, now: datetime, limit: int) -> list[SessionState]:
    """Debts to retry now, locked so that two replicas never collect the same one."""
    return _states(
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
    )


async def holds_to_release(session: AsyncSession, limit: int) -> list[SessionState]:
    """Closed sessions whose hold could not be voided when payments was unreachable."""
    return _states(
        await session.execute(
            select(sessions)
            .where(sessions.c.hold_status == "release_pending")
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


async def sessions_exited_between(
    session: AsyncSession, lot_id: str, since: datetime, until: datetime
) -> list[SessionState]:
    query = _of_lot_between(sessions, sessions.c.exit_at, lot_id, since, until)
    return _states(await session.execute(query.order_by(sessions.c.exit_at)))


def _of_lot_between(
    table: Table, moment: ColumnElement[datetime], lot_id: str, since: datetime, until: datetime
) -> Select[Any]:
    """A lot's rows of `table` whose `moment` lies in [since, until)."""
    return select(table).where(table.c.lot_id == lot_id, moment >= since, moment < until)


# Money seen for sessions ------------------------------------------------------------------------


async def record_payment(session: AsyncSession, **values: Any) -> None:
    """Once per transfer: a transfer seen again is not recorded again."""
    await session.execute(insert(session_payments).values(**values).on_conflict_do_nothing())


async def payment_recorded(session: AsyncSession, transfer_id: uuid.UUID) -> bool:
    found = await session.scalar(
        select(session_payments.c.transfer_id).where(session_payments.c.transfer_id == transfer_id)
    )
    return found is not None


async def _rows_where_in(
    session: AsyncSession, query: Select[Any], column: Any, values: Sequence[uuid.UUID]
) -> Sequence[Record]:
    """The rows of `query` whose `column` is one of `values` (none asked, none read)."""
    return await _rows(session, query.where(column.in_(values))) if values else []


async def _rows(session: AsyncSession, query: Select[Any]) -> Sequence[Record]:
    rows: Sequence[Record] = (await session.execute(query)).all()
    return rows


async def payments_of_sessions(
    session: AsyncSession, session_ids: Sequence[uuid.UUID]
) -> list[PaymentSeen]:
    rows = await _rows_where_in(
        session, select(session_payments), session_payments.c.session_id, session_ids
    )
    return [PaymentSeen(**row._mapping) for row in rows]


async def payments_by_transfer(
    session: AsyncSession, transfer_ids: Sequence[uuid.UUID]
) -> Sequence[Record]:
    return await _rows_where_in(
        session, select(session_payments), session_payments.c.transfer_id, transfer_ids
    )


async def session_payments_between(
    session: AsyncSession, lot_id: str, since: datetime, until: datetime
) -> list[PaymentSeen]:
    moment = session_payments.c.posted_at
    query = _of_lot_between(session_payments, moment, lot_id, since, until)
    return [PaymentSeen(**row._mapping) for row in await _rows(session, query)]


async def ledger_transfers_between(
    session: AsyncSession, lot_id: str, since: datetime, until: datetime
) -> Sequence[Record]:
    moment = ledger_transfers.c.posted_at
    query = _of_lot_between(ledger_transfers, moment, lot_id, since, until)
    return await _rows(session, query.order_by(moment))


async def sessions_of_requests(
    session: AsyncSession, payment_request_ids: Sequence[uuid.UUID]
) -> Sequence[Record]:
    return await _rows_where_in(
        session,
        select(sessions.c.session_id, sessions.c.payment_request_id),
        sessions.c.payment_request_id,
        payment_request_ids,
    )


# Overrides and disputes -------------------------------------------------------------------------


async def insert_override(session: AsyncSession, **values: Any) -> Override:
    row = (await session.execute(insert(overrides).values(**values).returning(overrides))).one()
    return Override(**row._mapping)


async def get_override(session: AsyncSession, override_id: uuid.UUID) -> Override | None:
    query = select(overrides).where(overrides.c.override_id == override_id)
    row = (await session.execute(query)).first()
    return None if row is None else Override(**row._mapping)


async def overrides_of_sessions(
    session: AsyncSession, session_ids: Sequence[uuid.UUID]
) -> list[Override]:
    rows = await _rows_where_in(session, select(overrides), overrides.c.session_id, session_ids)
    return [Override(**row._mapping) for row in rows]


async def overrides_between(
    session: AsyncSession, lot_id: str, since: datetime, until: datetime
) -> list[Override]:
    moment = overrides.c.created_at
    query = _of_lot_between(overrides, moment, lot_id, since, until)
    return [Override(**row._mapping) for row in await _rows(session, query.order_by(moment))]


def _dispute(row: Record | None) -> Dispute | None:
    return None if row is None else Dispute(**row._mapping)


async def insert_dispute(session: AsyncSession, **values: Any) -> Dispute | None:
    """The new dispute, or None when the session already has an open one."""
    return _dispute(
        (
            await session.execute(
                insert(disputes)
                .values(**values)
                .on_conflict_do_nothing(
                    index_elements=[disputes.c.session_id], index_where=text("status = 'open'")
                )
                .returning(disputes)
            )
        ).first()
    )


async def get_dispute(
    session: AsyncSession, dispute_id: uuid.UUID, *, lock: bool = False
) -> Dispute | None:
    query = select(disputes).where(disputes.c.dispute_id == dispute_id)
    if lock:
        query = query.with_for_update()
    return _dispute((await session.execute(query)).first())


async def disputes_of_session(session: AsyncSession, session_id: uuid.UUID) -> list[Dispute]:
    query = select(disputes).where(disputes.c.session_id == session_id)
    rows = await _rows(session, query.order_by(disputes.c.created_at))
    return [Dispute(**row._mapping) for row in rows]


async def list_disputes(session: AsyncSession, status: str | None, limit: int) -> list[Dispute]:
    query = select(disputes).order_by(disputes.c.created_at).limit(limit)
    if status is not None:
        query = query.where(disputes.c.status == status)
    return [Dispute(**row._mapping) for row in await _rows(session, query)]


async def update_dispute(session: AsyncSession, dispute_id: uuid.UUID, **values: Any) -> Dispute:
    row = (
        await session.execute(
            update(disputes)
            .where(disputes.c.dispute_id == dispute_id)
            .values(**values)
            .returning(disputes)
        )
    ).one()
    return Dispute(**row._mapping)
