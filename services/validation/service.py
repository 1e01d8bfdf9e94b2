"""Validation rules in motion: the gate decision, gate provisioning, offline reconciliation.

No Redis commands here (see repository.py), no HTTP (see endpoints.py); pure rules in rules.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import Counter
from redis.asyncio import Redis

from services.validation import decisions, events, repository
from services.validation.bundle import BundleSigner
from services.validation.memory import (
    IssuerKey,
    Memory,
    b64url,
    decode_private_key,
    decode_public_key,
)
from services.validation.network import GateNetworks, Networks
from services.validation.outbox import Outbox
from services.validation.rules import (
    Decision,
    Direction,
    FareTable,
    GatePlace,
    Reason,
    codec_reason,
    device_fingerprint,
    static_verdict,
    ticket_text,
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
from services.validation.timing import Tolerances
from shared.devicesigning import SignedRequest, new_secret, replayed
from shared.errors import Conflict, NotFound, Unprocessable
from shared.events import ALERTS_TOPIC
from shared.redis import PipelinedRedis
from shared.ticketcodec import TicketCodecError, parse_dynamic_qr, verify_dynamic_qr

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


def lines(networks: GateNetworks) -> list[LineRead]:
    return [
        LineRead(
            code=line.code,
            name=line.name,
            stations=[StationRead(code=s.code, name=s.name, km=s.km) for s in line.stations],
        )
        for line in networks.current().map.lines
    ]


def bus_routes(networks: GateNetworks) -> list[BusRouteRead]:
    return [
        BusRouteRead(code=r.code, name=r.name, length_km=r.length_km, fare_band=r.network)
        for r in networks.current().map.bus_routes
    ]


def demo_gates(networks: GateNetworks) -> list[GateRead]:
    """Two gates per metro station (entry and exit) and one validator per bus route."""
    network = networks.current().map
    return [
        GateRead(
            gate_id=f"{s.code}-{d.value[:2].upper()}",
            station=s.code,
            route=None,
            direction=d,
            enabled=True,
        )
        for line in network.lines
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
        for r in network.bus_routes
    ]


async def seed_gates(redis: Redis, networks: GateNetworks) -> int:
    gates = demo_gates(networks)
    for gate in gates:
        await repository.seed_gate(redis, gate, new_secret())
    return len(gates)


async def get_gate(redis: Redis, gate_id: str) -> GateRead:
    gate = await repository.get_gate(redis, gate_id)
    if gate is None:
        raise NotFound(f"No gate {gate_id}.", code="gate_not_found")
    return gate


def check_place(networks: GateNetworks, body: GateCreate) -> None:
    """A station or route of some network version held (one opening in a version published
    ahead can have its gates before it opens)."""
    if body.station is not None and body.station not in networks.stations:
        raise Unprocessable(f"unknown station {body.station}", code="validation_error")
    if body.route is not None and body.route not in networks.routes:
        raise Unprocessable(f"unknown bus route {body.route}", code="validation_error")


async def provision_gate(
    redis: Redis, memory: Memory, networks: GateNetworks, body: GateCreate
) -> GateProvisioned:
    check_place(networks, body)
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


class Validator:
    """The hot path: everything in memory, then exactly one Redis round trip, which also makes
    the decision's event durable (decisions.py, outbox.py)."""

    def __init__(
        self,
        settings: ValidationSettings,
        redis: Redis,
        memory: Memory,
        outbox: Outbox,
        networks: Networks,
    ) -> None:
        self.settings = settings
        self.networks = networks
        self.redis = redis
        self.decision_redis = PipelinedRedis(settings.redis_url)  # the one hot round trip
        self.memory = memory
        self.outbox = outbox
        self.tolerances = Tolerances.from_settings(settings)
        self.script_settings = repository.script_settings(
            self.tolerances.nonce_ttl_s,
            int(settings.max_trip.total_seconds()),
            int(settings.bus_passback.total_seconds()),
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
        fares = self.networks.at(now)  # no network in force: 503, nothing decided
        tolerances = self.tolerances
        # The gate's scan time counts when it is plausible (queued on a slow link); a gate clock
        # that is off by more than the scan lag is ignored for the server's.
        scanned = tolerances.scan_time(int(scanned_at.timestamp()), now)
        ctx = decisions.context(str(uuid_utils.uuid7()), now, scanned, gate, fares, detail=None)
        try:
            qr = parse_dynamic_qr(text)
        except TicketCodecError as error:
            ctx["detail"] = error.code
            call = repository.DecisionCall(
                signed.device_id,
                signed.nonce,
                now,
                orjson.dumps(ctx),
                pre=codec_reason(error).value,
            )
            state = await repository.validate(self.decision_redis, call, self.script_settings)
            return self._answer(signed, ctx, state, fares)

        credential = qr.credential
        ticket_id = ticket_text(credential.ticket_id)
        pre: Reason | None = None
        try:
            verify_dynamic_qr(qr, self.memory.usable_keys)
        except TicketCodecError as error:
            pre, ctx["detail"] = codec_reason(error), error.code
        if pre is None and (fresh := tolerances.freshness(qr.at, scanned)):
            pre = Reason(fresh)
        post = None
        if pre is None:
            post = static_verdict(
                credential,
                gate,
                ctx["line"],
                now,
                self.memory.deny_tickets,
                self.memory.deny_devices,
                device_fingerprint(credential.device_public_key),
            )
        product = self.memory.product(credential.product)
        ctx["ticket"] = ticket_id
        ctx["product"] = credential.product
        ctx["category"] = credential.rider_category.name.lower()
        ctx["qr_at"] = qr.at
        ctx["counter"] = qr.counter
        call = repository.DecisionCall(
            signed.device_id,
            signed.nonce,
            now,
            orjson.dumps(ctx),
            pre=pre.value if pre else "",
            ticket_id=ticket_id,
            at=qr.at,
            counter=qr.counter,
            post=post.value if post else "",
            action=gate.script_action,
            place=gate.station or gate.route or "",
            validation_id=ctx["vid"],
            kind=product.kind.value,
            rides=-1 if product.rides is None else product.rides,
            expire_at=credential.valid_until + TICKET_LIFETIME_MARGIN_S,
            marker_expires_at=tolerances.marker_expires_at(qr.at),
        )
        state = await repository.validate(self.decision_redis, call, self.script_settings)
        return self._answer(signed, ctx, state, fares)

    def _answer(
        self,
        signed: SignedRequest,
        ctx: dict[str, Any],
        state: repository.StateOutcome,
        fares: FareTable,
    ) -> dict[str, Any]:
        if state.outcome == "nonce_replayed":
            raise replayed(signed.device_id)
        body = decisions.answer(ctx, state, fares)
        count_decision(body["decision"], body["reason"], "online")
        return body

    # Offline uploads -----------------------------------------------------------------------------

    async def reconcile(
        self, gate: GatePlace, uploaded: list[OfflineDecision]
    ) -> ValidationBatchRead:
        results: list[BatchItemRead] = []
        for item in uploaded:
            results.append(await self._reconcile_one(gate, item))
        return ValidationBatchRead(
            gate_id=gate.gate_id,
            recorded=sum(r.status is BatchStatus.recorded for r in results),
            duplicates=sum(r.status is BatchStatus.duplicate for r in results),
            too_late=sum(r.status is BatchStatus.too_late for r in results),
            conflicts=sum(r.conflict for r in results),
            results=results,
        )

    async def _reconcile_one(self, gate: GatePlace, item: OfflineDecision) -> BatchItemRead:
        now = int(time.time())
        vid = str(item.validation_id)
        scanned = item.scanned_at.timestamp()
        fares = self.networks.at(scanned)  # the version in force when the gate decided
        accepted = item.decision is Decision.accept
        ctx = decisions.context(
            vid,
            now,
            scanned,
            gate,
            fares,
            decision=item.decision.value,
            reason=item.reason.value,
            action=item.action.value,
            server_reason=None,
        )
        try:
            qr = parse_dynamic_qr(item.qr)
            verify_dynamic_qr(qr, self.memory.usable_keys)
        except TicketCodecError as error:
            refused = codec_reason(error)
            ctx["server_reason"] = refused.value
            ttl_s = self.tolerances.upload_horizon_s
            first = await repository.mark_upload(
                self.redis, gate.gate_id, vid, ttl_s, orjson.dumps(ctx)
            )
            if first:
                count_decision(item.decision.value, item.reason.value, "offline")
            return BatchItemRead(
                validation_id=item.validation_id,
                status=BatchStatus.recorded if first else BatchStatus.duplicate,
                server_reason=refused,
                conflict=False,
                fare=None,
            )
        credential = qr.credential
        ticket_id = str(credential.ticket_id)
        fresh = self.tolerances.freshness(qr.at, int(scanned))
        server_reason: Reason | None = Reason(fresh) if fresh else None
        if server_reason is None:
            server_reason = static_verdict(
                credential,
                gate,
                ctx["line"],
                int(scanned),
                self.memory.deny_tickets,
                self.memory.deny_devices,
                device_fingerprint(credential.device_public_key),
            )
        server_reason = server_reason or Reason.ok
        if not self.tolerances.accepts_upload(qr.at, now):
            # Its markers may be gone: counting it could admit or charge a QR twice.
            await self.outbox.emit(
                ALERTS_TOPIC,
                ticket_id,
                events.upload_too_late(
                    gate_id=gate.gate_id,
                    validation_id=vid,
                    ticket_id=ticket_id,
                    qr_at=qr.at,
                    scanned_at=scanned,
                    id=decisions.derived_id(vid, "upload_too_late"),
                ),
            )
            return BatchItemRead(
                validation_id=item.validation_id,
                status=BatchStatus.too_late,
                server_reason=server_reason,
                conflict=False,
                fare=None,
            )
        ctx.update(
            ticket=ticket_id,
            product=credential.product,
            category=credential.rider_category.name.lower(),
            qr_at=qr.at,
            counter=qr.counter,
            server_reason=server_reason.value,
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
                scanned_at=int(scanned),
                markers_expire_at=self.tolerances.marker_expires_at(qr.at),
                expire_at=credential.valid_until + TICKET_LIFETIME_MARGIN_S,
                default_kind=product.kind.value,
                default_rides=-1 if product.rides is None else product.rides,
                context=orjson.dumps(ctx),
            ),
        )
        if result is None:
            return BatchItemRead(
                validation_id=item.validation_id,
                status=BatchStatus.duplicate,
                server_reason=server_reason,
                conflict=False,
                fare=None,
            )
        outcome = decisions.upload_outcome(ctx, result, fares)
        count_decision(item.decision.value, item.reason.value, "offline")
        return BatchItemRead(
            validation_id=item.validation_id,
            status=BatchStatus.recorded,
            server_reason=server_reason,
            conflict=outcome.conflict,
            fare=outcome.fare,
        )
