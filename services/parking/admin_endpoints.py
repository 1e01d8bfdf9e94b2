"""HTTP routes for operators (admin token): provisioning, sessions, overrides, disputes, audit."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from services.parking import audit, disputes, lots, overrides, session_reads, vehicles
from services.parking.audit_schemas import AuditReport
from services.parking.auth import AdminDep, ParkingDep
from services.parking.context import Parking
from services.parking.endpoints import (
    INVALID,
    DeviceId,
    LaneId,
    Limit,
    LotId,
)
from services.parking.schemas import (
    LOT_ID_PATTERN,
    Day,
    DeviceCreate,
    DeviceCredentials,
    DeviceRead,
    DisputeRead,
    DisputeResolve,
    DisputeStatus,
    LaneRead,
    LaneUpsert,
    LotRead,
    LotUpsert,
    OverrideCreate,
    OverrideRead,
    SessionRead,
    SessionStatus,
    TariffCreate,
    TariffRead,
    VehicleCreate,
    VehicleRead,
)
from services.parking.work import transaction
from shared.auth import INVALID_TOKEN
from shared.errors import problems

admin = APIRouter(prefix="/v1", dependencies=[AdminDep], responses=problems(INVALID_TOKEN))


# Operators: provisioning ------------------------------------------------------------------------


@admin.put(
    "/lots/{lot_id}",
    response_model=LotRead,
    tags=["provisioning"],
    responses=problems(INVALID),
)
async def upsert_lot(lot_id: LotId, body: LotUpsert, context: ParkingDep) -> LotRead:
    """Create or update a lot; capacities take effect at once (Redis), vehicles inside stay."""
    return await lots.change_reference(
        context, lambda session: lots.upsert_lot(session, context, lot_id, body)
    )


@admin.put(
    "/lots/{lot_id}/lanes/{lane_id}",
    response_model=LaneRead,
    tags=["provisioning"],
    responses=problems((404, "`lot_not_found`"), (409, "`lane_in_other_lot`"), INVALID),
)
async def upsert_lane(
    lot_id: LotId, lane_id: LaneId, body: LaneUpsert, context: ParkingDep
) -> LaneRead:
    """Create or update a lane: its direction and, for a dedicated lane, its vehicle type."""
    return await lots.change_reference(
        context, lambda session: lots.upsert_lane(session, lot_id, lane_id, body)
    )


@admin.post(
    "/devices",
    response_model=DeviceCredentials,
    status_code=201,
    tags=["provisioning"],
    responses=problems(
        (404, "`lot_not_found`"),
        (409, "`device_exists`"),
        (422, "`unknown_lane`, or invalid body"),
    ),
)
async def provision_device(body: DeviceCreate, context: ParkingDep) -> DeviceCredentials:
    """Provision a lane terminal or camera; the answer holds its secret, shown only once.

    The device signs every request with it (HMAC-SHA256, see the `X-Device-*` headers).
    """
    async with context.db.transaction() as session:
        return await lots.provision_device(session, context, body)


@admin.get("/devices", response_model=list[DeviceRead], tags=["provisioning"])
async def list_devices(
    context: ParkingDep,
    lot_id: Annotated[str | None, Query(pattern=LOT_ID_PATTERN)] = None,
) -> list[DeviceRead]:
    """Provisioned devices (never their secrets)."""
    async with context.db.transaction() as session:
        return await lots.list_devices(session, lot_id)


@admin.post(
    "/devices/{device_id}/revoke",
    response_model=DeviceRead,
    tags=["provisioning"],
    responses=problems((404, "`device_not_found`")),
)
async def revoke_device(device_id: DeviceId, context: ParkingDep) -> DeviceRead:
    """Disable a device for good (lost, stolen, replaced); refused within seconds."""
    async with context.db.transaction() as session:
        return await lots.revoke_device(session, context, device_id)


@admin.post(
    "/tariffs",
    response_model=TariffRead,
    status_code=201,
    tags=["tariffs"],
    responses=problems(
        (404, "`lot_not_found`"),
        (409, "`tariff_exists`"),
        (422, "`tariff_in_past`, `tariff_too_soon` (less than 5 minutes ahead), or invalid"),
    ),
)
async def create_tariff(body: TariffCreate, context: ParkingDep) -> TariffRead:
    """Add a dated tariff version (city-wide, or for one lot), effective at least 5 minutes
    ahead: sessions already priced keep their rules, and every lane knows it before it applies."""
    return await lots.change_reference(context, lambda session: lots.create_tariff(session, body))


@admin.post(
    "/vehicles",
    response_model=VehicleRead,
    status_code=201,
    tags=["vehicles"],
    responses=problems(
        (409, "`plate_registered` (to another owner), or the RFID tag is taken"),
        (422, "`invalid_plate`, or invalid body"),
        (503, "`payments_unavailable`: the wallet could not be opened; retry"),
    ),
)
async def register_vehicle(body: VehicleCreate, context: ParkingDep) -> VehicleRead:
    """Register a vehicle to its owner's vehicle wallet (opened in payments if needed).

    Its wallet then gets a hold at entry and pays at exit. Registering the same plate for the
    same owner again returns the registration; `account_qr` is what the owner's app shows.
    """
    async with context.db.transaction() as session:
        return await vehicles.register_vehicle(session, context, body)


@admin.get(
    "/vehicles/{vehicle_id}",
    response_model=VehicleRead,
    tags=["vehicles"],
    responses=problems((404, "`vehicle_not_found`")),
)
async def get_vehicle(vehicle_id: uuid.UUID, context: ParkingDep) -> VehicleRead:
    """A registered vehicle."""
    async with context.db.transaction() as session:
        return await vehicles.get_vehicle(session, context, vehicle_id)


# Operators: sessions, overrides, disputes, audit ------------------------------------------------


@admin.get("/sessions", response_model=list[SessionRead], tags=["sessions"])
async def list_sessions(
    context: ParkingDep,
    lot_id: Annotated[str | None, Query(pattern=LOT_ID_PATTERN)] = None,
    status: SessionStatus | None = None,
    needs_review: bool | None = None,
    limit: Limit = 100,
) -> list[SessionRead]:
    """Sessions, newest entry first; `needs_review=true` lists low-confidence reads,
    plate mismatches and repeated entries for an operator to check."""
    async with transaction(context) as work:
        return await session_reads.list_sessions(
            work,
            lot_id=lot_id,
            status=status,
            needs_review=needs_review,
            limit=limit,
        )


@admin.post(
    "/sessions/{session_id}/overrides",
    response_model=OverrideRead,
    status_code=201,
    tags=["sessions"],
    responses=problems(
        (404, "`session_not_found`"),
        (409, "`session_not_closed`, `session_closed`, `plate_already_inside`"),
        (422, "`invalid_plate`, `plate_required`, `exit_before_entry`, `timestamp_in_future`"),
        (503, "`payments_unavailable`: a refund could not be made; nothing changed, retry"),
    ),
)
async def override_session(
    session_id: uuid.UUID, body: OverrideCreate, context: ParkingDep
) -> OverrideRead:
    """A manual override by an operator, kept with who, why and the money moved; every one
    is listed in the revenue audit. Refunds go through payments (wallet payments only:
    VietQR payments need a bank payout, reported as `payout_required`)."""
    async with transaction(context) as work:
        return await overrides.apply_override(work, session_id, body)


@admin.get("/disputes", response_model=list[DisputeRead], tags=["sessions"])
async def list_disputes(
    context: ParkingDep, status: DisputeStatus | None = None, limit: Limit = 100
) -> list[DisputeRead]:
    """Drivers' disputes, oldest first (`status=open`: the operators' queue)."""
    async with transaction(context) as work:
        return await disputes.list_disputes(work, status, limit)


@admin.post(
    "/disputes/{dispute_id}/resolve",
    response_model=DisputeRead,
    tags=["sessions"],
    responses=problems(
        (404, "`dispute_not_found`"),
        (409, "`dispute_closed`"),
        (422, "`exit_before_entry`, `timestamp_in_future`, or invalid body"),
        (503, "`payments_unavailable`: the refund could not be made; retry"),
    ),
)
async def resolve_dispute(
    dispute_id: uuid.UUID, body: DisputeResolve, context: ParkingDep
) -> DisputeRead:
    """Accept or reject a dispute. Accepted: `wrong_times` reprices the session with the
    corrected times (the claim unless given here), anything else waives the fee; what was
    paid beyond the new fee is refunded to the wallet through payments."""
    async with transaction(context) as work:
        return await disputes.resolve_dispute(work, dispute_id, body)


CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "The audit as CSV"}
}


async def _audit(context: Parking, lot_id: str, day: Any) -> AuditReport:
    async with context.db.transaction() as session:
        facts = await audit.gather(session, context.payments, lot_id, day)
    return audit.build_report(facts)


def _csv(report: AuditReport) -> Response:
    return Response(
        audit.to_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": (
                f'attachment; filename="parking-audit-{report.lot_id}-{report.day}.csv"'
            )
        },
    )


@admin.get(
    "/audit/{lot_id}/{day}.csv",
    tags=["audit"],
    response_class=Response,
    responses={**CSV_RESPONSE, **problems((404, "`lot_not_found`"))},
)
async def audit_csv(lot_id: LotId, day: Annotated[Day, Path()], context: ParkingDep) -> Response:
    """The revenue audit of a lot for a day, as CSV (same as `?format=csv`)."""
    return _csv(await _audit(context, lot_id, day))


@admin.get(
    "/audit/{lot_id}/{day}",
    response_model=AuditReport,
    tags=["audit"],
    responses={**CSV_RESPONSE, **problems((404, "`lot_not_found`"))},
)
async def audit_report(
    lot_id: LotId,
    day: Annotated[Day, Path()],
    context: ParkingDep,
    output: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> Response | AuditReport:
    """Revenue audit of a lot for a day in Hanoi time: sessions × tariff vs payments vs ledger.

    Lists sessions without (full) payment, overpaid sessions, tariff mismatches, payments
    without a session and manual overrides; `totals.unexplained` is what none of them
    explains, 0 when every dong is accounted for. Payments' own figures come from its daily
    reconciliation (`payments_reported`, `ledger`; null with a `problems` line when payments
    cannot be reached).
    """
    report = await _audit(context, lot_id, day)
    return _csv(report) if output == "csv" else report
