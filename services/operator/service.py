"""Operator rules: sign-in, sessions, the dashboard, the event search and alerts.

No Redis commands here (see repository.py), no HTTP (see endpoints.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from aiokafka.errors import KafkaError
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from redis.asyncio import Redis

from services.operator import events, repository
from services.operator.alerts import Thresholds
from services.operator.inventory import Listing
from services.operator.network import OperatorNetwork
from services.operator.projection import HANOI, hanoi_day, read_fact, tail_entry, updates
from services.operator.schemas import (
    AlertRead,
    AlertStatus,
    DashboardRead,
    GateState,
    GateStatusRead,
    GateSummaryRead,
    HourRevenue,
    LotRead,
    LotSummaryRead,
    MinuteCount,
    OperatorRead,
    PipelineRead,
    ReasonSeries,
    Role,
    SessionRead,
    StationRead,
    StreamTicketRead,
    TailEntryRead,
    TodayRead,
)
from services.operator.settings import OperatorSettings
from shared.errors import NotFound, ProblemError, Unauthorized
from shared.events import ALERTS_TOPIC
from shared.fares.lines import NetworkMap
from shared.kafka import Publisher
from shared.ratelimit import Counted, RateLimit, count_attempt, succeeded

logger = logging.getLogger("citypass.operator")

hasher = PasswordHasher()
# Verified against when the user does not exist, so timing does not reveal valid usernames.
_DUMMY_HASH = hasher.hash("not-a-real-password")
CHART_MINUTES = 30
REASON_BUCKETS = 18  # 3 hours of 10-minute buckets


@dataclass(frozen=True, slots=True)
class Session:
    operator: OperatorRead
    expires_at: float  # unix seconds


def thresholds(settings: OperatorSettings) -> Thresholds:
    return Thresholds(
        replay_burst_count=settings.replay_burst_count,
        replay_burst_window_s=settings.replay_burst_window.total_seconds(),
        passback_count=settings.passback_count,
        passback_window_s=settings.passback_window.total_seconds(),
        impossible_travel_slack_s=settings.impossible_travel_slack.total_seconds(),
        gate_silent_s=settings.gate_silent_after.total_seconds(),
        lot_full_free_spaces=settings.lot_full_free_spaces,
        payment_failure_count=settings.payment_failure_count,
        payment_failure_window_s=settings.payment_failure_window.total_seconds(),
        cooldown_s=settings.alert_cooldown.total_seconds(),
    )


# Sign-in ----------------------------------------------------------------------------------------


class TooManyLoginFailures(ProblemError):
    status, code, title = 429, "too_many_login_failures", "Too many wrong passwords"


class Passwords:
    """Argon2id checks in a bounded thread pool: off the event loop, and at most `threads` at
    once, so that a flood of logins waits for them instead of starving the console."""

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="argon2")

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Same work whether or not the user exists: unknown names check a dummy hash."""
        try:
            await asyncio.get_running_loop().run_in_executor(
                self.pool, hasher.verify, password_hash or _DUMMY_HASH, password
            )
        except VerificationError:
            return False
        return password_hash is not None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


async def create_operator(redis: Redis, username: str, password: str, role: Role) -> None:
    password_hash = await asyncio.to_thread(hasher.hash, password)
    await repository.save_operator(redis, username, password_hash, role.value)


def login_counters(
    settings: OperatorSettings, username: str, client: str
) -> tuple[Counted, Counted]:
    """Wrong passwords counted per user name and per client address."""
    window = settings.login_failure_window
    return (
        (RateLimit("operator-login-user", settings.login_failure_limit, window), username),
        (
            RateLimit("operator-login-client", settings.login_client_failure_limit, window),
            client,
        ),
    )


async def login(
    redis: Redis,
    passwords: Passwords,
    settings: OperatorSettings,
    username: str,
    password: str,
    client: str,
) -> SessionRead:
    """A session for a right password. Every attempt is counted before the password is
    checked and given back when it was right, so a refused guess costs no hashing."""
    user, address = login_counters(settings, username, client)
    wait = await count_attempt(redis, (user, address))
    if wait is not None:
        raise TooManyLoginFailures(
            "Too many wrong passwords for this user name or from this address; try again later.",
            retry_after_s=wait,
        )
    record = await repository.get_operator(redis, username)
    if not await passwords.verify(record["password_hash"] if record else None, password):
        raise Unauthorized("Wrong username or password.", code="invalid_credentials")
    assert record is not None
    await succeeded(redis, forget=[user], give_back=[address])
    secret = settings.session_secret.get_secret_value()
    now = int(time.time())
    expires_in = int(settings.session_ttl.total_seconds())
    token = jwt.encode(
        {"sub": username, "role": record["role"], "iat": now, "exp": now + expires_in},
        secret,
        algorithm="HS256",
    )
    return SessionRead(access_token=token, expires_in=expires_in, role=Role(record["role"]))


