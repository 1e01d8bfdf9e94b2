"""Parking sessions: the entry and exit decisions, settlement with payments, the events from
payments, debts, receipts, operator overrides and drivers' disputes.

No SQL here (repository.py), no routes (endpoints.py), never a commit: the caller's transaction
holds the session row, its outbox events and the idempotency record together. What cannot be
rolled back with it (a Redis place taken, a wallet hold placed) is registered with `Undo` and
reverted by the caller if the transaction fails.

Money rules:
- A wallet is touched only for a session whose vehicle was identified with confidence at entry
  (account QR, RFID tag, or a plate read at or above the review threshold).
- Every call that moves money carries an Idempotency-Key derived from the session (and the
  amount), so retries and replicas never move it twice.
- Nobody leaves through cash: the fee comes from the wallet, from a VietQR paid at the
  barrier, or, when the lane was offline or payments/the bank too slow, it becomes a debt on
  the plate, collected later from the wallet or by VietQR.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, TypeAlias

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from services.parking import events, plates, repository, service, tokens
from services.parking.context import Device, Lane, Lot, Parking
from services.parking.occupancy import Count, Replayed
from services.parking.occupancy import Occupancy as OccupancyCounters
from services.parking.payments import PaymentsRefused, PaymentsUnavailable, Posted
from services.parking.repository import Record
from services.parking.schemas import (
    DebtStatus,
    Direction,
    DisputeCreate,
    DisputeRead,
    DisputeReason,
    DisputeResolve,
    DisputeStatus,
    EntryCreate,
    EntryDecision,
    EntryMethod,
    EntryOutcome,
    ExitCreate,
    ExitDecision,
    ExitOutcome,
    LaneEvent,
    Occupancy,
    OverrideAction,
    OverrideCreate,
    OverrideRead,
    PaymentQR,
    ReceiptFound,
    ReceiptRead,
    SessionRead,
    SessionStatus,
    Settlement,
)
from services.parking.tariffs import (
    HANOI_TZ,
    TariffError,
    VehicleType,
    price_session,
    tariff_in_force,
)
from services.parking.tokens import ReceiptScope
from shared.devicesigning import replayed
from shared.errors import Conflict, Forbidden, NotFound, ServiceUnavailable, Unprocessable
from shared.events import Event
from shared.idempotency import IdempotencyKeyInFlight, IdempotencyKeyReused, IdempotentRequest
from shared.outbox import add_event

logger = logging.getLogger("citypass.parking")

REPEAT_ENTRY_AFTER = timedelta(minutes=5)  # a second entry read later than this is suspicious
DEBT_RETRY_CAP = timedelta(hours=6)
SIGNED_KINDS = {"charge": 1, "capture": 1, "payment": 1, "refund": -1}
WALLET_KINDS = ("capture", "charge")
SETTLED_REASONS = {
    Settlement.free: "free",
    Settlement.wallet: "paid_from_wallet",
    Settlement.vietqr: "paid_by_vietqr",
    Settlement.debt: "debt_recorded",
    Settlement.waived: "waived",
}


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
    now: datetime = field(default_factory=service.utcnow)

    async def update_session(self, row: SessionRow, **values: Any) -> SessionRow:
        return await repository.update_session(self.session, row.session_id, **values)

    async def publish(self, topic: str, key: str, event: Event) -> None:
        await add_event(self.session, repository.outbox, topic, key, event)

    async def record_payment(
        self, row: SessionRow, posted: Posted, kind: str, reference: str | None
    ) -> bool:
        return await repository.record_payment(
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
        return await repository.outstanding_debt(self.session, plate_key)

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
    now: datetime = field(default_factory=service.utcnow)
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
            self.debts[plate_key] = await repository.lane_outstanding_debt(
                self.connection, plate_key
            )
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
            *repository.outbox_arrays(self.events),
            request.scope,
            request.key,
            request.fingerprint,
            body,
        )
        if inserted is not None:
            values = [inserted[name] for name in repository.SESSION_COLUMNS]
            written = await self.connection.fetchval(repository.INSERT_SESSION, *write, *values)
        elif self.changed is not None:
            payment: tuple[Any, ...] = (None, None, None, None, None)
            if self.payment is not None:
                posted, kind, reference = self.payment
                payment = (posted.transfer_id, kind, posted.amount, reference, posted.posted_at)
            written = await self.connection.fetchval(
                repository.UPDATE_SESSION,
                *write,
                self.changed.session_id,
                *repository.updatable_values(vars(self.changed)),
                *payment,
            )
        else:
            written = await self.connection.fetchval(repository.STORE_ANSWER, *write)
        if not written:
            return None
        self.undo.forget()  # committed: nothing to compensate any more
        return Response(body, 200, media_type="application/json")


Steps: TypeAlias = Work | LaneWork  # what the settlement rules write through


@dataclass(frozen=True, slots=True)
class Registered:
    """A registered vehicle whose wallet may be used."""

    vehicle_id: uuid.UUID
    wallet_account_id: uuid.UUID
    vehicle_type: VehicleType


@dataclass(frozen=True, slots=True)
class Identified:
    plate: plates.Plate
    vehicle: Registered | None
    method: EntryMethod
    confidence: float | None
    image_ref: str | None
    review: tuple[str, ...]
    open_session_id: uuid.UUID | None  # entries only: the plate is inside already


# Shared checks ----------------------------------------------------------------------------------


def _check_time(context: Parking, occurred_at: datetime, now: datetime) -> None:
    settings = context.settings
    if occurred_at > now + settings.max_clock_skew:
        raise Unprocessable(
            f"occurred_at {occurred_at.isoformat()} is in the future; check the device clock.",
            code="timestamp_in_future",
        )
    if occurred_at < now - settings.max_event_age:
        raise Unprocessable(
            f"occurred_at is older than {settings.max_event_age}; upload events sooner.",
            code="timestamp_too_old",
        )


def _lane(
    context: Parking, device: Device | None, body: LaneEvent, direction: Direction
) -> tuple[Lot, Lane]:
    lot = context.reference.lot(body.lot_id)
    if lot is None:
        raise Unprocessable(f"No lot {body.lot_id}.", code="unknown_lot")
    lane = context.reference.lane(body.lane_id)
    if lane is None or lane.lot_id != lot.lot_id:
        raise Unprocessable(f"Lot {lot.lot_id} has no lane {body.lane_id}.", code="unknown_lane")
    if lane.direction != direction.value:
        raise Unprocessable(
            f"Lane {lane.lane_id} is an {lane.direction} lane.", code="wrong_lane_direction"
        )
    if not lane.enabled:
        raise Unprocessable(f"Lane {lane.lane_id} is disabled.", code="lane_disabled")
    if device is not None:
        if device.lot_id != lot.lot_id:
            raise Forbidden(
                f"Device {device.device_id} serves lot {device.lot_id}.", code="device_not_in_lot"
            )
        if device.lane_id is not None and device.lane_id != lane.lane_id:
            raise Forbidden(
                f"Device {device.device_id} serves lane {device.lane_id}.",
                code="device_not_on_lane",
            )
    return lot, lane


def _registered(row: Any) -> Registered | None:
    """The registration in a lookup row (`vehicle_id` null when the plate has none)."""
    if row is None or row["vehicle_id"] is None:
        return None
    return Registered(row["vehicle_id"], row["wallet_account_id"], VehicleType(row["vehicle_type"]))


@dataclass(frozen=True, slots=True)
class LaneRead:
    """What a lane event says before anything is looked up."""

    read_plate: plates.Plate | None
    refused: Unprocessable | None  # an unreadable plate: refused after the key is claimed
    lookup_key: str | None  # the plate whose state the first statement reads (a plate read)


def _read(body: LaneEvent) -> LaneRead:
    read_plate, refused = None, None
    if body.plate_read is not None:
        try:
            read_plate = service.parse_plate(body.plate_read.plate)
        except Unprocessable as error:
            refused = error
    by_plate = body.account_qr is None and body.rfid_tag is None and read_plate is not None
    return LaneRead(read_plate, refused, read_plate.key if by_plate and read_plate else None)


async def _identify(
    work: LaneWork,
    body: LaneEvent,
    read: LaneRead,
    found: Any,
    *,
    entry_lot: str | None = None,
) -> Identified:
    """Who is at the lane. `found` is what the first statement read for a plate read (for an
    entry: the registration behind the plate and any open session of it at the lot); an
    account QR or RFID tag is looked up here. An exit needs no registration for a plate
    read: the session knows its wallet."""
    settings = work.context.settings
    plate_read = body.plate_read
    review: list[str] = []
    confident = plate_read is None or plate_read.confidence >= settings.review_confidence
    if not confident:
        review.append("low_confidence")
    vehicle: Any = None
    method = EntryMethod.plate
    if body.account_qr is not None:
        vehicle_id = tokens.vehicle_of_account_qr(
            settings.token_secret.get_secret_value(), body.account_qr
        )
        if vehicle_id is not None:
            vehicle = await work.fetchrow(repository.VEHICLE_BY_ID, vehicle_id)
        if vehicle is None:
            raise Unprocessable("Not a valid CityPass account QR.", code="invalid_account_qr")
        method = EntryMethod.account_qr
    elif body.rfid_tag is not None:
        vehicle = await work.fetchrow(repository.VEHICLE_BY_RFID, body.rfid_tag.upper())
        if vehicle is None and read.read_plate is None:
            raise Unprocessable("No vehicle has this RFID tag.", code="unknown_rfid_tag")
        method = EntryMethod.rfid if vehicle is not None else EntryMethod.plate
    if vehicle is not None:
        plate = plates.normalise(vehicle["plate"])
        if read.read_plate is not None and read.read_plate.key != plate.key:
            review.append("plate_mismatch")
    else:
        assert read.read_plate is not None
        plate = read.read_plate
    registered = _registered(vehicle)
    open_session_id = None
    if entry_lot is not None:
        if read.lookup_key != plate.key:  # identified otherwise than by the plate read
            found = await work.fetchrow(repository.PLATE_AT_LOT, entry_lot, plate.key)
        open_session_id = found["open_session_id"]
        work.debts[plate.key] = int(found["outstanding_debt"])
        if vehicle is None and confident:
            registered = _registered(found)
    return Identified(
        plate=plate,
        vehicle=registered,
        method=method,
        confidence=plate_read.confidence if plate_read is not None else None,
        image_ref=plate_read.image_ref if plate_read is not None else None,
        review=tuple(review),
        open_session_id=open_session_id,
    )


def _vehicle_type(body: LaneEvent, who: Identified, lane: Lane) -> VehicleType:
    if body.vehicle_type is not None:
        return body.vehicle_type
    if who.vehicle is not None:
        return who.vehicle.vehicle_type
    if lane.vehicle_type is not None:
        return VehicleType(lane.vehicle_type)
    return VehicleType(who.plate.kind.value)


def _masked(row: SessionRow) -> str:
    return plates.normalise(row.plate).masked()


async def _publish(work: Steps, topic: str, key: str, event: Event) -> None:
    await work.publish(topic, key, event)


# Entry ------------------------------------------------------------------------------------------


async def enter(work: LaneWork, device: Device, body: EntryCreate) -> Response:
    """Decide at an entry lane: open (a new session, or a repeated read) or full."""
    context = work.context
    read = _read(body)
    found = await work.fetchrow(repository.ENTRY_BEGIN, *work.claim(), body.lot_id, read.lookup_key)
    if (replay := work.claimed(found)) is not None:
        return replay
    _check_time(context, body.occurred_at, work.now)
    lot, lane = _lane(context, device, body, Direction.entry)
    if read.refused is not None:
        raise read.refused
    who = await _identify(work, body, read, found, entry_lot=lot.lot_id)
    vehicle_type = _vehicle_type(body, who, lane)
    if who.open_session_id is not None:
        existing = await work.fetchrow(repository.LOCK_SESSION, who.open_session_id)
        if existing is not None and existing["status"] != SessionStatus.closed.value:
            return await _answer(
                work, await _already_inside(work, repository.session_state(existing), body)
            )
    count = await work.admit(lot.lot_id, vehicle_type)
    if not count.admitted:
        await _publish(
            work,
            events.OCCUPANCY_TOPIC,
            lot.lot_id,
            events.entry_refused(lot.lot_id, lane.lane_id, vehicle_type, count, who.plate.masked()),
        )
        refused = EntryDecision(
            decision=EntryOutcome.full,
            reason="lot_full",
            session_id=None,
            lot_id=lot.lot_id,
            lane_id=lane.lane_id,
            vehicle_type=vehicle_type,
            plate=who.plate.display,
            registered=who.vehicle is not None,
            hold_amount=None,
            hold_status=None,
            needs_review=bool(who.review),
            review_reasons=list(who.review),
            occupancy=Occupancy(capacity=count.capacity, occupied=count.occupied, free=count.free),
            outstanding_debt=await work.outstanding_debt(who.plate.key),
            entry_at=None,
        )
        return await _answer(work, refused)
    work.undo.add(lambda: context.occupancy.release(lot.lot_id, vehicle_type))
    session_id = service.new_id()
    hold_id, hold_amount, hold_status = await _place_hold(
        work, who, lot, vehicle_type, body, f"parking-hold:{device.device_id}:{work.request.key}"
    )
    held = hold_amount if hold_id is not None else None
    work.events = [
        (
            events.SESSIONS_TOPIC,
            str(session_id),
            events.session_event(
                events.SESSION_OPENED,
                session_id,
                {
                    "lot_id": lot.lot_id,
                    "lane_id": lane.lane_id,
                    "vehicle_type": vehicle_type.value,
                    "plate": who.plate.masked(),
                    "method": who.method.value,
                    "registered": who.vehicle is not None,
                    "hold_amount": held,
                    "hold_status": hold_status,
                    "needs_review": bool(who.review),
                    "review_reasons": list(who.review),
                    "entry_at": body.occurred_at.isoformat(),
                },
            ),
        ),
        (
            events.OCCUPANCY_TOPIC,
            lot.lot_id,
            events.occupancy_changed(
                lot.lot_id,
                vehicle_type,
                count,
                change=1,
                session_id=session_id,
                at=body.occurred_at,
            ),
        ),
    ]
    decision = EntryDecision(
        decision=EntryOutcome.open,
        reason="entered",
        session_id=session_id,
        lot_id=lot.lot_id,
        lane_id=lane.lane_id,
        vehicle_type=vehicle_type,
        plate=who.plate.display,
        registered=who.vehicle is not None,
        hold_amount=held,
        hold_status=hold_status,
        needs_review=bool(who.review),
        review_reasons=list(who.review),
        occupancy=Occupancy(capacity=count.capacity, occupied=count.occupied, free=count.free),
        outstanding_debt=await work.outstanding_debt(who.plate.key),
        entry_at=body.occurred_at,
    )
    new_session = {
        "session_id": session_id,
        "lot_id": lot.lot_id,
        "status": SessionStatus.open.value,
        "vehicle_type": vehicle_type.value,
        "plate_key": who.plate.key,
        "plate": who.plate.display,
        "entry_method": who.method.value,
        "entry_lane_id": lane.lane_id,
        "entry_device_id": device.device_id,
        "entry_at": body.occurred_at,
        "entry_recorded_at": work.now,
        "entry_confidence": who.confidence,
        "entry_image_ref": who.image_ref,
        "vehicle_id": who.vehicle.vehicle_id if who.vehicle is not None else None,
        "wallet_account_id": who.vehicle.wallet_account_id if who.vehicle is not None else None,
        "hold_id": hold_id,
        "hold_amount": held,
        "hold_status": hold_status,
        "review_reasons": list(who.review),
    }
    answered = await work.answer(decision, inserted=new_session)
    if answered is not None:
        return answered
    # The same plate entered through another lane at the same moment.
    await work.undo.run()
    work.events = []
    raced = await work.fetchrow(repository.LOCK_OPEN_SESSION, lot.lot_id, who.plate.key)
    assert raced is not None
    return await _answer(work, await _already_inside(work, repository.session_state(raced), body))


async def _answer(work: LaneWork, decision: BaseModel) -> Response:
    answered = await work.answer(decision)
    assert answered is not None
    return answered


async def _place_hold(
    work: LaneWork,
    who: Identified,
    lot: Lot,
    vehicle_type: VehicleType,
    body: EntryCreate,
    key: str,
) -> tuple[uuid.UUID | None, int, str | None]:
    """Reserve the most a day can cost on the vehicle wallet; entry never waits on it."""
    if who.vehicle is None:
        return None, 0, None
    context = work.context
    tariffs = context.reference.tariffs_for(lot.lot_id, vehicle_type)
    tariff = tariff_in_force(tariffs, vehicle_type, body.occurred_at, lot_id=lot.lot_id)
    cap = tariff.daily_cap if tariff is not None else None
    amount = cap if cap else context.settings.hold_without_cap
    try:
        hold = await context.payments.place_hold(
            account_id=who.vehicle.wallet_account_id,
            amount=amount,
            lot_id=lot.lot_id,
            expires_in_s=int(context.settings.hold_ttl.total_seconds()),
            key=key,
        )
    except PaymentsUnavailable as error:
        logger.warning("entry without a hold, payments unavailable: %s", error)
        return None, amount, "payments_unavailable"
    except PaymentsRefused as refused:
        if refused.status != 402:
            logger.error("payments refused a hold: %s", refused)
        return None, amount, "insufficient_funds" if refused.status == 402 else "hold_refused"
    work.undo.add(lambda: context.payments.void_hold(hold.hold_id, key=f"{key}:undo"))
    return hold.hold_id, hold.amount, "held"


async def _already_inside(work: LaneWork, row: SessionRow, body: EntryCreate) -> EntryDecision:
    reasons = list(row.review_reasons)
    if body.occurred_at - row.entry_at > REPEAT_ENTRY_AFTER and "repeat_entry" not in reasons:
        reasons.append("repeat_entry")  # an exit was probably missed: an operator looks
        row = await work.update_session(row, review_reasons=reasons)
    counts = await work.context.occupancy.read(row.lot_id)
    count = counts[VehicleType(row.vehicle_type)]
    return EntryDecision(
        decision=EntryOutcome.open,
        reason="already_inside",
        session_id=row.session_id,
        lot_id=row.lot_id,
        lane_id=body.lane_id,
        vehicle_type=VehicleType(row.vehicle_type),
        plate=row.plate,
        registered=row.vehicle_id is not None,
        hold_amount=row.hold_amount,
        hold_status=row.hold_status,
        needs_review=bool(reasons),
        review_reasons=reasons,
        occupancy=Occupancy(capacity=count.capacity, occupied=count.occupied, free=count.free),
        outstanding_debt=await work.outstanding_debt(row.plate_key),
        entry_at=row.entry_at,
    )


# Exit -------------------------------------------------------------------------------------------


async def leave(work: LaneWork, device: Device, body: ExitCreate) -> Response:
    """Decide at an exit lane: open (paid, free, or a debt on the fallback) or pay by VietQR."""
    context = work.context
    read = _read(body)
    found = await work.fetchrow(repository.EXIT_BEGIN, *work.claim(), body.lot_id, read.lookup_key)
    if (replay := work.claimed(found)) is not None:
        return replay
    _check_time(context, body.occurred_at, work.now)
    lot, lane = _lane(context, device, body, Direction.exit)
    if read.refused is not None:
        raise read.refused
    who = await _identify(work, body, read, found)
    if read.lookup_key == who.plate.key:
        session = found["session"]  # locked by the first statement
    else:
        session = await work.fetchrow(repository.LOCK_OPEN_SESSION, lot.lot_id, who.plate.key)
    if session is None or session["session_id"] is None:
        since = work.now - context.settings.double_exit_window
        last = await work.fetchrow(repository.LAST_EXIT_FOR_PLATE, lot.lot_id, who.plate.key, since)
        if last is not None:
            exit_at = last["exit_at"]
            raise Conflict(
                f"{who.plate.display} already left lot {lot.lot_id} at {exit_at.isoformat()}.",
                code="already_exited",
                session_id=str(last["session_id"]),
                exit_at=exit_at.isoformat(),
            )
        raise Conflict(
            f"No vehicle {who.plate.display} is inside lot {lot.lot_id}: no entry was recorded.",
            code="no_open_session",
        )
    row: SessionRow = repository.session_state(session)
    if row.status == SessionStatus.awaiting_payment.value:
        if body.offline:  # the lane lost its link while the VietQR was shown, and let it out
            row = await _close_as_debt(work, row)
        # else the same vehicle, still paying at the barrier: its pending decision again
        return await _answer(work, exit_decision(context, row))
    if body.occurred_at < row.entry_at:
        raise Unprocessable(
            f"The exit ({body.occurred_at.isoformat()}) is before the entry"
            f" ({row.entry_at.isoformat()}).",
            code="exit_before_entry",
        )
    fee, priced = await _price(work, row, row.entry_at, body.occurred_at)
    reasons = list(row.review_reasons)
    reasons += [reason for reason in who.review if reason not in reasons]
    exit_values = {
        "exit_lane_id": lane.lane_id,
        "exit_device_id": device.device_id,
        "exit_at": body.occurred_at,
        "exit_recorded_at": work.now,
        "exit_confidence": who.confidence,
        "exit_image_ref": who.image_ref,
        "exit_offline": body.offline,
        "fee": fee,
        "priced": priced,
        "review_reasons": reasons,
    }
    if fee == 0 or row.wallet_account_id is not None or body.offline:
        await work.release_ahead(row.lot_id, VehicleType(row.vehicle_type))  # it will leave
    else:
        await work.nonce.claim()  # before payments is asked for anything
    row = await _settle(work, row, fee, exit_values, offline=body.offline)
    return await _answer(work, exit_decision(context, row))


async def _price(
    work: Steps, row: SessionRow, entry_at: datetime, exit_at: datetime
) -> tuple[int, dict[str, Any]]:
    vehicle_type = VehicleType(row.vehicle_type)
    try:
        priced = price_session(
            entry_at,
            exit_at,
            vehicle_type,
            work.context.reference.tariffs_for(row.lot_id, vehicle_type),
            lot_id=row.lot_id,
        )
    except TariffError as error:
        raise Unprocessable(str(error), code=error.code) from None
    return priced.total, priced.to_dict()


@dataclass(frozen=True, slots=True)
class WalletOutcome:
    posted: Posted | None  # None: the wallet could not pay
    kind: str  # capture or charge
    hold_status: str | None


async def _take_from_wallet(context: Parking, row: SessionRow, amount: int) -> WalletOutcome:
    """Capture the entry hold for `amount`, or charge the wallet; PaymentsUnavailable escapes."""
    payments = context.payments
    hold_status = row.hold_status
    if row.hold_id is not None and hold_status == "held":
        if amount <= row.hold_amount:
            try:
                hold = await payments.capture_hold(
                    row.hold_id, amount, key=f"parking-capture:{row.session_id}:{amount}"
                )
            except PaymentsRefused as refused:  # expired or already settled: charge instead
                logger.info("hold %s not capturable (%s); charging", row.hold_id, refused.code)
                hold_status = "lapsed"
            else:
                assert hold.capture_transfer_id is not None
                posted = Posted(
                    hold.capture_transfer_id, amount, hold.settled_at or service.utcnow()
                )
                return WalletOutcome(posted, "capture", "captured")
        else:
            try:
                await payments.void_hold(row.hold_id, key=f"parking-void:{row.session_id}")
                hold_status = "voided"
            except PaymentsRefused:
                hold_status = "lapsed"
    try:
        posted = await payments.charge(
            account_id=row.wallet_account_id,
            amount=amount,
            lot_id=row.lot_id,
            key=f"parking-charge:{row.session_id}:{amount}",
        )
    except PaymentsRefused as refused:
        if refused.status != 402:
            logger.error("payments refused a parking charge: %s", refused)
        return WalletOutcome(None, "charge", hold_status)
    return WalletOutcome(posted, "charge", hold_status)


async def _release_hold(work: Steps, row: SessionRow) -> str | None:
    """Give a hold back (nothing to pay from it); retried later if payments is away."""
    status: str | None = row.hold_status
    if row.hold_id is None or status not in ("held", "release_pending"):
        return status
    try:
        await work.context.payments.void_hold(row.hold_id, key=f"parking-void:{row.session_id}")
    except PaymentsUnavailable:
        return "release_pending"
    except PaymentsRefused:
        return "lapsed"
    return "voided"


async def _record_payment(
    work: Steps, row: SessionRow, posted: Posted, kind: str, reference: str | None = None
) -> bool:
    return await work.record_payment(row, posted, kind, reference)


async def _settle(
    work: Steps, row: SessionRow, fee: int, pending: dict[str, Any], *, offline: bool
) -> SessionRow:
    """Collect the fee of a session at its exit. `pending` (the exit's own values) is written
    with the outcome in one update; returns the updated row."""
    if fee == 0:
        hold_status = await _release_hold(work, row)
        return await _close(work, row, Settlement.free, hold_status=hold_status, **pending)
    if row.wallet_account_id is not None:
        try:
            outcome = await _take_from_wallet(work.context, row, fee)
        except PaymentsUnavailable as error:
            return await _fallback(work, row, pending, reason=str(error))
        if outcome.posted is not None:
            await _record_payment(work, row, outcome.posted, outcome.kind)
            return await _close(
                work,
                row,
                Settlement.wallet,
                paid=outcome.posted.amount,
                hold_status=outcome.hold_status,
                **pending,
            )
        pending = {**pending, "hold_status": outcome.hold_status}
    if offline:
        return await _close_as_debt(work, row, **pending)
    await work.keep_place()  # at the barrier until the VietQR is paid
    try:
        request = await work.context.payments.request_payment(
            lot_id=row.lot_id,
            session_id=row.session_id,
            amount=fee,
            key=f"parking-qr:{row.session_id}:{fee}",
        )
    except (PaymentsUnavailable, PaymentsRefused) as error:
        return await _fallback(work, row, pending, reason=str(error))
    row = await work.update_session(
        row,
        status=SessionStatus.awaiting_payment.value,
        payment_request_id=request.payment_request_id,
        payment_reference=request.reference,
        payment_qr=request.qr,
        payment_amount=request.amount,
        payment_requested_at=work.now,
        **pending,
    )
    await _publish(
        work,
        events.SESSIONS_TOPIC,
        str(row.session_id),
        events.session_event(
            events.SESSION_PAYMENT_REQUIRED,
            row.session_id,
            {
                "lot_id": row.lot_id,
                "lane_id": row.exit_lane_id,
                "fee": fee,
                "payment_request_id": str(request.payment_request_id),
                "reference": request.reference,
            },
        ),
    )
    return row


async def _fallback(
    work: Steps, row: SessionRow, pending: dict[str, Any], *, reason: str
) -> SessionRow:
    """Payments cannot settle now: let the vehicle out and bill the plate, or ask to retry."""
    if not work.context.settings.fallback_enabled:
        raise ServiceUnavailable(
            "Payments did not answer; retry the exit.", code="payments_unavailable"
        )
    logger.warning("session %s leaves on the fallback: %s", row.session_id, reason)
    return await _close_as_debt(work, row, **pending)


async def _close_as_debt(work: Steps, row: SessionRow, **pending: Any) -> SessionRow:
    # Collected by the debt worker: a wallet is retried, otherwise a VietQR is prepared for
    # the receipt unless one exists already (the barrier's).
    needs_work = row.wallet_account_id is not None or row.payment_request_id is None
    return await _close(
        work,
        row,
        Settlement.debt,
        debt_status=DebtStatus.outstanding,
        debt_next_attempt_at=work.now if needs_work else None,
        **pending,
    )


async def _close(
    work: Steps,
    row: SessionRow,
    settlement: Settlement,
    *,
    paid: int = 0,
    hold_status: str | None = None,
    debt_status: DebtStatus | None = None,
    debt_next_attempt_at: datetime | None = None,
    **pending: Any,
) -> SessionRow:
    vehicle_type = VehicleType(row.vehicle_type)
    count = await work.release_place(row.lot_id, vehicle_type)
    row = await work.update_session(
        row,
        status=SessionStatus.closed.value,
        settlement=settlement.value,
        paid_amount=row.paid_amount + paid,
        hold_status=hold_status if hold_status is not None else row.hold_status,
        debt_status=debt_status.value if debt_status else None,
        debt_next_attempt_at=debt_next_attempt_at,
        closed_at=work.now,
        **pending,
    )
    await _publish(
        work,
        events.SESSIONS_TOPIC,
        str(row.session_id),
        events.session_event(events.SESSION_CLOSED, row.session_id, _closed_data(row)),
    )
    await _publish(
        work,
        events.OCCUPANCY_TOPIC,
        row.lot_id,
        events.occupancy_changed(
            row.lot_id,
            vehicle_type,
            count,
            change=-1,
            session_id=row.session_id,
            at=row.exit_at,
        ),
    )
    return row


def _closed_data(row: SessionRow) -> dict[str, Any]:
    priced = row.priced or {}
    return {
        "lot_id": row.lot_id,
        "lane_id": row.exit_lane_id,
        "vehicle_type": row.vehicle_type,
        "plate": _masked(row),
        "entry_at": row.entry_at.isoformat(),
        "exit_at": row.exit_at.isoformat(),
        "offline": row.exit_offline,
        "fee": row.fee,
        "currency": "VND",
        "settlement": row.settlement,
        "paid_amount": row.paid_amount,
        "debt_amount": _owed(row),
        "payment_request_id": str(row.payment_request_id) if row.payment_request_id else None,
        "lines": [
            {"kind": line["kind"], "tariff_id": line["tariff_id"], "amount": line["amount"]}
            for line in priced.get("lines", [])
        ],
    }


def _owed(row: SessionRow) -> int:
    if row.debt_status != DebtStatus.outstanding.value or row.fee is None:
        return 0
    return max(int(row.fee) - int(row.paid_amount), 0)


def receipt_token(context: Parking, session_id: uuid.UUID, scope: ReceiptScope) -> str:
    secret = context.settings.token_secret.get_secret_value()
    return tokens.receipt_token(secret, session_id, scope)


def receipt_code(context: Parking, session_id: uuid.UUID) -> str:
    return tokens.receipt_code(context.settings.token_secret.get_secret_value(), session_id)


def _payment_qr(row: SessionRow) -> PaymentQR | None:
    if row.payment_request_id is None or row.payment_qr is None:
        return None
    return PaymentQR(
        payment_request_id=row.payment_request_id,
        reference=row.payment_reference,
        amount=row.payment_amount,
        qr=row.payment_qr,
    )


def exit_decision(context: Parking, row: SessionRow) -> ExitDecision:
    status = SessionStatus(row.status)
    if status is SessionStatus.open:
        raise Conflict(
            f"Session {row.session_id} has no exit yet: the vehicle is inside.", code="not_at_exit"
        )
    settlement = Settlement(row.settlement) if row.settlement else None
    waiting = status is SessionStatus.awaiting_payment
    fallback_after = (
        row.payment_requested_at + context.settings.payment_wait
        if waiting and context.settings.fallback_enabled
        else None
    )
    # Only here, to the lane the driver stands at: the proof that opens disputes.
    exit_token = None if waiting else receipt_token(context, row.session_id, ReceiptScope.exit)
    return ExitDecision(
        decision=ExitOutcome.pay if waiting else ExitOutcome.open,
        reason="payment_required" if waiting else SETTLED_REASONS[settlement or Settlement.free],
        session_id=row.session_id,
        status=status,
        lot_id=row.lot_id,
        lane_id=row.exit_lane_id,
        plate=row.plate,
        vehicle_type=VehicleType(row.vehicle_type),
        entry_at=row.entry_at,
        exit_at=row.exit_at,
        fee=row.fee,
        lines=service.price_lines((row.priced or {}).get("lines", [])),
        settlement=settlement,
        payment=_payment_qr(row) if waiting else None,
        fallback_after=fallback_after,
        debt_amount=_owed(row),
        receipt_token=exit_token,
        receipt_code=None if waiting else receipt_code(context, row.session_id),
    )


async def _session_row(work: Work, session_id: uuid.UUID, *, lock: bool = False) -> SessionRow:
    row = await repository.get_session(work.session, session_id, lock=lock)
    if row is None:
        raise NotFound(f"No session {session_id}.", code="session_not_found")
    return row


async def exit_status(work: Work, device: Device | None, session_id: uuid.UUID) -> ExitDecision:
    row = await _session_row(work, session_id)
    if device is not None and device.lot_id != row.lot_id:
        raise Forbidden(f"Session {session_id} is at another lot.", code="device_not_in_lot")
    return exit_decision(work.context, row)


async def fallback_exit(work: Work, device: Device, session_id: uuid.UUID) -> ExitDecision:
    """The bank is slow: after `payment_wait` the lane lets the vehicle out as a debt."""
    context = work.context
    row = await _session_row(work, session_id, lock=True)
    if device.lot_id != row.lot_id:
        raise Forbidden(f"Session {session_id} is at another lot.", code="device_not_in_lot")
    if row.status == SessionStatus.closed.value:
        return exit_decision(context, row)
    if row.status != SessionStatus.awaiting_payment.value:
        raise Conflict("The vehicle has no exit decision to fall back from.", code="not_at_exit")
    if not context.settings.fallback_enabled:
        raise Conflict("The fallback is disabled for this service.", code="fallback_disabled")
    allowed_at = row.payment_requested_at + context.settings.payment_wait
    if work.now < allowed_at:
        raise Conflict(
            f"Keep showing the VietQR until {allowed_at.isoformat()}.",
            code="payment_wait_not_over",
            fallback_after=allowed_at.isoformat(),
        )
    return exit_decision(context, await _close_as_debt(work, row))


# Events from payments ---------------------------------------------------------------------------


async def on_payment_request_paid(work: Work, event: Event) -> None:
    """A VietQR for a session was paid: open the barrier, or settle the debt."""
    data = event.data
    try:
        session_id = uuid.UUID(str(data["parking_session_id"]))
        request_id = uuid.UUID(str(data["payment_request_id"]))
        transfer_id = uuid.UUID(str(data["transfer_id"]))
        amount = int(data["amount"])
    except (KeyError, TypeError, ValueError):
        logger.info("payment event %s is not for a parking session", event.id)
        return
    row = await repository.get_session(work.session, session_id, lock=True)
    if row is None:
        logger.warning("paid request %s names unknown session %s", request_id, session_id)
        return
    posted = Posted(transfer_id, amount, event.time)
    if not await _record_payment(work, row, posted, "vietqr", str(data.get("reference") or "")):
        return
    paid_total = int(row.paid_amount) + amount
    if row.status == SessionStatus.awaiting_payment.value and paid_total >= int(row.fee):
        await _close(work, row, Settlement.vietqr, paid=amount)
        return
    if row.debt_status == DebtStatus.outstanding.value and paid_total >= int(row.fee):
        await _settle_debt(work, row, amount)
        return
    # Paid twice, or for a fee since corrected: the audit lists the session as overpaid.
    await repository.update_session(work.session, row.session_id, paid_amount=paid_total)


async def on_transfer_posted(context: Parking, event: Event) -> None:
    """Keep the lot's revenue movements, to explain every dong in the audit; once per event
    (its dedup and the movement are one statement)."""
    data = event.data
    sign = SIGNED_KINDS.get(str(data.get("kind")))
    if data.get("source") != "parking" or not data.get("lot_id") or sign is None:
        return

    def optional(name: str) -> uuid.UUID | None:
        value = data.get(name)
        return uuid.UUID(str(value)) if value else None

    await repository.record_ledger_event(
        context.db,
        events.CONSUMER_GROUP,
        event.id,
        transfer_id=uuid.UUID(str(data["transfer_id"])),
        lot_id=str(data["lot_id"]),
        kind=str(data["kind"]),
        amount=sign * int(data["amount"]),
        hold_id=optional("hold_id"),
        payment_request_id=optional("payment_request_id"),
        original_transfer_id=optional("original_transfer_id"),
        posted_at=event.time,
    )


# Debts ------------------------------------------------------------------------------------------


async def _settle_debt(work: Work, row: SessionRow, amount: int) -> SessionRow:
    row = await repository.update_session(
        work.session,
        row.session_id,
        paid_amount=int(row.paid_amount) + amount,
        debt_status=DebtStatus.paid.value,
        debt_next_attempt_at=None,
    )
    await _publish(
        work,
        events.SESSIONS_TOPIC,
        str(row.session_id),
        events.session_event(
            events.SESSION_DEBT_SETTLED,
            row.session_id,
            {"lot_id": row.lot_id, "fee": row.fee, "paid_amount": row.paid_amount},
        ),
    )
    return row


async def collect_debt(work: Work, row: SessionRow) -> None:
    """One attempt at a debt: the wallet first, else a VietQR the driver pays from the receipt."""
    context = work.context
    owed = _owed(row)
    if owed == 0:
        await _settle_debt(work, row, 0)
        return
    retry_in = context.settings.debt_retry_interval
    if row.wallet_account_id is not None:
        try:
            outcome = await _take_from_wallet(context, row, owed)
        except PaymentsUnavailable:
            await repository.update_session(
                work.session, row.session_id, debt_next_attempt_at=work.now + retry_in
            )
            return
        if outcome.posted is not None:
            await _record_payment(work, row, outcome.posted, outcome.kind)
            row = await repository.update_session(
                work.session, row.session_id, hold_status=outcome.hold_status
            )
            await _settle_debt(work, row, outcome.posted.amount)
            return
        row = await repository.update_session(
            work.session, row.session_id, hold_status=outcome.hold_status
        )
        retry_in = min(retry_in * 20, DEBT_RETRY_CAP)  # the owner may top up the wallet
    next_attempt = work.now + retry_in if row.wallet_account_id is not None else None
    if row.payment_request_id is None or row.payment_qr is None or row.payment_amount != owed:
        try:
            request = await context.payments.request_payment(
                lot_id=row.lot_id,
                session_id=row.session_id,
                amount=owed,
                key=f"parking-debt-qr:{row.session_id}:{owed}",
            )
        except (PaymentsUnavailable, PaymentsRefused) as error:
            logger.warning("no VietQR for debt %s yet: %s", row.session_id, error)
            next_attempt = work.now + context.settings.debt_retry_interval
        else:
            await repository.update_session(
                work.session,
                row.session_id,
                payment_request_id=request.payment_request_id,
                payment_reference=request.reference,
                payment_qr=request.qr,
                payment_amount=request.amount,
                payment_requested_at=work.now,
            )
    await repository.update_session(work.session, row.session_id, debt_next_attempt_at=next_attempt)


async def release_pending_hold(work: Work, row: SessionRow) -> None:
    status = await _release_hold(work, row)
    await repository.update_session(work.session, row.session_id, hold_status=status)


# Reads ------------------------------------------------------------------------------------------


def session_read(row: SessionRow) -> SessionRead:
    return SessionRead(
        session_id=row.session_id,
        lot_id=row.lot_id,
        status=SessionStatus(row.status),
        vehicle_type=VehicleType(row.vehicle_type),
        plate=row.plate,
        entry_method=EntryMethod(row.entry_method),
        entry_lane_id=row.entry_lane_id,
        entry_at=row.entry_at,
        entry_confidence=row.entry_confidence,
        entry_image_ref=row.entry_image_ref,
        exit_lane_id=row.exit_lane_id,
        exit_at=row.exit_at,
        exit_offline=row.exit_offline,
        registered=row.vehicle_id is not None,
        hold_id=row.hold_id,
        hold_amount=row.hold_amount,
        hold_status=row.hold_status,
        needs_review=bool(row.review_reasons),
        review_reasons=list(row.review_reasons),
        fee=row.fee,
        lines=service.price_lines((row.priced or {}).get("lines", [])),
        settlement=Settlement(row.settlement) if row.settlement else None,
        paid_amount=row.paid_amount,
        debt_status=DebtStatus(row.debt_status) if row.debt_status else None,
        payment_request_id=row.payment_request_id,
        payment_reference=row.payment_reference,
        closed_at=row.closed_at,
    )


async def get_session(work: Work, device: Device | None, session_id: uuid.UUID) -> SessionRead:
    row = await _session_row(work, session_id)
    if device is not None and device.lot_id != row.lot_id:
        raise Forbidden(f"Session {session_id} is at another lot.", code="device_not_in_lot")
    return session_read(row)


async def list_sessions(
    work: Work,
    *,
    lot_id: str | None,
    status: SessionStatus | None,
    needs_review: bool | None,
    limit: int,
) -> list[SessionRead]:
    rows = await repository.list_sessions(
        work.session,
        lot_id=lot_id,
        status=status.value if status else None,
        needs_review=needs_review,
        limit=limit,
    )
    return [session_read(row) for row in rows]


# Receipts ---------------------------------------------------------------------------------------


def _check_token(context: Parking, session_id: uuid.UUID, token: str, need: ReceiptScope) -> None:
    secret = context.settings.token_secret.get_secret_value()
    scope = tokens.receipt_token_scope(secret, session_id, token)
    if scope is None:
        raise NotFound("No receipt for this session id and token.", code="receipt_not_found")
    if need is ReceiptScope.exit and scope is not ReceiptScope.exit:
        raise Forbidden(
            "This token only reads the receipt: disputes need the receipt token shown at the"
            " exit lane.",
            code="exit_token_required",
        )


async def _receipt(work: Work, row: SessionRow) -> ReceiptRead:
    lot = await repository.get_lot(work.session, row.lot_id)
    assert lot is not None
    moved = await repository.payments_of_sessions(work.session, [row.session_id])
    refunded = -sum(payment.amount for payment in moved if payment.kind == "refund")
    wallet = [payment for payment in moved if payment.kind in WALLET_KINDS]
    by_qr = any(payment.kind == "vietqr" for payment in moved)
    reference = (
        row.payment_reference
        if by_qr or not wallet
        else str(sorted(wallet, key=lambda payment: payment.posted_at)[0].transfer_id)
    )
    owed = _owed(row)
    return ReceiptRead(
        session_id=row.session_id,
        lot_id=row.lot_id,
        lot_name=lot.name,
        lot_address=lot.address,
        plate=_masked(row),
        vehicle_type=VehicleType(row.vehicle_type),
        entry_at=row.entry_at.astimezone(HANOI_TZ),
        exit_at=row.exit_at.astimezone(HANOI_TZ),
        duration_minutes=int((row.exit_at - row.entry_at).total_seconds() // 60),
        lines=service.price_lines((row.priced or {}).get("lines", [])),
        fee=row.fee,
        paid_amount=row.paid_amount,
        refunded_amount=refunded,
        settlement=Settlement(row.settlement),
        payment_reference=reference,
        debt_status=DebtStatus(row.debt_status) if row.debt_status else None,
        amount_due=owed,
        payment=_payment_qr(row) if owed and row.payment_amount == owed else None,
        receipt_code=receipt_code(work.context, row.session_id),
    )


async def _closed_session_with_token(
    work: Work, session_id: uuid.UUID, token: str, need: ReceiptScope
) -> SessionRow:
    _check_token(work.context, session_id, token, need)
    row = await repository.get_session(work.session, session_id)
    if row is None:
        raise NotFound("No receipt for this session id and token.", code="receipt_not_found")
    if row.status != SessionStatus.closed.value:
        raise Conflict("The vehicle has not left yet: no receipt.", code="session_not_closed")
    return row


async def receipt(work: Work, session_id: uuid.UUID, token: str) -> ReceiptRead:
    row = await _closed_session_with_token(work, session_id, token, ReceiptScope.read)
    return await _receipt(work, row)


async def find_receipt(work: Work, plate: str, code: str) -> ReceiptFound:
    """The receipt of `plate` whose code is `code`, among those of the lookup horizon, with a
    token that reads it and does nothing else. The code is checked against each of the plate's
    sessions (an HMAC each, ~4 µs): nothing about codes is stored."""
    printed = tokens.typed_receipt_code(code)
    if printed is None:
        raise Unprocessable(
            f"A receipt code is {tokens.RECEIPT_CODE_LENGTH} letters and digits, as printed.",
            code="invalid_receipt_code",
        )
    found = service.parse_plate(plate)
    secret = work.context.settings.token_secret.get_secret_value()
    candidates = await repository.closed_session_ids_of_plate(
        work.session, found.key, work.now - work.context.settings.receipt_lookup_horizon
    )
    for session_id in candidates:
        if hmac.compare_digest(tokens.receipt_code(secret, session_id), printed):
            row = await repository.get_session(work.session, session_id)
            assert row is not None
            receipt = await _receipt(work, row)
            return ReceiptFound(
                **receipt.model_dump(),
                read_token=receipt_token(work.context, session_id, ReceiptScope.read),
            )
    raise NotFound("No receipt for this plate and code.", code="receipt_not_found")


# Overrides --------------------------------------------------------------------------------------


def _override_read(row: SessionRow) -> OverrideRead:
    return OverrideRead(
        override_id=row.override_id,
        session_id=row.session_id,
        action=OverrideAction(row.action),
        operator=row.operator,
        reason=row.reason,
        fee_before=row.fee_before,
        fee_after=row.fee_after,
        refund_amount=row.refund_amount,
        refund_status=row.refund_status,
        created_at=row.created_at,
    )


def _require_closed(row: SessionRow) -> None:
    if row.status != SessionStatus.closed.value:
        raise Conflict(
            f"Session {row.session_id} is still {row.status}.", code="session_not_closed"
        )


async def _refund(work: Work, row: SessionRow, amount: int) -> tuple[int, str]:
    """Give `amount` back through payments, from the session's wallet payments.

    What was paid by bank transfer cannot be refunded by payments (it has no payout), so
    the rest is reported as `payout_required`.
    """
    moved = await repository.payments_of_sessions(work.session, [row.session_id])
    refunded_of: dict[str, int] = {}
    for payment in moved:
        if payment.kind == "refund" and payment.reference:
            refunded_of[payment.reference] = refunded_of.get(payment.reference, 0) - payment.amount
    remaining, refunded, failed = amount, 0, False
    wallet = sorted(
        (payment for payment in moved if payment.kind in WALLET_KINDS),
        key=lambda payment: payment.posted_at,
        reverse=True,
    )
    for payment in wallet:
        already = refunded_of.get(str(payment.transfer_id), 0)
        take = min(int(payment.amount) - already, remaining)
        if take <= 0:
            continue
        try:
            posted = await work.context.payments.refund(
                payment.transfer_id,
                take,
                key=f"parking-refund:{row.session_id}:{payment.transfer_id}:{already}:{take}",
            )
        except PaymentsUnavailable:
            raise ServiceUnavailable(
                "Payments cannot refund now; nothing was changed, retry.",
                code="payments_unavailable",
            ) from None
        except PaymentsRefused as refused:
            logger.error("refund of %s refused: %s", payment.transfer_id, refused)
            failed = True
            continue
        await _record_payment(work, row, posted, "refund", str(payment.transfer_id))
        remaining -= take
        refunded += take
        if remaining == 0:
            break
    if remaining == 0:
        return refunded, "refunded"
    return refunded, "refund_failed" if failed else "payout_required"


async def _rebalance(work: Work, row: SessionRow) -> tuple[SessionRow, int, str | None]:
    """After a fee change: refund what was paid beyond it, or bill what is now missing."""
    fee, paid = int(row.fee), int(row.paid_amount)
    refund_amount, refund_status = 0, None
    if paid > fee:
        refund_amount, refund_status = await _refund(work, row, paid - fee)
        paid -= refund_amount
    owed = fee - paid
    if owed > 0:
        debt_status: str | None = DebtStatus.outstanding.value
    elif row.debt_status == DebtStatus.outstanding.value:
        debt_status = DebtStatus.paid.value if fee else None
    else:
        debt_status = row.debt_status
    row = await repository.update_session(
        work.session,
        row.session_id,
        paid_amount=paid,
        debt_status=debt_status,
        debt_next_attempt_at=work.now if owed > 0 else None,
    )
    return row, refund_amount, refund_status


def _corrected_times(
    work: Work, row: SessionRow, entry_at: datetime | None, exit_at: datetime | None
) -> tuple[datetime, datetime]:
    entry = entry_at or row.entry_at
    exit_ = exit_at or row.exit_at or work.now
    for moment in (entry, exit_):
        if moment > work.now + work.context.settings.max_clock_skew:
            raise Unprocessable("A corrected time lies in the future.", code="timestamp_in_future")
    if exit_ < entry:
        raise Unprocessable("The exit is before the entry.", code="exit_before_entry")
    return entry, exit_


async def apply_override(work: Work, session_id: uuid.UUID, body: OverrideCreate) -> OverrideRead:
    """An operator's manual change to a session; every one is kept and shown in the audit."""
    row = await _session_row(work, session_id, lock=True)
    fee_before = row.fee
    refund_amount, refund_status = 0, None
    details: dict[str, Any] = {}
    if body.action is OverrideAction.correct_plate:
        if body.plate is None:
            raise Unprocessable("Give the corrected plate.", code="plate_required")
        plate = service.parse_plate(body.plate)
        if row.status != SessionStatus.closed.value:
            other = await repository.open_session_for_plate(work.session, row.lot_id, plate.key)
            if other is not None and other.session_id != row.session_id:
                raise Conflict(
                    f"{plate.display} is inside already ({other.session_id}).",
                    code="plate_already_inside",
                )
        details = {"plate_before": row.plate, "plate_after": plate.display}
        reasons = [r for r in row.review_reasons if r not in ("low_confidence", "plate_mismatch")]
        row = await repository.update_session(
            work.session,
            row.session_id,
            plate=plate.display,
            plate_key=plate.key,
            review_reasons=reasons,
        )
    elif body.action is OverrideAction.correct_times:
        _require_closed(row)
        entry_at, exit_at = _corrected_times(work, row, body.entry_at, body.exit_at)
        fee, priced = await _price(work, row, entry_at, exit_at)
        details = {
            "entry_at_before": row.entry_at.isoformat(),
            "exit_at_before": row.exit_at.isoformat(),
            "entry_at_after": entry_at.isoformat(),
            "exit_at_after": exit_at.isoformat(),
        }
        row = await repository.update_session(
            work.session, row.session_id, entry_at=entry_at, exit_at=exit_at, fee=fee, priced=priced
        )
        row, refund_amount, refund_status = await _rebalance(work, row)
    elif body.action is OverrideAction.waive_fee:
        _require_closed(row)
        row = await repository.update_session(
            work.session, row.session_id, fee=0, settlement=Settlement.waived.value
        )
        row, refund_amount, refund_status = await _rebalance(work, row)
    else:
        if row.status == SessionStatus.closed.value:
            raise Conflict(f"Session {row.session_id} is closed already.", code="session_closed")
        entry_at, exit_at = _corrected_times(work, row, None, body.exit_at or work.now)
        fee, priced = await _price(work, row, entry_at, exit_at)
        row = await repository.update_session(
            work.session,
            row.session_id,
            exit_at=exit_at,
            exit_recorded_at=work.now,
            fee=fee,
            priced=priced,
        )
        row = await _close_as_debt(work, row) if fee else await _close(work, row, Settlement.free)
    override = await repository.insert_override(
        work.session,
        override_id=service.new_id(),
        session_id=row.session_id,
        lot_id=row.lot_id,
        action=body.action.value,
        operator=body.operator,
        reason=body.reason,
        fee_before=fee_before,
        fee_after=row.fee,
        refund_amount=refund_amount,
        refund_status=refund_status,
        details=details,
    )
    await _publish(
        work,
        events.SESSIONS_TOPIC,
        str(row.session_id),
        events.session_event(
            events.SESSION_OVERRIDDEN,
            row.session_id,
            {
                "lot_id": row.lot_id,
                "override_id": str(override.override_id),
                "action": body.action.value,
                "operator": body.operator,
                "fee_before": fee_before,
                "fee_after": row.fee,
                "refund_amount": refund_amount,
                "refund_status": refund_status,
            },
        ),
    )
    return _override_read(override)


# Disputes ---------------------------------------------------------------------------------------


async def _dispute_read(work: Work, row: SessionRow) -> DisputeRead:
    override = (
        await repository.get_override(work.session, row.override_id) if row.override_id else None
    )
    return DisputeRead(
        dispute_id=row.dispute_id,
        session_id=row.session_id,
        status=DisputeStatus(row.status),
        reason=DisputeReason(row.reason),
        detail=row.detail,
        claimed_entry_at=row.claimed_entry_at,
        claimed_exit_at=row.claimed_exit_at,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
        resolution_note=row.resolution_note,
        override=_override_read(override) if override is not None else None,
    )


async def open_dispute(
    work: Work, session_id: uuid.UUID, token: str, body: DisputeCreate
) -> DisputeRead:
    """A driver contests a closed session (wrong plate, wrong times…) with the receipt token
    shown at the exit: the proof of having been there, which no lookup hands out."""
    row = await _closed_session_with_token(work, session_id, token, ReceiptScope.exit)
    if body.reason is DisputeReason.wrong_times and not (
        body.claimed_entry_at or body.claimed_exit_at
    ):
        raise Unprocessable(
            "Say which times are right: claimed_entry_at and/or claimed_exit_at.",
            code="claim_required",
        )
    dispute = await repository.insert_dispute(
        work.session,
        dispute_id=service.new_id(),
        session_id=row.session_id,
        status=DisputeStatus.open.value,
        reason=body.reason.value,
        detail=body.detail,
        claimed_entry_at=body.claimed_entry_at,
        claimed_exit_at=body.claimed_exit_at,
    )
    if dispute is None:
        raise Conflict("This session already has an open dispute.", code="dispute_open")
    await _publish(
        work,
        events.SESSIONS_TOPIC,
        str(row.session_id),
        events.session_event(
            events.SESSION_DISPUTED,
            row.session_id,
            {
                "lot_id": row.lot_id,
                "dispute_id": str(dispute.dispute_id),
                "reason": body.reason.value,
            },
        ),
    )
    return await _dispute_read(work, dispute)


async def disputes_of_receipt(work: Work, session_id: uuid.UUID, token: str) -> list[DisputeRead]:
    row = await _closed_session_with_token(work, session_id, token, ReceiptScope.exit)
    return [
        await _dispute_read(work, dispute)
        for dispute in await repository.disputes_of_session(work.session, row.session_id)
    ]


async def list_disputes(work: Work, status: DisputeStatus | None, limit: int) -> list[DisputeRead]:
    rows = await repository.list_disputes(work.session, status.value if status else None, limit)
    return [await _dispute_read(work, row) for row in rows]


async def resolve_dispute(work: Work, dispute_id: uuid.UUID, body: DisputeResolve) -> DisputeRead:
    """Accept (the session is corrected and the difference refunded) or reject a dispute."""
    dispute = await repository.get_dispute(work.session, dispute_id, lock=True)
    if dispute is None:
        raise NotFound(f"No dispute {dispute_id}.", code="dispute_not_found")
    if dispute.status != DisputeStatus.open.value:
        raise Conflict(f"Dispute {dispute_id} is {dispute.status} already.", code="dispute_closed")
    override_id = None
    if body.outcome == "accepted":
        entry_at = body.entry_at or dispute.claimed_entry_at
        exit_at = body.exit_at or dispute.claimed_exit_at
        times = dispute.reason != DisputeReason.wrong_plate.value and (entry_at or exit_at)
        override = await apply_override(
            work,
            dispute.session_id,
            OverrideCreate(
                action=OverrideAction.correct_times if times else OverrideAction.waive_fee,
                operator=body.operator,
                reason=f"dispute {dispute_id}: {body.note}"[:500],
                entry_at=entry_at if times else None,
                exit_at=exit_at if times else None,
            ),
        )
        override_id = override.override_id
    dispute = await repository.update_dispute(
        work.session,
        dispute_id,
        status=body.outcome,
        resolved_at=work.now,
        resolution_note=body.note,
        override_id=override_id,
    )
    await _publish(
        work,
        events.SESSIONS_TOPIC,
        str(dispute.session_id),
        events.session_event(
            events.SESSION_DISPUTE_RESOLVED,
            dispute.session_id,
            {"dispute_id": str(dispute_id), "outcome": body.outcome},
        ),
    )
    return await _dispute_read(work, dispute)
