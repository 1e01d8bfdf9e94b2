"""Parking's client of the payments service (HTTP only, bearer token, Idempotency-Key).

Every money-moving call carries a key derived from the parking session, so a retry after a
timeout, a crash or a second replica never moves money twice. Failures come back as two
exceptions: `PaymentsUnavailable` (no answer, a timeout, a 5xx: try later) and
`PaymentsRefused` (a 4xx with payments' stable `code`: it will not work as asked).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from shared.http import KeepAliveClient


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


class PaymentsClient:
    """Payments over keep-alive HTTP/1.1 (shared.http.KeepAliveClient): a lane decision makes
    one call, and httpx spent more CPU per call (~1 ms) than the rest of the decision's Python.
    The token and the other fixed headers are written once."""

    def __init__(self, base_url: str, token: str, timeout_s: float) -> None:
        self.http = KeepAliveClient(
            base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": "citypass-parking",
                "Accept": "application/json",
            },
            timeout_s=timeout_s,
        )

    async def close(self) -> None:
        await self.http.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        key: str | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        target = f"{path}?{urlencode(params)}" if params else path
        body = orjson.dumps(json) if json is not None else None
        request = self.http.request(
            method, target, body, {"Idempotency-Key": key} if key is not None else None
        )
        try:
            # Every call here is safe to repeat (an Idempotency-Key, or a read).
            status, content = await self.http.exchange(request)
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
