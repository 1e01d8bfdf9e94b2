"""What parking publishes (through the outbox) and what it consumes.

`parking.sessions`, keyed by the session id (its events stay in order):
- `citypass.parking.session.opened.v1`: a vehicle entered (method, registered, hold, review).
- `citypass.parking.session.payment_required.v1`: at the exit, a VietQR for the exact fee.
- `citypass.parking.session.closed.v1`: the vehicle left; fee, tariff lines, settlement.
- `citypass.parking.session.debt_settled.v1`: a debt (fallback exit) was paid later.
- `citypass.parking.session.overridden.v1`: an operator changed a session (audit trail).
- `citypass.parking.session.disputed.v1` / `.dispute_resolved.v1`: a driver's dispute.

`parking.occupancy`, keyed by the lot id:
- `citypass.parking.occupancy.changed.v1`: a vehicle in or out; `sequence` orders the changes
  of a lot (consumers keep the highest), `occupied`/`capacity`/`free` per vehicle type.
- `citypass.parking.entry.refused.v1`: a vehicle was turned away because the lot was full.

Plates leave parking masked (``29A-***.45``): events are for dashboards, not for tracking cars.

Consumed, from `payments.ledger` (consumer group `parking`, deduplicated by event id):
- `citypass.payments.payment_request.paid.v1` with a `parking_session_id`: the VietQR at the
  barrier (or a debt's) was paid: the session closes and the barrier opens.
- `citypass.payments.transfer.posted.v1` with `source` `parking`: kept for the revenue audit.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from services.parking.occupancy import Count
from services.parking.tariffs import VehicleType
from shared.events import ENTRY_REFUSED, OCCUPANCY_CHANGED, Consumed, Event

SOURCE = "/citypass/parking"
CONSUMER_GROUP = "parking"


class PaymentRequestPaid(Consumed):
    """`citypass.payments.payment_request.paid.v1`; parking's own carry a session id."""

    parking_session_id: uuid.UUID | None = None
    payment_request_id: uuid.UUID
    transfer_id: uuid.UUID
    amount: int
    reference: str | None = None


class TransferPosted(Consumed):
    """`citypass.payments.transfer.posted.v1`; parking keeps its lots' revenue movements."""

    transfer_id: uuid.UUID
    kind: str
    amount: int
    source: str | None = None
    lot_id: str | None = None
    hold_id: uuid.UUID | None = None
    payment_request_id: uuid.UUID | None = None
    original_transfer_id: uuid.UUID | None = None


def session_event(kind: str, session_id: uuid.UUID, data: dict[str, Any]) -> Event:
    return Event(
        type=kind,
        source=SOURCE,
        subject=str(session_id),
        data={"session_id": str(session_id)} | data,
    )


def occupancy_changed(
    lot_id: str,
    vehicle_type: VehicleType,
    count: Count,
    *,
    change: int,
    session_id: uuid.UUID,
    at: datetime,
) -> Event:
    return Event(
        type=OCCUPANCY_CHANGED,
        source=SOURCE,
        subject=lot_id,
        data={
            "lot_id": lot_id,
            "vehicle_type": vehicle_type.value,
            "change": change,
            "occupied": count.occupied,
            "capacity": count.capacity,
            "free": count.free,
            "sequence": count.sequence,
            "session_id": str(session_id),
            "at": at.isoformat(),
        },
    )


def entry_refused(
    lot_id: str, lane_id: str, vehicle_type: VehicleType, count: Count, plate_masked: str | None
) -> Event:
    return Event(
        type=ENTRY_REFUSED,
        source=SOURCE,
        subject=lot_id,
        data={
            "lot_id": lot_id,
            "lane_id": lane_id,
            "vehicle_type": vehicle_type.value,
            "reason": "lot_full",
            "occupied": count.occupied,
            "capacity": count.capacity,
            "plate": plate_masked,
        },
    )
