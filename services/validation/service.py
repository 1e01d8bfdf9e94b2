"""Validation rules in motion: the gate decision, gate provisioning, offline reconciliation.

No Redis commands here (see repository.py), no HTTP (see endpoints.py); pure rules in rules.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import uuid_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import Counter
from redis.asyncio import Redis

from services.validation import events, repository
from services.validation.bundle import BundleSigner
from services.validation.memory import (
    IssuerKey,
    Memory,
    b64url,
    decode_private_key,
    decode_public_key,
)
from services.validation.repository import StateOutcome, Trip
from services.validation.rules import (
    Action,
    Decision,
    Direction,
    GatePlace,
    Reason,
    TicketKind,
    bus_fare,
    codec_reason,
    device_fingerprint,
    display,
    max_trip_fare,
    static_verdict,
    ticket_text,
    trip_fare,
)
from services.validation.schemas import (
    BatchItemRead,
    BatchStatus,
    BusRouteRead,
    GateCreate,
    GateProvisioned,
    GateRead,
    GateSecretRead,
    GateUpdate,
    IssuerKeyPut,
    IssuerKeyRead,
    LineRead,
    OfflineDecision,
    StationRead,
    ValidationBatchRead,
)
from services.validation.settings import ValidationSettings
from services.validation.spool import EventPipeline
from shared.devicesigning import NONCE_TTL_S, SignedRequest, claim_nonce, new_secret, replayed
from shared.errors import Conflict, NotFound, Unprocessable
from shared.network import BUS_ROUTES, LINES
from shared.redis import PipelinedRedis
from shared.ticketcodec import (
    DynamicQR,
    TicketCodecError,
    check_freshness,
    parse_dynamic_qr,
    verify_dynamic_qr,
)

DECISIONS = Counter(
    "citypass_validation_decisions_total", "Gate decisions", ["decision", "reason", "mode"]
)
_decision_counters: dict[tuple[str, str, str], Any] = {}


def count_decision(decision: str, reason: str, mode: str) -> None:
    """`DECISIONS.labels(...)` costs more than the increment; keep the children."""
    labels = (decision, reason, mode)
    counter = _decision_counters.get(labels)
    if counter is None:
        counter = _decision_counters[labels] = DECISIONS.labels(*labels)
    counter.inc()


TICKET_LIFETIME_MARGIN_S = 86_400  # per-ticket state outlives validity by a day (late exits)


def lines() -> list[LineRead]:
    return [
        LineRead(
            code=line.code,
            name=line.name,
            stations=[StationRead(code=s.code, name=s.name, km=s.km) for s in line.stations],
        )
        for line in LINES
    ]


def bus_routes() -> list[BusRouteRead]:
    return [
        BusRouteRead(code=r.code, name=r.name, length_km=r.length_km, fare_band=r.fare_band)
        for r in BUS_ROUTES
    ]


def demo_gates() -> list[GateRead]:
    """Two gates per metro station (entry and exit) and one validator per bus route."""
    return [
        GateRead(
            gate_id=f"{s.code}-{d.value[:2].upper()}",
            station=s.code,
            route=None,
            direction=d,
            enabled=True,
        )
        for line in LINES
        for s in line.stations
        for d in (Direction.entry, Direction.exit)
    ] + [
        GateRead(
            gate_id=f"BUS-{r.code}-01",
            station=None,
            route=r.code,
            direction=Direction.both,
            enabled=True,
        )
        for r in BUS_ROUTES
    ]


async def seed_gates(redis: Redis) -> int:
    gates = demo_gates()
    for gate in gates:
        await repository.seed_gate(redis, gate, new_secret())
    return len(gates)


async def get_gate(redis: Redis, gate_id: str) -> GateRead:
    gate = await repository.get_gate(redis, gate_id)
    if gate is None:
        raise NotFound(f"No gate {gate_id}.", code="gate_not_found")
    return gate


async def provision_gate(redis: Redis, memory: Memory, body: GateCreate) -> GateProvisioned:
    gate = GateRead(
        gate_id=body.gate_id,
        station=body.station,
        route=body.route,
        direction=body.direction,
        enabled=True,
        products=body.products,
    )
    secret = new_secret()
    if not await repository.add_gate(redis, gate, secret):
        raise Conflict(f"Gate {body.gate_id} already exists.", code="gate_exists")
    await reload(redis, memory)
    return GateProvisioned(**gate.model_dump(), secret=secret)


async def update_gate(redis: Redis, memory: Memory, gate_id: str, body: GateUpdate) -> GateRead:
    gate = await get_gate(redis, gate_id)
    changes = body.model_dump(exclude_none=True)
    if gate.route is not None and changes.get("direction", Direction.both) is not Direction.both:
        raise Unprocessable("A bus validator's direction is `both`.", code="invalid_direction")
    updated = gate.model_copy(update=changes)
    await repository.save_gate(redis, updated)
    await reload(redis, memory)
    return updated


async def gate_secret(redis: Redis, gate_id: str) -> GateSecretRead:
    """The gate's current secret, unchanged: reading it twice gives the same one."""
    await get_gate(redis, gate_id)
    secret, previous = await repository.gate_secret(redis, gate_id)
    if secret is None:  # provisioning went half-way: the gate cannot sign anything yet
        raise NotFound(f"Gate {gate_id} has no secret; rotate it to give it one.", code="no_secret")
    still_accepted = previous is not None and previous.until >= time.time()
    return GateSecretRead(
        gate_id=gate_id,
        secret=secret,
        previous_valid_until=_unix_time(previous.until) if previous and still_accepted else None,
    )


