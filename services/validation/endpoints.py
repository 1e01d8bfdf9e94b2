"""HTTP routes of the validation service: parse, call the service, shape the answer."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Path
from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.types import Scope

from services.validation import bundle, fare_endpoints, repository, service
from services.validation.auth import (
    GateDevice,
    OperatorDep,
    SettingsDep,
    ValidatorDep,
    authenticate,
    gate_signature,
)
from services.validation.schemas import (
    BundleKeyRead,
    BusRouteRead,
    GateBundleRead,
    GateCreate,
    GateProvisioned,
    GateRead,
    GateSecretRead,
    GateUpdate,
    IssuerKeyPut,
    IssuerKeyRead,
    LineRead,
    ValidationBatchCreate,
    ValidationBatchRead,
    ValidationCreate,
    ValidationRead,
)
from services.validation.service import Validator
from shared.app import RuntimeDep
from shared.auth import INVALID_TOKEN
from shared.devicesigning import claim_nonce
from shared.errors import Forbidden, ServiceUnavailable, problems
from shared.hot import HotRoute, HotRouter

GateId = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9-]+$")]
Kid = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[!-~]+$")]

UNAUTHORIZED_GATE = problems((401, "Not signed by an enabled gate; see `code`"))
UNAUTHORIZED_ADMIN = problems(INVALID_TOKEN)
GATE_MISMATCH = problems((403, "`gate_mismatch`: the body names another gate"))

network = APIRouter(prefix="/v1", tags=["network"])
gates = APIRouter(prefix="/v1", tags=["gates"])
keys = APIRouter(prefix="/v1", tags=["issuer keys"])
decisions = APIRouter(prefix="/v1", tags=["validations"])
routers = (decisions, network, gates, keys, fare_endpoints.router)


def _same_gate(gate: str, signed_by: str) -> None:
    if gate != signed_by:
        raise Forbidden(
            f"The request is signed by {signed_by} but names gate {gate}.", code="gate_mismatch"
        )


NO_NETWORK = problems((503, "`network_not_loaded`: no network version is in force"))


@network.get("/lines", response_model=list[LineRead], responses=NO_NETWORK)
async def list_lines(validator: ValidatorDep) -> list[LineRead]:
    """Metro lines of the network version in force, with their stations in order and their
    distances (km) along the line."""
    return service.lines(validator.networks.held)


@network.get("/bus-routes", response_model=list[BusRouteRead], responses=NO_NETWORK)
async def list_bus_routes(validator: ValidatorDep) -> list[BusRouteRead]:
    """Bus routes of the network version in force, with their length and fare network."""
    return service.bus_routes(validator.networks.held)


@gates.get("/gates", response_model=list[GateRead])
async def list_gates(rt: RuntimeDep) -> list[GateRead]:
    """Every provisioned gate and bus validator (never their secrets)."""
    return await repository.list_gates(rt.kv)


@gates.get("/gates/{gate_id}", response_model=GateRead)
async def get_gate(gate_id: GateId, rt: RuntimeDep) -> GateRead:
    """One gate: where it stands, its direction and whether it is enabled."""
    return await service.get_gate(rt.kv, gate_id)


@gates.post(
    "/gates",
    response_model=GateProvisioned,
    status_code=201,
    dependencies=[OperatorDep],
    responses={
        **UNAUTHORIZED_ADMIN,
        409: {"description": "`gate_exists`"},
        422: {"description": "`validation_error`: unknown to every network version held"},
    },
)
async def provision_gate(body: GateCreate, validator: ValidatorDep) -> GateProvisioned:
    """Provision a metro gate (a station and a direction) or a bus validator (a route).

    The answer carries the gate's device secret: load it into the gate, which signs every
    request with it. `GET /v1/gates/{gate_id}/secret` reads it again (it never changes it);
    `POST /v1/gates/{gate_id}/secret:rotate` replaces it.
    """
    return await service.provision_gate(
        validator.redis, validator.memory, validator.networks.held, body
    )


@gates.patch(
    "/gates/{gate_id}",
    response_model=GateRead,
    dependencies=[OperatorDep],
    responses=UNAUTHORIZED_ADMIN,
)
async def update_gate(gate_id: GateId, body: GateUpdate, validator: ValidatorDep) -> GateRead:
    """Enable or disable a gate, change its direction or the products it accepts.

    A disabled gate's requests are refused (401 `device_disabled`) by every validation
    process within a second.
    """
    return await service.update_gate(validator.redis, validator.memory, gate_id, body)


@gates.get(
    "/gates/{gate_id}/secret",
    response_model=GateSecretRead,
    dependencies=[OperatorDep],
    responses={**UNAUTHORIZED_ADMIN, 404: {"description": "`gate_not_found`, `no_secret`"}},
)
async def read_gate_secret(gate_id: GateId, validator: ValidatorDep) -> GateSecretRead:
    """The gate's current device secret, to load into the gate (or a gate simulator).

    Reading never changes it: everyone who reads it gets the same secret, and the gate keeps
    working. To replace it, rotate it (`POST /v1/gates/{gate_id}/secret:rotate`).
    """
    return await service.gate_secret(validator.redis, gate_id)


@gates.post(
    "/gates/{gate_id}/secret:rotate",
    response_model=GateSecretRead,
    dependencies=[OperatorDep],
    responses={**UNAUTHORIZED_ADMIN, 404: {"description": "`gate_not_found`"}},
)
async def rotate_gate_secret(
    gate_id: GateId, validator: ValidatorDep, settings: SettingsDep
) -> GateSecretRead:
    """Replace the gate's device secret (a leaked secret, a scheduled rotation).

    The answer carries the new secret. The one it replaced is still accepted until
    `previous_valid_until`: for the grace period `VALIDATION_GATE_SECRET_GRACE` (10 minutes by
    default; 0 cuts it off at once), on every gate route (decisions, offline uploads, the
    bundle), so the gate can be given its new secret without closing. After that only the new
    secret signs. Rotating again drops the older secret at once.
    """
    grace_s = settings.gate_secret_grace.total_seconds()
    return await service.rotate_secret(validator.redis, validator.memory, gate_id, grace_s)


@keys.get("/issuer-keys", response_model=list[IssuerKeyRead])
async def list_issuer_keys(validator: ValidatorDep) -> list[IssuerKeyRead]:
    """The issuer public keys gates accept (polled from ticketing's `/v1/keys`, configured, or
    loaded by an operator), with their status."""
    return service.issuer_keys(validator.memory)


@keys.put(
    "/issuer-keys/{kid}",
    response_model=IssuerKeyRead,
    dependencies=[OperatorDep],
    responses=UNAUTHORIZED_ADMIN,
)
async def put_issuer_key(kid: Kid, body: IssuerKeyPut, validator: ValidatorDep) -> IssuerKeyRead:
    """Load or change an issuer public key by hand (key ceremonies, tests, ticketing outages).

    `retiring` keys keep validating their credentials until `not_after`; `retired` and
    `revoked` keys are refused at once (`unknown_key`).
    """
    return await service.put_issuer_key(validator.redis, validator.memory, kid, body)


# The gate decision is a hot route (shared.hot): FastAPI's routing and dependency machinery
# cost more than the decision itself.
hot = HotRouter[Validator](tags=["validations"], security=gate_signature)


@hot.post(
    "/v1/validations",
    body=ValidationCreate,
    response_model=ValidationRead,
    responses={
        **UNAUTHORIZED_GATE,
        **GATE_MISMATCH,
        413: {"description": "`payload_too_large`: a body over the limit (default 4 MiB)"},
        422: {
            "description": "Not a JSON body of this shape (`validation_error`); a bad QR is a "
            "`reject`, never a 422"
        },
        503: {
            "description": "`state_unavailable`: Redis is unreachable; the gate should decide "
            "offline from its bundle (`Retry-After` says when to try online again); "
            "`network_not_loaded`: no network version in force yet"
        },
    },
)
async def validate(
    validator: Validator, route: HotRoute[ValidationCreate], scope: Scope, body: bytes
) -> Response:
    """Decide on a scanned dynamic QR: open the gate (`accept`) or not (`reject`).

    Signed by the gate (see the `gateSignature` scheme). The answer comes from memory and one
    Redis round trip, typically within a few milliseconds; show `message_vi`/`message_en`.
    Every code gets a decision, however broken: `malformed` (with `reason_detail` saying
    how), `unknown_key`, `bad_issuer_signature`, `bad_device_signature`, `qr_expired`,
    `qr_not_yet_valid`, `replayed` (each QR opens one gate once), `revoked_ticket`,
    `revoked_device`, `insufficient_balance` (an unpaid fare), `ticket_not_yet_valid`,
    `ticket_expired`, `gate_not_allowed`, `wrong_line`, `no_rides_left`, `already_inside`
    (entry twice), `not_inside` (exit without entry).

    Metro gates with direction `both` treat the tap as an exit when the rider's trip is open.
    Stored-value riders' fares (`fare`) are charged afterwards; the gate never waits for it.
    """
    gate = authenticate(scope, body, validator)
    command = route.command(body)
    _same_gate(command.gate_id, gate.request.device_id)
    try:
        decided = await validator.validate(gate.request, gate.place, command.qr, command.scanned_at)
    except (RedisError, OSError) as exc:
        raise state_unavailable() from exc
    return Response(orjson.dumps(decided), media_type="application/json")


def state_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "Ticket state (Redis) is unreachable: decide offline from the gate bundle, upload later.",
        code="state_unavailable",
    )


@decisions.post(
    "/validations/batch",
    response_model=ValidationBatchRead,
    responses={**UNAUTHORIZED_GATE, **GATE_MISMATCH},
)
async def upload_offline_decisions(
    body: ValidationBatchCreate, gate: GateDevice, validator: ValidatorDep
) -> ValidationBatchRead:
    """Upload decisions an offline gate took (up to 1,000 per call, oldest first).

    Each is reconciled once (re-uploading is safe: `duplicate`): trips and rides are updated,
    stored-value fares charged, and a code accepted at two gates raises an alert
    (`conflict: true`). `server_reason` is what the online checks say about the code.
    """
    _same_gate(body.gate_id, gate.request.device_id)
    try:
        await claim_nonce(validator.redis, gate.request, ttl_s=validator.tolerances.nonce_ttl_s)
        return await validator.reconcile(gate.place, body.decisions)
    except (RedisError, OSError) as exc:
        raise state_unavailable() from exc


@decisions.get(
    "/gate-bundle",
    response_model=GateBundleRead,
    responses=UNAUTHORIZED_GATE,
)
async def gate_bundle(
    gate: GateDevice, validator: ValidatorDep, settings: SettingsDep
) -> GateBundleRead:
    """The signed bundle a gate needs to decide offline: issuer keys, deny list, products,
    fare tables and timings, valid until `valid_until` (fetch a new one well before). `fares`
    lists the network version in force and every one starting before `valid_until`, each
    with its `effective_from`: the gate prices by the one in force at each scan.

    Verify `signature` (Ed25519 over the decoded `payload` bytes) with the key published at
    `GET /v1/gate-bundle/key` before using it.
    """
    await claim_nonce(validator.redis, gate.request, ttl_s=validator.tolerances.nonce_ttl_s)
    record = validator.memory.gates[gate.place.gate_id]
    payload = bundle.build(
        validator.memory, validator.networks.held, record, settings, int(time.time())
    )
    return (await validator.bundle_signer()).sign(payload)


@decisions.get("/gate-bundle/key", response_model=BundleKeyRead)
async def gate_bundle_key(validator: ValidatorDep) -> BundleKeyRead:
    """The public key that signs gate bundles (pin it in gates at provisioning)."""
    return (await validator.bundle_signer()).published()
