"""The units of work a session rule writes through: one transaction, or one lane decision.

`Work` is a request's or a consumer's transaction; `LaneWork` a lane decision written with its
answer in one statement. Never a commit in the rules: the caller's transaction holds the
session row, its outbox events and the idempotency record together. What cannot be rolled back
with it (a Redis place taken, a wallet hold placed) is registered with `Undo` and reverted by
the caller if the transaction fails.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, TypeAlias

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from services.parking import lane_sql, repository, session_queries
from services.parking.context import Parking
from services.parking.occupancy import Count, Replayed
from services.parking.occupancy import Occupancy as OccupancyCounters
from services.parking.payments import Posted
from services.parking.repository import Record
from services.parking.tariffs import VehicleType
from shared.devicesigning import replayed
from shared.events import Event
from shared.idempotency import IdempotencyKeyInFlight, IdempotencyKeyReused, IdempotentRequest
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


# A session as read: a SQLAlchemy row (Work), or the state a lane decision builds (LaneWork).
SessionRow: TypeAlias = Record | SimpleNamespace


@dataclass
class Work:
    """One transaction (a request's or a consumer's) and what it needs; writes at once."""

    session: AsyncSession
    context: Parking
    undo: Undo = field(default_factory=Undo)
    now: datetime = field(default_factory=utcnow)

    async def update_session(self, row: SessionRow, **values: Any) -> SessionRow:
        return await session_queries.update_session(self.session, row.session_id, **values)

    async def publish(self, topic: str, key: str, event: Event) -> None:
        await add_event(self.session, repository.outbox, topic, key, event)

    async def record_payment(
        self, row: SessionRow, posted: Posted, kind: str, reference: str | None
    ) -> bool:
        return await session_queries.record_payment(
            self.session,
            transfer_id=posted.transfer_id,
            session_id=row.session_id,
            lot_id=row.lot_id,
            kind=kind,
            amount=posted.amount if kind != "refund" else -posted.amount,
            reference=reference,
            posted_at=posted.posted_at,
        )

    async def outstanding_debt(self, plate_key: str) -> int:
        return await session_queries.outstanding_debt(self.session, plate_key)

    async def release_place(self, lot_id: str, vehicle_type: VehicleType) -> Count:
        occupancy = self.context.occupancy
        count = await occupancy.release(lot_id, vehicle_type)
        self.undo.add(lambda: occupancy.restore(lot_id, vehicle_type))
        return count

    async def keep_place(self) -> None:
        """Nothing was released ahead (see LaneWork.release_ahead)."""


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


@dataclass
class LaneWork:
    """One lane decision (an entry or an exit): a plain asyncpg connection in autocommit, its
    Idempotency-Key, its device nonce and what it will write. Changes to the session, the
    payment seen and the outbox events are kept until `answer`, which writes them with the
    answer in one statement (one commit); its reads are one statement too (the key's claim
    with the lookups, under session-level locks let go after the answer)."""

    connection: Any  # asyncpg.Connection, in autocommit
    context: Parking
    request: IdempotentRequest
    nonce: PendingNonce
    undo: Undo = field(default_factory=Undo)
    now: datetime = field(default_factory=utcnow)
    events: list[tuple[str, str, Event]] = field(default_factory=list)
    changed: SimpleNamespace | None = None  # the session as it will be written
    payment: tuple[Posted, str, str | None] | None = None
    debts: dict[str, int] = field(default_factory=dict)  # outstanding debt by plate key
    released: Count | None = None  # a place given back ahead of the settlement
    ahead: tuple[str, VehicleType] | None = None  # where it was given back
    kept: int = 0  # places released ahead and taken back

    async def admit(self, lot_id: str, vehicle_type: VehicleType) -> Count:
        """Take a place (and claim the nonce in the same script)."""
        try:
            count = await self.context.occupancy.admit(
                lot_id, vehicle_type, nonce_key=self.nonce.unclaimed()
            )
        except Replayed:
            raise replayed(self.nonce.device_id) from None
        self.nonce.claimed = True
        return count

    async def release_place(self, lot_id: str, vehicle_type: VehicleType) -> Count:
        if self.released is not None:
            count, self.released = self.released, None
            return count
        return await self._release(lot_id, vehicle_type)

    async def _release(self, lot_id: str, vehicle_type: VehicleType) -> Count:
        occupancy = self.context.occupancy
        try:
            count = await occupancy.release(lot_id, vehicle_type, nonce_key=self.nonce.unclaimed())
        except Replayed:
            raise replayed(self.nonce.device_id) from None
        self.nonce.claimed = True
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

    async def update_session(self, row: SessionRow, **values: Any) -> SessionRow:
        for name, value in values.items():
            if isinstance(value, datetime):  # as PostgreSQL gives it back
                values[name] = value.astimezone(UTC)
        self.changed = SimpleNamespace(**{**vars(row), **values})
        return self.changed

    async def publish(self, topic: str, key: str, event: Event) -> None:
        self.events.append((topic, key, event))

    async def record_payment(
        self,
        row: SessionRow,  # noqa: ARG002  # the session the change is written to
        posted: Posted,
        kind: str,
        reference: str | None,
    ) -> bool:
        assert kind != "refund", "lanes never refund"
        self.payment = (posted, kind, reference)
        return True

    async def outstanding_debt(self, plate_key: str) -> int:
        if plate_key not in self.debts:
            self.debts[plate_key] = await lane_sql.lane_outstanding_debt(self.connection, plate_key)
        return self.debts[plate_key]

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self.connection.fetchrow(query, *args)

    def claim(self) -> tuple[int, str, str]:
        """`lane_key`'s arguments: the key's advisory lock, its scope and the key."""
        request = self.request
        return request.lock_id, request.scope, request.key

    def claimed(self, row: Any) -> Response | None:
        """The replay of the key's first answer, or None when this request is the first;
        409 while the first is in progress, 422 when the key was used for another request."""
        if row["stored_body"] is None:
            if not row["claimed"]:
                raise IdempotencyKeyInFlight(
                    "A request with this Idempotency-Key is still being processed; retry later."
                )
            return None
        if row["stored_fingerprint"] != self.request.fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used for a different request."
            )
        return Response(
            row["stored_body"],
            row["stored_status"],
            media_type=row["stored_media_type"],
            headers={"Idempotent-Replayed": "true"},
        )

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
            written = await self.connection.fetchval(lane_sql.INSERT_SESSION, *write, *values)
        elif self.changed is not None:
            payment: tuple[Any, ...] = (None, None, None, None, None)
            if self.payment is not None:
                posted, kind, reference = self.payment
                payment = (posted.transfer_id, kind, posted.amount, reference, posted.posted_at)
            written = await self.connection.fetchval(
                lane_sql.UPDATE_SESSION,
                *write,
                self.changed.session_id,
                *lane_sql.updatable_values(vars(self.changed)),
                *payment,
            )
        else:
            written = await self.connection.fetchval(lane_sql.STORE_ANSWER, *write)
        if not written:
            return None
        self.undo.forget()  # committed: nothing to compensate any more
        return Response(body, 200, media_type="application/json")


Steps: TypeAlias = Work | LaneWork  # what the settlement rules write through
