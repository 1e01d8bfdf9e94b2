"""What validation publishes and what it consumes (CloudEvents, binary mode; see shared/events.py).

Publishes
- `transit.validations`, keyed by ticket id (gate id when no ticket could be read):
  - `citypass.transit.validation.accepted.v1` / `.rejected.v1`: every gate decision, online or
    uploaded by an offline gate (`offline: true`); the event id is the validation id.
  - `citypass.transit.trip.auto_closed.v1`: a metro trip left open longer than the maximum
    trip time, closed at the line's maximum fare (`fare`, charged by the fare worker).
- `transit.tickets`, keyed by ticket id:
  - `citypass.transit.fare.unpaid.v1`: the rider's wallet could not pay a fare (payments 402);
    every validation process puts the ticket on its deny list (`insufficient_balance`).
  - `citypass.transit.fare.settled.v1`: after a top-up the unpaid fares were charged; lifted.
- `ops.alerts`, keyed by ticket id:
  - `citypass.transit.validation.duplicate_use.v1`: one QR accepted at two gates (found when
    offline gates upload their decisions).
  - `citypass.transit.validation.upload_too_late.v1`: an offline decision uploaded after the
    upload horizon (`offline_upload_horizon`): reported, but it changes no state.

Every event is first appended to a Redis stream (by the same atomic script as the decision it
follows from, for decisions) and relayed to Kafka from there (outbox.py): at least once, with
ids that are the same whenever an event is rebuilt.

Consumes
- `transit.tickets` (a group per process, so each one holds the whole deny list), from
  ticketing: `citypass.transit.ticket.issued.v1` {ticket_id, credential_product (the code in
  the QR; else product_code), kind (single | pass | stored_value), rides (null = unlimited),
  valid_until(_unix), wallet_account_id}, `citypass.transit.ticket.revoked.v1` {ticket_id,
  valid_until}, `citypass.transit.device.revoked.v1` {device_key_fingerprint (hex SHA-256 of
  the raw key), deny_until}, `citypass.transit.issuer_keys.changed.v1` {keys: as
  `GET /v1/keys`} (with a ticketing URL configured it only triggers a `GET /v1/keys` at once);
  and the two `fare.*` events above.
- `transit.validations` (group `validation-fares`): charges fares, tracks open trips.
- `payments.ledger` (group `validation-topups`): `citypass.payments.transfer.posted.v1` with
  `kind: topup` retries the unpaid fares of that wallet.
"""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import StrictInt, StrictStr

from shared.events import (
    DUPLICATE_USE,
    FARE_CHARGED,
    FARE_REFUNDED,
    FARE_SETTLED,
    FARE_UNPAID,
    TRIP_AUTO_CLOSED,
    UPLOAD_TOO_LATE,
    VALIDATION_ACCEPTED,
    VALIDATION_REJECTED,
    Consumed,
    Event,
    Lenient,
    new_event_id,
)

SOURCE = "/citypass/validation"


Text = Annotated[StrictStr | None, Lenient]
Moment = Annotated[int | float | str | None, Lenient]  # unix seconds, or ISO 8601 (see unix())
TicketId = Annotated[uuid.UUID | None, Lenient]


class TicketIssued(Consumed):
    """`citypass.transit.ticket.issued.v1`: the ticket registry and the products."""

    ticket_id: TicketId = None
    kind: Text = None
    rides: Annotated[StrictInt | None, Lenient] = None
    credential_product: Text = None  # the short code a credential carries
    product_code: Text = None
    wallet_account_id: Text = None
    rider_wallet_account_id: Text = None  # older events
    valid_until_unix: Moment = None
    valid_until: Moment = None


class TicketRevoked(Consumed):
    """`citypass.transit.ticket.revoked.v1`: denied until the ticket's validity ends."""

    ticket_id: TicketId = None
    valid_until_unix: Moment = None
    valid_until: Moment = None


class DeviceRevoked(Consumed):
    """`citypass.transit.device.revoked.v1`: its credentials are denied until `deny_until`."""

    device_key_fingerprint: Text = None
    device_public_key: Text = None  # older events: the fingerprint is computed from it
    deny_until: Moment = None


class FareNews(Consumed):
    """`citypass.transit.fare.unpaid.v1` / `.settled.v1`: the ticket's deny entry."""

    ticket_id: TicketId = None


class TripEntry(Consumed):
    validation_id: str
    station: str | None = None
    entered_at: Moment = None


