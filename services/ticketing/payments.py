"""The payments service as ticketing sees it: wallets, charges, refunds and top-ups over HTTP.

Every money-moving call carries an Idempotency-Key derived from the ticketing object it
serves, so any retry (by the rider, the endpoint or the purchase worker) is the same call.
Failures come back as problems: 503 `payments_unavailable` (shared.payments_client) when
payments cannot answer, or the problems below.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import NotFound, ProblemError
from shared.payments_client import PaymentsClient, PaymentsRefused, PaymentsUnavailable

logger = logging.getLogger("citypass.ticketing.payments")


class InsufficientFunds(ProblemError):
    status, code, title = 402, "insufficient_funds", "Insufficient funds"


BUSY = "Payments is still processing this payment; retry shortly."


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


class Payments(PaymentsClient):
    """The calls ticketing makes."""

    def __init__(self, base_url: str, service_token: str, *, timeout_s: float) -> None:
        super().__init__(base_url, service_token, timeout_s=timeout_s, caller="ticketing")

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
        """`call`, its refusals as the problems ticketing answers with."""
        try:
            return await self.call(method, path, body, key=key)
        except PaymentsUnavailable as unavailable:
            if unavailable.in_progress:
                raise PaymentsBusy(BUSY) from None
            raise
        except PaymentsRefused as refused:
            detail, code = refused.detail, refused.code
            if refused.status == 402:
                raise InsufficientFunds(detail, shortfall=refused.body.get("shortfall")) from None
            if refused.status == 404:
                raise NotFound(detail, code=code) from None
            if refused.status == 409 and code == "duplicate_transfer":
                raise DuplicateTransfer(detail) from None
            if refused.status == 409:
                raise PaymentsBusy(BUSY) from None
            if refused.status in (400, 422):
                raise PaymentRefused(detail, code=code) from None
            raise PaymentsUnavailable(
                f"The payments service answered {refused.status}; retry later."
            ) from None


def _parse(model: type[AnswerT], answer: dict[str, Any]) -> AnswerT:
    try:
        return model.model_validate(answer)
    except ValidationError as error:
        logger.error("payments answered something unexpected: %s", error)
        raise PaymentsUnavailable("The payments service answered something unexpected.") from None
