"""Parking's client of the payments service (HTTP only, bearer token, Idempotency-Key).

Every money-moving call carries a key derived from the parking session, so a retry after a
timeout, a crash or a second replica never moves money twice. Failures come back as two
exceptions: `PaymentsUnavailable` (no answer, a timeout, a 5xx: try later) and
`PaymentsRefused` (a 4xx with payments' stable `code`: it will not work as asked).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

import httptools
import orjson

from shared.logging import REQUEST_ID_HEADER, request_id_var

KEEPALIVE_S = 4.0  # below uvicorn's 5 s: never reuse a connection the server is closing


class PaymentsUnavailable(Exception):
    """Payments did not answer in time, or failed; the same call may work later."""


class PaymentsRefused(Exception):
    """Payments answered with a problem; `code` is its stable code."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.body = body


@dataclass(frozen=True, slots=True)
class Hold:
    hold_id: uuid.UUID
    amount: int
    status: str
    capture_transfer_id: uuid.UUID | None
    captured_amount: int
    settled_at: datetime | None


@dataclass(frozen=True, slots=True)
class Posted:
    transfer_id: uuid.UUID
    amount: int
    posted_at: datetime


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    payment_request_id: uuid.UUID
    reference: str
    amount: int
    qr: str
    status: str
    paid_transfer_id: uuid.UUID | None
    paid_at: datetime | None


def _hold(body: dict[str, Any]) -> Hold:
    capture = body.get("capture_transfer_id")
    settled = body.get("settled_at")
    return Hold(
        hold_id=uuid.UUID(body["id"]),
        amount=int(body["amount"]),
        status=str(body["status"]),
        capture_transfer_id=uuid.UUID(capture) if capture else None,
        captured_amount=int(body.get("captured_amount") or 0),
        settled_at=datetime.fromisoformat(settled) if settled else None,
    )


def _payment_request(body: dict[str, Any]) -> PaymentRequest:
    paid_transfer = body.get("paid_transfer_id")
    paid_at = body.get("paid_at")
    return PaymentRequest(
        payment_request_id=uuid.UUID(body["id"]),
        reference=str(body["reference"]),
        amount=int(body["amount"]),
        qr=str(body["qr"]),
        status=str(body["status"]),
        paid_transfer_id=uuid.UUID(paid_transfer) if paid_transfer else None,
        paid_at=datetime.fromisoformat(paid_at) if paid_at else None,
    )


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to payments; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.body = bytearray()
        self.reusable = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.reusable = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"malformed answer: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("payments closed the connection"))

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