class Decided(Consumed):
    """`validation.accepted.v1` and `trip.auto_closed.v1` as the fare worker reads them."""

    ticket_id: str
    validation_id: str
    kind: str | None = None
    action: str | None = None
    station: str | None = None
    line: Text = None
    route: Text = None
    rider_category: Text = None
    decided_at: int | float | str | None = None  # unix seconds, or ISO 8601 in older events
    entry: TripEntry | None = None  # an exit's entry
    entry_station: Text = None  # trip.auto_closed: where the trip left open began
    entered_at: Moment = None
    closed_at: Moment = None
    fare: StrictInt | None = None
    wallet_account_id: str | None = None


class TransferPosted(Consumed):
    """`citypass.payments.transfer.posted.v1`: a top-up retries the wallet's unpaid fares."""

    kind: str | None = None
    wallet_account_id: str | None = None


def unix(value: Any) -> int | None:
    """Unix seconds from an int or an ISO 8601 text; None when absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return None
    return None


@functools.lru_cache(maxsize=1024)  # a decision formats three times that are mostly the same
def iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat().replace("+00:00", "Z")


def validation(
    data: dict[str, Any], *, accepted: bool, at: float | None = None, request_id: str | None = None
) -> Event:
    """The relay rebuilds it from the decision (`at`, `request_id`): every attribute follows
    from its inputs, so a rebuilt event is the same event."""
    return Event(
        type=VALIDATION_ACCEPTED if accepted else VALIDATION_REJECTED,
        source=SOURCE,
        subject=str(data["validation_id"]),
        data=data,
        id=str(data["validation_id"]),
        time=datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC),
        request_id=request_id,
    )


def trip_auto_closed(
    *,
    ticket_id: str,
    entry_validation_id: str,
    entry_station: str,
    entered_at: int,
    closed_at: int,
    fare: int,
    kind: str,
    wallet_account_id: str | None,
    id: str,
) -> Event:
    return Event(
        id=id,
        time=datetime.fromtimestamp(closed_at, UTC),
        request_id=None,
        type=TRIP_AUTO_CLOSED,
        source=SOURCE,
        subject=ticket_id,
        data={
            "ticket_id": ticket_id,
            "validation_id": entry_validation_id,  # the fare's Idempotency-Key
            "entry_station": entry_station,
            "entered_at": iso(entered_at),
            "closed_at": iso(closed_at),
            "fare": fare,
            "kind": kind,
            "wallet_account_id": wallet_account_id,
        },
    )


def fare_unpaid(
    *, ticket_id: str, wallet_account_id: str, validation_id: str, amount: int, shortfall: Any
) -> Event:
    return Event(
        type=FARE_UNPAID,
        source=SOURCE,
        subject=ticket_id,
        data={
            "ticket_id": ticket_id,
            "wallet_account_id": wallet_account_id,
            "validation_id": validation_id,
            "amount": amount,
            "shortfall": shortfall,
        },
    )


def fare_priced(*, id: str, ticket_id: str, data: dict[str, Any]) -> Event:
    """`fare.charged.v1` (what a leg added, possibly 0 when capped) or `fare.refunded.v1` (a late
    or corrected leg lowered the week's total): `data["charged"]` is signed."""
    return Event(
        id=id,
        type=FARE_REFUNDED if data["charged"] < 0 else FARE_CHARGED,
        source=SOURCE,
        subject=ticket_id,
        data=data,
    )


def fare_settled(*, ticket_id: str, wallet_account_id: str, validation_ids: list[str]) -> Event:
    return Event(
        type=FARE_SETTLED,
        source=SOURCE,
        subject=ticket_id,
        data={
            "ticket_id": ticket_id,
            "wallet_account_id": wallet_account_id,
            "validation_ids": validation_ids,
        },
    )


def duplicate_use(
    *,
    ticket_id: str,
    qr_at: int,
    counter: int,
    uses: list[dict[str, str]],
    detail: str,
    id: str | None = None,
) -> Event:
    return Event(
        id=id or new_event_id(),
        type=DUPLICATE_USE,
        source=SOURCE,
        subject=ticket_id,
        data={
            "severity": "warning",
            "code": "qr_used_at_two_gates",
            "detail": detail,
            "ticket_id": ticket_id,
            "qr_at": iso(qr_at),
            "qr_counter": counter,
            "uses": uses,
        },
    )


def upload_too_late(
    *, gate_id: str, validation_id: str, ticket_id: str, qr_at: int, scanned_at: float, id: str
) -> Event:
    return Event(
        id=id,
        type=UPLOAD_TOO_LATE,
        source=SOURCE,
        subject=ticket_id,
        data={
            "severity": "warning",
            "code": "offline_upload_too_late",
            "detail": "An offline decision arrived after the upload horizon; nothing was changed.",
            "gate_id": gate_id,
            "validation_id": validation_id,
            "ticket_id": ticket_id,
            "qr_at": iso(qr_at),
            "scanned_at": iso(scanned_at),
        },
    )
