"""HTTP routes for lane devices and drivers: parse, authenticate, call the rules, shape the answer.

Three kinds of callers:
- lane terminals and cameras, which sign every request (`X-Device-*`, shared/devicesigning.py)
  and send an `Idempotency-Key` (a UUID per vehicle event) with every decision;
- operators and back offices, with `Authorization: Bearer <PARKING_ADMIN_TOKEN>` (their routes
  are in admin_endpoints.py);
- drivers and the public: lots, occupancy, tariffs, quotes, and receipts opened with a
  receipt token (tokens.py says which token grants what).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

from services.parking import (
    disputes,
    lane_decisions,
    lane_sql,
    lots,
    receipts,
    session_reads,
    settlement,
)
from services.parking.auth import (
    DeviceDep,
    DeviceOrAdminDep,
    ParkingDep,
    device_signature,
    lane_device,
)
from services.parking.context import Device, Parking
from services.parking.schemas import (
    DEVICE_ID_PATTERN,
    LANE_ID_PATTERN,
    LOT_ID_PATTERN,
    DisputeCreate,
    DisputeRead,
    EntryCreate,
    EntryDecision,
    ExitCreate,
    ExitDecision,
    LotRead,
    Moment,
    OccupancyRead,
    QuoteRead,
    ReceiptFound,
    ReceiptRead,
    SessionRead,
    TariffRead,
)
from services.parking.tariffs import VehicleType
from services.parking.work import LaneWork, PendingNonce, Undo, Work, transaction
from shared.devicesigning import DeviceAuthError, nonce_key
from shared.errors import Unprocessable, problems
from shared.hot import HotRoute, HotRouter
from shared.idempotency import IdempotencyDep, IdempotentRequest
from shared.ratelimit import client_address

LotId = Annotated[str, Path(pattern=LOT_ID_PATTERN, examples=["HK-01"])]
LaneId = Annotated[str, Path(pattern=LANE_ID_PATTERN, examples=["HK-01-IN1"])]
DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN)]
ReceiptToken = Annotated[
    str,
    Query(
        min_length=16,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description=(
            "The receipt token shown at the exit lane, or the read token of a lookup"
            " (which only reads the receipt)"
        ),
    ),
]
Limit = Annotated[int, Query(ge=1, le=500)]
Command = TypeVar("Command", EntryCreate, ExitCreate)


DEVICE_AUTH = (401, "Not signed, badly signed, stale, replayed, or unknown/disabled device")
INVALID = (422, "Invalid body or values; `code` says which")

public = APIRouter(prefix="/v1")
OVERLOADED = (503, "`overloaded`: too many decisions in progress; retry after `Retry-After`")

lanes = APIRouter(prefix="/v1", tags=["lanes"], responses=problems(DEVICE_AUTH))


LANE_BODY_LIMIT = 16 * 1024  # a lane event is well under 1 KiB

# Entries and exits are hot routes (shared.hot): FastAPI's routing and dependency machinery
# cost about as much CPU as the decision's own work.
lane_routes = HotRouter[Parking](
    tags=["lanes"],
    responses=problems(DEVICE_AUTH),
    security=device_signature,
    max_body_bytes=LANE_BODY_LIMIT,
)


async def _lane(
    context: Parking,
    route: HotRoute[Command],
    scope: Scope,
    body: bytes,
    decide: Callable[[LaneWork, Device, Command], Awaitable[Response]],
) -> Response:
    """Checks in the order FastAPI makes them: the device signature (401), the
    Idempotency-Key (400 when missing), then the header's and the body's shape (one 422)."""
    headers = Headers(scope=scope)
    device, signed = await lane_device(context, scope, headers, body)
    nonce = PendingNonce(
        context.occupancy,
        device.device_id,
        nonce_key(signed.device_id, signed.nonce, tag=device.lot_id),
    )
    try:
        key, _, command = route.call(scope, body)
        return await _lane_decision(context, key, nonce, lambda work: decide(work, device, command))
    except Exception as refused:
        if not nonce.claimed and not isinstance(refused, DeviceAuthError):
            # As when the nonce was claimed first: a replay is refused whatever else is wrong.
            with contextlib.suppress(RedisError, OSError):
                await nonce.claim()
        raise


async def _lane_decision(
    context: Parking,
    key: IdempotentRequest,
    nonce: PendingNonce,
    decide: Callable[[LaneWork], Awaitable[Response]],
) -> Response:
    """An entry or exit, once per Idempotency-Key: a claim statement, Redis and payments as
    the decision needs, then one statement that commits it all; a retry gets the first
    answer's bytes. What cannot be rolled back is compensated if the decision fails."""
    undo = Undo()
    with context.decisions.admit():
        lane = await lane_sql.LaneConnection.open(context.db)
        try:
            response = await decide(
                LaneWork(
                    context=context, connection=lane.connection, request=key, nonce=nonce, undo=undo
                )
            )
            await nonce.claim()  # a replayed answer too
        except BaseException:
            await undo.run()
            with contextlib.suppress(Exception):  # a connection that cannot is closed
                await lane.close()
            raise
    lane.close_soon()
    return response


