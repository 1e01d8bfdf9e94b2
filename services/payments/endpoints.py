"""HTTP routes of the payments service: parse, call the service, shape the answer."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.types import Scope

from services.payments import bank_signature, reconciliation
from services.payments.auth import (
    IdempotencyStoreDep,
    SettingsDep,
    bearer,
    check_caller,
    service_caller,
)
from services.payments.schemas import (
    AccountCreate,
    AccountRead,
    BankNotification,
    BankNotificationResult,
    ChargeCreate,
    ChargeRead,
    HoldCapture,
    HoldCreate,
    HoldRead,
    LedgerInvariant,
    ParkingPaymentCreate,
    PaymentPurpose,
    PaymentRequestRead,
    ReconciliationReport,
    RefundCreate,
    RefundRead,
    TopupCreate,
)
from services.payments.service import (
    accounts,
    bank_notifications,
    charges,
    checks,
    holds,
    payment_requests,
)
from services.payments.settings import PaymentsSettings
from shared.app import RuntimeDep
from shared.auth import INVALID_TOKEN
from shared.db import Database
from shared.errors import Unauthorized, problems
from shared.fields import Day
from shared.hot import B, HotCall, HotRoute, HotRouter
from shared.idempotency import Idempotency, IdempotencyDep, IdempotentRequest, header


def _bearer_token(scope: Scope) -> str | None:
    """As HTTPBearer reads it."""
    scheme, _, token = (header(scope, b"authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


INVALID = (422, "Invalid body (`validation_error`) or a rule refused it; see `code`")
IDEMPOTENCY = (
    (400, "Idempotency-Key header missing"),
    (409, "A request with this Idempotency-Key is still in progress"),
)


# Hot routes (shared.hot): the money paths that parking and ticketing call per lane decision or
# fare, answered in front of FastAPI, whose routing and dependencies cost more CPU than the one
# statement they run.


@dataclass(frozen=True, slots=True)
class Ledger:
    """What the hot routes work with."""

    db: Database
    settings: PaymentsSettings

    def authorized(self, route: HotRoute[B], scope: Scope, body: bytes) -> HotCall[B]:
        """The service token (401), then the request as `route` declares it."""
        check_caller(self.settings, _bearer_token(scope))
        return route.call(scope, body)


hot = HotRouter[Ledger](security=bearer, responses=problems(INVALID_TOKEN))
HOLD_PATH = {"hold_id": uuid.UUID}


@hot.post(
    "/v1/charges",
    body=ChargeCreate,
    idempotent=True,
    response_model=ChargeRead,
    status_code=201,
    tags=["charges"],
    responses=problems(
        (402, "`insufficient_funds`: the `shortfall` member says how many VND are missing"),
        (409, "In progress (same Idempotency-Key), or `duplicate_transfer`"),
        INVALID,
        IDEMPOTENCY[0],
    ),
)
async def create_charge(
    ledger: Ledger, route: HotRoute[ChargeCreate], scope: Scope, body: bytes
) -> Response:
    """Debit a wallet and credit transit revenue, or a parking lot's revenue (`lot_id`).

    Send an `Idempotency-Key` (one per fare or parking fee); retrying with it returns the
    first answer byte for byte and never charges twice. A wallet short of funds answers 402
    `insufficient_funds` with the `shortfall` in VND; nothing is posted then.
    """
    key, _, charge = ledger.authorized(route, scope, body)
    return (await charges.charge(ledger.db, key, charge, ledger.settings)).response()


@hot.post(
    "/v1/holds",
    body=HoldCreate,
    idempotent=True,
    response_model=HoldRead,
    status_code=201,
    tags=["holds"],
    responses=problems(
        (402, "`insufficient_funds`, with the `shortfall`"),
        IDEMPOTENCY[1],
        INVALID,
        IDEMPOTENCY[0],
    ),
)
async def place_hold(
    ledger: Ledger, route: HotRoute[HoldCreate], scope: Scope, body: bytes
) -> Response:
    """Reserve funds of a wallet (e.g. at a parking entry) until captured, voided or expired.

    The money moves to escrow at once; the wallet's balance no longer shows it. A hold not
    settled before `expires_at` is voided automatically and the money goes back.
    """
    key, _, hold = ledger.authorized(route, scope, body)
    return (await holds.place_hold(ledger.db, key, hold, ledger.settings)).response()


@hot.post(
    "/v1/holds/{hold_id}/capture",
    body=HoldCapture,
    path_types=HOLD_PATH,
    idempotent=True,
    response_model=HoldRead,
    tags=["holds"],
    responses=problems(
        (404, "No such hold"),
        (409, "`hold_not_pending` (already settled), `hold_expired`, or in progress"),
        (422, "`capture_exceeds_hold`, or an invalid body"),
        IDEMPOTENCY[0],
    ),
)
async def capture_hold(
    ledger: Ledger, route: HotRoute[HoldCapture], scope: Scope, body: bytes
) -> Response:
    """Take up to the held amount as revenue; the rest goes back to the wallet at once."""
    key, path, capture = ledger.authorized(route, scope, body)
    return (
        await holds.capture_hold(ledger.db, key, path["hold_id"], capture, ledger.settings)
    ).response()


@hot.post(
    "/v1/holds/{hold_id}/void",
    path_types=HOLD_PATH,
    idempotent=True,
    response_model=HoldRead,
    tags=["holds"],
    responses=problems(
        (404, "No such hold"), (409, "`hold_not_pending`, or in progress"), IDEMPOTENCY[0]
    ),
)
async def void_hold(ledger: Ledger, route: HotRoute[None], scope: Scope, body: bytes) -> Response:
    """Cancel a hold: all of it goes back to the wallet."""
    key, path, _ = ledger.authorized(route, scope, body)
    return (await holds.void_hold(ledger.db, key, path["hold_id"])).response()


@hot.post(
    "/v1/payment-requests",
    body=ParkingPaymentCreate,
    idempotent=True,
    response_model=PaymentRequestRead,
    status_code=201,
    tags=["payment requests"],
    responses=problems(INVALID, *IDEMPOTENCY),
)
async def request_parking_payment(
    ledger: Ledger, route: HotRoute[ParkingPaymentCreate], scope: Scope, body: bytes
) -> Response:
    """A dynamic VietQR for an exact parking fee, paid by any bank app.

    When the bank confirms it, the lot's revenue is credited and
    `citypass.payments.payment_request.paid.v1` (with `parking_session_id`) is published on
    `payments.ledger`.
    """
    key, _, payment = ledger.authorized(route, scope, body)
    return (
        await payment_requests.request_parking_payment(ledger.db, key, payment, ledger.settings)
    ).response()


router = APIRouter(
    prefix="/v1",
    dependencies=[Depends(service_caller)],
    responses=problems(INVALID_TOKEN),
)
bank_router = APIRouter(prefix="/v1/bank", tags=["bank"])


async def _idempotent(
    store: Idempotency,
    key: IdempotentRequest,
    status_code: int,
    action: Callable[[AsyncSession], Awaitable[BaseModel]],
) -> Response:
    """Run `action` once per Idempotency-Key; a retry gets the first answer's exact bytes."""
    async with store.call(key) as call:
        if call.replay is not None:
            return call.replay
        return await call.respond(status_code, await action(call.session))


