"""Every Redis command of parking: capacity and occupancy counters, enforced atomically.

Per lot, two hashes share the lot's hash tag (one Redis Cluster slot, so one script can use
both): ``cp:{<lot>}:parking-capacity`` (vehicle type → places) and
``cp:{<lot>}:parking-occupancy`` (vehicle type → vehicles inside, plus ``seq``, a counter of
changes that orders occupancy events). A Lua script admits a vehicle only if a place is free,
in one round trip; nothing else changes the counters but a release (or its undo when the
transaction that released fails) and the rebuild from PostgreSQL at start-up (when missing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from services.parking.tariffs import VehicleType
from shared.redis import key

SEQUENCE_FIELD = "seq"

# KEYS: capacity hash, occupancy hash. ARGV: vehicle type.
# → {admitted (1/0), occupied, capacity, seq}; capacity -1 when the lot has none configured.
_ADMIT = """
local capacity = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if not capacity then return {0, 0, -1, 0} end
local occupied = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if occupied >= capacity then
  return {0, occupied, capacity, tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')}
end
occupied = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return {1, occupied, capacity, redis.call('HINCRBY', KEYS[2], 'seq', 1)}
"""

# Same keys and argument: one vehicle out, never below zero. → {occupied, capacity, seq}.
_RELEASE = """
local capacity = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local occupied = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if occupied > 0 then occupied = redis.call('HINCRBY', KEYS[2], ARGV[1], -1) end
return {occupied, capacity, redis.call('HINCRBY', KEYS[2], 'seq', 1)}
"""


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
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._admit = redis.register_script(_ADMIT)
        self._release = redis.register_script(_RELEASE)

    async def admit(self, lot_id: str, vehicle_type: VehicleType) -> Count:
        """Take a place if one is free; `admitted` says whether it was."""
        result = cast(
            list[int],
            await self._admit(
                keys=[capacity_key(lot_id), occupancy_key(lot_id)], args=[vehicle_type.value]
            ),
        )
        admitted, occupied, capacity, sequence = (int(value) for value in result)
        return Count(bool(admitted), occupied, max(capacity, 0), sequence)

    async def release(self, lot_id: str, vehicle_type: VehicleType) -> Count:
        result = cast(
            list[int],
            await self._release(
                keys=[capacity_key(lot_id), occupancy_key(lot_id)], args=[vehicle_type.value]
            ),
        )
        occupied, capacity, sequence = (int(value) for value in result)
        return Count(True, occupied, max(capacity, 0), sequence)

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
