"""The calls parking makes to payments (shared.payments_client: keep-alive HTTP, the bearer
token, `PaymentsUnavailable` and `PaymentsRefused`).

Every money-moving call carries a key derived from the parking session, so a retry after a
timeout, a crash or a second replica never moves money twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from shared.payments_client import PaymentsClient


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


class Payments(PaymentsClient):
    """The calls parking makes."""

    def __init__(self, base_url: str, token: str, timeout_s: float) -> None:
        super().__init__(base_url, token, timeout_s=timeout_s, caller="parking")

    async def open_vehicle_wallet(self, owner_id: str) -> uuid.UUID:
        body = await self.call(
            "POST", "/v1/accounts", json={"kind": "vehicle_wallet", "owner_id": owner_id}
        )
        return uuid.UUID(body["id"])

    async def place_hold(
        self, *, account_id: uuid.UUID, amount: int, lot_id: str, expires_in_s: int, key: str
    ) -> Hold:
        body = await self.call(
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
        body = await self.call(
            "POST", f"/v1/holds/{hold_id}/capture", key=key, json={"amount": amount}
        )
        return _hold(body)

    async def void_hold(self, hold_id: uuid.UUID, *, key: str) -> Hold:
        return _hold(await self.call("POST", f"/v1/holds/{hold_id}/void", key=key))

    async def charge(self, *, account_id: uuid.UUID, amount: int, lot_id: str, key: str) -> Posted:
        body = await self.call(
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
        body = await self.call(
            "POST", "/v1/refunds", key=key, json={"charge_id": str(charge_id), "amount": amount}
        )
        return Posted(
            uuid.UUID(body["id"]), int(body["amount"]), datetime.fromisoformat(body["posted_at"])
        )

    async def request_payment(
        self, *, lot_id: str, session_id: uuid.UUID, amount: int, key: str
    ) -> PaymentRequest:
        body = await self.call(
            "POST",
            "/v1/payment-requests",
            key=key,
            json={"lot_id": lot_id, "parking_session_id": str(session_id), "amount": amount},
        )
        return _payment_request(body)

    async def reconciliation(self, day: date) -> dict[str, Any]:
        return await self.call("GET", f"/v1/reconciliation/{day.isoformat()}")
