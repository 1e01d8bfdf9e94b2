"""Alert rules as pure functions: facts in, alerts out; no I/O.

A rule sees the fact, the counts of the sliding windows the fact adds to (`windows`) and what
the rules remembered about its subjects (`memory_keys`): the last station of a ticket, whether
a lot was full, a cooldown. `evaluate` answers the alerts and what to remember. The consumer
keeps windows and memory in Redis; tests keep them in a dict. Alert ids are derived from the
rule, the subject and the triggering event, so evaluating a redelivered event again yields
the same alert id and the alert is stored once.

Rules: replayed-QR bursts at a gate, impossible travel (one ticket at two stations faster than
`min_travel_seconds`), passback attempts, silent gates (`silent_gates`, periodic), a full lot
and a spike of payment failures. Suspense money (payments) and an offline double use
(validation) arrive as alerts already; `alert_from_fact` shows them like the others.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.operator.projection import Category, Fact, iso
from shared.events import (
    ALERT_ACKNOWLEDGED,
    ALERT_RAISED,
    DUPLICATE_USE,
    ENTRY_REFUSED,
    NOTIFICATION_UNMATCHED,
    OCCUPANCY_CHANGED,
)
from shared.fares.lines import NetworkMap

ALERT_NAMESPACE = uuid.UUID("5b0e3c1e-7a51-4f7e-9d1c-0c17a9e0a7e1")
TRAVEL_MEMORY_S = 3 * 3600  # longer than any trip between two stations
LOT_MEMORY_S = 2 * 86_400
SILENT_MEMORY_S = 7 * 86_400


class Rule(StrEnum):
    replay_burst = "replay_burst"
    impossible_travel = "impossible_travel"
    passback = "passback"
    gate_silent = "gate_silent"
    lot_full = "lot_full"
    payment_failures = "payment_failures"
    suspense = "suspense"
    offline_double_use = "offline_double_use"
    external = "external"  # another service's alert of a kind the console has no rule for


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"


SEVERITY = {
    Rule.replay_burst: Severity.critical,
    Rule.impossible_travel: Severity.warning,
    Rule.passback: Severity.info,
    Rule.gate_silent: Severity.warning,
    Rule.lot_full: Severity.info,
    Rule.payment_failures: Severity.critical,
    Rule.suspense: Severity.warning,
    Rule.offline_double_use: Severity.warning,
    Rule.external: Severity.warning,
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    replay_burst_count: int
    replay_burst_window_s: float
    passback_count: int
    passback_window_s: float
    impossible_travel_slack_s: float
    gate_silent_s: float
    lot_full_free_spaces: int
    payment_failure_count: int
    payment_failure_window_s: float
    cooldown_s: float


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    rule: Rule
    subject: str
    at: float
    detail: str
    params: dict[str, Any] = field(default_factory=dict)
    gate_id: str | None = None
    station: str | None = None
    ticket_id: str | None = None
    lot_id: str | None = None
    severity: Severity | None = None

    def record(self) -> dict[str, Any]:
        """The alert as stored, shown and published (`citypass.ops.alert.raised.v1` data)."""
        return {
            "alert_id": self.alert_id,
            "rule": self.rule.value,
            "severity": (self.severity or SEVERITY[self.rule]).value,
            "subject": self.subject,
            "detail": self.detail,
            "params": self.params,
            "gate_id": self.gate_id,
            "station": self.station,
            "ticket_id": self.ticket_id,
            "lot_id": self.lot_id,
            "raised_at": iso(self.at),
            "acknowledged_at": None,
            "acknowledged_by": None,
        }


def alert_id(rule: Rule, subject: str, trigger: str) -> str:
    # Deterministic (not UUIDv7) on purpose: a redelivered trigger yields the same alert.
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{rule.value}|{subject}|{trigger}"))


@dataclass(frozen=True, slots=True)
class Window:
    """A sliding window the fact adds one to (member: the event id, so re-adding is harmless).

    Its count is the number of events within `seconds` up to the newest one in the window:
    events from several partitions arrive out of order."""

    key: str
    seconds: float


@dataclass(slots=True)
class Verdict:
    alerts: list[Alert] = field(default_factory=list)
    remember: dict[str, tuple[str, float]] = field(default_factory=dict)  # key → (value, TTL s)


def _cooldown(rule: Rule, subject: str) -> str:
    return f"cooldown:{rule.value}:{subject}"


def _ticket_memory(ticket_id: str) -> str:
    return f"ticket:{ticket_id}"


def _lot_memory(lot_id: str, vehicle: str) -> str:
    return f"lot:{lot_id}|{vehicle}"


def silent_memory_key(gate_id: str) -> str:
    return f"silent:{gate_id}"


def _is_replay(fact: Fact) -> bool:
    return fact.rejected and fact.reason == "replayed" and fact.gate_id is not None


def _is_passback(fact: Fact) -> bool:
    return fact.rejected and fact.reason == "already_inside" and fact.ticket_id is not None


METRO_SPEED_KMH = 40.0  # best case, dwell included: anything faster is impossible travel
METRO_MIN_SEGMENT_S = 60


def min_travel_seconds(network: NetworkMap, entry: str, exit_: str) -> int:
    """The fastest a rider can get from one station to another, by the feed's distances
    along the line (`shape_dist_traveled`); across lines, one segment."""
    if entry == exit_:
        return 0
    km = network.distance_km(entry, exit_)
    if km is None:
        return METRO_MIN_SEGMENT_S
    return max(METRO_MIN_SEGMENT_S, int(km / METRO_SPEED_KMH * 3600))


def _travels(fact: Fact, network: NetworkMap | None) -> bool:
    return (
        fact.accepted
        and fact.ticket_id is not None
        and network is not None
        and fact.station in network.stations
    )


def windows(fact: Fact, th: Thresholds) -> list[Window]:
    found = []
    if _is_replay(fact):
        found.append(Window(f"replay:{fact.gate_id}", th.replay_burst_window_s))
    if _is_passback(fact):
        found.append(Window(f"passback:{fact.ticket_id}", th.passback_window_s))
    if fact.payment_failure:
        found.append(Window("payment-failures", th.payment_failure_window_s))
    return found


def memory_keys(fact: Fact, network: NetworkMap | None) -> list[str]:
    keys = []
    if _is_replay(fact):
        keys.append(_cooldown(Rule.replay_burst, str(fact.gate_id)))
    if _is_passback(fact):
        keys.append(_cooldown(Rule.passback, str(fact.ticket_id)))
    if _travels(fact, network):
        keys += [
            _ticket_memory(str(fact.ticket_id)),
            _cooldown(Rule.impossible_travel, str(fact.ticket_id)),
        ]
    if fact.payment_failure:
        keys.append(_cooldown(Rule.payment_failures, "payments"))
    if fact.type in (OCCUPANCY_CHANGED, ENTRY_REFUSED) and fact.lot_id:
        keys.append(_lot_memory(fact.lot_id, str(fact.data.get("vehicle_type", "*"))))
    return keys


def evaluate(
    fact: Fact,
    counts: Mapping[str, int],
    memory: Mapping[str, str],
    th: Thresholds,
    network: NetworkMap | None,
) -> Verdict:
    """The alerts `fact` raises, given its windows' counts (this fact included) and memory;
    `network`: the version in force at the fact's time (None: no travel rule)."""
    verdict = Verdict()
    if _is_replay(fact):
        _threshold(
            verdict,
            fact,
            memory,
            th,
            Rule.replay_burst,
            str(fact.gate_id),
            counts.get(f"replay:{fact.gate_id}", 0),
            th.replay_burst_count,
            th.replay_burst_window_s,
            f"{{count}} replayed QR codes at gate {fact.gate_id} within {{window}} s",
        )
    if _is_passback(fact):
        _threshold(
            verdict,
            fact,
            memory,
            th,
            Rule.passback,
            str(fact.ticket_id),
            counts.get(f"passback:{fact.ticket_id}", 0),
            th.passback_count,
            th.passback_window_s,
            f"Ticket {fact.ticket_id} tried to enter while inside {{count}} times "
            f"within {{window}} s (last at gate {fact.gate_id})",
        )
    if fact.payment_failure:
        _threshold(
            verdict,
            fact,
            memory,
            th,
            Rule.payment_failures,
            "payments",
            counts.get("payment-failures", 0),
            th.payment_failure_count,
            th.payment_failure_window_s,
            "{count} payments failed within {window} s",
        )
    if network is not None and _travels(fact, network):
        _impossible_travel(verdict, fact, memory, th, network)
    if fact.type in (OCCUPANCY_CHANGED, ENTRY_REFUSED) and fact.lot_id:
        _lot_full(verdict, fact, memory, th)
    return verdict