# Accounts ---------------------------------------------------------------------------------------


@router.post("/accounts", response_model=AccountRead, status_code=201, tags=["accounts"])
async def open_wallet(body: AccountCreate, rt: RuntimeDep) -> AccountRead:
    """Open a rider or vehicle-owner wallet; opening it again returns the same wallet."""
    async with rt.db.transaction() as session:
        return await accounts.open_wallet(session, body)


@router.get(
    "/accounts/{account_id}",
    response_model=AccountRead,
    tags=["accounts"],
    responses=problems((404, "No such account")),
)
async def get_account(account_id: uuid.UUID, rt: RuntimeDep) -> AccountRead:
    """An account and its available balance in VND (money on hold is not available)."""
    async with rt.db.transaction() as session:
        return await accounts.get_account(session, account_id)


# Charges, holds, refunds ------------------------------------------------------------------------


@router.get(
    "/holds/{hold_id}",
    response_model=HoldRead,
    tags=["holds"],
    responses=problems((404, "No such hold")),
)
async def get_hold(hold_id: uuid.UUID, rt: RuntimeDep) -> HoldRead:
    """A hold and where its money went."""
    async with rt.db.transaction() as session:
        return await holds.get_hold(session, hold_id)


@router.post(
    "/refunds",
    response_model=RefundRead,
    status_code=201,
    tags=["refunds"],
    responses=problems(
        (409, "`duplicate_transfer`, or in progress"),
        (422, "`unknown_charge`, `refund_exceeds_charge` (with `refundable`), or invalid body"),
        IDEMPOTENCY[0],
    ),
)
async def create_refund(
    body: RefundCreate, key: IdempotencyDep, store: IdempotencyStoreDep
) -> Response:
    """Refund part or all of a charge (or hold capture), as often as needed.

    The refunds of one charge never add up to more than it; the money always goes back to
    the wallet that was charged.
    """
    return await _idempotent(store, key, 201, lambda session: charges.refund(session, body))


