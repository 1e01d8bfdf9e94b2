"""Redis (or Valkey) client and hash-tagged keys, so multi-key scripts work on Redis Cluster."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def connect(url: str) -> Redis:
    return Redis.from_url(
        url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=30
    )


def text(value: bytes | str | None) -> str:
    """A Redis reply item as text ('' for nil): replies are bytes unless decoded."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def key(namespace: str, tag: str, *parts: str) -> str:
    """`cp:{tag}:namespace:part…` — keys sharing a tag land in the same cluster slot."""
    suffix = ":".join(parts)
    return f"cp:{{{tag}}}:{namespace}" + (f":{suffix}" if suffix else "")


class _Pipelined(asyncio.Protocol):
    """One connection; commands are written as they come and replies matched in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.buffer = bytearray()
        self.outgoing: list[bytes] = []
        self.lost = False

    def write(self, command: bytes) -> None:
        """Queue a command; the commands of one turn of the event loop go out in one write.

        A write is a syscall that costs about as much CPU as the rest of the client's work on
        a command; at a gate's peak many decisions reach Redis in the same turn."""
        if not self.outgoing:
            asyncio.get_running_loop().call_soon(self.flush)
        self.outgoing.append(command)

    def flush(self) -> None:
        data = b"".join(self.outgoing)
        self.outgoing.clear()
        if self.transport is not None and not self.lost and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.fail(RedisConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def fail(self, error: Exception) -> None:
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(error)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.pending:
            parsed = _parse(self.buffer, 0)
            if parsed is None:
                return
            reply, end = parsed
            del self.buffer[:end]
            future = self.pending.popleft()
            if future.done():  # timed out: the connection is being closed anyway
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)


def _parse(buffer: bytearray, start: int) -> tuple[Any, int] | None:
    """One RESP2 reply from `buffer[start:]`, or None when it has not fully arrived."""
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind, line = buffer[start], bytes(buffer[start + 1 : line_end])
    after = line_end + 2
    if kind == ord("$"):
        length = int(line)
        if length < 0:
            return None, after
        if len(buffer) < after + length + 2:
            return None
        return bytes(buffer[after : after + length]), after + length + 2
    if kind == ord("+"):
        return line, after
    if kind == ord(":"):
        return int(line), after
    if kind == ord("-"):
        message = line.decode(errors="replace")
        error = NoScriptError if message.startswith("NOSCRIPT") else ResponseError
        return error(message), after
    if kind == ord("*"):
        count = int(line)
        items: list[Any] = []
        for _ in range(max(count, 0)):
            parsed = _parse(buffer, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return (items if count >= 0 else None), after
    raise RedisConnectionError(f"unexpected reply from Redis: {bytes(buffer[start:after])!r}")


def _bulk_strings(parts: Sequence[str | bytes | int]) -> bytes:
    chunks = []
    for part in parts:
        if isinstance(part, str):
            data = part.encode()
        elif isinstance(part, bytes):
            data = part
        else:
            data = str(part).encode()
        chunks.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(chunks)


def _command(*parts: str | bytes | int) -> bytes:
    return b"*%d\r\n" % len(parts) + _bulk_strings(parts)


@functools.lru_cache(maxsize=64)
def _evalsha_head(sha: str, key_count: int, value_count: int) -> bytes:
    """`EVALSHA sha numkeys` of a command with `value_count` keys and arguments, encoded once."""
    return b"*%d\r\n" % (3 + value_count) + _bulk_strings(("EVALSHA", sha, key_count))


class PipelinedRedis:
    """A lean client for one hot command path: a single pipelined connection.

    redis-py's pool, retry and observability wrappers cost a gate decision ≈ 100 µs of CPU per
    command (docs/benchmarks.md); here a command is one write and one reply parse, and
    concurrent callers share the connection (Redis answers in order). Errors are redis-py's
    exceptions; a timeout or a lost connection fails every waiting command and the next one
    reconnects.
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        self.options = parse_url(url)
        self.timeout_s = timeout_s
        self._protocol: _Pipelined | None = None
        self._connecting: asyncio.Lock = asyncio.Lock()

    async def _connect(self) -> _Pipelined:
        async with self._connecting:
            if self._protocol is not None and not self._protocol.lost:
                return self._protocol
            loop = asyncio.get_running_loop()
            options = self.options
            try:
                async with asyncio.timeout(self.timeout_s):
                    if "path" in options:
                        transport, protocol = await loop.create_unix_connection(
                            _Pipelined, options["path"]
                        )
                    else:
                        transport, protocol = await loop.create_connection(
                            _Pipelined, options.get("host", "localhost"), options.get("port", 6379)
                        )
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(f"cannot reach Redis: {exc}") from exc
            protocol.transport = transport  # uvloop calls connection_made a tick later
            try:
                if options.get("password"):
                    user = options.get("username")
                    credentials = (user, options["password"]) if user else (options["password"],)
                    await self._send(protocol, _command("AUTH", *credentials))
                if options.get("db"):
                    await self._send(protocol, _command("SELECT", options["db"]))
            except BaseException:
                transport.close()
                raise
            self._protocol = protocol  # only now: commands must not reach another database
            return protocol

    async def _send(self, protocol: _Pipelined, command: bytes) -> Any:
        assert protocol.transport is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.pending.append(future)
        protocol.write(command)
        timer = future.get_loop().call_later(self.timeout_s, self._time_out, protocol, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _time_out(self, protocol: _Pipelined, future: asyncio.Future[Any]) -> None:
        if not future.done():
            # Replies are matched by order: after a lost one the connection cannot be trusted.
            protocol.lost = True  # the next command reconnects instead of waiting on this one
            protocol.fail(RedisTimeoutError("Redis did not answer in time"))
            if protocol.transport is not None:
                protocol.transport.abort()

    async def _request(self, command: bytes) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        return await self._send(protocol, command)

    async def execute(self, *parts: str | bytes | int) -> Any:
        return await self._request(_command(*parts))

    async def evalsha(
        self, sha: str, keys: Sequence[str], args: Sequence[str | bytes | int]
    ) -> Any:
        values = (*keys, *args)
        return await self._request(
            _evalsha_head(sha, len(keys), len(values)) + _bulk_strings(values)
        )

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
