"""Kafka on aiokafka: topic registry, a publisher and a consumer loop that commits after processing.

The local broker (Tansu) loses topics and offsets on restart and has no idempotent producer, so:
topics are (re)created whenever a publisher connects, every consumer is idempotent, and
idempotence is only a production setting (`kafka_idempotent_producer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from shared.events import (
    ALERTS_TOPIC,
    LEDGER_TOPIC,
    OCCUPANCY_TOPIC,
    SESSIONS_TOPIC,
    TICKETS_TOPIC,
    VALIDATIONS_TOPIC,
    EnvelopeError,
    Event,
)
from shared.health import raise_if_cancelled
from shared.logging import request_id_var
from shared.memo import AtomicMemo
from shared.metrics import CONSUMER_DEAD_LETTERS, CONSUMER_EVENTS

logger = logging.getLogger("citypass.kafka")

DEAD_LETTER_TOPIC = "ops.deadletter"


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitions: int
    key: str  # which entity keys the records: their order matters


TOPICS: tuple[Topic, ...] = (
    Topic(TICKETS_TOPIC, 6, "ticket id"),
    Topic(VALIDATIONS_TOPIC, 12, "ticket id"),
    Topic(SESSIONS_TOPIC, 6, "parking session id"),
    Topic(OCCUPANCY_TOPIC, 3, "lot id"),
    Topic(LEDGER_TOPIC, 6, "account id"),
    Topic(ALERTS_TOPIC, 3, "alert subject"),
    Topic(DEAD_LETTER_TOPIC, 1, "original topic"),
)
MAX_RECORDS = 500  # per fetch
TIME_SLICE_S = 0.001  # a consumer gives the event loop back at least this often


REPLICATION_FACTOR = 3  # production: with min.insync.replicas=2, a broker can be lost


async def ensure_topics(
    bootstrap: str,
    topics: Sequence[Topic] = TOPICS,
    timeout_s: float = 10,
    replication_factor: int | None = None,
) -> None:
    """Create the missing topics. Replicas: `replication_factor` when given (a broker short of
    it makes the creation fail), else as many brokers as answer, up to REPLICATION_FACTOR (one
    on the local broker)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        existing = set(await admin.list_topics())
        if replication_factor is None:
            brokers = (await admin.describe_cluster())["brokers"]
            replication_factor = max(1, min(REPLICATION_FACTOR, len(brokers)))
        missing = [
            NewTopic(t.name, t.partitions, replication_factor)
            for t in topics
            if t.name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                await admin.create_topics(missing)
    finally:
        await admin.close()


class Publisher:
    """Publishes events with acks=all; every call is bounded by a timeout."""

    def __init__(
        self, bootstrap: str, *, send_timeout_s: float = 5.0, idempotent: bool = False
    ) -> None:
        self.bootstrap = bootstrap
        self.send_timeout_s = send_timeout_s
        self.idempotent = idempotent
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    def producer_config(self) -> dict[str, Any]:
        """acks=all always; idempotence where the broker has InitProducerId (real Kafka)."""
        return {
            "bootstrap_servers": self.bootstrap,
            "acks": "all",
            "enable_idempotence": self.idempotent,
            "request_timeout_ms": int(self.send_timeout_s * 1000),
            "linger_ms": 2,
        }

    async def connect(self) -> AIOKafkaProducer:
        """Start the producer if needed, creating the topics (the broker may have restarted)."""
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self.producer_config())
                try:
                    await asyncio.wait_for(producer.start(), self.send_timeout_s)
                    await ensure_topics(self.bootstrap, timeout_s=self.send_timeout_s)
                except BaseException:
                    await _stop_quietly(producer, self.send_timeout_s)
                    raise
                self._producer = producer
            return self._producer

    async def publish(self, topic: str, key: str, event: Event) -> None:
        await self.publish_many([(topic, key, event.value(), event.headers())])

    async def publish_many(
        self, records: Sequence[tuple[str, str, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        """Send all records and wait until the broker acknowledged every one of them."""
        producer = await self.connect()
        try:
            futures = await _send_in_batches(producer, records)
            await asyncio.wait_for(asyncio.gather(*futures), self.send_timeout_s)
        except (KafkaError, TimeoutError, OSError):
            await self.reset()
            raise

    async def check(self) -> None:
        producer = await self.connect()
        await asyncio.wait_for(producer.client.fetch_all_metadata(), self.send_timeout_s)

    async def reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer, self.send_timeout_s)

    async def close(self) -> None:
        await self.reset()


def _positive_murmur2(key: bytes) -> int:
    hashed: int = murmur2(key)
    return hashed & 0x7FFFFFFF


# aiokafka's DefaultPartitioner (Java's): murmur2 of the key, made positive. Pure Python, ≈ 6 µs
# a key; the same tickets and gates come back all day, so each is hashed once.
key_hash = AtomicMemo(_positive_murmur2, max_entries=65_536)


async def _send_in_batches(
    producer: AIOKafkaProducer, records: Sequence[tuple[str, str, bytes, list[tuple[str, bytes]]]]
) -> list[asyncio.Future[object]]:
    """One record batch per partition instead of one `send()` per record: the per-record future
    and accumulator bookkeeping of `send()` were most of what publishing cost a gate decision.
    Records land on the partition `send()` would choose (its partitioner's hash, over the same
    partition list), in order."""
    partitions: dict[str, list[int]] = {}
    open_batches: dict[tuple[str, int], BatchBuilder] = {}
    futures: list[asyncio.Future[object]] = []
    for topic, key, value, headers in records:
        if topic not in partitions:
            partitions[topic] = sorted(await producer.partitions_for(topic))
        key_bytes = key.encode()
        every = partitions[topic]
        partition = every[key_hash(key_bytes) % len(every)]
        batch = open_batches.get((topic, partition))
        if batch is None:
            batch = open_batches[(topic, partition)] = producer.create_batch()
        if batch.append(timestamp=None, key=key_bytes, value=value, headers=headers) is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = open_batches[(topic, partition)] = producer.create_batch()
            # An empty batch takes any one record; the broker judges its size.
            batch.append(timestamp=None, key=key_bytes, value=value, headers=headers)
    for (topic, partition), batch in open_batches.items():
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


async def _stop_quietly(client: AIOKafkaProducer | AIOKafkaConsumer, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(client.stop(), timeout_s)
    except (KafkaError, TimeoutError, OSError) as exc:
        logger.warning("kafka client did not stop cleanly: %s", exc)


Handler = Callable[[Event, ConsumerRecord], Awaitable[None]]


class DeadLetter(Exception):
    """Raised by a handler for a record that no retry can fix: it is parked at once."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Consumer:
    """Consumes topics in one group; commits offsets only after the handler has succeeded.

    A record that is not a valid event, or whose handler keeps failing, is parked on the
    dead-letter topic (and counted) so that one bad record never stops the stream.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        group_id: str,
        handler: Handler,
        *,
        publisher: Publisher,
        start_from: str = "earliest",  # a new group deliberately reads the retained history
        max_attempts: int = 5,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.group_id = group_id
        self.handler = handler
        self.publisher = publisher
        self.start_from = start_from
        self.max_attempts = max_attempts
        self._stopping = asyncio.Event()

    def _new_client(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.start_from,
            metadata_max_age_ms=5000,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
        )

    async def run(self) -> None:
        """Consume until `stop()`; reconnects (and recreates topics) after broker failures."""
        while not self._stopping.is_set():
            consumer = self._new_client()
            try:
                await ensure_topics(self.bootstrap)
                await asyncio.wait_for(consumer.start(), 15)
                await self._consume(consumer)
            except (KafkaError, TimeoutError, OSError) as exc:
                raise_if_cancelled()
                logger.warning("consumer %s lost the broker: %s", self.group_id, exc)
                await asyncio.sleep(1)
            finally:
                await _stop_quietly(consumer, 5)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while not self._stopping.is_set():
            raise_if_cancelled()  # in case a library below swallowed the cancellation
            batches = await consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
            slice_started = time.perf_counter()
            for partition, records in batches.items():
                for record in records:
                    await self._process(record)
                    if self._stopping.is_set():
                        break
                    # A handler that never waits would run the whole batch in one go; the
                    # requests sharing this event loop (a gate decision) must not wait for it.
                    if time.perf_counter() - slice_started > TIME_SLICE_S:
                        await asyncio.sleep(0)
                        slice_started = time.perf_counter()
                last = records[-1].offset if records else None
                if last is not None:
                    await consumer.commit({partition: last + 1})

    async def _process(self, record: ConsumerRecord) -> None:
        try:
            event = Event.from_record(record.headers, record.value)
        except EnvelopeError as exc:
            await self._dead_letter(record, exc.code, str(exc))
            return
        token = request_id_var.set(event.request_id)
        try:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    await self.handler(event, record)
                    CONSUMER_EVENTS.labels(self.group_id, record.topic).inc()
                    return
                except DeadLetter as refused:
                    await self._dead_letter(record, refused.code, str(refused))
                    return
                except Exception as exc:
                    if attempt == self.max_attempts:
                        logger.exception("handler failed for event %s; dead-lettered", event.id)
                        await self._dead_letter(record, "handler_failed", repr(exc))
                        return
                    await asyncio.sleep(0.05 * 2**attempt)
        finally:
            request_id_var.reset(token)

    async def _dead_letter(self, record: ConsumerRecord, code: str, reason: str) -> None:
        CONSUMER_DEAD_LETTERS.labels(self.group_id, record.topic, code).inc()
        headers = [
            *(record.headers or ()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
            ("dlq_group", self.group_id.encode()),
            ("dlq_reason", f"{code}: {reason}"[:500].encode()),
        ]
        await self.publisher.publish_many(
            [(DEAD_LETTER_TOPIC, record.topic, record.value or b"", headers)]
        )

    def stop(self) -> None:
        self._stopping.set()
