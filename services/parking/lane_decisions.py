"""The entry and exit decisions at a lane: who is there, a place, the entry hold, the exit.

Each is written with its answer in one statement (see `LaneWork`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from pydantic import BaseModel
from starlette.responses import Response

from services.parking import events, lane_sql, plates, tokens
from services.parking.context import Device, Lane, Lot, Parking
from services.parking.occupancy import Count
from services.parking.schemas import (
    Direction,
    EntryCreate,
    EntryDecision,
    EntryMethod,
    EntryOutcome,
    ExitCreate,
    LaneEvent,
    Occupancy,
    SessionStatus,
)
from services.parking.session_state import SessionState
from services.parking.settlement import close_as_debt, exit_decision, price_exit, settle_exit
from services.parking.tariffs import VehicleType, tariff_in_force
from services.parking.vehicles import parse_plate
from services.parking.work import LaneWork
from shared.errors import Conflict, Forbidden, Unprocessable
from shared.events import OCCUPANCY_TOPIC, SESSION_OPENED, SESSIONS_TOPIC
from shared.ids import new_id
from shared.payments_client import PaymentsRefused, PaymentsUnavailable

logger = logging.getLogger("citypass.parking")

REPEAT_ENTRY_AFTER = timedelta(minutes=5)  # a second entry read later than this is suspicious


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
            read_plate = parse_plate(body.plate_read.plate)
        except Unprocessable as error:
            refused = error
    by_plate = body.account_qr is None and body.rfid_tag is None and read_plate is not None
    return LaneRead(read_plate, refused, read_plate.key if by_plate and read_plate else None)


class Begun(NamedTuple):
    lot: Lot
    lane: Lane
    read: LaneRead
    found: Any  # what the first statement read besides the key's claim


async def _begin(
    work: LaneWork, device: Device, body: LaneEvent, direction: Direction, statement: str
) -> Begun | Response:
    """The first statement (the key's claim with the lookups), then the checks in their order:
    a replay is answered before anything else is looked at, an unreadable plate last."""
    read = _read(body)
    found = await work.fetchrow(statement, *work.claim(), body.lot_id, read.lookup_key)
    if (replay := work.claimed(found)) is not None:
        return replay
    _check_time(work.context, body.occurred_at, work.now)
    lot, lane = _lane(work.context, device, body, direction)
    if read.refused is not None:
        raise read.refused
    return Begun(lot, lane, read, found)


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
            vehicle = await work.fetchrow(lane_sql.VEHICLE_BY_ID, vehicle_id)
        if vehicle is None:
            raise Unprocessable("Not a valid CityPass account QR.", code="invalid_account_qr")
        method = EntryMethod.account_qr
    elif body.rfid_tag is not None:
        vehicle = await work.fetchrow(lane_sql.VEHICLE_BY_RFID, body.rfid_tag.upper())
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
            found = await work.fetchrow(lane_sql.PLATE_AT_LOT, entry_lot, plate.key)
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


# Entry ------------------------------------------------------------------------------------------


async def enter(work: LaneWork, device: Device, body: EntryCreate) -> Response:
    """Decide at an entry lane: open (a new session, or a repeated read) or full."""
    context = work.context
    begun = await _begin(work, device, body, Direction.entry, lane_sql.ENTRY_BEGIN)
    if isinstance(begun, Response):
        return begun
    lot, lane, read, found = begun
    who = await _identify(work, body, read, found, entry_lot=lot.lot_id)
    vehicle_type = _vehicle_type(body, who, lane)
    if who.open_session_id is not None:
        existing = await work.fetchrow(lane_sql.LOCK_SESSION, who.open_session_id)
        if existing is not None and existing["status"] != SessionStatus.closed.value:
            return await _answer(work, await _already_inside(work, SessionState.of(existing), body))
    count = await work.admit(lot.lot_id, vehicle_type)
    if not count.admitted:
        work.publish(
            OCCUPANCY_TOPIC,
            lot.lot_id,
            events.entry_refused(lot.lot_id, lane.lane_id, vehicle_type, count, who.plate.masked()),
        )
        refused = await _first_seen(
            work, who, lane, vehicle_type, count, session_id=None, hold=(None, None), entry_at=None
        )
        return await _answer(work, refused)
    work.undo.add(lambda: context.occupancy.release(lot.lot_id, vehicle_type))
    session_id = new_id()
    hold_id, hold_amount, hold_status = await _place_hold(
        work, who, lot, vehicle_type, body, f"parking-hold:{device.device_id}:{work.request.key}"
    )
    held = hold_amount if hold_id is not None else None
    work.events = [
        (
            SESSIONS_TOPIC,
            str(session_id),
            events.session_event(
                SESSION_OPENED,
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
            OCCUPANCY_TOPIC,
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
    decision = await _first_seen(
        work,
        who,
        lane,
        vehicle_type,
        count,
        session_id=session_id,
        hold=(held, hold_status),
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
    raced = await work.fetchrow(lane_sql.LOCK_OPEN_SESSION, lot.lot_id, who.plate.key)
    assert raced is not None
    return await _answer(work, await _already_inside(work, SessionState.of(raced), body))


async def _first_seen(
    work: LaneWork,
    who: Identified,
    lane: Lane,
    vehicle_type: VehicleType,
    count: Count,
    *,
    session_id: uuid.UUID | None,
    hold: tuple[int | None, str | None],
    entry_at: datetime | None,
) -> EntryDecision:
    """The answer to a vehicle not inside yet: entered (its new session) or refused (full)."""
    entered = session_id is not None
    hold_amount, hold_status = hold
    return EntryDecision(
        decision=EntryOutcome.open if entered else EntryOutcome.full,
        reason="entered" if entered else "lot_full",
        session_id=session_id,
        lot_id=lane.lot_id,
        lane_id=lane.lane_id,
        vehicle_type=vehicle_type,
        plate=who.plate.display,
        registered=who.vehicle is not None,
        hold_amount=hold_amount,
        hold_status=hold_status,
        needs_review=bool(who.review),
        review_reasons=list(who.review),
        occupancy=_occupancy(count),
        outstanding_debt=await work.outstanding_debt(who.plate.key),
        entry_at=entry_at,
    )


def _occupancy(count: Count) -> Occupancy:
    return Occupancy(capacity=count.capacity, occupied=count.occupied, free=count.free)


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


async def _already_inside(work: LaneWork, row: SessionState, body: EntryCreate) -> EntryDecision:
    reasons = list(row.review_reasons)
    if body.occurred_at - row.entry_at > REPEAT_ENTRY_AFTER and "repeat_entry" not in reasons:
        reasons.append("repeat_entry")  # an exit was probably missed: an operator looks
        row = work.update_session(row, review_reasons=reasons)
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
        occupancy=_occupancy(count),
        outstanding_debt=await work.outstanding_debt(row.plate_key),
        entry_at=row.entry_at,
    )


# Exit -------------------------------------------------------------------------------------------


async def leave(work: LaneWork, device: Device, body: ExitCreate) -> Response:
    """Decide at an exit lane: open (paid, free, or a debt on the fallback) or pay by VietQR."""
    context = work.context
    begun = await _begin(work, device, body, Direction.exit, lane_sql.EXIT_BEGIN)
    if isinstance(begun, Response):
        return begun
    lot, lane, read, found = begun
    who = await _identify(work, body, read, found)
    if read.lookup_key == who.plate.key:
        session = found["session"]  # locked by the first statement
    else:
        session = await work.fetchrow(lane_sql.LOCK_OPEN_SESSION, lot.lot_id, who.plate.key)
    if session is None or session["session_id"] is None:
        since = work.now - context.settings.double_exit_window
        last = await work.fetchrow(lane_sql.LAST_EXIT_FOR_PLATE, lot.lot_id, who.plate.key, since)
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
    row: SessionState = SessionState.of(session)
    if row.status == SessionStatus.awaiting_payment.value:
        if body.offline:  # the lane lost its link while the VietQR was shown, and let it out
            row = await close_as_debt(work, row)
        # else the same vehicle, still paying at the barrier: its pending decision again
        return await _answer(work, exit_decision(context, row))
    if body.occurred_at < row.entry_at:
        raise Unprocessable(
            f"The exit ({body.occurred_at.isoformat()}) is before the entry"
            f" ({row.entry_at.isoformat()}).",
            code="exit_before_entry",
        )
    fee, priced = await price_exit(work, row, row.entry_at, body.occurred_at)
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
    row = await settle_exit(work, row, fee, exit_values, offline=body.offline)
    return await _answer(work, exit_decision(context, row))