async def _decide(
    context: Parking, key: IdempotentRequest, action: Callable[[Work], Awaitable[BaseModel]]
) -> Response:
    """Run a lane decision once per Idempotency-Key; a retry gets the first answer's bytes."""
    undo = Undo()
    with context.decisions.admit():
        try:
            async with context.idempotency.call(key) as call:
                if call.replay is not None:
                    return call.replay
                work = Work(context=context, session=call.session, undo=undo)
                result = await action(work)
                await work.flush()
                response = await call.respond(200, result)
        except BaseException:
            await undo.run()
            raise
    return response


# Lots, tariffs, quotes (public) -----------------------------------------------------------------


@public.get("/lots", response_model=list[LotRead], tags=["lots"])
async def list_lots(context: ParkingDep) -> list[LotRead]:
    """Every parking lot with its capacity per vehicle type and its lanes."""
    async with context.db.transaction() as session:
        return await lots.list_lots(session)


@public.get(
    "/lots/{lot_id}",
    response_model=LotRead,
    tags=["lots"],
    responses=problems((404, "`lot_not_found`")),
)
async def get_lot(lot_id: LotId, context: ParkingDep) -> LotRead:
    """One parking lot, with its lanes."""
    async with context.db.transaction() as session:
        return await lots.get_lot(session, lot_id)


@public.get(
    "/lots/{lot_id}/occupancy",
    response_model=OccupancyRead,
    tags=["lots"],
    responses=problems((404, "`lot_not_found`")),
)
async def get_occupancy(lot_id: LotId, context: ParkingDep) -> OccupancyRead:
    """Places, vehicles inside and free places per vehicle type, live (Redis counters)."""
    return await lots.occupancy(context, lot_id)


@public.get(
    "/lots/{lot_id}/quote",
    response_model=QuoteRead,
    tags=["tariffs"],
    responses=problems(
        (404, "`lot_not_found`"),
        (422, "`exit_before_entry`, `stay_too_long` (over 31 days), `no_tariff`, or invalid"),
    ),
)
async def quote(
    lot_id: LotId,
    vehicle_type: VehicleType,
    entry_at: Annotated[Moment, Query(description="With its offset, e.g. +07:00")],
    exit_at: Annotated[Moment, Query(description="With its offset")],
    context: ParkingDep,
) -> QuoteRead:
    """What a stay would cost, line by line, with the dated tariffs in force along the way."""
    if exit_at - entry_at > lots.QUOTE_LIMIT:
        raise Unprocessable("Quotes cover at most 31 days.", code="stay_too_long")
    async with context.db.transaction() as session:
        return await lots.quote(session, lot_id, vehicle_type, entry_at, exit_at)


@public.get("/tariffs", response_model=list[TariffRead], tags=["tariffs"])
async def list_tariffs(
    context: ParkingDep,
    lot_id: Annotated[
        str | None, Query(pattern=LOT_ID_PATTERN, description="Also the lot's own versions")
    ] = None,
    vehicle_type: VehicleType | None = None,
) -> list[TariffRead]:
    """Dated tariff versions: the city's defaults (`lot_id` null) and lots' own.

    A session is priced by the version in force at each moment (a lot's own first, then the
    city's), so a stay across a tariff change pays each part by its rules.
    """
    async with context.db.transaction() as session:
        return await lots.list_tariffs(session, lot_id, vehicle_type)


# Lane devices -----------------------------------------------------------------------------------


