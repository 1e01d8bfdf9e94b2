"""Operator rules: logins and sessions. No Redis commands here, no HTTP."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from redis.asyncio import Redis

from services.operator import repository
from services.operator.schemas import OperatorRead, Role, SessionRead
from shared.errors import Unauthorized

hasher = PasswordHasher()
# Verified against when the user does not exist, so timing does not reveal valid usernames.
_DUMMY_HASH = hasher.hash("not-a-real-password")


async def create_operator(redis: Redis, username: str, password: str, role: Role) -> None:
    await repository.save_operator(redis, username, hasher.hash(password), role.value)


async def login(
    redis: Redis, username: str, password: str, secret: str, ttl: timedelta
) -> SessionRead:
    record = await repository.get_operator(redis, username)
    try:
        hasher.verify(record["password_hash"] if record else _DUMMY_HASH, password)
    except VerificationError:
        record = None
    if record is None:
        raise Unauthorized("Wrong username or password.", code="invalid_credentials")
    now = int(time.time())
    expires_in = int(ttl.total_seconds())
    token = jwt.encode(
        {"sub": username, "role": record["role"], "iat": now, "exp": now + expires_in},
        secret,
        algorithm="HS256",
    )
    return SessionRead(access_token=token, expires_in=expires_in, role=Role(record["role"]))


def authenticate(token: str, secret: str) -> OperatorRead:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
        return OperatorRead(username=claims["sub"], role=Role(claims["role"]))
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise Unauthorized(
            "Sign in again: the session is missing, invalid or expired.", code="invalid_session"
        ) from exc
