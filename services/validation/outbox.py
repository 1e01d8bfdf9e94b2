"""Validation's outbox: every event waits in a Redis stream until Kafka acknowledged it.

Validation has no database, so its outbox is Redis: the decision script appends each decision
to its shard's stream in the same atomic step that marks the QR used (no extra round trip on
the gate's path), and code outside scripts appends ready events with `emit`. A relay in every
validation process reads the streams as one consumer group, publishes to Kafka, then
acknowledges and deletes what Kafka has. A gates' process deployed beside validation-fares
stands by (`relay_standby`): it relays only while events wait longer than `relay_claim_after`,
so that relaying never takes a gate's CPU while the background process does it.

Delivery is at least once; an event rebuilt after a crash has the same id and bytes
(decisions.py), and consumers deduplicate on the id.

Whatever process dies, an entry stays in its stream: a relay that restarts reads its own
unacknowledged entries first, and the others take over those of a relay that went away
(`relay_claim_after`). While Kafka hangs or is down, entries simply wait in Redis.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import orjson
from aiokafka.errors import KafkaError
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.validation import streams
from services.validation.decisions import Record
from shared.events import Event
from shared.fares.versions import NoNetwork
from shared.health import raise_if_cancelled
from shared.kafka import Publisher
from shared.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST

logger = logging.getLogger("citypass.validation.outbox")

GROUP = "relay"
GONE_AFTER_S = 3600  # a relay consumer idle this long with nothing pending is forgotten

PUBLISHED = Counter("citypass_validation_published_events_total", "Events acknowledged by Kafka")
UNREADABLE = Counter(
    "citypass_validation_outbox_unreadable_total", "Stream entries no builder could read"
)

Builder = Callable[[dict[str, object], str], list[Record]]


def encode_record(topic: str, key: str, event: Event) -> bytes:
    return orjson.dumps(
        {
            "t": topic,
            "k": key,
            "v": base64.b64encode(event.value()).decode(),
            "h": [[name, base64.b64encode(raw).decode()] for name, raw in event.headers()],
        }
    )


def decode_record(raw: bytes) -> Record:
    item = orjson.loads(raw)
    headers = [(name, base64.b64decode(value)) for name, value in item["h"]]
    return item["t"], item["k"], base64.b64decode(item["v"]), headers


def records_of(fields: Mapping[bytes, bytes], builders: Mapping[str, Builder]) -> list[Record]:
    kind = fields[b"k"].decode()
    if kind == "event":
        return [decode_record(fields[b"c"])]
    return builders[kind](orjson.loads(fields[b"c"]), fields[b"r"].decode())


class Outbox:
    def __init__(
        self,
        redis: Redis,
        publisher: Publisher,
        consumer: str,
        *,
        batch_size: int,
        retry_interval_s: float,
        claim_after_s: float,
        builders: Mapping[str, Builder],
        standby: bool = False,
    ) -> None:
        self.redis = redis
        self.publisher = publisher
        self.consumer = consumer
        self.batch_size = batch_size
        self.retry_interval_s = retry_interval_s
        self.claim_after_s = claim_after_s
        # A standby relays only when the others do not (see _needed), so that building and
        # publishing events never competes with a gate's request.
        self.standby = standby
        self._needed_until = 0.0
        self._failing_since: float | None = None
        self.builders = builders
        # XREADGROUP's COUNT is per stream: a full batch is batch_size over every stream.
        self._full_per_stream = max(1, batch_size // streams.SHARDS)
        self._per_stream = self._full_per_stream
        self._own_pending = True  # after a start or a failure, our unacknowledged entries first
        self._next_claim = 0.0
        self._next_forget = 0.0

    async def emit(self, topic: str, key: str, event: Event) -> None:
        """Append a ready event; it reaches Kafka through the relay."""
        await streams.append_event(self.redis, streams.shard(key), encode_record(topic, key, event))

    async def start(self) -> None:
        await streams.ensure_relay_group(self.redis, GROUP)

    async def run(self) -> None:
        while True:
            raise_if_cancelled()
            try:
                if self.standby and not await self._needed():
                    await asyncio.sleep(self.claim_after_s / 3)
                    continue
                if self._failing_since is not None and not await self._kafka_back():
                    await asyncio.sleep(self.retry_interval_s)
                    continue
                if not await self.relay_once(block_ms=1000) and self.standby:
                    self._needed_until = 0.0  # caught up: back to standing by
                self._failing_since = None
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis lost the group (a flush, a failover to a stale replica): entries added
                # since are still in the streams, and a group created at 0 reads them all.
                logger.warning("relay group missing; created again")
                await self.start()
            except (KafkaError, TimeoutError, OSError, RedisError, NoNetwork) as exc:
                # NoNetwork: no version loaded yet to price decisions; they wait in Redis.
                self._own_pending = True
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    logger.warning("events wait in Redis: %s", exc or type(exc).__name__)
                await asyncio.sleep(self.retry_interval_s)

    async def _kafka_back(self) -> bool:
        """After a failure a relay retries its own entries for `claim_after_s`; then it lets
        them go idle, so that a relay that reaches Kafka takes them over (this one may be cut
        off from Kafka alone: each retry of its own would keep them from the others), and only
        checks whether Kafka answers it again."""
        assert self._failing_since is not None
        if time.monotonic() - self._failing_since <= self.claim_after_s:
            return True
        try:
            await asyncio.wait_for(self.publisher.connect(), 2 * self.publisher.send_timeout_s)
        except (KafkaError, TimeoutError, OSError):
            return False
        logger.info("Kafka answers again: relaying")
        return True

    async def _needed(self) -> bool:
        """A standby relay takes over while events wait longer than `claim_after_s` (the
        active relays are down or behind), and keeps going until the streams are empty."""
        if time.monotonic() < self._needed_until:
            return True
        oldest_s = await self._export_state()
        if oldest_s <= self.claim_after_s:
            return False
        logger.warning("events waited %.0f s: this standby relay takes over", oldest_s)
        self._needed_until = float("inf")
        self._own_pending = True
        return True

    async def _export_state(self) -> float:
        waiting, oldest_s = await streams.outbox_state(self.redis, time.time())
        OUTBOX_BACKLOG.labels("validation").set(waiting)
        OUTBOX_OLDEST.labels("validation").set(oldest_s)
        return oldest_s

    async def relay_once(self, block_ms: int | None = None) -> int:
        """Relay one batch; returns how many entries Kafka acknowledged."""
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.claim_after_s / 3
            claim_ms = int(self.claim_after_s * 1000)
            if await streams.claim_abandoned(
                self.redis, GROUP, self.consumer, claim_ms, self.batch_size
            ):
                self._own_pending = True
            if now >= self._next_forget:
                self._next_forget = now + GONE_AFTER_S / 4
                await streams.forget_gone_relays(
                    self.redis, GROUP, self.consumer, GONE_AFTER_S * 1000
                )
            await self._export_state()
        entries = await self._read(pending=self._own_pending, block_ms=None)
        if not entries and self._own_pending:
            self._own_pending = False  # ours are all relayed: now the new ones
            entries = await self._read(pending=False, block_ms=block_ms)
        if not entries:
            return 0
        records: list[Record] = []
        unreadable: list[streams.StreamEntry] = []
        for entry in entries:
            try:
                records += records_of(entry[2], self.builders)
            except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
                unreadable.append(entry)  # kept aside for a person, never dropped
        await self._publish(records)
        if unreadable:
            UNREADABLE.inc(len(unreadable))
            logger.error("%d event entries no builder reads: parked", len(unreadable))
            await streams.park_unreadable(self.redis, unreadable)
        await streams.relayed(self.redis, GROUP, entries)
        PUBLISHED.inc(len(entries) - len(unreadable))
        return len(entries)

    async def _read(self, *, pending: bool, block_ms: int | None) -> list[streams.StreamEntry]:
        return await streams.read_events(
            self.redis,
            GROUP,
            self.consumer,
            pending=pending,
            count=self._per_stream,
            block_ms=None if pending else block_ms,
        )

    async def _publish(self, records: Sequence[Record]) -> None:
        """Bounded as a whole: with the broker hung, each send can wait its full timeout.

        A batch that timed out is retried smaller: on a starved machine Kafka may take longer
        than the timeout for a full batch, which would otherwise be retried forever."""
        try:
            await asyncio.wait_for(
                self.publisher.publish_many(records), 2 * self.publisher.send_timeout_s
            )
        except TimeoutError:
            self._per_stream = max(1, self._per_stream // 2)
            await self.publisher.reset()
            raise
        self._per_stream = min(self._full_per_stream, self._per_stream * 2)

    async def drain(self, timeout_s: float) -> None:
        """At shutdown: relay what is there while Kafka answers; the rest waits in Redis."""
        deadline = time.monotonic() + timeout_s
        self._own_pending = True
        try:
            while time.monotonic() < deadline and await self.relay_once():
                pass
        except (KafkaError, TimeoutError, OSError, RedisError) as exc:
            logger.info("events left in Redis for the next relay: %s", exc or type(exc).__name__)
