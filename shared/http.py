"""HTTP clients: httpx for service-to-service commands, and a lean keep-alive HTTP/1.1 client
for the per-decision calls and the load generators, where httpx's CPU per request (~1 ms here)
is more than the work it carries. Both carry the request id along."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools
import httpx

from shared.logging import REQUEST_ID_HEADER, request_id_var

KEEPALIVE_S = 4.0  # below uvicorn's 5 s: never reuse a connection the server is closing


async def _add_request_id(request: httpx.Request) -> None:
    request_id = request_id_var.get()
    if request_id and REQUEST_ID_HEADER not in request.headers:
        request.headers[REQUEST_ID_HEADER] = request_id


def service_client(base_url: str, *, timeout_s: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
        event_hooks={"request": [_add_request_id]},
        # Below uvicorn's 5 s keep-alive, so we never reuse a connection the server is closing.
        limits=httpx.Limits(
            max_connections=100, max_keepalive_connections=50, keepalive_expiry=KEEPALIVE_S
        ),
    )


class KeepAliveConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time; answers parsed by httptools
    (Content-Length or chunked)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.body = bytearray()
        self.reusable = False
        self.idle_since = 0.0

    @classmethod
    async def open(cls, host: str, port: int) -> KeepAliveConnection:
        transport, connection = await asyncio.get_running_loop().create_connection(cls, host, port)
        connection.transport = transport  # uvloop calls connection_made a tick later
        connection.reusable = True
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.reusable = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"malformed answer: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, error: Exception) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(error)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.reusable = self.parser.should_keep_alive()
        if self.answer is not None and not self.answer.done():
            self.answer.set_result((self.parser.get_status_code(), bytes(self.body)))
        self.body = bytearray()

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one whole request (head and body); (status, body) of its answer."""
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.reusable = False  # until the whole answer is in
        self.transport.write(request)
        try:
            return await self.answer
        finally:
            self.answer = None

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class KeepAliveClient:
    """Requests to one origin over pooled `KeepAliveConnection`s: one per request in flight,
    reused while idle for less than `KEEPALIVE_S`. `headers` go on every request, written
    once; the request id of the calling request is carried along."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 5.0,
        max_connections: int = 100,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"expected http://host[:port][/prefix], not {base_url!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.timeout_s = timeout_s
        fixed = {"Host": url.netloc, **(headers or {})}
        self._fixed = "".join(f"{name}: {value}\r\n" for name, value in fixed.items()).encode(
            "latin-1"
        )
        self._idle: list[KeepAliveConnection] = []
        self._slots = asyncio.Semaphore(max_connections)

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """The bytes of a request; `target` is the path (and query) below the base URL."""
        head = [f"{method} {self.prefix}{target} HTTP/1.1\r\n".encode("latin-1"), self._fixed]
        for name, value in (headers or {}).items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} has a line break")
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        request_id = request_id_var.get()
        if request_id:
            head.append(f"{REQUEST_ID_HEADER}: {request_id}\r\n".encode("latin-1"))
        if body is not None:
            head.append(b"Content-Type: application/json\r\n")
        head.append(b"Content-Length: %d\r\n\r\n" % len(body or b""))
        if body is not None:
            head.append(body)
        return b"".join(head)

    async def _connection(self) -> tuple[KeepAliveConnection, bool]:
        """An idle connection (reused: True), else a new one."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < KEEPALIVE_S:
                return connection, True
            connection.close()
        return await KeepAliveConnection.open(self.host, self.port), False

    async def exchange(self, request: bytes, *, repeatable: bool = True) -> tuple[int, bytes]:
        """(status, body) of the answer to `request`, within the timeout. A `repeatable`
        request (a read, or one with an Idempotency-Key) is sent once more on a fresh
        connection when a reused one turns out closed."""
        async with self._slots, asyncio.timeout(self.timeout_s):
            connection, reused = await self._connection()
            try:
                try:
                    answer = await connection.exchange(request)
                except ConnectionError:
                    if not (reused and repeatable):
                        raise
                    # Mostly a keep-alive connection the server closed as we reused it.
                    connection, _ = await self._connection()
                    answer = await connection.exchange(request)
            except BaseException:
                connection.close()
                raise
            if connection.reusable:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()
            return answer

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
