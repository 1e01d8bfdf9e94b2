"""Device request signing: metro gates, bus validators and parking terminals sign every request.

A device holds a secret shared with the service that provisioned it. For every request it sends

    X-Device-Id:        the device id, e.g. `2A-01-EN`
    X-Device-Timestamp: unix seconds when it signed
    X-Device-Nonce:     16-64 characters of [A-Za-z0-9_-], never reused by this device
    X-Device-Signature: lowercase hex HMAC-SHA256(secret, canonical request)

where the canonical request is these lines joined by "\\n" (no trailing newline):

    CP-DEVICE-HMAC-SHA256
    <HTTP method, upper case>
    <path exactly as sent, percent-encoding kept, with "?query" when there is one>
    <the X-Device-Timestamp value>
    <the X-Device-Nonce value>
    <lowercase hex SHA-256 of the body bytes (of b"" for a request without a body)>

A rotated secret's predecessor may be accepted for a grace period (`DeviceKey.previous_*`);
checking it costs a second HMAC only for a request the current secret does not sign.

The server refuses (401 problem, stable `code`): `unsigned_request` (a header is missing),
`malformed_device_headers`, `unknown_device`, `bad_signature`, `device_disabled`,
`stale_request` (timestamp more than the window, 60 s by default, away from the server clock)
and `replayed_request` (the nonce was already used within twice the window).

Client side: `DeviceSigner.headers(...)`, or `DeviceAuth` for httpx. Server side:
`verify_request(...)` (pure, no I/O) then `claim_nonce(...)`, or fold the nonce claim into a
larger Redis script with `nonce_key(...)` and `NONCE_TTL_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass

import httpx
from fastapi.security import APIKeyHeader
from redis.asyncio import Redis

from shared.errors import Unauthorized
from shared.redis import key

__all__ = [
    "ALGORITHM",
    "DEVICE_ID_HEADER",
    "NONCE_HEADER",
    "NONCE_TTL_S",
    "SIGNATURE_HEADER",
    "SIGNED_HEADERS",
    "TIMESTAMP_HEADER",
    "WINDOW_S",
    "DeviceAuth",
    "DeviceAuthError",
    "DeviceKey",
    "DeviceSigner",
    "SignedRequest",
    "canonical_request",
    "claim_nonce",
    "new_nonce",
    "new_secret",
    "nonce_key",
    "replayed",
    "request_target",
    "sign",
    "signature_scheme",
    "signing_headers",
    "verify_request",
]

ALGORITHM = "CP-DEVICE-HMAC-SHA256"
DEVICE_ID_HEADER = "X-Device-Id"
TIMESTAMP_HEADER = "X-Device-Timestamp"
NONCE_HEADER = "X-Device-Nonce"
SIGNATURE_HEADER = "X-Device-Signature"
SIGNED_HEADERS = (DEVICE_ID_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
WINDOW_S = 60  # device clocks drift; a captured request is worthless after this
NONCE_TTL_S = 2 * WINDOW_S  # a nonce must be remembered as long as its timestamp is acceptable

# What the API descriptions say about it (the `securitySchemes` of signed routes).
SIGNATURE_DOC = (
    "Devices sign every request with their secret (shared/devicesigning.py): "
    f"`{DEVICE_ID_HEADER}`, `{TIMESTAMP_HEADER}` (unix s), `{NONCE_HEADER}` (fresh, 16-64 of "
    f"[A-Za-z0-9_-], never reused) and `{SIGNATURE_HEADER}` = hex HMAC-SHA256 with the device "
    f"secret over `{ALGORITHM}\\n<METHOD>\\n<path?query>\\n<timestamp>\\n<nonce>\\n"
    "<hex SHA-256 of the body>`. Refusals are 401 problems: `unsigned_request`, "
    "`malformed_device_headers`, `unknown_device`, `bad_signature`, `device_disabled`, "
    f"`stale_request` (> {WINDOW_S} s off), `replayed_request`."
)


def signature_scheme(header: str, scheme_name: str) -> APIKeyHeader:
    """The OpenAPI security scheme of signed device requests; it only documents them: the
    signature is checked by `verify_request`."""
    return APIKeyHeader(
        name=header, auto_error=False, scheme_name=scheme_name, description=SIGNATURE_DOC
    )


_DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()


class DeviceAuthError(Unauthorized):
    """A device request that is not properly signed; `code` says which check refused it."""

    title = "Device authentication failed"


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """What the server knows about a device: its secret and whether it may call.

    After a rotation, the secret it replaced (`previous_secret`) is still accepted until
    `previous_until` (unix seconds), so a device can be given its new secret meanwhile.
    """

    device_id: str
    secret: bytes
    enabled: bool = True
    previous_secret: bytes | None = None
    previous_until: float = 0.0


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request whose signature checked out; its nonce still has to be claimed once."""

    device_id: str
    timestamp: int
    nonce: str


def new_secret() -> str:
    """A fresh device secret (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def new_nonce() -> str:
    return secrets.token_urlsafe(18)  # 24 characters


def canonical_request(method: str, target: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    body_sha256 = hashlib.sha256(body).hexdigest() if body else _EMPTY_BODY_SHA256
    return "\n".join((ALGORITHM, method.upper(), target, timestamp, nonce, body_sha256)).encode()


def sign(secret: bytes, method: str, target: str, timestamp: str, nonce: str, body: bytes) -> str:
    message = canonical_request(method, target, timestamp, nonce, body)
    return hmac.digest(secret, message, "sha256").hex()


_RAW_SIGNED_HEADERS = {name.lower().encode(): name for name in SIGNED_HEADERS}


def signing_headers(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The X-Device-* headers of an ASGI request by their names, for `verify_request`: the
    first of each, as Starlette's `Headers` would give (a gate decision cannot afford it)."""
    found: dict[str, str] = {}
    for raw_name, value in raw_headers:
        name = _RAW_SIGNED_HEADERS.get(raw_name)
        if name is not None and name not in found:
            found[name] = value.decode("latin-1")
    return found


