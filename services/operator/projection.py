"""What each event means to the operator console, as data: no I/O, easy to test.

`read_fact` turns a CloudEvent from any topic into a `Fact` (or refuses it: an unknown type
or a payload without the fields its type promises is dead-lettered by the consumer).
`updates` says which counters, latest values and alerts the fact changes; `tail_entry` is
its line in the live tail. The repository turns updates into Redis commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from shared.events import (
    ALERT_ACKNOWLEDGED,
    ALERT_RAISED,
    ALERTS_TOPIC,
    DEVICE_REGISTERED,
    DEVICE_REVOKED,
    DUPLICATE_USE,
    ENTRY_REFUSED,
    FARE_CHARGED,
    FARE_REFUNDED,
    FARE_SETTLED,
    FARE_UNPAID,
    ISSUER_KEYS_CHANGED,
    LEDGER_TOPIC,
    NOTIFICATION_UNMATCHED,
    OCCUPANCY_CHANGED,
    OCCUPANCY_TOPIC,
    PAYMENT_REQUEST_PAID,
    SESSION_CLOSED,
    SESSION_DEBT_SETTLED,
    SESSION_DISPUTE_RESOLVED,
    SESSION_DISPUTED,
    SESSION_OPENED,
    SESSION_OVERRIDDEN,
    SESSION_PAYMENT_REQUIRED,
    SESSIONS_TOPIC,
    TICKET_ISSUED,
    TICKET_REVOKED,
    TICKETS_TOPIC,
    TRANSFER_POSTED,
    TRIP_AUTO_CLOSED,
    UPLOAD_TOO_LATE,
    VALIDATION_ACCEPTED,
    VALIDATION_REJECTED,
    VALIDATIONS_TOPIC,
    Event,
)

# Vietnam keeps UTC+7 all year (no daylight saving): "today" is the Hanoi calendar day.
HANOI = timezone(timedelta(hours=7), "ICT")


class EventRefused(ValueError):
    """An event the console cannot use; `code` is the dead-letter reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Category(StrEnum):
    validation = "validation"
    trip = "trip"
    ticket = "ticket"
    payment = "payment"
    parking = "parking"
    occupancy = "occupancy"
    alert = "alert"


# Producers' event types (see services/*/events.py) and the fields the console relies on.


# topic → event type → (category, required text fields)
KNOWN: dict[str, dict[str, tuple[Category, tuple[str, ...]]]] = {
    VALIDATIONS_TOPIC: {
        VALIDATION_ACCEPTED: (Category.validation, ("gate_id",)),
        VALIDATION_REJECTED: (Category.validation, ("gate_id",)),
        TRIP_AUTO_CLOSED: (Category.trip, ("ticket_id",)),
    },
    TICKETS_TOPIC: {
        TICKET_ISSUED: (Category.ticket, ("ticket_id",)),
        TICKET_REVOKED: (Category.ticket, ("ticket_id",)),
        DEVICE_REGISTERED: (Category.ticket, ()),
        DEVICE_REVOKED: (Category.ticket, ()),
        ISSUER_KEYS_CHANGED: (Category.ticket, ()),
        FARE_UNPAID: (Category.payment, ("ticket_id",)),
        FARE_SETTLED: (Category.payment, ("ticket_id",)),
        FARE_CHARGED: (Category.payment, ("ticket_id",)),
        FARE_REFUNDED: (Category.payment, ("ticket_id",)),
    },
    LEDGER_TOPIC: {
        TRANSFER_POSTED: (Category.payment, ("kind",)),
        PAYMENT_REQUEST_PAID: (Category.payment, ()),
    },
    SESSIONS_TOPIC: {
        SESSION_OPENED: (Category.parking, ("session_id",)),
        SESSION_PAYMENT_REQUIRED: (Category.parking, ("session_id",)),
        SESSION_CLOSED: (Category.parking, ("session_id",)),
        SESSION_DEBT_SETTLED: (Category.parking, ("session_id",)),
        SESSION_OVERRIDDEN: (Category.parking, ("session_id",)),
        SESSION_DISPUTED: (Category.parking, ("session_id",)),
        SESSION_DISPUTE_RESOLVED: (Category.parking, ("session_id",)),
    },
    OCCUPANCY_TOPIC: {
        OCCUPANCY_CHANGED: (Category.occupancy, ("lot_id", "vehicle_type")),
        ENTRY_REFUSED: (Category.occupancy, ("lot_id",)),
    },
    ALERTS_TOPIC: {
        DUPLICATE_USE: (Category.alert, ("ticket_id",)),
        UPLOAD_TOO_LATE: (Category.alert, ("gate_id",)),
        NOTIFICATION_UNMATCHED: (Category.alert, ()),
        ALERT_RAISED: (Category.alert, ("rule", "subject")),
        ALERT_ACKNOWLEDGED: (Category.alert, ("alert_id",)),
    },
}
TOPICS = tuple(KNOWN)

REVENUE_KINDS = frozenset({"charge", "capture", "payment"})  # money that reached revenue
REVENUE_SOURCES = ("transit", "parking")