def _threshold(
    verdict: Verdict,
    fact: Fact,
    memory: Mapping[str, str],
    th: Thresholds,
    rule: Rule,
    subject: str,
    count: int,
    threshold: int,
    window_s: float,
    detail: str,
) -> None:
    cooldown = _cooldown(rule, subject)
    if count < threshold or cooldown in memory:
        return
    params = {"count": count, "window_s": int(window_s), "threshold": threshold}
    verdict.alerts.append(
        Alert(
            alert_id=alert_id(rule, subject, fact.id),
            rule=rule,
            subject=subject,
            at=fact.at,
            detail=detail.format(count=count, window=int(window_s)),
            params=params,
            gate_id=fact.gate_id,
            station=fact.station,
            ticket_id=fact.ticket_id,
        )
    )
    verdict.remember[cooldown] = (iso(fact.at), th.cooldown_s)


def _impossible_travel(
    verdict: Verdict,
    fact: Fact,
    memory: Mapping[str, str],
    th: Thresholds,
    network: NetworkMap,
) -> None:
    ticket = str(fact.ticket_id)
    station = str(fact.station)
    key = _ticket_memory(ticket)
    here = f"{station}|{fact.at}|{fact.gate_id or ''}"
    previous = memory.get(key)
    if previous is None:
        verdict.remember[key] = (here, TRAVEL_MEMORY_S)
        return
    before_station, before_at_text, before_gate = [*previous.split("|"), "", ""][:3]
    before_at = float(before_at_text) if before_at_text else fact.at
    if fact.at >= before_at:
        verdict.remember[key] = (here, TRAVEL_MEMORY_S)
    if before_station == station or before_station not in network.stations:
        return
    needed = min_travel_seconds(network, before_station, station)
    took = abs(fact.at - before_at)
    cooldown = _cooldown(Rule.impossible_travel, ticket)
    if took + th.impossible_travel_slack_s >= needed or cooldown in memory:
        return
    first, second = (before_station, station) if before_at <= fact.at else (station, before_station)
    verdict.alerts.append(
        Alert(
            alert_id=alert_id(Rule.impossible_travel, ticket, fact.id),
            rule=Rule.impossible_travel,
            subject=ticket,
            at=fact.at,
            detail=(
                f"Ticket {ticket} validated at {first} then {second} {int(took)} s apart; "
                f"the fastest trip takes {needed} s"
            ),
            params={
                "from_station": first,
                "to_station": second,
                "seconds": int(took),
                "min_seconds": needed,
                "gates": [g for g in (before_gate, fact.gate_id) if g],
            },
            gate_id=fact.gate_id,
            station=station,
            ticket_id=ticket,
        )
    )
    verdict.remember[cooldown] = (iso(fact.at), th.cooldown_s)