# VietQR payment requests ------------------------------------------------------------------------


@router.post(
    "/topups",
    response_model=PaymentRequestRead,
    status_code=201,
    tags=["top-ups"],
    responses=problems(INVALID, *IDEMPOTENCY),
)
async def request_topup(
    body: TopupCreate,
    key: IdempotencyDep,
    store: IdempotencyStoreDep,
    settings: SettingsDep,
) -> Response:
    """A dynamic VietQR for topping up a wallet by exactly `amount` VND.

    Show `qr` (or the PNG) to the rider; any Vietnamese bank app pays it. The wallet is
    credited when the bank notifies the transfer (reference in field 62); until then the
    top-up stays `pending`.
    """
    return await _idempotent(
        store, key, 201, lambda session: payment_requests.request_topup(session, body, settings)
    )


@router.get(
    "/topups/{topup_id}",
    response_model=PaymentRequestRead,
    tags=["top-ups"],
    responses=problems((404, "No such top-up")),
)
async def get_topup(topup_id: uuid.UUID, rt: RuntimeDep) -> PaymentRequestRead:
    """A top-up and whether it is paid."""
    async with rt.db.transaction() as session:
        return await payment_requests.get_payment_request(
            session, topup_id, PaymentPurpose.wallet_topup
        )


@router.get(
    "/topups/{topup_id}/qr.png",
    tags=["top-ups"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The VietQR as a PNG"}},
)
async def topup_qr_png(topup_id: uuid.UUID, rt: RuntimeDep) -> Response:
    """The top-up's VietQR as a PNG image."""
    async with rt.db.transaction() as session:
        png = await payment_requests.payment_request_png(
            session, topup_id, PaymentPurpose.wallet_topup
        )
    return Response(png, media_type="image/png")


@router.get(
    "/payment-requests/{request_id}",
    response_model=PaymentRequestRead,
    tags=["payment requests"],
    responses=problems((404, "No such payment request")),
)
async def get_payment_request(request_id: uuid.UUID, rt: RuntimeDep) -> PaymentRequestRead:
    """A payment request (top-up or parking fee) and whether it is paid."""
    async with rt.db.transaction() as session:
        return await payment_requests.get_payment_request(session, request_id)


@router.get(
    "/payment-requests/{request_id}/qr.png",
    tags=["payment requests"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The VietQR as a PNG"}},
)
async def payment_request_qr_png(request_id: uuid.UUID, rt: RuntimeDep) -> Response:
    """The payment request's VietQR as a PNG image."""
    async with rt.db.transaction() as session:
        png = await payment_requests.payment_request_png(session, request_id)
    return Response(png, media_type="image/png")


# Ledger and reconciliation ----------------------------------------------------------------------


@router.get("/ledger/invariant", response_model=LedgerInvariant, tags=["ledger"])
async def ledger_invariant(rt: RuntimeDep) -> LedgerInvariant:
    """Check the whole ledger in one snapshot: `ok` is false if any rule is broken.

    The rules: all postings sum to 0, every transfer's two postings cancel out, and every
    account's balance equals the sum of its postings. Offenders are listed (up to 100 each).
    """
    async with rt.db.transaction() as session:
        return await checks.check_ledger(session)


def _csv_response(report: ReconciliationReport) -> Response:
    return Response(
        reconciliation.to_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="reconciliation-{report.day}.csv"'},
    )


CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "The report as CSV"}
}


