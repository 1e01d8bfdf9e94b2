"""The payments service as ticketing sees it: wallets, charges, refunds and top-ups over HTTP.

Every money-moving call carries an Idempotency-Key derived from the ticketing object it
serves, so any retry (by the rider, the endpoint or the purchase worker) is the same call.
Failures come back as problems: 503 `payments_unavailable` when payments cannot answer.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import NotFound, ProblemError, ServiceUnavailable
from shared.http import service_client

logger = logging.getLogger("citypass.ticketing.payments")


class PaymentsUnavailable(ServiceUnavailable):
    code, title = "payments_unavailable", "Payments unavailable"


class InsufficientFunds(ProblemError):
    status, code, title = 402, "insufficient_funds", "Insufficient funds"


class PaymentsBusy(ProblemError):
    """Payments is still working on this Idempotency-Key (another attempt is in flight)."""

    status, code, title = 409, "payment_in_progress", "Payment in progress"


class PaymentRefused(ProblemError):
    """Payments refused the request for a reason of its own (`code` is payments' code)."""

    status, title = 422, "Payment refused"


class DuplicateTransfer(ProblemError):
    """The transfer id is already in the ledger: the charge happened earlier."""

    status, code, title = 409, "duplicate_transfer", "Transfer already posted"


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


AnswerT = TypeVar("AnswerT", bound=_Answer)


class Account(_Answer):
    id: uuid.UUID
    balance: int


class Charge(_Answer):
    id: uuid.UUID
    amount: int
    balance: int


class Refund(_Answer):
    id: uuid.UUID
    charge_id: uuid.UUID
    amount: int


class Topup(_Answer):
    id: uuid.UUID
    reference: str
    amount: int
    status: Literal["pending", "paid"]
    account_id: uuid.UUID | None
    qr: str
    created_at: datetime
    paid_at: datetime | None


class PaymentsClient:
    def __init__(self, base_url: str, service_token: str, *, timeout_s: float) -> None:
        self.http = service_client(base_url, timeout_s=timeout_s)
        self.http.headers["Authorization"] = f"Bearer {service_token}"

    async def close(self) -> None:
        await self.http.aclose()

    async def open_wallet(self, rider_id: uuid.UUID) -> Account:
        """Payments returns the same wallet when it is opened again for the same owner."""
        body = {"kind": "rider_wallet", "owner_id": f"rider:{rider_id}"}
        return _parse(Account, await self._call("POST", "/v1/accounts", body))

    async def account(self, account_id: uuid.UUID) -> Account:
        return _parse(Account, await self._call("GET", f"/v1/accounts/{account_id}"))

    async def charge(
        self, *, account_id: uuid.UUID, amount: int, transfer_id: uuid.UUID, key: str
    ) -> Charge:
        body = {
            "account_id": str(account_id),
            "amount": amount,
            "source": "transit",
            "transfer_id": str(transfer_id),
        }
        return _parse(Charge, await self._call("POST", "/v1/charges", body, key=key))

    async def refund(self, *, charge_id: uuid.UUID, amount: int, key: str) -> Refund | None:
        """None when payments has no such charge (it never went through): nothing to refund."""
        body = {"charge_id": str(charge_id), "amount": amount}
        try:
            return _parse(Refund, await self._call("POST", "/v1/refunds", body, key=key))
        except PaymentRefused as refused:
            if refused.code == "unknown_charge":
                return None
            raise

    async def create_topup(self, *, account_id: uuid.UUID, amount: int, key: str) -> Topup:
        body = {"account_id": str(account_id), "amount": amount}
        return _parse(Topup, await self._call("POST", "/v1/topups", body, key=key))

    async def topup(self, topup_id: uuid.UUID) -> Topup:
        return _parse(Topup, await self._call("GET", f"/v1/topups/{topup_id}"))

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        try:
            response = await self.http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as error:
            logger.warning("payments %s %s failed: %r", method, path, error)
            raise PaymentsUnavailable(
                "The payments service did not answer; nothing was lost, retry later."
            ) from None
        answer = _json(response)
        if response.is_success:
            return answer
        code = str(answer.get("code", "unknown"))
        detail = str(answer.get("detail", response.reason_phrase))
        status = response.status_code
        if status == 402:
            raise InsufficientFunds(detail, shortfall=answer.get("shortfall"))
        if status == 404:
            raise NotFound(detail, code=code)
        if status == 409 and code == "duplicate_transfer":
            raise DuplicateTransfer(detail)
        if status == 409:
            raise PaymentsBusy("Payments is still processing this payment; retry shortly.")
        if status in (400, 422):
            raise PaymentRefused(detail, code=code)
        if status in (401, 403):
            logger.error("payments refuses ticketing's service token (%s): check settings", code)
        raise PaymentsUnavailable(f"The payments service answered {status}; retry later.")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _parse(model: type[AnswerT], answer: dict[str, Any]) -> AnswerT:
    try:
        return model.model_validate(answer)
    except ValidationError as error:
        logger.error("payments answered something unexpected: %s", error)
        raise PaymentsUnavailable("The payments service answered something unexpected.") from None
