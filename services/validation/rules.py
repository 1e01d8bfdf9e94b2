"""Gate decision rules as pure functions (no I/O): the service and offline gates share them.

The check order is the one of DESIGN.md: parse → issuer signature → device signature →
freshness → one-time use (replay) → deny list → product rules (validity, lines, single-ride
consumption, entry/exit state, anti-passback). Everything stateless lives here; the stateful
steps (replay, rides, trips, passback) run in one Redis script (see repository.py).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from shared.memo import AtomicMemo
from shared.network import (
    BUS_ROUTES,
    METRO_BASE_FARE,
    METRO_BASE_KM,
    METRO_FARE_PER_KM,
    METRO_MAX_FARE,
    STATIONS,
    bus_single_fare,
    metro_fare,
    metro_max_fare,
)
from shared.ticketcodec import Credential, TicketCodecError


class Decision(StrEnum):
    accept = "accept"
    reject = "reject"


class Reason(StrEnum):
    ok = "ok"
    malformed = "malformed"
    unknown_key = "unknown_key"
    bad_issuer_signature = "bad_issuer_signature"
    bad_device_signature = "bad_device_signature"
    qr_expired = "qr_expired"
    qr_not_yet_valid = "qr_not_yet_valid"
    replayed = "replayed"
    revoked_ticket = "revoked_ticket"
    revoked_device = "revoked_device"
    ticket_not_yet_valid = "ticket_not_yet_valid"
    ticket_expired = "ticket_expired"
    wrong_line = "wrong_line"
    no_rides_left = "no_rides_left"
    already_inside = "already_inside"
    not_inside = "not_inside"
    insufficient_balance = "insufficient_balance"
    gate_not_allowed = "gate_not_allowed"


class Action(StrEnum):
    """What an accepted tap did: metro entry or exit, or a bus boarding (`tap`)."""

    entry = "entry"
    exit = "exit"
    tap = "tap"
    none = "none"


class Direction(StrEnum):
    entry = "entry"
    exit = "exit"
    both = "both"


class TicketKind(StrEnum):
    single = "single"  # a number of rides, consumed at entry (metro) or boarding (bus)
    pass_ = "pass"  # unlimited rides within validity
    stored_value = "stored_value"  # distance fare charged to the rider's wallet at tap-out


WILDCARD_LINES = frozenset({"*", "ALL"})
BUS_ROUTE_CODES = frozenset(route.code for route in BUS_ROUTES)
ROUTE_FARE_BAND = {route.code: route.fare_band for route in BUS_ROUTES}

_CODEC_REASONS: dict[str, Reason] = {
    "unknown_key": Reason.unknown_key,
    "bad_issuer_signature": Reason.bad_issuer_signature,
    "bad_device_signature": Reason.bad_device_signature,
    "missing_device_signature": Reason.bad_device_signature,  # a stripped code is never accepted
}


def codec_reason(error: TicketCodecError) -> Reason:
    """The gate reason for a codec refusal; every format error is `malformed`."""
    return _CODEC_REASONS.get(error.code, Reason.malformed)


@dataclass(frozen=True, slots=True)
class GatePlace:
    """Where a gate stands, as the rules need it."""

    gate_id: str
    station: str | None
    route: str | None
    direction: Direction
    products: tuple[str, ...] = ()

    @property
    def line(self) -> str | None:
        return STATIONS[self.station].line if self.station in STATIONS else None

    @property
    def script_action(self) -> str:
        """The action the Redis script runs: a bus boarding, or the gate's direction."""
        return "bus" if self.route is not None else self.direction.value


@dataclass(frozen=True, slots=True)
class DenyEntry:
    reason: Reason
    until: int | None = None  # unix seconds; None = until lifted


@dataclass(frozen=True, slots=True)
class ProductRule:
    """How a product code behaves at a gate; learned from ticket events and bundles."""

    kind: TicketKind
    rides: int | None  # None = unlimited


DEFAULT_PRODUCT = ProductRule(TicketKind.single, 1)  # unknown product: the strictest reading


def _sha256_hex(device_public_key: bytes) -> str:
    return hashlib.sha256(device_public_key).hexdigest()


# How ticketing names a rider device in `device.revoked` events: hex SHA-256 of the key. A
# rider's device key comes back at every tap.
device_fingerprint = AtomicMemo(_sha256_hex, max_entries=65_536)


def _uuid_text(number: int) -> str:
    return str(uuid.UUID(int=number))


_ticket_texts = AtomicMemo(_uuid_text, max_entries=65_536)


def ticket_text(ticket_id: uuid.UUID) -> str:
    """A ticket's id as text (deny list, Redis keys, events): the same tickets tap all day, and
    a UUID's str() costs more than finding it by its number."""
    return _ticket_texts(ticket_id.int)


def line_allowed(lines: tuple[str, ...], gate: GatePlace) -> bool:
    """`*`/`ALL` is every line and route, `METRO`/`BUS` every line or route of that mode."""
    for code in lines:
        if code in WILDCARD_LINES:
            return True
        if gate.route is not None and (code == gate.route or code == "BUS"):
            return True
        if gate.station is not None and (code == gate.line or code == "METRO"):
            return True
    return False


