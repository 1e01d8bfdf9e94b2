"""Who may call: operators (an admin bearer token) and gates (signed, see devicesigning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope

from services.validation.rules import GatePlace
from services.validation.service import Validator
from services.validation.settings import ValidationSettings
from shared.app import state
from shared.auth import check_token
from shared.devicesigning import (
    SIGNATURE_HEADER,
    DeviceAuthError,
    SignedRequest,
    request_target,
    signature_scheme,
    signing_headers,
    verify_request,
)

ValidatorDep = Annotated[Validator, state("validator")]
SettingsDep = Annotated[ValidationSettings, state("settings")]

admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="The operator token from `VALIDATION_ADMIN_TOKEN`.",
)
gate_signature = signature_scheme(SIGNATURE_HEADER, "gateSignature")


async def operator(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(admin_bearer)],
) -> None:
    token = credentials.credentials if credentials is not None else None
    check_token(token, settings.admin_token, "validation admin token")


@dataclass(frozen=True, slots=True)
class SignedGate:
    request: SignedRequest
    place: GatePlace


def authenticate(scope: Scope, body: bytes, validator: Validator) -> SignedGate:
    """A request signed by an enabled, provisioned gate (its nonce is claimed later, once)."""
    signed = verify_request(
        scope["method"],
        request_target(scope.get("raw_path") or scope["path"].encode(), scope["query_string"]),
        signing_headers(scope["headers"]),
        body,
        validator.memory.device_key,
        window_s=validator.tolerances.request_window_s,
    )
    place = validator.memory.places.get(signed.device_id)
    if place is None:  # a secret without a gate record: provisioning went half-way
        raise DeviceAuthError(f"No gate {signed.device_id}.", code="unknown_device")
    return SignedGate(signed, place)


async def signed_gate(
    request: Request,
    validator: ValidatorDep,
    _signature: Annotated[str | None, Security(gate_signature)],
) -> SignedGate:
    return authenticate(request.scope, await request.body(), validator)


OperatorDep = Depends(operator)
GateDevice = Annotated[SignedGate, Depends(signed_gate)]