class PaymentsClient:
    """Keep-alive HTTP/1.1 straight on asyncio: a lane decision makes one call, and a general
    HTTP client spent more CPU per call (~1 ms) than the rest of the decision's Python."""

    def __init__(
        self, base_url: str, token: str, timeout_s: float, *, max_connections: int = 100
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"payments_url must be http://host[:port], not {base_url!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.timeout_s = timeout_s
        # Written once: every request carries the same host, token and content type.
        self._fixed = (
            f"Host: {url.netloc}\r\nAuthorization: Bearer {token}\r\n"
            "User-Agent: citypass-parking\r\nAccept: application/json\r\n"
        ).encode("latin-1")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def _connection(self) -> tuple[_Connection, bool]:
        """An idle connection (reused: True), else a new one."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < KEEPALIVE_S:
                return connection, True
            connection.close()
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        return connection, False

    def _request(
        self, method: str, path: str, body: bytes | None, key: str | None, params: str
    ) -> bytes:
        head = [f"{method} {self.prefix}{path}{params} HTTP/1.1\r\n".encode("latin-1"), self._fixed]
        if key is not None:
            if "\r" in key or "\n" in key:
                raise ValueError("an Idempotency-Key has no line breaks")
            head.append(f"Idempotency-Key: {key}\r\n".encode("latin-1"))
        request_id = request_id_var.get()
        if request_id:
            head.append(f"{REQUEST_ID_HEADER}: {request_id}\r\n".encode("latin-1"))
        if body is not None:
            head.append(b"Content-Type: application/json\r\n")
        head.append(b"Content-Length: %d\r\n\r\n" % len(body or b""))
        if body is not None:
            head.append(body)
        return b"".join(head)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        async with self._slots, asyncio.timeout(self.timeout_s):
            connection, reused = await self._connection()
            try:
                try:
                    answer = await connection.exchange(request)
                except ConnectionError:
                    if not reused:
                        raise
                    # Mostly a keep-alive connection payments closed as we reused it. Every
                    # call here is safe to repeat (Idempotency-Key, or a read): once more, now.
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

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        key: str | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        query = f"?{urlencode(params)}" if params else ""
        body = orjson.dumps(json) if json is not None else None
        request = self._request(method, path, body, key, query)
        try:
            status, content = await self._exchange(request)
        except (OSError, TimeoutError) as error:  # ConnectionError is an OSError
            raise PaymentsUnavailable(f"payments {method} {path}: {error!r}") from error
        if status >= 500 or (status in (409, 429) and _retryable(status, content)):
            text = content[:200].decode("utf-8", "replace")
            raise PaymentsUnavailable(f"payments {method} {path}: HTTP {status} {text}")
        try:
            answer: dict[str, Any] = orjson.loads(content)
        except orjson.JSONDecodeError as error:
            raise PaymentsUnavailable(f"payments {method} {path}: not JSON") from error
        if status >= 400:
            raise PaymentsRefused(
                status, str(answer.get("code", "unknown")), str(answer.get("detail", "")), answer
            )
        return answer

    async def open_vehicle_wallet(self, owner_id: str) -> uuid.UUID:
        body = await self._call(
            "POST", "/v1/accounts", json={"kind": "vehicle_wallet", "owner_id": owner_id}
        )
        return uuid.UUID(body["id"])

    async def place_hold(
        self, *, account_id: uuid.UUID, amount: int, lot_id: str, expires_in_s: int, key: str
    ) -> Hold:
        body = await self._call(
            "POST",
            "/v1/holds",
            key=key,
            json={
                "account_id": str(account_id),
                "amount": amount,
                "source": "parking",
                "lot_id": lot_id,
                "expires_in_s": expires_in_s,
            },
        )
        return _hold(body)

    async def capture_hold(self, hold_id: uuid.UUID, amount: int, *, key: str) -> Hold:
        body = await self._call(
            "POST", f"/v1/holds/{hold_id}/capture", key=key, json={"amount": amount}
        )
        return _hold(body)

    async def void_hold(self, hold_id: uuid.UUID, *, key: str) -> Hold:
        return _hold(await self._call("POST", f"/v1/holds/{hold_id}/void", key=key))

    async def charge(self, *, account_id: uuid.UUID, amount: int, lot_id: str, key: str) -> Posted:
        body = await self._call(
            "POST",
            "/v1/charges",
            key=key,
            json={
                "account_id": str(account_id),
                "amount": amount,
                "source": "parking",
                "lot_id": lot_id,
            },
        )
        return Posted(
            uuid.UUID(body["id"]), int(body["amount"]), datetime.fromisoformat(body["posted_at"])
        )

    async def refund(self, charge_id: uuid.UUID, amount: int, *, key: str) -> Posted:
        body = await self._call(
            "POST", "/v1/refunds", key=key, json={"charge_id": str(charge_id), "amount": amount}
        )
        return Posted(
            uuid.UUID(body["id"]), int(body["amount"]), datetime.fromisoformat(body["posted_at"])
        )

    async def request_payment(
        self, *, lot_id: str, session_id: uuid.UUID, amount: int, key: str
    ) -> PaymentRequest:
        body = await self._call(
            "POST",
            "/v1/payment-requests",
            key=key,
            json={"lot_id": lot_id, "parking_session_id": str(session_id), "amount": amount},
        )
        return _payment_request(body)

    async def reconciliation(self, day: date) -> dict[str, Any]:
        return await self._call("GET", f"/v1/reconciliation/{day.isoformat()}")


def _retryable(status: int, content: bytes) -> bool:
    """409 from payments means "still in progress" or contention, unless it names a state."""
    try:
        code = orjson.loads(content).get("code")
    except (orjson.JSONDecodeError, AttributeError):
        return True
    return code in ("idempotency_key_in_flight", "ledger_contention") or status == 429
