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
from typing import Any

from shared.fares.feed import Feed
from shared.fares.lines import NetworkMap
from shared.fares.tariff import Leg, NoFare
from shared.memo import AtomicMemo
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


def line_allowed(lines: tuple[str, ...], gate: GatePlace, line: str | None) -> bool:
    """`*`/`ALL` is every line and route, `METRO`/`BUS` every line or route of that mode;
    `line` is the gate's station's line in the network version in force."""
    for code in lines:
        if code in WILDCARD_LINES:
            return True
        if gate.route is not None and (code == gate.route or code == "BUS"):
            return True
        if gate.station is not None and (code == line or code == "METRO"):
            return True
    return False


def product_allowed(product: str, gate: GatePlace) -> bool:
    """A gate restricted to some products (e.g. an airport bus) lists their code prefixes."""
    return not gate.products or any(product.startswith(prefix) for prefix in gate.products)


def static_verdict(
    credential: Credential,
    gate: GatePlace,
    line: str | None,
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
    if not line_allowed(credential.lines, gate, line):
        return Reason.wrong_line
    return None


@dataclass(frozen=True, slots=True)
class FareTable:
    """One network version as the gate rules need it, precomputed so that a decision only looks
    up dicts: the line of each station, the fare of every metro trip between two stations and
    of a bus boarding on each route, for a rider of the feed's default category. Built from the
    feed by the service, and from the bundle by an offline gate (`bundled`, `from_bundle`).

    The fares are priced at one instant of the version (`priced_at`): fares that vary by the
    time of day (timeframes) are charged by the fare worker, not shown by the gate.
    """

    version: str
    effective_from: int  # unix seconds
    lines: dict[str, str]  # station → line
    metro: dict[str, dict[str, int]]  # entry station → exit station → fare
    unmeasured: int  # a trip the table does not price (the feed's fallback rule)
    bus: dict[str, int]  # route → fare
    max_from: dict[str, int]  # station → the highest fare between two stations of its line

    @classmethod
    def build(
        cls,
        version: str,
        effective_from: int,
        lines: dict[str, str],
        metro: dict[str, dict[str, int]],
        unmeasured: int,
        bus: dict[str, int],
    ) -> FareTable:
        line_max: dict[str, int] = {}
        for entry, exits in metro.items():
            line = lines.get(entry)
            for exit_, fare in exits.items():
                if line is not None and lines.get(exit_) == line:
                    line_max[line] = max(fare, line_max.get(line, 0))
        max_from = {entry: line_max.get(line, unmeasured) for entry, line in lines.items()}
        return cls(version, effective_from, lines, metro, unmeasured, bus, max_from)

    @classmethod
    def from_feed(cls, version: str, effective_from: int, feed: Feed, priced_at: int) -> FareTable:
        network = NetworkMap.of(feed)
        tariff = feed.tariff
        category = next(
            (
                row.get("rider_category_id")
                for row in feed.tables["rider_categories.txt"].rows
                if row.get("is_default_fare_category") == "1"
            ),
            "",
        )

        def price(route: str, entry: str = "", exit_: str = "") -> int | None:
            leg = Leg("gate", route, priced_at, priced_at, entry, exit_)
            try:
                return tariff.price_leg(leg, category).amount
            except NoFare:
                return None

        lines = {code: station.line for code, station in network.stations.items()}
        metro: dict[str, dict[str, int]] = {}
        for entry, line in lines.items():
            exits = {exit_: price(line, entry, exit_) for exit_ in lines}
            metro[entry] = {exit_: fare for exit_, fare in exits.items() if fare is not None}
        fallback = price(network.lines[0].code) if network.lines else None
        known = [fare for exits in metro.values() for fare in exits.values()]
        unmeasured = fallback if fallback is not None else max(known, default=0)
        bus = {
            route.code: fare
            for route in network.bus_routes
            if (fare := price(route.code)) is not None
        }
        return cls.build(version, effective_from, lines, metro, unmeasured, bus)

    def line_of(self, station: str | None) -> str | None:
        return None if station is None else self.lines.get(station)

    def trip_fare(self, entry: str, exit_: str) -> int:
        exits = self.metro.get(entry)
        return self.unmeasured if exits is None else exits.get(exit_, self.unmeasured)

    def max_trip_fare(self, entry: str) -> int:
        """What a trip left open pays: the highest fare on its entry station's line."""
        return self.max_from.get(entry, self.unmeasured)

    def bus_fare(self, route: str) -> int:
        return self.bus.get(route, 0)

    def bundled(self) -> dict[str, Any]:
        """As an offline gate bundle carries it (`from_bundle` reads it back)."""
        return {
            "version": self.version,
            "effective_from": self.effective_from,
            "lines": self.lines,
            "metro": self.metro,
            "unmeasured": self.unmeasured,
            "bus": self.bus,
        }

    @classmethod
    def from_bundle(cls, data: Mapping[str, Any]) -> FareTable:
        return cls.build(
            str(data["version"]),
            int(data["effective_from"]),
            dict(data["lines"]),
            {entry: dict(exits) for entry, exits in data["metro"].items()},
            int(data["unmeasured"]),
            dict(data["bus"]),
        )


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
