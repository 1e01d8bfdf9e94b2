"""Every Redis command of the operator service (it has no database)."""

from __future__ import annotations

from typing import cast

import orjson
from redis.asyncio import Redis

from shared.redis import key

OPERATORS = key("operators", "ops")  # hash: username → {"password_hash", "role"}


async def save_operator(redis: Redis, username: str, password_hash: str, role: str) -> None:
    record = orjson.dumps({"password_hash": password_hash, "role": role})
    await redis.hset(OPERATORS, username, record)


async def get_operator(redis: Redis, username: str) -> dict[str, str] | None:
    raw = cast(bytes | None, await redis.hget(OPERATORS, username))
    if raw is None:
        return None
    record: dict[str, str] = orjson.loads(raw)
    return record