def _lot_full(verdict: Verdict, fact: Fact, memory: Mapping[str, str], th: Thresholds) -> None:
    data = fact.data
    vehicle = str(data.get("vehicle_type", "*"))
    key = _lot_memory(str(fact.lot_id), vehicle)
    state, _, seen_order = memory.get(key, "|").partition("|")
    known_order = float(seen_order) if seen_order else float("-inf")
    if fact.type == OCCUPANCY_CHANGED:
        sequence = data.get("sequence")
        order = float(sequence) if isinstance(sequence, int) else fact.at
        if order < known_order:
            return  # an older count arrived late
        full = int(data["free"]) <= th.lot_full_free_spaces
    else:  # entry refused: the lot turned a vehicle away, whatever the last count said
        order, full = known_order, True
    verdict.remember[key] = (f"{'full' if full else 'free'}|{order}", LOT_MEMORY_S)
    if not full or state == "full":
        return
    lot = str(fact.lot_id)
    free = data.get("free", 0)
    verdict.alerts.append(
        Alert(
            alert_id=alert_id(Rule.lot_full, f"{lot}|{vehicle}", fact.id),
            rule=Rule.lot_full,
            subject=lot,
            at=fact.at,
            detail=f"Lot {lot} is full for {vehicle} ({free} free)",
            params={
                "vehicle_type": vehicle,
                "free": free,
                "capacity": data.get("capacity"),
                "occupied": data.get("occupied"),
            },
            lot_id=lot,
        )
    )


