"""Reading parking sessions: one (for its lane or an operator) or a filtered list."""

from __future__ import annotations

import uuid

from services.parking import session_queries
from services.parking.context import Device
from services.parking.lots import price_lines
from services.parking.schemas import DebtStatus, EntryMethod, SessionRead, SessionStatus, Settlement
from services.parking.session_state import SessionState
from services.parking.settlement import session_row
from services.parking.tariffs import VehicleType
from services.parking.work import Work
from shared.errors import Forbidden


def session_read(row: SessionState) -> SessionRead:
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
        lines=price_lines((row.priced or {}).get("lines", [])),
        settlement=Settlement(row.settlement) if row.settlement else None,
        paid_amount=row.paid_amount,
        debt_status=DebtStatus(row.debt_status) if row.debt_status else None,
        payment_request_id=row.payment_request_id,
        payment_reference=row.payment_reference,
        closed_at=row.closed_at,
    )


async def get_session(work: Work, device: Device | None, session_id: uuid.UUID) -> SessionRead:
    row = await session_row(work, session_id)
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
    rows = await session_queries.list_sessions(
        work.session,
        lot_id=lot_id,
        status=status.value if status else None,
        needs_review=needs_review,
        limit=limit,
    )
    return [session_read(row) for row in rows]
