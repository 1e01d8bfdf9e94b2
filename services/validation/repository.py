"""Every Redis command of the validation service (it has no database)."""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from services.validation.schemas import GateRead
from shared.redis import key

GATES = key("gates", "network")  # one hash: gate id → gate JSON (secrets kept apart)


def gate_secret_key(gate_id: str) -> str:
    return key("gate-secret", gate_id)


async def save_gate(redis: Redis, gate: GateRead, secret: str) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(GATES, gate.gate_id, gate.model_dump_json())
        pipe.set(gate_secret_key(gate.gate_id), secret, nx=True)
        await pipe.execute()


async def list_gates(redis: Redis) -> list[GateRead]:
    raw = cast(dict[bytes, bytes], await redis.hgetall(GATES))
    return sorted((GateRead.model_validate_json(v) for v in raw.values()), key=lambda g: g.gate_id)


async def get_gate(redis: Redis, gate_id: str) -> GateRead | None:
    raw = cast(bytes | None, await redis.hget(GATES, gate_id))
    return GateRead.model_validate_json(raw) if raw else None