def request_target(raw_path: bytes, query_string: bytes) -> str:
    """The signed target of an ASGI request: raw path, plus `?query` when there is one."""
    path = raw_path.decode("latin-1")
    return f"{path}?{query_string.decode('latin-1')}" if query_string else path


class DeviceSigner:
    """Signs requests as one device (gates, validators, parking terminals, the CLI, Locust)."""

    def __init__(self, device_id: str, secret: str | bytes) -> None:
        if _DEVICE_ID.fullmatch(device_id) is None:
            raise ValueError("device id must be 1-64 characters of [A-Za-z0-9_.:-]")
        self.device_id = device_id
        self.secret = secret.encode() if isinstance(secret, str) else secret

    def headers(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        *,
        timestamp: int | None = None,
        nonce: str | None = None,
    ) -> dict[str, str]:
        """The four X-Device-* headers for this request (`target` = path with its query)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        once = new_nonce() if nonce is None else nonce
        return {
            DEVICE_ID_HEADER: self.device_id,
            TIMESTAMP_HEADER: stamp,
            NONCE_HEADER: once,
            SIGNATURE_HEADER: sign(self.secret, method, target, stamp, once, body),
        }


class DeviceAuth(httpx.Auth):
    """httpx authentication that signs each request (and each retry) afresh."""

    requires_request_body = True

    def __init__(self, signer: DeviceSigner) -> None:
        self.signer = signer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("ascii")
        request.headers.update(self.signer.headers(request.method, target, request.content))
        yield request


def verify_request(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    lookup: Callable[[str], DeviceKey | None],
    *,
    now: float | None = None,
    window_s: float = WINDOW_S,
) -> SignedRequest:
    """Check a signed request in memory (no I/O); raises `DeviceAuthError`.

    `headers` must look names up case-insensitively (Starlette's `Headers` does), or be
    `signing_headers(...)` of the request. The nonce
    is not claimed here: call `claim_nonce`, or fold `nonce_key` into your own Redis script.
    """
    device_id = headers.get(DEVICE_ID_HEADER)
    stamp = headers.get(TIMESTAMP_HEADER)
    nonce = headers.get(NONCE_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    if device_id is None or stamp is None or nonce is None or signature is None:
        missing = [name for name in SIGNED_HEADERS if headers.get(name) is None]
        raise DeviceAuthError(
            f"Sign the request as a device; missing {', '.join(missing)}.", code="unsigned_request"
        )
    if (
        _DEVICE_ID.fullmatch(device_id) is None
        or _TIMESTAMP.fullmatch(stamp) is None
        or _NONCE.fullmatch(nonce) is None
        or _SIGNATURE.fullmatch(signature) is None
    ):
        raise DeviceAuthError(
            "X-Device-Id, -Timestamp (unix seconds), -Nonce (16-64 of [A-Za-z0-9_-]) or "
            "-Signature (64 lowercase hex digits) is malformed.",
            code="malformed_device_headers",
        )
    device = lookup(device_id)
    if device is None:
        raise DeviceAuthError(f"No device {device_id} is provisioned.", code="unknown_device")
    message = canonical_request(method, target, stamp, nonce, body)
    clock = time.time() if now is None else now
    if not (
        _signed_with(device.secret, message, signature)
        or _signed_by_previous(device, message, signature, clock)
    ):
        raise DeviceAuthError(
            "The signature does not match this request and the device's secret.",
            code="bad_signature",
        )
    if not device.enabled:
        raise DeviceAuthError(f"Device {device_id} is disabled.", code="device_disabled")
    timestamp = int(stamp)
    if abs(clock - timestamp) > window_s:
        raise DeviceAuthError(
            f"X-Device-Timestamp is {int(clock - timestamp)} s away from the server clock "
            f"(at most {int(window_s)} s allowed); check the device clock.",
            code="stale_request",
        )
    return SignedRequest(device_id, timestamp, nonce)


def _signed_with(secret: bytes, message: bytes, signature: str) -> bool:
    return hmac.compare_digest(hmac.digest(secret, message, "sha256").hex(), signature)


def _signed_by_previous(device: DeviceKey, message: bytes, signature: str, clock: float) -> bool:
    """Whether the secret a rotation replaced, still in its grace period, signed `message`."""
    previous = device.previous_secret
    if previous is None or clock > device.previous_until:
        return False
    return _signed_with(previous, message, signature)


def nonce_key(device_id: str, nonce: str, tag: str | None = None) -> str:
    """Redis key remembering a used nonce; `tag` puts it in another key's cluster slot."""
    return key("device-nonce", tag or device_id, device_id, nonce)


def replayed(device_id: str) -> DeviceAuthError:
    return DeviceAuthError(
        f"This nonce was already used by {device_id}; every request needs a fresh one.",
        code="replayed_request",
    )


async def claim_nonce(
    redis: Redis,
    signed: SignedRequest,
    *,
    ttl_s: int = NONCE_TTL_S,
    tag: str | None = None,
) -> None:
    """Remember the nonce (SET NX with a TTL); raises `replayed_request` if it was used."""
    first = await redis.set(nonce_key(signed.device_id, signed.nonce, tag), b"1", nx=True, ex=ttl_s)
    if not first:
        raise replayed(signed.device_id)