async def rotate_secret(
    redis: Redis, memory: Memory, gate_id: str, grace_s: float
) -> GateSecretRead:
    """A new secret for the gate; the replaced one is accepted for `grace_s` more seconds."""
    await get_gate(redis, gate_id)
    secret = new_secret()
    until = int(time.time() + grace_s) if grace_s > 0 else None
    kept = await repository.rotate_gate_secret(redis, gate_id, secret, until)
    await reload(redis, memory)
    return GateSecretRead(
        gate_id=gate_id,
        secret=secret,
        previous_valid_until=_unix_time(until) if kept and until is not None else None,
    )


def _unix_time(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def reload(redis: Redis, memory: Memory) -> None:
    memory.apply(await repository.load_state(redis), int(time.time()))


def issuer_key_read(key: IssuerKey) -> IssuerKeyRead:
    return IssuerKeyRead(
        kid=key.kid,
        public_key=b64url(key.public_key),
        status=key.status,
        not_after=datetime.fromtimestamp(key.not_after, UTC) if key.not_after else None,
        source=key.source,
    )


async def put_issuer_key(
    redis: Redis, memory: Memory, kid: str, body: IssuerKeyPut
) -> IssuerKeyRead:
    try:
        raw = decode_public_key(body.public_key)
    except ValueError as exc:
        raise Unprocessable(str(exc), code="invalid_public_key") from None
    not_after = int(body.not_after.timestamp()) if body.not_after else None
    key = IssuerKey(kid, raw, body.status, not_after, "operator")
    await repository.save_issuer_key(redis, kid, key.record())
    await reload(redis, memory)
    return issuer_key_read(key)


def issuer_keys(memory: Memory) -> list[IssuerKeyRead]:
    return [issuer_key_read(k) for k in sorted(memory.issuer_keys.values(), key=lambda k: k.kid)]


# The gate decision ------------------------------------------------------------------------------


_OUTCOME_REASONS = {
    "ok": Reason.ok,
    "replayed": Reason.replayed,
    "no_rides_left": Reason.no_rides_left,
    "already_inside": Reason.already_inside,
    "not_inside": Reason.not_inside,
}


class Validator:
    """The hot path: everything in memory, then exactly one Redis round trip."""

    def __init__(
        self,
        settings: ValidationSettings,
        redis: Redis,
        memory: Memory,
        pipeline: EventPipeline,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.decision_redis = PipelinedRedis(settings.redis_url)  # the one hot round trip
        self.memory = memory
        self.pipeline = pipeline
        self.qr_window_s = int(settings.qr_window.total_seconds())
        self.qr_skew_s = int(settings.qr_skew.total_seconds())
        self.device_window_s = int(settings.device_window.total_seconds())
        self.max_trip_s = int(settings.max_trip.total_seconds())
        self.passback_s = int(settings.bus_passback.total_seconds())
        # A code is fresh for window + skew seconds; remember it a little longer than that.
        self.qr_used_ttl_s = self.qr_window_s + 2 * self.qr_skew_s + 10
        self.nonce_ttl_s = max(NONCE_TTL_S, 2 * self.device_window_s)
        self.script_settings = repository.script_settings(
            self.nonce_ttl_s, self.qr_used_ttl_s, self.max_trip_s, self.passback_s
        )
        self._bundle_signer: BundleSigner | None = None

    async def bundle_signer(self) -> BundleSigner:
        """The key that signs gate bundles: from settings, else the shared development key."""
        if self._bundle_signer is None:
            configured = self.settings.bundle_signing_key
            if configured is not None:
                raw = decode_private_key(configured.get_secret_value())
            else:
                generated = Ed25519PrivateKey.generate().private_bytes_raw()
                raw = await repository.bundle_key(self.redis, generated)
            self._bundle_signer = BundleSigner.from_raw(raw)
        return self._bundle_signer

    async def validate(
        self, signed: SignedRequest, gate: GatePlace, text: str, scanned_at: datetime
    ) -> dict[str, Any]:
        now = int(time.time())
        validation_id = str(uuid_utils.uuid7())
        # The gate's scan time counts when it is plausible (queued on a slow link); a gate clock
        # that is off by more than the signing window is ignored for the server's.
        scanned = int(scanned_at.timestamp())
        if not now - self.device_window_s <= scanned <= now:
            scanned = now
        try:
            qr = parse_dynamic_qr(text)
        except TicketCodecError as error:
            await claim_nonce(self.redis, signed, ttl_s=self.nonce_ttl_s)
            return self._decide(
                validation_id, gate, now, scanned, None, codec_reason(error), error.code
            )

        credential = qr.credential
        ticket_id = ticket_text(credential.ticket_id)
        pre: Reason | None = None
        detail: str | None = None
        try:
            verify_dynamic_qr(qr, self.memory.usable_keys)
        except TicketCodecError as error:
            pre, detail = codec_reason(error), error.code
        if pre is None and (
            fresh := check_freshness(qr.at, scanned, self.qr_window_s, self.qr_skew_s)
        ):
            pre = Reason(fresh)
        post = None
        if pre is None:
            post = static_verdict(
                credential,
                gate,
                now,
                self.memory.deny_tickets,
                self.memory.deny_devices,
                device_fingerprint(credential.device_public_key),
            )
        product = self.memory.product(credential.product)
        place = gate.station or gate.route or ""
        rides = -1 if product.rides is None else product.rides
        expire_at = credential.valid_until + TICKET_LIFETIME_MARGIN_S
        state = await repository.validate(
            self.decision_redis,
            ticket_id=ticket_id,
            gate_id=signed.device_id,
            nonce=signed.nonce,
            at=qr.at,
            counter=qr.counter,
            decision=(
                f"{now}|{pre.value if pre else ''}|{post.value if post else ''}|"
                f"{gate.script_action}|{place}|{validation_id}|{product.kind.value}|{rides}|"
                f"{signed.device_id}|{expire_at}"
            ),
            settings=self.script_settings,
        )
        if state.outcome == "nonce_replayed":
            raise replayed(signed.device_id)
        reason = _OUTCOME_REASONS.get(state.outcome) or Reason(state.outcome)
        if state.auto_closed_trip is not None:
            emit_auto_closed(
                self.pipeline, ticket_id, state.auto_closed_trip, state.kind, state.wallet, now
            )
        return self._decide(validation_id, gate, now, scanned, qr, reason, detail, state=state)

    def _decide(
        self,
        validation_id: str,
        gate: GatePlace,
        now: int,
        scanned: int,
        qr: DynamicQR | None,
        reason: Reason,
        detail: str | None,
        *,
        state: StateOutcome | None = None,
    ) -> dict[str, Any]:
        accepted = reason is Reason.ok
        action = Action(state.action) if accepted and state and state.action else Action.none
        kind = state.kind if state and state.kind else None
        fare = None
        entry = None
        if accepted and state is not None and kind == TicketKind.stored_value.value:
            if action is Action.exit and state.closed_trip is not None and gate.station:
                fare = trip_fare(state.closed_trip.station, gate.station)
            elif action is Action.tap and gate.route:
                fare = bus_fare(gate.route)
        if state is not None and state.closed_trip is not None:
            entry = _trip_data(state.closed_trip)
        rides_left = state.rides_left if state else None
        message_vi, message_en = display(reason, action, rides_left=rides_left, fare=fare)
        ticket_id = ticket_text(qr.credential.ticket_id) if qr else None
        decided_at = events.iso(now)
        body: dict[str, Any] = {
            "validation_id": validation_id,
            "decision": (Decision.accept if accepted else Decision.reject).value,
            "reason": reason.value,
            "reason_detail": detail,
            "action": action.value,
            "message_vi": message_vi,
            "message_en": message_en,
            "ticket_id": ticket_id,
            "product": qr.credential.product if qr else None,
            "remaining_rides": rides_left,
            "fare": fare,
            "balance": state.balance if state else None,
            "gate_id": gate.gate_id,
            "decided_at": decided_at,
        }
        data = {
            **body,
            "station": gate.station,
            "line": gate.line,
            "route": gate.route,
            "kind": kind,
            "rider_category": qr.credential.rider_category.name.lower() if qr else None,
            "wallet_account_id": state.wallet if state else None,
            "qr_at": events.iso(qr.at) if qr else None,
            "qr_counter": qr.counter if qr else None,
            "scanned_at": events.iso(scanned),
            "entry": entry,
            "offline": False,
        }
        self.pipeline.emit(
            events.VALIDATIONS_TOPIC,
            ticket_id or gate.gate_id,
            events.validation(data, accepted=accepted),
        )
        count_decision(body["decision"], reason.value, "online")
        return body

    # Offline uploads -----------------------------------------------------------------------------

    async def reconcile(
        self, gate: GatePlace, decisions: list[OfflineDecision]
    ) -> ValidationBatchRead:
        results: list[BatchItemRead] = []
        for item in decisions:
            results.append(await self._reconcile_one(gate, item))
        return ValidationBatchRead(
            gate_id=gate.gate_id,
            recorded=sum(r.status is BatchStatus.recorded for r in results),
            duplicates=sum(r.status is BatchStatus.duplicate for r in results),
            conflicts=sum(r.conflict for r in results),
            results=results,
        )

    async def _reconcile_one(self, gate: GatePlace, item: OfflineDecision) -> BatchItemRead:
        vid = str(item.validation_id)
        scanned = int(item.scanned_at.timestamp())
        accepted = item.decision is Decision.accept
        try:
            qr = parse_dynamic_qr(item.qr)
            verify_dynamic_qr(qr, self.memory.usable_keys)
        except TicketCodecError as error:
            refused = codec_reason(error)
            ttl_s = int(self.settings.offline_record_ttl.total_seconds())
            first = await repository.mark_upload(self.redis, gate.gate_id, vid, ttl_s)
            if first:
                self._emit_offline(gate, item, None, refused, None, None, None)
            return BatchItemRead(
                validation_id=item.validation_id,
                status=BatchStatus.recorded if first else BatchStatus.duplicate,
                server_reason=refused,
                conflict=False,
                fare=None,
            )
        credential = qr.credential
        ticket_id = str(credential.ticket_id)
        fresh = check_freshness(qr.at, scanned, self.qr_window_s, self.qr_skew_s)
        server_reason: Reason | None = Reason(fresh) if fresh else None
        if server_reason is None:
            server_reason = static_verdict(
                credential,
                gate,
                scanned,
                self.memory.deny_tickets,
                self.memory.deny_devices,
                device_fingerprint(credential.device_public_key),
            )
        product = self.memory.product(credential.product)
        result = await repository.reconcile(
            self.redis,
            repository.ReconcileCall(
                ticket_id=ticket_id,
                at=qr.at,
                counter=qr.counter,
                validation_id=vid,
                gate_id=gate.gate_id,
                accepted=accepted,
                action=item.action.value,
                station=gate.station or gate.route or "",
                scanned_at=scanned,
                record_ttl_s=int(self.settings.offline_record_ttl.total_seconds()),
                expire_at=credential.valid_until + TICKET_LIFETIME_MARGIN_S,
                default_kind=product.kind.value,
                default_rides=-1 if product.rides is None else product.rides,
            ),
        )
        if result.duplicate:
            return BatchItemRead(
                validation_id=item.validation_id,
                status=BatchStatus.duplicate,
                server_reason=server_reason or Reason.ok,
                conflict=False,
                fare=None,
            )
        fare = None
        if accepted and result.kind == TicketKind.stored_value.value:
            if item.action is Action.exit and result.closed_trip is not None and gate.station:
                fare = trip_fare(result.closed_trip.station, gate.station)
            elif item.action is Action.tap and gate.route:
                fare = bus_fare(gate.route)
        conflict = accepted and bool(result.other_uses)
        if conflict:
            uses = [{"gate_id": gate.gate_id, "validation_id": vid}]
            for other in result.other_uses:
                other_gate, _, other_vid = other.partition("|")
                uses.append({"gate_id": other_gate, "validation_id": other_vid})
            self.pipeline.emit(
                events.ALERTS_TOPIC,
                ticket_id,
                events.duplicate_use(
                    ticket_id=ticket_id,
                    qr_at=qr.at,
                    counter=qr.counter,
                    uses=uses,
                    detail=f"One dynamic QR was accepted at {len(uses)} gates.",
                ),
            )
        self._emit_offline(
            gate,
            item,
            qr,
            server_reason or Reason.ok,
            result.kind,
            result.wallet,
            fare,
            entry=result.closed_trip,
            conflict=conflict,
        )
        return BatchItemRead(
            validation_id=item.validation_id,
            status=BatchStatus.recorded,
            server_reason=server_reason or Reason.ok,
            conflict=conflict,
            fare=fare,
        )

    def _emit_offline(
        self,
        gate: GatePlace,
        item: OfflineDecision,
        qr: DynamicQR | None,
        server_reason: Reason,
        kind: str | None,
        wallet: str | None,
        fare: int | None,
        *,
        entry: Trip | None = None,
        conflict: bool = False,
    ) -> None:
        accepted = item.decision is Decision.accept
        ticket_id = str(qr.credential.ticket_id) if qr else None
        data = {
            "validation_id": str(item.validation_id),
            "decision": item.decision.value,
            "reason": item.reason.value,
            "reason_detail": None,
            "action": item.action.value,
            "ticket_id": ticket_id,
            "product": qr.credential.product if qr else None,
            "remaining_rides": None,
            "fare": fare,
            "balance": None,
            "gate_id": gate.gate_id,
            "decided_at": events.iso(item.scanned_at.timestamp()),
            "station": gate.station,
            "line": gate.line,
            "route": gate.route,
            "kind": kind,
            "rider_category": qr.credential.rider_category.name.lower() if qr else None,
            "wallet_account_id": wallet,
            "qr_at": events.iso(qr.at) if qr else None,
            "qr_counter": qr.counter if qr else None,
            "scanned_at": events.iso(item.scanned_at.timestamp()),
            "entry": _trip_data(entry) if entry else None,
            "offline": True,
            "server_reason": server_reason.value,
            "conflict": conflict,
        }
        self.pipeline.emit(
            events.VALIDATIONS_TOPIC,
            ticket_id or gate.gate_id,
            events.validation(data, accepted=accepted),
        )
        count_decision(item.decision.value, item.reason.value, "offline")


def _trip_data(trip: Trip) -> dict[str, Any]:
    return {
        "validation_id": trip.validation_id,
        "station": trip.station,
        "entered_at": events.iso(trip.at),
    }


def emit_auto_closed(
    pipeline: EventPipeline,
    ticket_id: str,
    trip: Trip,
    kind: str,
    wallet: str | None,
    now: int,
) -> None:
    fare = max_trip_fare(trip.station) if kind == TicketKind.stored_value.value else 0
    pipeline.emit(
        events.VALIDATIONS_TOPIC,
        ticket_id,
        events.trip_auto_closed(
            ticket_id=ticket_id,
            entry_validation_id=trip.validation_id,
            entry_station=trip.station,
            entered_at=trip.at,
            closed_at=now,
            fare=fare,
            kind=kind,
            wallet_account_id=wallet,
        ),
    )