@lane_routes.post(
    "/v1/entries",
    body=EntryCreate,
    idempotent=True,
    response_model=EntryDecision,
    responses=problems(
        (400, "`idempotency_key_missing`"),
        (403, "`device_not_in_lot`, `device_not_on_lane`"),
        (409, "`idempotency_key_in_flight`: the first request with this key is still running"),
        (
            422,
            "`invalid_plate`, `unknown_lot`, `unknown_lane`, `wrong_lane_direction`,"
            " `lane_disabled`, `timestamp_in_future`, `timestamp_too_old`, `invalid_account_qr`,"
            " `unknown_rfid_tag`, `idempotency_key_reused`, `validation_error`",
        ),
        OVERLOADED,
    ),
)
async def enter(
    context: Parking, route: HotRoute[EntryCreate], scope: Scope, body: bytes
) -> Response:
    """A vehicle at an entry lane: open the barrier or not.

    Identify the vehicle by a plate read (camera: plate as read, confidence, image reference),
    by the owner's account QR, or by an RFID tag (a plate read may come along; a mismatch is
    flagged). Plates are normalised (`29A-123.45`, `29-B1 234.56`…); a read below the
    confidence threshold still opens but flags the session for review and never touches a
    wallet. `occurred_at` is the device's time of the event (not in the future; offline lanes
    may upload up to 7 days late).

    Answers 200 with `decision`:
    - `open` / `entered`: a new session (`session_id`); a registered vehicle gets a hold on
      its wallet (`hold_status` `held`, or `insufficient_funds`/`payments_unavailable`: it
      then pays at exit). `outstanding_debt` is what the plate still owes: show it.
    - `open` / `already_inside`: the same plate is inside already (a repeated read).
    - `full` / `lot_full`: no place for this vehicle type; keep the barrier closed.

    Send a fresh `Idempotency-Key` (UUID) per vehicle event and reuse it on retries.
    """
    return await _lane(context, route, scope, body, lane_decisions.enter)


@lane_routes.post(
    "/v1/exits",
    body=ExitCreate,
    idempotent=True,
    response_model=ExitDecision,
    responses=problems(
        (400, "`idempotency_key_missing`"),
        (403, "`device_not_in_lot`, `device_not_on_lane`"),
        (
            409,
            "`no_open_session` (no entry recorded for this plate), `already_exited` (a double"
            " exit; `session_id` and `exit_at` say when), `idempotency_key_in_flight`",
        ),
        (
            422,
            "`invalid_plate`, `unknown_lot`, `unknown_lane`, `wrong_lane_direction`,"
            " `timestamp_in_future`, `exit_before_entry`, `no_tariff`, `validation_error`…",
        ),
        (
            503,
            "`payments_unavailable`: only when the fallback is disabled; retry. `overloaded`:"
            " too many decisions in progress; retry after `Retry-After`",
        ),
    ),
)
async def leave(
    context: Parking, route: HotRoute[ExitCreate], scope: Scope, body: bytes
) -> Response:
    """A vehicle at an exit lane: the fee, and open the barrier or show a VietQR.

    The fee is computed from entry to `occurred_at` with the dated tariffs (`lines` shows
    each rule applied). Answers 200 with `decision`:
    - `open`: `free` (grace period), `paid_from_wallet` (the entry hold captured for the
      fee, the rest released; or the wallet charged), or `debt_recorded` (the fallback:
      payments unreachable, or `offline: true`; the plate is billed later, never cash).
    - `pay` / `payment_required`: render `payment.qr` (a dynamic VietQR for the exact fee,
      its reference in field 62) and poll `GET /v1/sessions/{session_id}/exit-status` until
      it says `open` (the bank's signed notification arrived). After `fallback_after` the
      lane may let the vehicle out with `POST /v1/sessions/{session_id}/fallback-exit`.

    A vehicle already waiting at the barrier gets its pending decision again. Show and print
    `receipt_code`: with the plate it finds the receipt again, read only. Show `receipt_token`
    to the driver as a QR: with the session id it opens the receipt and lets the driver dispute
    it, and no other route hands it out.
    """
    return await _lane(context, route, scope, body, lane_decisions.leave)


@lanes.get(
    "/sessions/{session_id}/exit-status",
    response_model=ExitDecision,
    responses=problems(
        (403, "`device_not_in_lot`"),
        (404, "`session_not_found`"),
        (409, "`not_at_exit`: the vehicle has not been read at an exit"),
    ),
)
async def exit_status(
    session_id: uuid.UUID, device: DeviceOrAdminDep, context: ParkingDep
) -> ExitDecision:
    """The current exit decision of a session: poll it (about once a second) after `pay`.

    `decision` turns `open` (`paid_by_vietqr`) as soon as the bank's notification reached
    payments and parking; a signed device of the lot or an operator may ask.
    """
    async with transaction(context) as work:
        return await settlement.exit_status(work, device, session_id)


@lanes.post(
    "/sessions/{session_id}/fallback-exit",
    response_model=ExitDecision,
    responses=problems(
        (400, "`idempotency_key_missing`"),
        (403, "`device_not_in_lot`"),
        (404, "`session_not_found`"),
        (
            409,
            "`payment_wait_not_over` (with `fallback_after`), `fallback_disabled`, `not_at_exit`",
        ),
        OVERLOADED,
    ),
)
async def fallback_exit(
    session_id: uuid.UUID, device: DeviceDep, key: IdempotencyDep, context: ParkingDep
) -> Response:
    """The bank is slow: let the vehicle out now and bill the plate later as a debt.

    Allowed once the VietQR has been shown for the configured wait (`fallback_after`). The
    VietQR stays valid: paying it later settles the debt; the receipt shows what is owed.
    """
    return await _decide(
        context, key, lambda work: settlement.fallback_exit(work, device, session_id)
    )


