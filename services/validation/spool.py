"""Events leave the gate path through an in-process queue; a publisher task drains it to Kafka.

While Kafka is unreachable, batches go to a durable spool instead: append-only JSON-lines
segments under `spool_dir`, fsync'd once per batch, each held with an exclusive `flock` by the
process writing it. A redelivery task publishes every unlocked segment (its own after rotating
them, and those of a process that died) and deletes a segment only after the broker
acknowledged all of its records. Delivery is at least once: a crash between acknowledgement and
deletion sends a segment again, and consumers deduplicate on the event id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import orjson
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from shared.events import Event
from shared.health import raise_if_cancelled
from shared.kafka import Publisher

logger = logging.getLogger("citypass.validation.spool")

Record = tuple[str, str, bytes, list[tuple[str, bytes]]]

SPOOL_BACKLOG = Gauge(
    "citypass_validation_spool_backlog_events", "Events written to the spool, not yet delivered"
)
SPOOLED = Counter("citypass_validation_spooled_events_total", "Events written to the spool")
PUBLISHED = Counter("citypass_validation_published_events_total", "Events acknowledged by Kafka")

_SEGMENT_SUFFIX = ".jsonl"


def encode(record: Record) -> bytes:
    topic, key, value, headers = record
    return orjson.dumps(
        {
            "t": topic,
            "k": key,
            "v": base64.b64encode(value).decode(),
            "h": [[name, base64.b64encode(raw).decode()] for name, raw in headers],
        }
    )


def decode(line: bytes) -> Record:
    item = orjson.loads(line)
    headers = [(name, base64.b64decode(raw)) for name, raw in item["h"]]
    return item["t"], item["k"], base64.b64decode(item["v"]), headers


class Spool:
    """Append-only segments; thread-safe so that fsync can run off the event loop."""

    def __init__(self, directory: Path, instance: str) -> None:
        self.directory = directory
        self.instance = instance
        self._lock = threading.Lock()
        self._active: IO[bytes] | None = None
        self._active_path: Path | None = None
        self._sequence = itertools.count()
        self.backlog = 0  # records this process wrote and has not delivered yet

    def append(self, records: Sequence[Record]) -> None:
        if not records:
            return
        data = b"".join(encode(record) + b"\n" for record in records)
        with self._lock:
            if self._active is None:
                self._open_segment()
            assert self._active is not None
            self._active.write(data)
            self._active.flush()
            os.fsync(self._active.fileno())
            self.backlog += len(records)
        SPOOLED.inc(len(records))
        SPOOL_BACKLOG.set(self.backlog)

    def _open_segment(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{self.instance}-{next(self._sequence):06d}{_SEGMENT_SUFFIX}"
        path = self.directory / name
        handle = path.open("ab")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new file's name is durable too
        finally:
            os.close(directory)
        self._active, self._active_path = handle, path

    def rotate(self) -> None:
        """Close the active segment so it can be delivered; new records start another one."""
        with self._lock:
            if self._active is not None:
                self._active.close()  # releases the flock
                self._active = None
                self._active_path = None

    def has_backlog(self) -> bool:
        return self.backlog > 0

    def segments(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(self.directory.glob(f"*{_SEGMENT_SUFFIX}"))

    def active_path(self) -> Path | None:
        return self._active_path

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[list[Record] | None]:
        """The records of a segment nobody writes to (None if it is locked or gone)."""
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            yield None
            return
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            records: list[Record] = []
            for number, line in enumerate(handle.read().splitlines(), start=1):
                try:
                    records.append(decode(line))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    # Only a crash mid-write leaves a torn last line: that batch was never acked.
                    logger.warning("skipping unreadable line %d of %s", number, path.name)
            yield records

    def delivered(self, path: Path, count: int) -> None:
        path.unlink(missing_ok=True)
        if self.instance in path.name:
            with self._lock:
                self.backlog = max(0, self.backlog - count)
        SPOOL_BACKLOG.set(self.backlog)

    def count_own_backlog(self) -> None:
        """At start-up: segments a previous run of this instance left behind."""
        total = 0
        for path in self.segments():
            if self.instance in path.name:
                with path.open("rb") as handle:
                    total += sum(1 for _ in handle)
        self.backlog = total
        SPOOL_BACKLOG.set(total)

    def close(self) -> None:
        self.rotate()


class EventPipeline:
    """Decisions `emit` without waiting; `run` publishes; `redeliver` empties the spool."""

    def __init__(
        self,
        publisher: Publisher,
        spool: Spool,
        *,
        queue_size: int,
        retry_interval_s: float,
        batch_size: int = 500,
    ) -> None:
        self.publisher = publisher
        self.spool = spool
        self.queue: asyncio.Queue[Record] = asyncio.Queue(queue_size)
        self.retry_interval_s = retry_interval_s
        self.batch_size = batch_size
        self.kafka_down = False

    def emit(self, topic: str, key: str, event: Event) -> None:
        record = (topic, key, event.value(), event.headers())
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:  # the broker is far behind: keep the event, pay the fsync here
            self.spool.append([record])

    def _take_batch(self, first: Record) -> list[Record]:
        batch = [first]
        while len(batch) < self.batch_size and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch

    async def run(self) -> None:
        while True:
            raise_if_cancelled()
            batch = self._take_batch(await self.queue.get())
            await self._deliver(batch)

    async def _deliver(self, batch: list[Record]) -> None:
        delivered = False
        try:
            if not self.kafka_down and not self.spool.has_backlog():
                try:
                    await self._publish(batch)
                    delivered = True
                    PUBLISHED.inc(len(batch))
                except (KafkaError, TimeoutError, OSError) as exc:
                    self.kafka_down = True
                    logger.warning("Kafka unreachable (%s); spooling events", exc or type(exc))
            if not delivered:
                await asyncio.to_thread(self.spool.append, batch)
                delivered = True
        finally:
            if not delivered:  # cancelled mid-publish at shutdown: the spool keeps the batch
                self.spool.append(batch)

    async def _publish(self, records: Sequence[Record]) -> None:
        """`publish_many`, bounded as a whole: with the broker gone, each `send` can block for
        the request timeout while the producer's buffer is full, one record after another."""
        try:
            await asyncio.wait_for(
                self.publisher.publish_many(records), 2 * self.publisher.send_timeout_s
            )
        except TimeoutError:
            await self.publisher.reset()
            raise

    async def redeliver(self) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self.retry_interval_s)
            try:
                await self.drain_spool()
            except (KafkaError, TimeoutError, OSError) as exc:
                logger.info("spool waits for Kafka: %s", exc or type(exc).__name__)

    async def drain_spool(self) -> int:
        """Publish every deliverable segment; raises when Kafka is still unreachable."""
        segments = self.spool.segments()
        if not segments:
            self.kafka_down = False
            return 0
        active = self.spool.active_path()
        if active is not None and all(path == active for path in segments):
            self.spool.rotate()
        sent = 0
        for path in self.spool.segments():
            with self.spool.claim(path) as records:
                if records is None:
                    continue
                for start in range(0, len(records), self.batch_size):
                    await self._publish(records[start : start + self.batch_size])
                self.spool.delivered(path, len(records))
                PUBLISHED.inc(len(records))
                sent += len(records)
        if not self.spool.has_backlog():
            if self.kafka_down:
                logger.info("Kafka is back; spool delivered")
            self.kafka_down = False
        return sent

    async def flush(self) -> None:
        """At shutdown: what is still queued goes to Kafka if it answers, else to the spool."""
        pending: list[Record] = []
        while not self.queue.empty():
            pending.append(self.queue.get_nowait())
        if not pending:
            return
        try:
            if self.kafka_down or self.spool.has_backlog():
                raise TimeoutError("spooling while Kafka is down")
            await self._publish(pending)
            PUBLISHED.inc(len(pending))
        except (KafkaError, TimeoutError, OSError):
            self.spool.append(pending)