def product_allowed(product: str, gate: GatePlace) -> bool:
    """A gate restricted to some products (e.g. an airport bus) lists their code prefixes."""
    return not gate.products or any(product.startswith(prefix) for prefix in gate.products)


def static_verdict(
    credential: Credential,
    gate: GatePlace,
    now: int,
    deny_tickets: Mapping[str, DenyEntry],
    deny_devices: Mapping[str, DenyEntry],
    fingerprint: str,
) -> Reason | None:
    """Deny list, then the product rules that need no state: validity, lines, gate."""
    denied = deny_tickets.get(ticket_text(credential.ticket_id)) or deny_devices.get(fingerprint)
    if denied is not None and (denied.until is None or now <= denied.until):
        return denied.reason
    if now < credential.valid_from:
        return Reason.ticket_not_yet_valid
    if now > credential.valid_until:
        return Reason.ticket_expired
    if not product_allowed(credential.product, gate):
        return Reason.gate_not_allowed
    if not line_allowed(credential.lines, gate):
        return Reason.wrong_line
    return None


def trip_fare(entry_station: str, exit_station: str) -> int:
    """Distance fare; a trip that cannot be measured on one line pays the larger line maximum."""
    entry, exit_ = STATIONS.get(entry_station), STATIONS.get(exit_station)
    if entry is None or exit_ is None:
        return METRO_MAX_FARE
    if entry.line != exit_.line:
        return max(metro_max_fare(entry.line), metro_max_fare(exit_.line))
    return metro_fare(entry_station, exit_station)


def max_trip_fare(entry_station: str) -> int:
    station = STATIONS.get(entry_station)
    return metro_max_fare(station.line) if station is not None else METRO_MAX_FARE


def bus_fare(route: str) -> int:
    return bus_single_fare(ROUTE_FARE_BAND[route])


def fare_rules() -> dict[str, object]:
    """The fare table as data, for offline gate bundles."""
    return {
        "metro": {
            "base_fare": METRO_BASE_FARE,
            "base_km": METRO_BASE_KM,
            "per_km": METRO_FARE_PER_KM,
            "max_fare": METRO_MAX_FARE,
            "stations": {code: [s.line, s.km] for code, s in STATIONS.items()},
        },
        "bus": {code: bus_fare(code) for code in sorted(BUS_ROUTE_CODES)},
    }


_MESSAGES: dict[Reason, tuple[str, str]] = {
    Reason.malformed: ("Mã QR không hợp lệ", "Invalid QR code"),
    Reason.unknown_key: ("Vé không được công nhận", "Ticket issuer not recognised"),
    Reason.bad_issuer_signature: ("Vé không hợp lệ", "Ticket signature invalid"),
    Reason.bad_device_signature: ("Mã QR không hợp lệ", "QR signature invalid"),
    Reason.qr_expired: ("Mã QR đã hết hạn, hãy làm mới", "QR code expired, refresh it"),
    Reason.qr_not_yet_valid: ("Kiểm tra giờ điện thoại", "Check your phone's clock"),
    Reason.replayed: ("Mã QR đã được sử dụng", "QR code already used"),
    Reason.revoked_ticket: ("Vé đã bị thu hồi", "Ticket revoked"),
    Reason.revoked_device: ("Thiết bị đã bị thu hồi", "Phone no longer authorised"),
    Reason.ticket_not_yet_valid: ("Vé chưa có hiệu lực", "Ticket not yet valid"),
    Reason.ticket_expired: ("Vé đã hết hạn", "Ticket expired"),
    Reason.wrong_line: ("Vé không dùng cho tuyến này", "Ticket not valid on this line"),
    Reason.no_rides_left: ("Vé đã hết lượt", "No rides left"),
    Reason.already_inside: ("Vé đã được quẹt vào", "Already checked in"),
    Reason.not_inside: ("Chưa quẹt vào ga", "No entry recorded"),
    Reason.insufficient_balance: ("Số dư không đủ, hãy nạp tiền", "Insufficient balance, top up"),
    Reason.gate_not_allowed: ("Vé không dùng tại cổng này", "Ticket not valid at this gate"),
}


def _vnd(amount: int) -> tuple[str, str]:
    return f"{amount:,}".replace(",", "."), f"{amount:,}"


_GREETINGS = {
    Action.entry: ("Mời qua", "Welcome"),
    Action.exit: ("Tạm biệt", "Goodbye"),
    Action.tap: ("Mời lên xe", "Welcome aboard"),
    Action.none: ("Hợp lệ", "Valid"),
}


def display(
    reason: Reason,
    action: Action,
    *,
    rides_left: int | None = None,
    fare: int | None = None,
) -> tuple[str, str]:
    """Short gate-display text in Vietnamese and English."""
    if reason is not Reason.ok:
        return _MESSAGES[reason]
    vi, en = _GREETINGS[action]
    if fare:
        fare_vi, fare_en = _vnd(fare)
        vi, en = f"{vi} · Cước {fare_vi} đ", f"{en} · Fare {fare_en} VND"
    if rides_left is not None:
        vi, en = f"{vi} · Còn {rides_left} lượt", f"{en} · {rides_left} rides left"
    return vi, en