@dataclass(frozen=True, slots=True)
class GateSeen:
    gate_id: str
    last_seen: float
    station: str | None = None


def silent_gates(
    gates: Iterable[GateSeen], memory: Mapping[str, str], now: float, th: Thresholds
) -> Verdict:
    """Gates not heard from for `gate_silent_s`, once per silence (memory: silent:<gate>)."""
    verdict = Verdict()
    for gate in gates:
        silent_for = now - gate.last_seen
        mark = repr(gate.last_seen)
        key = silent_memory_key(gate.gate_id)
        if silent_for < th.gate_silent_s or memory.get(key) == mark:
            continue
        verdict.alerts.append(
            Alert(
                alert_id=alert_id(Rule.gate_silent, gate.gate_id, mark),
                rule=Rule.gate_silent,
                subject=gate.gate_id,
                at=now,
                detail=f"Gate {gate.gate_id} silent for {int(silent_for // 60)} min",
                params={"last_seen": iso(gate.last_seen), "minutes": int(silent_for // 60)},
                gate_id=gate.gate_id,
                station=gate.station,
            )
        )
        verdict.remember[key] = (mark, SILENT_MEMORY_S)
    return verdict


def alert_from_fact(fact: Fact) -> dict[str, Any] | None:
    """The alert an `ops.alerts` event carries, as stored and shown (None: an acknowledgement)."""
    if fact.category is not Category.alert:
        return None
    data = fact.data
    if fact.type == ALERT_RAISED:
        return _raised_record(fact)
    if fact.type == DUPLICATE_USE:
        uses = data.get("uses")
        gates = [
            u["gate_id"]
            for u in (uses if isinstance(uses, list) else [])
            if isinstance(u, dict) and isinstance(u.get("gate_id"), str)
        ]
        alert = Alert(
            alert_id=fact.id,
            rule=Rule.offline_double_use,
            subject=str(fact.ticket_id),
            at=fact.at,
            detail=_str(data.get("detail"))
            or f"One QR of ticket {fact.ticket_id} was accepted at several gates",
            params={"gates": gates, "qr_at": data.get("qr_at")},
            ticket_id=fact.ticket_id,
            gate_id=gates[0] if gates else None,
        )
        return alert.record() | {"severity": _severity(data, Rule.offline_double_use)}
    if fact.type == NOTIFICATION_UNMATCHED:
        alert = Alert(
            alert_id=fact.id,
            rule=Rule.suspense,
            subject=_str(data.get("bank_transaction_id")) or fact.id,
            at=fact.at,
            detail=_str(data.get("detail")) or "A bank transfer matched no payment request",
            params={
                "amount": data.get("amount"),
                "cause": data.get("code"),
                "reference": data.get("reference"),
                "expected_amount": data.get("expected_amount"),
            },
        )
        return alert.record() | {"severity": _severity(data, Rule.suspense)}
    if fact.type == ALERT_ACKNOWLEDGED:
        return None
    alert = Alert(
        alert_id=fact.id,
        rule=Rule.external,
        subject=fact.ticket_id or fact.gate_id or fact.lot_id or fact.id,
        at=fact.at,
        detail=_str(data.get("detail")) or fact.type,
        params={"code": data.get("code"), "type": fact.type},
        gate_id=fact.gate_id,
        ticket_id=fact.ticket_id,
        lot_id=fact.lot_id,
    )
    return alert.record() | {"severity": _severity(data, Rule.external)}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _severity(data: Mapping[str, Any], rule: Rule) -> str:
    value = data.get("severity")
    return value if value in set(Severity) else SEVERITY[rule].value


def _raised_record(fact: Fact) -> dict[str, Any]:
    data = fact.data
    rule = data["rule"] if data["rule"] in set(Rule) else Rule.external.value
    params = data.get("params")
    return {
        "alert_id": fact.id,
        "rule": rule,
        "severity": _severity(data, Rule(rule)),
        "subject": data["subject"],
        "detail": _str(data.get("detail")) or rule,
        "params": params if isinstance(params, dict) else {},
        "gate_id": _str(data.get("gate_id")),
        "station": _str(data.get("station")),
        "ticket_id": _str(data.get("ticket_id")),
        "lot_id": _str(data.get("lot_id")),
        "raised_at": _str(data.get("raised_at")) or iso(fact.at),
        "acknowledged_at": None,
        "acknowledged_by": None,
    }
