"""Typed auth dependencies: signed lane devices, the admin bearer token, and parking itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope

from services.parking.context import Device, Parking
from shared.app import state
from shared.auth import check_token, token_matches
from shared.devicesigning import (
    DEVICE_ID_HEADER,
    DeviceAuthError,
    SignedRequest,
    claim_nonce,
    request_target,
    signature_scheme,
    verify_request,
)

ParkingDep = Annotated[Parking, state("parking")]

admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="`Authorization: Bearer <PARKING_ADMIN_TOKEN>`: operators and back offices",
)
# Documented so that the OpenAPI shows what a lane device sends; checked in `signed_device`.
_device_headers = signature_scheme(DEVICE_ID_HEADER, "DeviceSignature")


def _token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return credentials.credentials if credentials is not None else None


async def admin(
    context: ParkingDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    check_token(_token(credentials), context.settings.admin_token, "parking admin token")


async def lane_device(
    context: Parking, scope: Scope, headers: Mapping[str, str], body: bytes
) -> tuple[Device, SignedRequest]:
    """The device whose signature over this request checks out; its nonce is not claimed
    yet (the caller claims it once, if it can in a script it runs anyway)."""
    device_id = headers.get(DEVICE_ID_HEADER)
    device = await context.devices.get(device_id) if device_id else None
    signed = verify_request(
        scope["method"],
        request_target(scope.get("raw_path") or scope["path"].encode(), scope["query_string"]),
        headers,
        body,
        lambda _: device.key if device is not None else None,
    )
    assert device is not None  # verify_request refuses an unknown device
    return device, signed


async def _verified_device(request: Request, context: Parking) -> Device:
    device, signed = await lane_device(
        context, request.scope, request.headers, await request.body()
    )
    await claim_nonce(context.runtime.kv, signed, tag=device.lot_id)
    return device


async def signed_device(
    request: Request,
    context: ParkingDep,
    _documented: Annotated[str | None, Depends(_device_headers)],
) -> Device:
    """A lane terminal or camera whose request signature checks out (nonce used once)."""
    return await _verified_device(request, context)


async def device_or_admin(
    request: Request,
    context: ParkingDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
    _documented: Annotated[str | None, Depends(_device_headers)],
) -> Device | None:
    """A signed device, or an operator (None)."""
    if credentials is not None and request.headers.get(DEVICE_ID_HEADER) is None:
        check_token(_token(credentials), context.settings.admin_token, "parking admin token")
        return None
    if token_matches(_token(credentials), context.settings.admin_token):
        return None
    try:
        return await _verified_device(request, context)
    except DeviceAuthError as refused:
        if refused.code == "unsigned_request" and credentials is None:
            raise DeviceAuthError(
                "Sign the request as a device, or send the admin token.", code="unauthenticated"
            ) from None
        raise


device_signature = _device_headers  # for routes that check the signature themselves
AdminDep = Depends(admin)
DeviceDep = Annotated[Device, Depends(signed_device)]
DeviceOrAdminDep = Annotated[Device | None, Depends(device_or_admin)]
