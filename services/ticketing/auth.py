"""Who is calling: riders (short-lived JWT access tokens, rotating refresh tokens) and operators.

- Passwords: Argon2id (by default argon2-cffi's RFC 9106 low-memory profile: 3 passes over
  64 MiB, 4 lanes; tunable in settings), hashed off the event loop.
- Access token: HS256 JWT, `sub` = rider id, `typ` = "access", 15 minutes by default.
- Refresh token: 32 random bytes, stored only as SHA-256; single use (each refresh returns a
  new pair) and revocable; presenting a used one revokes its whole family (token theft).
- Operators: one bearer token from settings, compared in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Annotated

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.ticketing.settings import TicketingSettings
from shared.auth import check_token
from shared.errors import Unauthorized

ISSUER = "citypass-ticketing"
AUDIENCE = "citypass-rider"
ALGORITHM = "HS256"


@cache
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


def _hasher_of(settings: TicketingSettings) -> PasswordHasher:
    return _hasher(
        settings.password_time_cost, settings.password_memory_kib, settings.password_parallelism
    )


async def hash_password(password: str, settings: TicketingSettings) -> str:
    return await asyncio.to_thread(_hasher_of(settings).hash, password)


async def verify_password(
    password_hash: str | None, password: str, settings: TicketingSettings
) -> bool:
    """Constant work whether or not the rider exists: unknown phones check a dummy hash."""
    hasher = _hasher_of(settings)
    target = password_hash or _dummy_hash(hasher)
    try:
        await asyncio.to_thread(hasher.verify, target, password)
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None


@cache
def _dummy_hash(hasher: PasswordHasher) -> str:
    return hasher.hash(secrets.token_urlsafe(16))


def issue_access_token(rider_id: uuid.UUID, settings: TicketingSettings, now: datetime) -> str:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(rider_id),
        "typ": "access",
        "iat": int(now.timestamp()),
        "exp": int((now + settings.access_token_ttl).timestamp()),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)


def rider_of(token: str, settings: TicketingSettings) -> uuid.UUID:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized(
            "The access token has expired: refresh it at /v1/sessions/refresh.",
            code="token_expired",
        ) from None
    except jwt.InvalidTokenError:
        raise Unauthorized("The access token is not valid.", code="invalid_token") from None
    if claims.get("typ") != "access":
        raise Unauthorized("Not an access token.", code="invalid_token")
    try:
        return uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise Unauthorized("The access token is not valid.", code="invalid_token") from None


def new_refresh_token() -> tuple[str, bytes]:
    token = secrets.token_urlsafe(32)
    return token, refresh_token_hash(token)


def refresh_token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


# Dependencies -----------------------------------------------------------------------------------


async def ticketing_settings(request: Request) -> TicketingSettings:
    settings = request.app.state.runtime.settings
    assert isinstance(settings, TicketingSettings)
    return settings


SettingsDep = Annotated[TicketingSettings, Depends(ticketing_settings)]

rider_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="RiderToken",
    bearerFormat="JWT",
    description="A rider's access token from POST /v1/riders or POST /v1/sessions",
)
operator_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorToken",
    description="The operators' back-office token (TICKETING_OPERATOR_TOKEN)",
)


@dataclass(frozen=True, slots=True)
class Rider:
    """The authenticated rider of a request."""

    id: uuid.UUID


async def current_rider(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(rider_bearer)],
) -> Rider:
    if credentials is None:
        raise Unauthorized(
            "Send `Authorization: Bearer <access token>`; sign up or log in to get one.",
            code="missing_token",
        )
    return Rider(rider_of(credentials.credentials, settings))


async def operator(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(operator_bearer)],
) -> None:
    token = credentials.credentials if credentials is not None else None
    check_token(token, settings.operator_token, "ticketing operator token")


CurrentRider = Annotated[Rider, Depends(current_rider)]
