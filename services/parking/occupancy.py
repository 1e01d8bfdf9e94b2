"""Every Redis command of parking: capacity and occupancy counters, enforced atomically.

Per lot, two hashes share the lot's hash tag (one Redis Cluster slot, so one script can use
both): ``cp:{<lot>}:parking-capacity`` (vehicle type → places) and
``cp:{<lot>}:parking-occupancy`` (vehicle type → vehicles inside, plus ``seq``, a counter of
changes that orders occupancy events). A Lua script admits a vehicle only if a place is free,
in one round trip; nothing else changes the counters but a release (or its undo when the
transaction that released fails) and the rebuild from PostgreSQL at start-up (when missing).

A lane decision's device nonce (shared.devicesigning) is claimed by the same script call
(its key carries the lot's hash tag): a replayed request changes no counter. Lanes send their
commands over one pipelined connection (`shared.redis.PipelinedRedis`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from services.parking.tariffs import VehicleType
from shared.devicesigning import NONCE_TTL_S
from shared.redis import PipelinedRedis, key

SEQUENCE_FIELD = "seq"
REPLAYED = -1  # the script's first value when the nonce was used already

# KEYS: capacity hash, occupancy hash[, the request's nonce]. ARGV: vehicle type, nonce TTL.
# → {admitted (1/0), occupied, capacity, seq}; capacity -1 when the lot has none configured;
# {-1, 0, 0, 0} when the nonce was used already (nothing changed).
_ADMIT = """
if KEYS[3] and not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then
  return {-1, 0, 0, 0}
end
local capacity = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if not capacity then return {0, 0, -1, 0} end
local occupied = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if occupied >= capacity then
  return {0, occupied, capacity, tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')}
end
occupied = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return {1, occupied, capacity, redis.call('HINCRBY', KEYS[2], 'seq', 1)}
"""

# Same keys and arguments: one vehicle out, never below zero. → {1, occupied, capacity, seq},
# or {-1, 0, 0, 0} when the nonce was used already.
_RELEASE = """
if KEYS[3] and not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then
  return {-1, 0, 0, 0}
end
local capacity = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local occupied = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if occupied > 0 then occupied = redis.call('HINCRBY', KEYS[2], ARGV[1], -1) end
return {1, occupied, capacity, redis.call('HINCRBY', KEYS[2], 'seq', 1)}
"""


class Replayed(Exception):
    """The request's nonce was claimed already: the script changed nothing."""


class _Script:
    """A Lua script run with EVALSHA, loaded again if Redis forgot it (a restart, a flush)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self,
        redis: Redis,
        lanes: PipelinedRedis | None,
        keys: Sequence[str],
        args: Sequence[str | int],
    ) -> list[int]:
        if lanes is not None:
            try:
                result = await lanes.evalsha(self.sha, keys, args)
            except NoScriptError:
                await lanes.execute("SCRIPT", "LOAD", self.source)
                result = await lanes.evalsha(self.sha, keys, args)
        else:
            try:
                result = await redis.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                await redis.script_load(self.source)
                result = await redis.evalsha(self.sha, len(keys), *keys, *args)
        values = [int(value) for value in cast(list[Any], result)]
        if values[0] == REPLAYED:
            raise Replayed
        return values


_ADMIT_SCRIPT = _Script(_ADMIT)
_RELEASE_SCRIPT = _Script(_RELEASE)


def capacity_key(lot_id: str) -> str:
    return key("parking-capacity", lot_id)


def occupancy_key(lot_id: str) -> str:
    return key("parking-occupancy", lot_id)


@dataclass(frozen=True, slots=True)
class Count:
    admitted: bool
    occupied: int
    capacity: int
    sequence: int

    @property
    def free(self) -> int:
        return max(self.capacity - self.occupied, 0)


class Occupancy:
    def __init__(self, redis: Redis, lanes: PipelinedRedis | None = None) -> None:
        self.redis = redis
        self.lanes = lanes  # the lanes' pipelined connection, when the service has one

    def _keys(self, lot_id: str, nonce_key: str | None) -> list[str]:
        keys = [capacity_key(lot_id), occupancy_key(lot_id)]
        return keys if nonce_key is None else [*keys, nonce_key]

    async def admit(
        self, lot_id: str, vehicle_type: VehicleType, *, nonce_key: str | None = None
    ) -> Count:
        """Take a place if one is free; `admitted` says whether it was. With `nonce_key` (in
        the lot's hash tag), claim it first: Replayed when it was used, nothing changed."""
        admitted, occupied, capacity, sequence = await _ADMIT_SCRIPT(
            self.redis,
            self.lanes,
            self._keys(lot_id, nonce_key),
            [vehicle_type.value, NONCE_TTL_S],
        )
        return Count(bool(admitted), occupied, max(capacity, 0), sequence)

    async def release(
        self, lot_id: str, vehicle_type: VehicleType, *, nonce_key: str | None = None
    ) -> Count:
        """One vehicle out (never below zero); `nonce_key` as for `admit`."""
        _, occupied, capacity, sequence = await _RELEASE_SCRIPT(
            self.redis,
            self.lanes,
            self._keys(lot_id, nonce_key),
            [vehicle_type.value, NONCE_TTL_S],
        )
        return Count(True, occupied, max(capacity, 0), sequence)

    async def claim_nonce(self, nonce_key: str) -> bool:
        """Remember a request's nonce (SET NX with its TTL); False when it was used."""
        if self.lanes is not None:
            reply = await self.lanes.execute("SET", nonce_key, "1", "NX", "EX", NONCE_TTL_S)
        else:
            reply = await self.redis.set(nonce_key, b"1", nx=True, ex=NONCE_TTL_S)
        return bool(reply)

    async def restore(self, lot_id: str, vehicle_type: VehicleType) -> None:
        """Undo a release whose transaction failed: the vehicle is still inside."""
        await self.redis.hincrby(occupancy_key(lot_id), vehicle_type.value, 1)

    async def read(self, lot_id: str) -> dict[VehicleType, Count]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(capacity_key(lot_id))
            pipe.hgetall(occupancy_key(lot_id))
            capacities, occupied = cast(
                tuple[dict[bytes, bytes], dict[bytes, bytes]], await pipe.execute()
            )
        sequence = int(occupied.get(SEQUENCE_FIELD.encode(), b"0"))
        return {
            vehicle_type: Count(
                True,
                int(occupied.get(vehicle_type.value.encode(), b"0")),
                int(capacities.get(vehicle_type.value.encode(), b"0")),
                sequence,
            )
            for vehicle_type in VehicleType
        }

    async def set_capacity(self, lot_id: str, capacity: Mapping[VehicleType, int]) -> None:
        await self.redis.hset(
            capacity_key(lot_id),
            mapping={vehicle_type.value: places for vehicle_type, places in capacity.items()},
        )

    async def rebuild_missing(
        self, lot_ids: Iterable[str], inside: Mapping[tuple[str, VehicleType], int]
    ) -> int:
        """Start counters from PostgreSQL for lots that have none (a fresh or lost Redis).

        Existing counters are left alone: they are the live truth, and a replica starting
        while vehicles pass must not overwrite them with a snapshot that is already old.
        """
        rebuilt = 0
        for lot_id in lot_ids:
            counts = {
                vehicle_type.value: inside.get((lot_id, vehicle_type), 0)
                for vehicle_type in VehicleType
            }
            async with self.redis.pipeline(transaction=True) as pipe:
                for field, value in counts.items():
                    pipe.hsetnx(occupancy_key(lot_id), field, value)
                created = cast(list[int], await pipe.execute())
            rebuilt += int(any(created))
        return rebuilt