@router.get(
    "/reconciliation/{day}.csv",
    tags=["reconciliation"],
    response_class=Response,
    responses=CSV_RESPONSE,
)
async def reconciliation_csv(day: Day, rt: RuntimeDep) -> Response:
    """The reconciliation report of `day` as CSV (same as `?format=csv`)."""
    async with rt.db.transaction() as session:
        report = await checks.reconcile(session, day)
    return _csv_response(report)


@router.get(
    "/reconciliation/{day}",
    response_model=ReconciliationReport,
    tags=["reconciliation"],
    responses=CSV_RESPONSE,
)
async def reconciliation_report(
    day: Day,
    rt: RuntimeDep,
    output: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> Response | ReconciliationReport:
    """Ledger vs bank notifications vs charges for one day in Hanoi time (UTC+7).

    Totals per source (transit, each parking lot) and every mismatch with its cause: money
    in suspense (unknown reference, amount mismatch, paid twice…), notifications the ledger
    lacks, revenue sub-accounts that moved differently from charges − refunds. Top-ups that
    were requested but never paid are counted, not reported as mismatches.
    """
    async with rt.db.transaction() as session:
        report = await checks.reconcile(session, day)
    return _csv_response(report) if output == "csv" else report


# The bank ---------------------------------------------------------------------------------------


@bank_router.post(
    "/notifications",
    response_model=BankNotificationResult,
    responses=problems(
        (401, "`invalid_signature`: unsigned, wrongly signed or outside the 300 s window"),
        (422, "Not a valid notification"),
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BankNotification.model_json_schema()}},
        }
    },
)
async def receive_bank_notification(
    request: Request,
    rt: RuntimeDep,
    settings: SettingsDep,
    timestamp: Annotated[
        str | None,
        Header(alias=bank_signature.TIMESTAMP_HEADER, description="Unix seconds"),
    ] = None,
    signature: Annotated[
        str | None,
        Header(
            alias=bank_signature.SIGNATURE_HEADER,
            description='Hex HMAC-SHA256 of "<timestamp>.<raw body>" with the shared secret',
        ),
    ] = None,
) -> BankNotificationResult:
    """The bank reports money that arrived on the collection account (webhook, no token).

    Authenticated by its HMAC signature, accepted within 300 s of its timestamp, and
    deduplicated by `transaction_id`: a repeat answers with the first outcome
    (`duplicate: true`) and credits nothing. A transfer that matches a pending payment
    request by reference and amount credits it; anything else is kept in the suspense
    account and raised on `ops.alerts`, never dropped, whatever its text says: characters
    the database cannot store (NUL, a lone surrogate) are kept as U+FFFD, an instant outside
    2000–2100 as null, and the raw body is stored as the bank signed it.
    """
    body = await request.body()
    try:
        bank_signature.verify(
            settings.bank_webhook_secret.get_secret_value(),
            timestamp=timestamp,
            signature=signature,
            body=body,
            now=time.time(),
            window_s=settings.bank_webhook_window.total_seconds(),
        )
    except bank_signature.SignatureRejected as rejected:
        raise Unauthorized(str(rejected), code="invalid_signature") from None
    try:
        # The standard library's parser, not pydantic's: it reads a lone surrogate (`\ud800`),
        # which KeptText then replaces, instead of refusing the whole notification.
        notification = BankNotification.model_validate(json.loads(body))
    except ValueError as invalid:  # not JSON, not UTF-8, or a ValidationError
        errors = (
            invalid.errors(include_url=False)
            if isinstance(invalid, ValidationError)
            else [{"type": "json_invalid", "loc": ("body",), "msg": "The body is not JSON."}]
        )
        raise RequestValidationError(errors) from None
    async with rt.db.transaction() as session:
        return await bank_notifications.receive_bank_notification(
            session, notification, body, settings
        )
