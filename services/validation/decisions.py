"""What a decision says: the gate's answer and its events, from the decision's context and the
Redis script's reply.

The script appends (context, reply) to its shard's events stream in the same atomic step that
marks the QR used, so the event is durable before the gate hears the answer. The gate builds its
answer, and the relay (outbox.py) builds the events, with the functions below: both read the
same two inputs, so they cannot disagree, and the relay can rebuild an event any number of
times with the same id and bytes (consumers deduplicate on the id).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import orjson

from services.validation import events
from services.validation.repository import StateOutcome, Trip, parse_outcome
from services.validation.rules import (
    Action,
    Decision,
    FareTable,
    GatePlace,
    Reason,
    TicketKind,
    display,
)
from shared.events import ALERTS_TOPIC, VALIDATIONS_TOPIC, Event
from shared.logging import request_id_var

Record = tuple[str, str, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers

_IDS = uuid.UUID("6f1c3c1e-2b7a-4d0e-9a51-0c1d2e3f4a5b")  # namespace of derived event ids

_OUTCOME_REASONS = {
    "ok": Reason.ok,
    "replayed": Reason.replayed,
    "no_rides_left": Reason.no_rides_left,
    "already_inside": Reason.already_inside,
    "not_inside": Reason.not_inside,
}


def context(
    validation_id: str,
    now: int,
    scanned: float,
    gate: GatePlace,
    fares: FareTable,
    **fields: Any,
) -> dict[str, Any]:
    """What a decision's answer and events need besides the script's reply (the script stores
    it with the reply); the code's fields stay None until it could be read."""
    return {
        "vid": validation_id,
        "now": now,
        "scanned": scanned,
        "gate": gate.gate_id,
        "station": gate.station,
        "line": fares.line_of(gate.station),
        "route": gate.route,
        "ticket": None,
        "product": None,
        "category": None,
        "qr_at": None,
        "counter": None,
        "rid": request_id_var.get(),
        **fields,
    }


def derived_id(validation_id: str, purpose: str) -> str:
    """The id of an event that follows from a decision: the same whenever it is rebuilt."""
    return str(uuid.uuid5(_IDS, f"{validation_id}:{purpose}"))


def record(topic: str, key: str, event: Event) -> Record:
    return topic, key, event.value(), event.headers()


def trip_data(trip: Trip) -> dict[str, Any]:
    return {
        "validation_id": trip.validation_id,
        "station": trip.station,
        "entered_at": events.iso(trip.at),
    }


# Online decisions ---------------------------------------------------------------------------------


def fare_of(
    fares: FareTable,
    accepted: bool,
    kind: str | None,
    action: Action,
    closed: Trip | None,
    station: str | None,
    route: str | None,
) -> int | None:
    """A stored-value ticket pays at a metro exit (by distance) and at a bus tap (by route);
    passes and single rides pay nothing at the gate. `fares`: the version in force at the
    decision's time."""
    if not accepted or kind != TicketKind.stored_value.value:
        return None
    if action is Action.exit and closed is not None and station:
        return fares.trip_fare(closed.station, station)
    if action is Action.tap and route:
        return fares.bus_fare(route)
    return None


def reason_of(state: StateOutcome) -> Reason:
    return _OUTCOME_REASONS.get(state.outcome) or Reason(state.outcome)


def answer(ctx: dict[str, Any], state: StateOutcome, fares: FareTable) -> dict[str, Any]:
    """The gate's answer (the event's data adds to it: `event_data`); `fares` is the version
    in force at `ctx["now"]`, the decision's time."""
    reason = reason_of(state)
    accepted = reason is Reason.ok
    action = Action(state.action) if accepted and state.action else Action.none
    fare = fare_of(
        fares, accepted, state.kind or None, action, state.closed_trip, ctx["station"], ctx["route"]
    )
    message_vi, message_en = display(reason, action, rides_left=state.rides_left, fare=fare)
    body: dict[str, Any] = {
        "validation_id": ctx["vid"],
        "decision": (Decision.accept if accepted else Decision.reject).value,
        "reason": reason.value,
        "reason_detail": ctx["detail"],
        "action": action.value,
        "message_vi": message_vi,
        "message_en": message_en,
        "ticket_id": ctx["ticket"],
        "product": ctx["product"],
        "remaining_rides": state.rides_left,
        "fare": fare,
        "balance": state.balance,
        "gate_id": ctx["gate"],
        "decided_at": events.iso(ctx["now"]),
    }
    return body


def event_data(ctx: dict[str, Any], state: StateOutcome, body: dict[str, Any]) -> dict[str, Any]:
    """What the event says beyond the gate's answer (built by the relay, off the gate path)."""
    qr_at = ctx["qr_at"]
    return {
        **body,
        "station": ctx["station"],
        "line": ctx["line"],
        "route": ctx["route"],
        "kind": state.kind or None,
        "rider_category": ctx["category"],
        "wallet_account_id": state.wallet,
        "qr_at": events.iso(qr_at) if qr_at is not None else None,
        "qr_counter": ctx["counter"],
        "scanned_at": events.iso(ctx["scanned"]),
        "entry": trip_data(state.closed_trip) if state.closed_trip else None,
        "offline": False,
    }


