"""The unit of work every session rule writes through, and the two boundaries that commit it.

A rule (entry and exit at a lane, settlement, disputes, overrides, refunds, background tasks)
reads a `SessionState`, asks its `UnitOfWork` for the next one (`update_session`), records the
payments it saw and the events it publishes, and never writes: the boundary does, once the rule
is done. `Work` writes them in a request's or a consumer's transaction (`flush`, before the
commit); `LaneWork` writes them with the lane's answer in one statement (`answer`, one commit).
What cannot be rolled back with them (a Redis place taken, a wallet hold placed) is registered
with `Undo` and reverted by the boundary if the unit fails.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from services.parking import lane_sql, repository, session_queries
from services.parking.context import Parking
from services.parking.occupancy import Count, Replayed
from services.parking.occupancy import Occupancy as OccupancyCounters
from services.parking.payments import Posted
from services.parking.session_state import SessionState
from services.parking.tariffs import VehicleType
from shared.devicesigning import replayed
from shared.events import Event
from shared.idempotency import IdempotentRequest, guarded_answer
from shared.ids import utcnow
from shared.outbox import add_event

logger = logging.getLogger("citypass.parking")


class Undo:
    """Compensations for what a failed transaction cannot roll back (Redis, payments)."""

    def __init__(self) -> None:
        self._steps: list[Callable[[], Awaitable[object]]] = []

    def add(self, step: Callable[[], Awaitable[object]]) -> None:
        self._steps.append(step)

    def forget(self) -> None:
        self._steps.clear()

    async def run(self) -> None:
        for step in reversed(self._steps):
            try:
                await step()
            except Exception:
                logger.exception("a compensation failed; the counters or a hold need a look")
        self._steps.clear()


@dataclass
class PendingNonce:
    """A lane request's device nonce (shared.devicesigning), claimed once before anything is
    paid or committed: in the Redis script the decision runs anyway (admit, release), else on
    its own."""

    occupancy: OccupancyCounters
    device_id: str
    key: str
    claimed: bool = False

    def unclaimed(self) -> str | None:
        return None if self.claimed else self.key

    async def claim(self) -> None:
        if self.claimed:
            return
        if not await self.occupancy.claim_nonce(self.key):
            raise replayed(self.device_id)
        self.claimed = True


@dataclass(frozen=True, slots=True)
class SessionPayment:
    """Money seen for a session (a capture, a charge, a VietQR, a refund), recorded once."""

    session_id: uuid.UUID
    lot_id: str
    posted: Posted
    kind: str
    reference: str | None

    @property
    def amount(self) -> int:  # signed, as session_payments keeps it: refunds are negative
        return -self.posted.amount if self.kind == "refund" else self.posted.amount


@dataclass(kw_only=True)
class UnitOfWork:
    """One session's changes: its next state, the payments seen and the events, kept until the
    boundary writes them (`Work.flush`, `LaneWork.answer`); and the lot's places it moved."""

    context: Parking
    undo: Undo = field(default_factory=Undo)
    now: datetime = field(default_factory=utcnow)
    nonce: PendingNonce | None = None  # a lane request's: claimed with the first Redis script
    state: SessionState | None = None  # the session as it will be written
    changed: dict[str, Any] = field(default_factory=dict)  # its columns that changed
    payments: list[SessionPayment] = field(default_factory=list)
    events: list[tuple[str, str, Event]] = field(default_factory=list)
    released: Count | None = None  # a place given back ahead of the settlement
    ahead: tuple[str, VehicleType] | None = None  # where it was given back
    kept: int = 0  # places released ahead and taken back

    def update_session(self, state: SessionState, **values: Any) -> SessionState:
        """The next state of the session; written by the boundary with the unit."""
        assert self.state is None or state is self.state, "a change of the latest state"
        for name, value in values.items():
            if isinstance(value, datetime):  # as PostgreSQL gives it back
                values[name] = value.astimezone(UTC)
        self.changed.update(values)
        self.state = state._replace(**values)
        return self.state

    def record_payment(
        self, state: SessionState, posted: Posted, kind: str, reference: str | None
    ) -> None:
        assert self.state is None or state.session_id == self.state.session_id, "one session"
        self.payments.append(
            SessionPayment(state.session_id, state.lot_id, posted, kind, reference)
        )

    def publish(self, topic: str, key: str, event: Event) -> None:
        self.events.append((topic, key, event))

    def forget(self) -> None:
        """Start afresh: the changes were written (the next unit is another session's)."""
        self.state, self.changed, self.payments, self.events = None, {}, [], []

    def _nonce_key(self) -> str | None:
        return None if self.nonce is None else self.nonce.unclaimed()

    def _nonce_claimed(self) -> None:
        if self.nonce is not None:
            self.nonce.claimed = True

    def _replayed(self) -> Exception:
        assert self.nonce is not None
        return replayed(self.nonce.device_id)

    async def admit(self, lot_id: str, vehicle_type: VehicleType) -> Count:
        """Take a place (and claim the nonce in the same script)."""
        try:
            count = await self.context.occupancy.admit(
                lot_id, vehicle_type, nonce_key=self._nonce_key()
            )
        except Replayed:
            raise self._replayed() from None
        self._nonce_claimed()
        return count

    async def release_place(self, lot_id: str, vehicle_type: VehicleType) -> Count:
        if self.released is not None:
            count, self.released = self.released, None
            return count
        return await self._release(lot_id, vehicle_type)

    async def _release(self, lot_id: str, vehicle_type: VehicleType) -> Count:
        occupancy = self.context.occupancy
        try:
            count = await occupancy.release(lot_id, vehicle_type, nonce_key=self._nonce_key())
        except Replayed:
            raise self._replayed() from None
        self._nonce_claimed()
        kept = self.kept

        async def restore() -> None:
            if self.kept == kept:  # not taken back already by keep_place
                await occupancy.restore(lot_id, vehicle_type)

        self.undo.add(restore)
        return count

    async def release_ahead(self, lot_id: str, vehicle_type: VehicleType) -> None:
        """Give the place back before settling an exit that will most likely close, so that
        the nonce rides along; `keep_place` takes it again if the vehicle stays after all."""
        self.released = await self._release(lot_id, vehicle_type)
        self.ahead = (lot_id, vehicle_type)

    async def keep_place(self) -> None:
        if self.released is not None and self.ahead is not None:
            self.released, self.kept = None, self.kept + 1
            await self.context.occupancy.restore(*self.ahead)