def authenticate(token: str, secret: str) -> Session:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
        operator = OperatorRead(username=claims["sub"], role=Role(claims["role"]))
        return Session(operator, float(claims["exp"]))
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise Unauthorized(
            "Sign in again: the session is missing, invalid or expired.", code="invalid_session"
        ) from exc


async def issue_stream_ticket(redis: Redis, session: Session, ttl: timedelta) -> StreamTicketRead:
    """A random one-time ticket for `GET /v1/stream`, bound to the operator and the session's
    expiry: it can open one stream, within `ttl`, and that stream ends with the session."""
    ticket = secrets.token_urlsafe(32)
    ttl_s = max(1, int(min(ttl.total_seconds(), session.expires_at - time.time())))
    claims = {
        "sub": session.operator.username,
        "role": session.operator.role.value,
        "exp": session.expires_at,
    }
    await repository.save_stream_ticket(redis, ticket, claims, ttl_s)
    return StreamTicketRead(ticket=ticket, expires_in=ttl_s)


async def redeem_stream_ticket(redis: Redis, ticket: str) -> Session:
    claims = await repository.take_stream_ticket(redis, ticket)
    if claims is None or float(claims["exp"]) <= time.time():
        raise Unauthorized(
            "The stream ticket is unknown, used or expired; ask for a new one.",
            code="invalid_stream_ticket",
        )
    return Session(OperatorRead(username=claims["sub"], role=Role(claims["role"])), claims["exp"])


# The dashboard ----------------------------------------------------------------------------------