@lanes.get(
    "/sessions/{session_id}",
    response_model=SessionRead,
    tags=["sessions"],
    responses=problems((403, "`device_not_in_lot`"), (404, "`session_not_found`")),
)
async def get_session(
    session_id: uuid.UUID, device: DeviceOrAdminDep, context: ParkingDep
) -> SessionRead:
    """One session in full (plate unmasked): for a signed device of its lot, or operators."""
    async with transaction(context) as work:
        return await session_reads.get_session(work, device, session_id)


# Receipts and disputes (drivers) ----------------------------------------------------------------


@public.get(
    "/receipts/{session_id}",
    response_model=ReceiptRead,
    tags=["receipts"],
    responses=problems(
        (404, "`receipt_not_found`: unknown session or wrong token"),
        (409, "`session_not_closed`"),
    ),
)
async def get_receipt(
    session_id: uuid.UUID, token: ReceiptToken, context: ParkingDep
) -> ReceiptRead:
    """The receipt of a parking session: lot, masked plate, times (Hanoi), the tariff rules
    applied, amount, payment reference, and what is still owed (with its VietQR)."""
    async with transaction(context) as work:
        return await receipts.receipt(work, session_id, token)


@public.get(
    "/receipts",
    response_model=ReceiptFound,
    tags=["receipts"],
    responses=problems(
        (404, "`receipt_not_found`: no receipt of this plate has this code"),
        (422, "`invalid_plate`, `invalid_receipt_code`, or invalid values"),
        (
            429,
            "`too_many_requests`: this client address has made its lookups for the period;"
            " retry after `Retry-After` seconds",
        ),
        (503, "`rate_limit_unavailable`: the limit cannot be checked; retry"),
    ),
)
async def find_receipt(
    request: Request,
    plate: Annotated[str, Query(min_length=1, max_length=20, examples=["29A-123.45"])],
    code: Annotated[
        str,
        Query(
            min_length=10,
            max_length=16,
            description=(
                "The receipt code printed on the receipt and shown at the exit (`K7QMD-3XRW9`;"
                " any case, dashes and spaces ignored)"
            ),
            examples=["K7QMD-3XRW9"],
        ),
    ],
    context: ParkingDep,
) -> ReceiptFound:
    """Find a receipt again with the plate and the receipt code printed on it.

    The answer carries `read_token`, which reopens this receipt
    (`GET /v1/receipts/{session_id}?token=…`) and grants nothing else: listing or opening a
    dispute needs the receipt token shown at the exit lane. Each client address may look up
    `PARKING_RECEIPT_LOOKUPS_PER_CLIENT` times (10) per `PARKING_RECEIPT_LOOKUP_PERIOD` (10
    minutes), found or not; then 429 with `Retry-After`. Codes find the receipts of the last
    `PARKING_RECEIPT_LOOKUP_HORIZON` (90 days).
    """
    await context.receipt_lookups.hit(context.runtime.kv, client_address(request))
    async with transaction(context) as work:
        return await receipts.find_receipt(work, plate, code)


@public.post(
    "/receipts/{session_id}/disputes",
    response_model=DisputeRead,
    status_code=201,
    tags=["receipts"],
    responses=problems(
        (403, "`exit_token_required`: a lookup's read token cannot open a dispute"),
        (404, "`receipt_not_found`"),
        (409, "`dispute_open` (one at a time), `session_not_closed`"),
        (422, "`claim_required` (wrong_times without a claimed time), or invalid body"),
    ),
)
async def open_dispute(
    session_id: uuid.UUID, token: ReceiptToken, body: DisputeCreate, context: ParkingDep
) -> DisputeRead:
    """Dispute a session: not my vehicle (`wrong_plate`), wrong entry/exit times
    (`wrong_times`, with the claimed times), or `other`. An operator resolves it; an accepted
    dispute is refunded through payments. `token` must be the receipt token shown at the exit
    lane: a lookup's read token is refused (403)."""
    async with transaction(context) as work:
        return await disputes.open_dispute(work, session_id, token, body)


@public.get(
    "/receipts/{session_id}/disputes",
    response_model=list[DisputeRead],
    tags=["receipts"],
    responses=problems(
        (403, "`exit_token_required`: a lookup's read token cannot list disputes"),
        (404, "`receipt_not_found`"),
        (409, "`session_not_closed`"),
    ),
)
async def receipt_disputes(
    session_id: uuid.UUID, token: ReceiptToken, context: ParkingDep
) -> list[DisputeRead]:
    """The disputes of a session and how they were resolved (with the exit's receipt token)."""
    async with transaction(context) as work:
        return await disputes.disputes_of_receipt(work, session_id, token)