@dataclass(kw_only=True)
class Work(UnitOfWork):
    """A unit of work in a request's or a consumer's transaction (`session`)."""

    session: AsyncSession

    async def flush(self) -> None:
        """Write the unit's changes in the transaction, and start the next unit afresh."""
        if self.state is not None and self.changed:
            await session_queries.update_session(
                self.session, self.state.session_id, **self.changed
            )
        for payment in self.payments:
            await session_queries.record_payment(
                self.session,
                transfer_id=payment.posted.transfer_id,
                session_id=payment.session_id,
                lot_id=payment.lot_id,
                kind=payment.kind,
                amount=payment.amount,
                reference=payment.reference,
                posted_at=payment.posted.posted_at,
            )
        for topic, key, event in self.events:
            await add_event(self.session, repository.outbox, topic, key, event)
        self.forget()


@asynccontextmanager
async def transaction(context: Parking) -> AsyncIterator[Work]:
    """A transaction and its unit of work: the changes are written before the commit, and what
    cannot be rolled back is compensated when it fails."""
    undo = Undo()
    try:
        async with context.db.transaction() as session:
            work = Work(context=context, session=session, undo=undo)
            yield work
            await work.flush()
    except BaseException:
        await undo.run()
        raise


@dataclass(kw_only=True)
class LaneWork(UnitOfWork):
    """One lane decision (an entry or an exit): a plain asyncpg connection in autocommit and its
    Idempotency-Key. `answer` writes the unit's changes with the answer in one statement (one
    commit); its reads are one statement too (the key's claim with the lookups, under
    session-level locks let go after the answer)."""

    connection: Any  # asyncpg.Connection, in autocommit
    request: IdempotentRequest
    nonce: PendingNonce
    debts: dict[str, int] = field(default_factory=dict)  # outstanding debt by plate key

    async def outstanding_debt(self, plate_key: str) -> int:
        if plate_key not in self.debts:
            self.debts[plate_key] = await lane_sql.lane_outstanding_debt(self.connection, plate_key)
        return self.debts[plate_key]

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self.connection.fetchrow(query, *args)

    def claim(self) -> tuple[int, str, str, str]:
        """The first statement's first arguments: the key's lock, scope, key and fingerprint."""
        return self.request.arguments()

    def claimed(self, row: Any) -> Response | None:
        """The stored answer when the first statement found one (a replay), None when this
        request is the first; 409 while the first is in progress, 422 for another request."""
        stored = guarded_answer(row)
        return None if stored is None else stored.response()

    async def answer(
        self, decision: BaseModel, *, inserted: dict[str, Any] | None = None
    ) -> Response | None:
        """Write the decision: the new session (`inserted`) or the changed one, the payment,
        the events and the answer, all in one statement. None when the new session's plate
        entered through another lane meanwhile: then nothing was written."""
        await self.nonce.claim()  # a replayed request must not commit anything
        body = decision.model_dump_json().encode()
        request = self.request
        write = (
            *lane_sql.outbox_arrays(self.events),
            request.scope,
            request.key,
            request.fingerprint,
            body,
        )
        if inserted is not None:
            values = [inserted[name] for name in lane_sql.SESSION_COLUMNS]
            outcome = await self.connection.fetchrow(lane_sql.INSERT_SESSION, *write, *values)
        elif self.state is not None:
            assert len(self.payments) <= 1, "a lane decision sees one payment at most"
            payment: tuple[Any, ...] = (None, None, None, None, None)
            for seen in self.payments:
                posted = seen.posted
                payment = (posted.transfer_id, seen.kind, seen.amount, seen.reference)
                payment += (posted.posted_at,)
            outcome = await self.connection.fetchrow(
                lane_sql.UPDATE_SESSION,
                *write,
                self.state.session_id,
                *lane_sql.updatable_values(self.state),
                *payment,
            )
        else:
            outcome = await self.connection.fetchrow(lane_sql.STORE_ANSWER, *write)
        stored = guarded_answer(outcome)
        if stored is None:
            return None
        self.undo.forget()  # committed: nothing to compensate any more
        return stored.response()
