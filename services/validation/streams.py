"""The events streams, one per shard: validation's outbox in Redis (outbox.py relays them).

Every per-ticket key is tagged by the ticket's shard, and the shard's stream shares that tag, so
a script can change a ticket's state and append the event of the change in one slot.

    cp:{S}:events              stream  events not yet acknowledged by Kafka (entry ids are the
                                       Redis time in ms); the relays' consumer group `relay`
    cp:{S}:events-unreadable   stream  entries no builder of the reading version understood
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.redis import key, text

# Fixed for the life of the data: a ticket's keys and its events' stream live in its shard.
# 32 spreads them over a cluster's primaries while one relay read covers every stream.
SHARDS = 32
_SHARD_TAGS = tuple(f"s{n:02d}" for n in range(SHARDS))


def shard(entity: str) -> str:
    """The hash tag of a ticket's (or, for unreadable codes, a gate's) keys and stream."""
    return _SHARD_TAGS[zlib.crc32(entity.encode()) % SHARDS]


def events_key(tag: str) -> str:
    return key("events", tag)


EVENT_STREAMS = tuple(events_key(tag) for tag in _SHARD_TAGS)


async def append_event(redis: Redis, tag: str, record: bytes) -> None:
    await redis.xadd(events_key(tag), {"k": "event", "c": record})


StreamEntry = tuple[str, str, dict[bytes, bytes]]  # stream, entry id, fields


async def ensure_relay_group(redis: Redis, group: str) -> None:
    """The relays' consumer group on every stream, from the start: entries are deleted once
    relayed, so whatever is in a stream has not reached Kafka yet."""
    for stream in EVENT_STREAMS:
        try:
            await redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


async def read_events(
    redis: Redis, group: str, consumer: str, *, pending: bool, count: int, block_ms: int | None
) -> list[StreamEntry]:
    """New entries (`pending=False`), or those this consumer read and has not acknowledged."""
    start = "0" if pending else ">"
    streams: dict[Any, Any] = dict.fromkeys(EVENT_STREAMS, start)
    reply = cast(
        list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None,
        await redis.xreadgroup(group, consumer, streams, count=count, block=block_ms),
    )
    return [
        (text(stream), text(entry_id), fields)
        for stream, entries in reply or []
        for entry_id, fields in entries
        if fields  # a pending entry deleted meanwhile comes back without fields
    ]


async def relayed(redis: Redis, group: str, entries: Sequence[StreamEntry]) -> None:
    """Kafka has these: acknowledge and delete them, in one round trip."""
    by_stream: dict[str, list[str]] = {}
    for stream, entry_id, _ in entries:
        by_stream.setdefault(stream, []).append(entry_id)
    async with redis.pipeline(transaction=False) as pipe:
        for stream, ids in by_stream.items():
            pipe.xack(stream, group, *ids)
            pipe.xdel(stream, *ids)
        await pipe.execute()


async def park_unreadable(redis: Redis, entries: Sequence[StreamEntry]) -> None:
    """Entries the relay cannot turn into events (a newer version's, during a rolling
    upgrade): copied to `cp:{S}:events-unreadable` for a person before they leave the stream."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream, _, fields in entries:
            pipe.xadd(stream + "-unreadable", cast(dict[Any, Any], fields))
        await pipe.execute()


async def claim_abandoned(
    redis: Redis, group: str, consumer: str, min_idle_ms: int, count: int
) -> int:
    """Take over entries another relay read and never acknowledged (it died)."""
    claimed = 0
    for stream in EVENT_STREAMS:
        reply = await redis.xautoclaim(stream, group, consumer, min_idle_ms, "0-0", count=count)
        claimed += len(reply[1])
    return claimed


async def forget_gone_relays(redis: Redis, group: str, consumer: str, idle_ms: int) -> int:
    """Consumers of processes long gone, with nothing pending (every restart of a process with
    a new instance id leaves one behind)."""
    gone = 0
    for stream in EVENT_STREAMS:
        for info in await redis.xinfo_consumers(stream, group):
            name = text(info["name"])
            if name != consumer and info["pending"] == 0 and info["idle"] > idle_ms:
                gone += await redis.xgroup_delconsumer(stream, group, name) >= 0
    return gone


async def event_backlog(redis: Redis) -> int:
    """Events not yet acknowledged by Kafka, over every shard."""
    return (await outbox_state(redis, time.time()))[0]


async def outbox_state(redis: Redis, now: float) -> tuple[int, float]:
    """(entries waiting over every shard, age in seconds of the oldest): an entry's id is the
    Redis time it was appended, in milliseconds."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in EVENT_STREAMS:
            pipe.xlen(stream)
            pipe.xrange(stream, count=1)
        replies = await pipe.execute()
    waiting = sum(replies[0::2])
    firsts = [int(text(first[0][0]).split("-")[0]) for first in replies[1::2] if first]
    return waiting, max(0.0, now - min(firsts) / 1000) if firsts else 0.0