def decision_records(networks: FaresAt, ctx: dict[str, Any], reply: str) -> list[Record]:
    state = parse_outcome(reply)
    fares = networks.at(ctx["now"])
    body = answer(ctx, state, fares)
    data = event_data(ctx, state, body)
    key = ctx["ticket"] or ctx["gate"]
    accepted = body["decision"] == Decision.accept.value
    out = [
        record(
            VALIDATIONS_TOPIC,
            key,
            events.validation(data, accepted=accepted, at=ctx["now"], request_id=ctx["rid"]),
        )
    ]
    if state.auto_closed_trip is not None:
        out.append(
            auto_closed_record(
                fares, ctx["ticket"], state.auto_closed_trip, state.kind, state.wallet, ctx["now"]
            )
        )
    return out


def auto_closed_record(
    fares: FareTable, ticket_id: str, trip: Trip, kind: str, wallet: str | None, closed_at: int
) -> Record:
    fare = fares.max_trip_fare(trip.station) if kind == TicketKind.stored_value.value else 0
    return record(
        VALIDATIONS_TOPIC,
        ticket_id,
        events.trip_auto_closed(
            ticket_id=ticket_id,
            entry_validation_id=trip.validation_id,
            entry_station=trip.station,
            entered_at=trip.at,
            closed_at=closed_at,
            fare=fare,
            kind=kind,
            wallet_account_id=wallet,
            id=derived_id(trip.validation_id, "auto_closed"),
        ),
    )


def closed_records(networks: FaresAt, ctx: dict[str, Any], reply: str) -> list[Record]:
    """The sweeper closed a trip left open."""
    station, at, kind, wallet = reply.split("|")
    trip = Trip(ctx["vid"], station, int(at))
    fares = networks.at(ctx["now"])
    return [auto_closed_record(fares, ctx["ticket"], trip, kind, wallet or None, ctx["now"])]


# Offline decisions uploaded later -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    """What the upload script's reply (see RECONCILE) means for the gate and for the events."""

    fare: int | None
    conflict: bool
    kind: str | None
    wallet: str | None
    closed: Trip | None
    other_uses: list[str]


def upload_outcome(ctx: dict[str, Any], reply: list[str], fares: FareTable) -> UploadOutcome:
    """`fares`: the version in force when the gate scanned the code (`ctx["scanned"]`)."""
    accepted = ctx["decision"] == Decision.accept.value
    kind = reply[1] if len(reply) > 1 else None
    closed = Trip(reply[3], reply[4], int(reply[5])) if len(reply) > 5 and reply[3] else None
    others = reply[6:]
    return UploadOutcome(
        fare=fare_of(
            fares, accepted, kind, Action(ctx["action"]), closed, ctx["station"], ctx["route"]
        ),
        conflict=accepted and bool(others),
        kind=kind,
        wallet=(reply[2] or None) if len(reply) > 2 else None,
        closed=closed,
        other_uses=others,
    )


def upload_records(networks: FaresAt, ctx: dict[str, Any], reply: str) -> list[Record]:
    outcome = upload_outcome(ctx, orjson.loads(reply), networks.at(ctx["scanned"]))
    accepted = ctx["decision"] == Decision.accept.value
    out: list[Record] = []
    ticket_id = ctx["ticket"]
    vid = ctx["vid"]
    if outcome.conflict:
        uses = [{"gate_id": ctx["gate"], "validation_id": vid}]
        for other in outcome.other_uses:
            other_gate, _, other_vid = other.partition("|")
            uses.append({"gate_id": other_gate, "validation_id": other_vid})
        out.append(
            record(
                ALERTS_TOPIC,
                ticket_id,
                events.duplicate_use(
                    ticket_id=ticket_id,
                    qr_at=ctx["qr_at"],
                    counter=ctx["counter"],
                    uses=uses,
                    detail=f"One dynamic QR was accepted at {len(uses)} gates.",
                    id=derived_id(vid, "duplicate_use"),
                ),
            )
        )
    qr_at = ctx["qr_at"]
    data = {
        "validation_id": vid,
        "decision": ctx["decision"],
        "reason": ctx["reason"],
        "reason_detail": None,
        "action": ctx["action"],
        "ticket_id": ticket_id,
        "product": ctx["product"],
        "remaining_rides": None,
        "fare": outcome.fare,
        "balance": None,
        "gate_id": ctx["gate"],
        "decided_at": events.iso(ctx["scanned"]),
        "station": ctx["station"],
        "line": ctx["line"],
        "route": ctx["route"],
        "kind": outcome.kind,
        "rider_category": ctx["category"],
        "wallet_account_id": outcome.wallet,
        "qr_at": events.iso(qr_at) if qr_at is not None else None,
        "qr_counter": ctx["counter"],
        "scanned_at": events.iso(ctx["scanned"]),
        "entry": trip_data(outcome.closed) if outcome.closed else None,
        "offline": True,
        "server_reason": ctx["server_reason"],
        "conflict": outcome.conflict,
    }
    out.append(
        record(
            VALIDATIONS_TOPIC,
            ticket_id or ctx["gate"],
            events.validation(data, accepted=accepted, at=ctx["now"], request_id=ctx["rid"]),
        )
    )
    return out


class FaresAt(Protocol):
    def at(self, when: float) -> FareTable: ...


def builders(networks: FaresAt) -> dict[str, Callable[[dict[str, Any], str], list[Record]]]:
    """How the relay rebuilds each kind of stream entry, pricing by the version in force at
    the decision's time (never by the one in force when the relay gets to it)."""
    return {
        "decision": partial(decision_records, networks),
        "closed": partial(closed_records, networks),
        "upload": partial(upload_records, networks),
    }