def parse_time(value: Any) -> float | None:
    """Unix seconds from an ISO 8601 text or a number; None when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return None


def iso(unix_s: float) -> str:
    text = datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def hanoi_day(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, HANOI).date().isoformat()


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


def _int(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Fact:
    """One event as the console sees it; `at` is when it happened (unix seconds)."""

    id: str
    type: str
    topic: str
    category: Category
    at: float
    data: Mapping[str, Any]
    ticket_id: str | None = None
    gate_id: str | None = None
    station: str | None = None
    line: str | None = None
    route: str | None = None
    plate: str | None = None
    lot_id: str | None = None
    decision: str | None = None  # validations: accept | reject
    reason: str | None = None
    amount: int | None = None

    @property
    def place(self) -> str | None:
        """Where a validation happened: a station code, or `bus:<route>`."""
        if self.station:
            return self.station
        if self.route:
            return f"bus:{self.route}"
        return None

    @property
    def rejected(self) -> bool:
        return self.category is Category.validation and self.decision == "reject"

    @property
    def accepted(self) -> bool:
        return self.category is Category.validation and self.decision == "accept"

    @property
    def payment_failure(self) -> bool:
        """A fare or a parking fee that could not be collected when it was due."""
        if self.type == FARE_UNPAID:
            return True
        return self.type == SESSION_CLOSED and self.data.get("settlement") == "debt"


def _alert_shaped(data: Mapping[str, Any]) -> bool:
    return all(isinstance(data.get(name), str) for name in ("code", "detail"))


def read_fact(event: Event, topic: str) -> Fact:
    """The fact an event states, or `EventRefused` (unknown type, missing fields)."""
    types = KNOWN.get(topic)
    if types is None:
        raise EventRefused("unknown_topic", f"the console does not read {topic}")
    known = types.get(event.type)
    if known is None:
        if topic == ALERTS_TOPIC and _alert_shaped(event.data):
            known = (Category.alert, ())  # another service's alert: shown as it comes
        else:
            raise EventRefused("unknown_type", f"{event.type} is not a known event on {topic}")
    category, required = known
    data = event.data
    missing = [name for name in required if _text(data, name) is None]
    if missing:
        raise EventRefused(
            "malformed_payload", f"{event.type} lacks text field(s) {', '.join(missing)}"
        )
    at = event.time.timestamp()
    decision = None
    if category is Category.validation:
        decision = "accept" if event.type == VALIDATION_ACCEPTED else "reject"
        at = parse_time(data.get("decided_at")) or at
    amount = _int(data, "amount")
    if event.type == TRANSFER_POSTED and (amount is None or amount < 0):
        raise EventRefused("malformed_payload", "a transfer needs a non-negative integer amount")
    if event.type == OCCUPANCY_CHANGED and any(
        _int(data, name) is None for name in ("occupied", "capacity", "free")
    ):
        raise EventRefused("malformed_payload", "occupancy needs integer occupied/capacity/free")
    if event.type in (SESSION_CLOSED, SESSION_DEBT_SETTLED, SESSION_PAYMENT_REQUIRED):
        amount = _int(data, "fee")
    reason = _text(data, "reason") or _text(data, "code")
    return Fact(
        id=event.id,
        type=event.type,
        topic=topic,
        category=category,
        at=at,
        data=data,
        ticket_id=_text(data, "ticket_id"),
        gate_id=_text(data, "gate_id"),
        station=_text(data, "station"),
        line=_text(data, "line"),
        route=_text(data, "route"),
        plate=_text(data, "plate") or _text(data, "plate_masked"),
        lot_id=_text(data, "lot_id"),
        decision=decision,
        reason=reason,
        amount=amount,
    )


# Updates ----------------------------------------------------------------------------------------


class Bucket(StrEnum):
    """Counter tables by time: per minute (station rates), 10 minutes (rejection reasons),
    hour (revenue) and Hanoi day (totals)."""

    minute = "minute"
    ten_minutes = "ten_minutes"
    hour = "hour"
    day = "day"


BUCKET_SECONDS = {Bucket.minute: 60, Bucket.ten_minutes: 600, Bucket.hour: 3600}


def bucket_stamp(bucket: Bucket, unix_s: float) -> str:
    if bucket is Bucket.day:
        return hanoi_day(unix_s)
    return str(int(unix_s // BUCKET_SECONDS[bucket]))


@dataclass(frozen=True, slots=True)
class Increment:
    bucket: Bucket
    stamp: str
    field: str
    amount: int = 1


class Table(StrEnum):
    gates = "gates"
    lots = "lots"


@dataclass(frozen=True, slots=True)
class Latest:
    """Keep `value` for `field` unless a value with a higher `order` is already there."""

    table: Table
    field: str
    order: float
    value: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoreAlert:
    alert: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AcknowledgeAlert:
    alert_id: str
    by: str
    at: str


Update = Increment | Latest | StoreAlert | AcknowledgeAlert


@dataclass(slots=True)
class Updates:
    items: list[Update] = field(default_factory=list)

    def count(self, at: float, field_name: str, amount: int = 1, *buckets: Bucket) -> None:
        for bucket in buckets:
            self.items.append(Increment(bucket, bucket_stamp(bucket, at), field_name, amount))


def updates(fact: Fact, alert: dict[str, Any] | None = None) -> Updates:
    """The counters and latest values `fact` changes (`alert`: the alert it carries, if any)."""
    out = Updates()
    if fact.category is Category.validation:
        _validation_updates(fact, out)
    elif fact.type == TRANSFER_POSTED:
        _transfer_updates(fact, out)
    elif fact.type == TICKET_ISSUED:
        out.count(fact.at, "tickets|issued", 1, Bucket.day)
    elif fact.type == OCCUPANCY_CHANGED:
        _occupancy_updates(fact, out)
    elif fact.type == SESSION_OPENED:
        out.count(fact.at, f"parking|opened|{fact.lot_id or '?'}", 1, Bucket.day)
    elif fact.type == SESSION_CLOSED:
        out.count(fact.at, f"parking|closed|{fact.lot_id or '?'}", 1, Bucket.day)
    if fact.payment_failure:
        out.count(fact.at, "payment_failures", 1, Bucket.day)
    if fact.type == ALERT_ACKNOWLEDGED:
        out.items.append(
            AcknowledgeAlert(
                alert_id=str(fact.data["alert_id"]),
                by=_text(fact.data, "acknowledged_by") or "?",
                at=_text(fact.data, "acknowledged_at") or iso(fact.at),
            )
        )
    elif alert is not None:
        out.items.append(StoreAlert(alert))
        out.count(fact.at, "alerts", 1, Bucket.day)
    return out


def _validation_updates(fact: Fact, out: Updates) -> None:
    outcome = "accepted" if fact.accepted else "rejected"
    place = fact.place or "unknown"
    out.count(fact.at, f"v|{place}|{outcome}", 1, Bucket.minute, Bucket.day)
    out.count(fact.at, f"v|*|{outcome}", 1, Bucket.minute, Bucket.day)
    if fact.rejected:
        out.count(fact.at, f"r|{fact.reason or 'unknown'}", 1, Bucket.ten_minutes, Bucket.day)
    if fact.gate_id:
        out.items.append(
            Latest(
                Table.gates,
                fact.gate_id,
                fact.at,
                {
                    "gate_id": fact.gate_id,
                    "station": fact.station,
                    "line": fact.line,
                    "route": fact.route,
                    "last_seen": fact.at,
                    "last_decision": fact.decision,
                    "last_reason": fact.reason,
                    "offline_upload": bool(fact.data.get("offline")),
                },
            )
        )


def _transfer_updates(fact: Fact, out: Updates) -> None:
    kind = fact.data.get("kind")
    source = fact.data.get("source")
    amount = fact.amount or 0
    if source in REVENUE_SOURCES and kind in REVENUE_KINDS:
        signed = amount
    elif source in REVENUE_SOURCES and kind == "refund":
        signed = -amount
    else:
        signed = 0
    if signed:
        out.count(fact.at, f"rev|{source}", signed, Bucket.hour, Bucket.day)
        if source == "parking" and fact.lot_id:
            out.count(fact.at, f"rev|parking|{fact.lot_id}", signed, Bucket.day)
    elif kind in ("topup", "suspense"):
        out.count(fact.at, f"money|{kind}", amount, Bucket.day)


def _occupancy_updates(fact: Fact, out: Updates) -> None:
    data = fact.data
    vehicle = str(data["vehicle_type"])
    order = _int(data, "sequence")
    out.items.append(
        Latest(
            Table.lots,
            f"{fact.lot_id}|{vehicle}",
            float(order) if order is not None else fact.at,
            {
                "lot_id": fact.lot_id,
                "vehicle_type": vehicle,
                "occupied": data["occupied"],
                "capacity": data["capacity"],
                "free": data["free"],
                "at": fact.at,
            },
        )
    )


_TAIL_FIELDS = (
    "ticket_id",
    "gate_id",
    "station",
    "line",
    "route",
    "plate",
    "lot_id",
    "decision",
    "reason",
    "amount",
)
_TAIL_DATA = (
    "kind",
    "source",
    "vehicle_type",
    "free",
    "capacity",
    "severity",
    "session_id",
    "product",
    "action",
    "fare",
    "offline",
)


def tail_entry(fact: Fact, alert: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line of the live tail: what an operator filters by and reads at a glance."""
    entry: dict[str, Any] = {
        "id": fact.id,
        "type": fact.type,
        "category": fact.category.value,
        "at": iso(fact.at),
    }
    for name in _TAIL_FIELDS:
        value = getattr(fact, name)
        if value is not None:
            entry[name] = value
    for name in _TAIL_DATA:
        value = fact.data.get(name)
        if isinstance(value, str | int | float | bool):
            entry.setdefault(name, value)
    if "product" not in entry and isinstance(fact.data.get("product_code"), str):
        entry["product"] = fact.data["product_code"]
    if alert is not None:
        entry["alert"] = alert
    if fact.type == ALERT_ACKNOWLEDGED:
        entry["alert_id"] = fact.data["alert_id"]
        entry["acknowledged_by"] = fact.data.get("acknowledged_by")
    return entry