def _moment(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


def _place_name(network: NetworkMap | None, place: str) -> tuple[str, str | None]:
    station = network.stations.get(place) if network is not None else None
    if station is not None:
        return station.name, station.line
    if place.startswith("bus:"):
        route = place.removeprefix("bus:")
        names = {r.code: r.name for r in network.bus_routes} if network is not None else {}
        return f"Bus {route} · {names.get(route, route)}", None
    return place, None


async def dashboard(
    redis: Redis, settings: OperatorSettings, networks: OperatorNetwork, now: float
) -> DashboardRead:
    """`networks`: stations, lines and names of the version in force (none: by their code)."""
    network = networks.at(now)
    minute = int(now // 60)
    minutes = list(range(minute - CHART_MINUTES + 1, minute + 1))
    ten = int(now // 600)
    tens = list(range(ten - REASON_BUCKETS + 1, ten + 1))
    midnight = datetime.fromtimestamp(now, HANOI).replace(hour=0, minute=0, second=0, microsecond=0)
    first_hour = int(midnight.timestamp() // 3600)
    hours = list(range(first_hour, int(now // 3600) + 1))
    day = hanoi_day(now)
    data = await repository.read_dashboard(
        redis, [str(m) for m in minutes], [str(t) for t in tens], [str(h) for h in hours], day
    )
    today = data.day

    lines = network.lines if network is not None else ()
    places = [s.code for line in lines for s in line.stations]
    for counts in (today, *data.minutes):
        for name in counts:
            kind, _, rest = name.partition("|")
            place = rest.rpartition("|")[0]
            if kind == "v" and place not in ("*", "") and place not in places:
                places.append(place)
    stations = []
    for place in places:
        name, line = _place_name(network, place)
        stations.append(
            StationRead(
                place=place,
                name=name,
                line=line,
                per_minute=[
                    MinuteCount(
                        accepted=c.get(f"v|{place}|accepted", 0),
                        rejected=c.get(f"v|{place}|rejected", 0),
                    )
                    for c in data.minutes
                ],
                today=MinuteCount(
                    accepted=today.get(f"v|{place}|accepted", 0),
                    rejected=today.get(f"v|{place}|rejected", 0),
                ),
            )
        )

    reasons = sorted(
        {n[2:] for c in (today, *data.ten_minutes) for n in c if n.startswith("r|")},
        key=lambda r: (-today.get(f"r|{r}", 0), r),
    )
    gates, gate_summary = gate_board(
        data.gates, data.listed_gates, now, settings.gate_silent_after.total_seconds(), network
    )
    lots, lot_summary = lot_board(data.lots, data.listed_lots)
    return DashboardRead(
        generated_at=_moment(now),
        minutes=[_moment(m * 60) for m in minutes],
        network=[
            MinuteCount(accepted=c.get("v|*|accepted", 0), rejected=c.get("v|*|rejected", 0))
            for c in data.minutes
        ],
        stations=stations,
        reason_buckets=[_moment(t * 600) for t in tens],
        reasons=[
            ReasonSeries(
                reason=reason,
                counts=[c.get(f"r|{reason}", 0) for c in data.ten_minutes],
                today=today.get(f"r|{reason}", 0),
            )
            for reason in reasons
        ],
        today=TodayRead(
            day=day,
            accepted=today.get("v|*|accepted", 0),
            rejected=today.get("v|*|rejected", 0),
            revenue_transit=today.get("rev|transit", 0),
            revenue_parking=today.get("rev|parking", 0),
            revenue_by_lot={
                name.removeprefix("rev|parking|"): amount
                for name, amount in sorted(today.items())
                if name.startswith("rev|parking|")
            },
            revenue_by_hour=[
                HourRevenue(
                    hour=_moment(h * 3600),
                    transit=c.get("rev|transit", 0),
                    parking=c.get("rev|parking", 0),
                )
                for h, c in zip(hours, data.hours, strict=True)
            ],
            tickets_issued=today.get("tickets|issued", 0),
            payment_failures=today.get("payment_failures", 0),
            topups=today.get("money|topup", 0),
            suspense=today.get("money|suspense", 0),
            alerts=today.get("alerts", 0),
        ),
        gates=gates,
        gate_summary=gate_summary,
        lots=lots,
        lot_summary=lot_summary,
        open_alerts=data.open_alerts,
    )


def gate_board(
    reported: dict[str, dict[str, Any]],
    listed: Listing,
    now: float,
    silent_s: float,
    network: NetworkMap | None,
) -> tuple[list[GateStatusRead], GateSummaryRead]:
    """Every provisioned gate and every gate that reported, each in exactly one state."""
    provisioned = {gate.gate_id: gate for gate in listed.gates}
    gates = []
    for gate_id in sorted(provisioned.keys() | reported.keys()):
        seen, known = reported.get(gate_id), provisioned.get(gate_id)
        last_seen = float(seen["last_seen"]) if seen else None
        if known is not None and not known.enabled:
            state = GateState.disabled
        elif last_seen is None:
            state = GateState.never_reported
        elif now - last_seen < silent_s:
            state = GateState.online
        else:
            state = GateState.silent
        station = known.station if known else (seen or {}).get("station")
        route = known.route if known else (seen or {}).get("route")
        gates.append(
            GateStatusRead(
                gate_id=gate_id,
                station=station,
                line=_place_name(network, station)[1] if station else None,
                route=route,
                state=state,
                provisioned=known is not None,
                last_seen=None if last_seen is None else _moment(last_seen),
                online=state is GateState.online,
                last_decision=(seen or {}).get("last_decision"),
                last_reason=(seen or {}).get("last_reason"),
            )
        )
    states = Counter(gate.state for gate in gates)
    summary = GateSummaryRead(
        provisioned=len(provisioned) if listed.read_at is not None else None,
        online=states[GateState.online],
        silent=states[GateState.silent],
        never_reported=states[GateState.never_reported],
        disabled=states[GateState.disabled],
        not_provisioned=sum(1 for gate in gates if not gate.provisioned),
        listed_at=None if listed.read_at is None else _moment(listed.read_at),
        list_error=listed.error,
    )
    return gates, summary


def lot_board(
    reported: dict[str, dict[str, Any]], listed: Listing
) -> tuple[list[LotRead], LotSummaryRead]:
    """A row per lot and vehicle type: every provisioned lot for each type it has places for
    (both when it has none), and every lot and type with occupancy events."""
    names = {lot.lot_id: lot.name for lot in listed.lots}
    rows: dict[tuple[str, str], LotRead] = {}
    for lot in reported.values():
        lot_id, vehicle = str(lot["lot_id"]), str(lot["vehicle_type"])
        rows[lot_id, vehicle] = LotRead(
            lot_id=lot_id,
            name=names.get(lot_id),
            vehicle_type=vehicle,
            capacity=int(lot["capacity"]),
            occupied=int(lot["occupied"]),
            free=int(lot["free"]),
            updated_at=_moment(float(lot["at"])),
            provisioned=lot_id in names,
        )
    for listed_lot in listed.lots:
        capacities = listed_lot.capacities
        with_places = [v for v, places in capacities.items() if places > 0] or list(capacities)
        for vehicle in with_places:
            rows.setdefault(
                (listed_lot.lot_id, vehicle),
                LotRead(
                    lot_id=listed_lot.lot_id,
                    name=listed_lot.name,
                    vehicle_type=vehicle,
                    capacity=capacities[vehicle],
                    occupied=None,
                    free=None,
                    updated_at=None,
                    provisioned=True,
                ),
            )
    summary = LotSummaryRead(
        provisioned=len(names) if listed.read_at is not None else None,
        listed_at=None if listed.read_at is None else _moment(listed.read_at),
        list_error=listed.error,
    )
    return [rows[k] for k in sorted(rows)], summary


# The event search -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TailFilter:
    ticket: str | None = None
    gate: str | None = None
    plate: str | None = None
    type: str | None = None  # a full event type, or a category (`validation`, `parking`…)

    def matches(self, entry: dict[str, Any]) -> bool:
        if self.ticket and not str(entry.get("ticket_id", "")).lower().startswith(
            self.ticket.lower()
        ):
            return False
        if self.gate and str(entry.get("gate_id", "")).lower() != self.gate.lower():
            return False
        if self.plate and self.plate.lower() not in str(entry.get("plate", "")).lower():
            return False
        return not self.type or self.type in (entry.get("type"), entry.get("category"))


def tail_read(stream_id: str, entry: dict[str, Any]) -> TailEntryRead:
    return TailEntryRead.model_validate({**entry, "stream_id": stream_id})


async def search_events(
    redis: Redis, wanted: TailFilter, *, limit: int, before: str | None, scan_limit: int
) -> list[TailEntryRead]:
    """Newest first: the tail's entries matching every filter, looking at most `scan_limit`."""
    found: list[TailEntryRead] = []
    if before is not None and not repository.valid_stream_id(before):
        return found  # nothing is older than the first possible position
    cursor = before or "+"
    scanned = 0
    while len(found) < limit and scanned < scan_limit:
        page = await repository.tail_newest(redis, cursor, min(500, scan_limit - scanned))
        if not page:
            break
        scanned += len(page)
        cursor = page[-1][0]
        found += [tail_read(sid, e) for sid, e in page if wanted.matches(e)]
    return found[:limit]


# Alerts -----------------------------------------------------------------------------------------


async def list_alerts(redis: Redis, status: AlertStatus, limit: int) -> list[AlertRead]:
    alerts = [AlertRead.model_validate(a) for a in await repository.recent_alerts(redis, 2_000)]
    if status is AlertStatus.open:
        alerts = [a for a in alerts if a.acknowledged_at is None]
    elif status is AlertStatus.acknowledged:
        alerts = [a for a in alerts if a.acknowledged_at is not None]
    return alerts[:limit]


async def acknowledge(
    redis: Redis,
    publisher: Publisher,
    settings: OperatorSettings,
    alert_id: str,
    operator: OperatorRead,
) -> AlertRead:
    """Mark the alert seen (the first acknowledgement stands) and publish who did it.

    Applied here first, exactly as the consumer would apply the event, so that the console
    shows it at once even while Kafka is unreachable; the consumer then finds it applied.
    """
    alert = await repository.get_alert(redis, alert_id)
    if alert is None:
        raise NotFound(f"No alert {alert_id}.", code="alert_not_found")
    if alert.get("acknowledged_at"):
        return AlertRead.model_validate(alert)
    event = events.alert_acknowledged(
        alert_id, str(alert.get("subject", alert_id)), operator.username, datetime.now(UTC)
    )
    fact = read_fact(event, ALERTS_TOPIC)
    await repository.apply(
        redis,
        event.id,
        updates(fact).items,
        tail_entry(fact),
        seen_ttl_s=int(settings.dedup_ttl.total_seconds()),
        tail_max=settings.tail_max_entries,
    )
    try:
        await publisher.publish(ALERTS_TOPIC, str(alert.get("subject", alert_id)), event)
    except (KafkaError, TimeoutError, OSError) as exc:
        # The acknowledgement stands; only its audit event is missing from ops.alerts.
        logger.warning("acknowledgement of %s not published: %s", alert_id, exc)
    stored = await repository.get_alert(redis, alert_id)
    return AlertRead.model_validate(stored or alert)


async def pipeline(redis: Redis) -> PipelineRead:
    snapshot = await repository.load_pipeline(redis)
    if snapshot is None:
        return PipelineRead(checked_at=None, groups=[], partitions=[], services=[])
    return PipelineRead.model_validate(snapshot)
