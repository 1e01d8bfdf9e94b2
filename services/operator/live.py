"""Live updates for the dashboard: one reader of the tail per process, fanned out to streams.

Whichever operator process consumed an event, it lands in the Redis tail stream; every process
reads that stream once (a blocking XREAD) and hands each entry to its connected browsers, with
a fresh dashboard summary at most every `summary_interval`. A stream resumes after a reconnect
from `Last-Event-ID` (the tail's stream id), so a browser misses nothing that is still kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from prometheus_client import Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.operator import repository
from shared.health import describe_failure

logger = logging.getLogger("citypass.operator.live")

STREAM_CLIENTS = Gauge("citypass_operator_stream_clients", "Browsers following the live stream")
QUEUE_SIZE = 2_000  # a browser this far behind is dropped; it reconnects and catches up
HEARTBEAT_S = 15.0
RESUME_LIMIT = 1_000
COALESCE_MAX = 200  # events per write to a browser


@dataclass(frozen=True, slots=True)
class Message:
    event: str  # "tail" | "summary" | "expired"
    data: bytes
    id: str | None = None

    def encode(self) -> bytes:
        head = f"id: {self.id}\n" if self.id else ""
        return f"{head}event: {self.event}\n".encode() + b"data: " + self.data + b"\n\n"


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[Message] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: asyncio.Event = field(default_factory=asyncio.Event)


def _stream_order(stream_id: str) -> tuple[int, int]:
    millis, _, seq = stream_id.partition("-")
    return int(millis), int(seq or 0)


class Broadcaster:
    def __init__(
        self,
        redis: Redis,
        summary: Callable[[], Awaitable[bytes]],
        *,
        summary_interval_s: float,
        summary_refresh_s: float,
    ) -> None:
        self.redis = redis
        self.summary = summary
        self.summary_interval_s = summary_interval_s
        self.summary_refresh_s = summary_refresh_s
        self.subscribers: set[Subscription] = set()
        self._latest: tuple[float, bytes] | None = None

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self.subscribers.add(subscription)
        STREAM_CLIENTS.set(len(self.subscribers))
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        STREAM_CLIENTS.set(len(self.subscribers))

    def _fan_out(self, message: Message) -> None:
        for subscription in list(self.subscribers):
            try:
                subscription.queue.put_nowait(message)
            except asyncio.QueueFull:
                subscription.dropped.set()
                self.unsubscribe(subscription)

    async def current_summary(self) -> bytes:
        """The latest summary if it is fresh, else a new one."""
        now = time.monotonic()
        if self._latest is not None and now - self._latest[0] < self.summary_interval_s:
            return self._latest[1]
        data = await self.summary()
        self._latest = (now, data)
        return data

    async def run(self) -> None:
        last = "$"
        pending = False
        last_summary = 0.0
        while True:
            try:
                if last == "$":
                    last = await repository.tail_last_id(self.redis)
                loop_now = time.monotonic()
                due = last_summary + self.summary_interval_s
                wait_s = max(0.05, due - loop_now) if pending else 1.0
                entries = await repository.tail_read(self.redis, last, int(wait_s * 1000), 500)
                for stream_id, entry in entries:
                    self._fan_out(Message("tail", orjson.dumps(entry), stream_id))
                    last = stream_id
                pending = pending or bool(entries)
                loop_now = time.monotonic()
                refresh = loop_now - last_summary >= self.summary_refresh_s
                if self.subscribers and (
                    (pending and loop_now - last_summary >= self.summary_interval_s) or refresh
                ):
                    data = await self.summary()
                    self._latest = (loop_now, data)
                    self._fan_out(Message("summary", data))
                    last_summary, pending = loop_now, False
                elif not self.subscribers:
                    pending = False
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("live stream waits for Redis: %s", describe_failure(exc))
                await asyncio.sleep(1)

    async def stream(
        self, subscription: Subscription, last_event_id: str | None, expires_at: float
    ) -> AsyncIterator[bytes]:
        """One browser's event stream: the backlog it missed (or a summary), then live."""
        try:
            yield b"retry: 2000\n\n"
            sent = (0, 0)
            if last_event_id:
                backlog = await repository.tail_after(self.redis, last_event_id, RESUME_LIMIT)
                for stream_id, entry in backlog:
                    yield Message("tail", orjson.dumps(entry), stream_id).encode()
                    sent = _stream_order(stream_id)
                if not backlog:
                    sent = _stream_order(last_event_id)
            yield Message("summary", await self.current_summary()).encode()
            while not subscription.dropped.is_set():
                remaining = expires_at - time.time()
                if remaining <= 0:
                    yield Message("expired", b'{"code":"session_expired"}').encode()
                    return
                try:
                    first = await asyncio.wait_for(
                        subscription.queue.get(), min(HEARTBEAT_S, remaining)
                    )
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                # Whatever else is queued goes in the same write: under load, one socket
                # write per event costs more than the event itself.
                batch = [first]
                while len(batch) < COALESCE_MAX:
                    try:
                        batch.append(subscription.queue.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                chunk: list[bytes] = []
                for message in batch:
                    if message.id is not None:
                        order = _stream_order(message.id)
                        if order <= sent:
                            continue  # already sent from the backlog
                        sent = order
                    chunk.append(message.encode())
                if chunk:
                    yield b"".join(chunk)
        finally:
            self.unsubscribe(subscription)
