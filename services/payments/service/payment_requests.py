"""VietQR payment requests: wallet top-ups and parking fees, their references and QR codes."""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.repository import Record, bank, functions
from services.payments.schemas import (
    BankNotification,
    ParkingPaymentCreate,
    PaymentPurpose,
    PaymentRequestRead,
    PaymentRequestStatus,
    TopupCreate,
)
from services.payments.service.accounts import find_wallet
from services.payments.service.errors import LedgerCorrupted, PaymentRequestNotFound
from services.payments.settings import PaymentsSettings
from shared import qrimage, vietqr
from shared.db import Database
from shared.idempotency import IdempotentRequest, StoredAnswer, guarded_answer, response_template
from shared.ids import new_id

# Crockford base32: no I, L, O, U, so a reference read aloud or retyped survives.
REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_PREFIX = "CP"
REFERENCE_PATTERN = re.compile(rf"\b({REFERENCE_PREFIX}[{REFERENCE_ALPHABET}]{{10}})\b")
# Shown by the rider's bank app as the transfer description ("nạp tiền", "phí gửi xe").
QR_PURPOSE_LABELS = {PaymentPurpose.wallet_topup: "NAPTIEN", PaymentPurpose.parking_fee: "PHIGUIXE"}


def new_reference() -> str:
    return REFERENCE_PREFIX + "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(10))


def find_reference(notification: BankNotification) -> str | None:
    """The payment reference, from its own field or, as many banks send it, the description."""
    for text in (notification.reference, notification.description):
        if text:
            found = REFERENCE_PATTERN.search(text.upper())
            if found:
                return found.group(1)
    return None


def qr_png_path(row: Record) -> str:
    if row.purpose == PaymentPurpose.wallet_topup.value:
        return f"/v1/topups/{row.id}/qr.png"
    return f"/v1/payment-requests/{row.id}/qr.png"


def _payment_request_read(row: Record) -> PaymentRequestRead:
    png = None
    if row.purpose == PaymentPurpose.wallet_topup.value:
        png = base64.b64encode(qrimage.render_png(row.qr_payload)).decode()
    return PaymentRequestRead(
        id=row.id,
        purpose=PaymentPurpose(row.purpose),
        reference=row.reference,
        amount=row.amount,
        status=PaymentRequestStatus(row.status),
        account_id=row.wallet_account_id,
        lot_id=row.lot_id,
        parking_session_id=row.parking_session_id,
        qr=row.qr_payload,
        qr_png_base64=png,
        qr_png_url=qr_png_path(row),
        paid_transfer_id=row.paid_transfer_id,
        created_at=row.created_at,
        paid_at=row.paid_at,
    )


def _vietqr(
    settings: PaymentsSettings, purpose: PaymentPurpose, amount: int, reference: str
) -> str:
    return vietqr.encode(
        vietqr.VietQR(
            bank_bin=settings.bank_bin,
            account=settings.collection_account,
            amount=amount,
            dynamic=True,
            reference=reference,
            purpose=f"{QR_PURPOSE_LABELS[purpose]} {reference}",
            merchant_name=settings.merchant_name,
            merchant_city=settings.merchant_city,
        )
    )


async def _create_payment_request(
    session: AsyncSession,
    settings: PaymentsSettings,
    *,
    purpose: PaymentPurpose,
    amount: int,
    **target: Any,
) -> PaymentRequestRead:
    reference = new_reference()
    row = await bank.insert_payment_request(
        session,
        id=new_id(),
        reference=reference,
        purpose=purpose.value,
        amount=amount,
        qr_payload=_vietqr(settings, purpose, amount, reference),
        **target,
    )
    return _payment_request_read(row)


async def request_topup(
    session: AsyncSession, request: TopupCreate, settings: PaymentsSettings
) -> PaymentRequestRead:
    wallet = await find_wallet(session, request.account_id)
    return await _create_payment_request(
        session,
        settings,
        purpose=PaymentPurpose.wallet_topup,
        amount=request.amount,
        wallet_account_id=wallet.id,
    )


async def request_parking_payment(
    db: Database, key: IdempotentRequest, request: ParkingPaymentCreate, settings: PaymentsSettings
) -> StoredAnswer:
    """A VietQR for the exact fee: one statement with its key and answer."""
    request_id = new_id()
    reference = new_reference()
    payload = _vietqr(settings, PaymentPurpose.parking_fee, request.amount, reference)
    template = response_template(
        PaymentRequestRead,
        ("created_at",),
        id=request_id,
        purpose=PaymentPurpose.parking_fee,
        reference=reference,
        amount=request.amount,
        status=PaymentRequestStatus.pending,
        account_id=None,
        lot_id=request.lot_id,
        parking_session_id=request.parking_session_id,
        qr=payload,
        qr_png_base64=None,
        qr_png_url=f"/v1/payment-requests/{request_id}/qr.png",
        paid_transfer_id=None,
        paid_at=None,
    )
    outcome = await functions.parking_payment_request_once(
        db,
        key,
        id=request_id,
        reference=reference,
        amount=request.amount,
        lot_id=request.lot_id,
        parking_session_id=request.parking_session_id,
        qr_payload=payload,
        template=template,
    )
    answer = guarded_answer(outcome)
    if answer is None:
        raise LedgerCorrupted(f"payment request: unexpected outcome {outcome['outcome']}")
    return answer


async def _payment_request_row(
    session: AsyncSession, request_id: uuid.UUID, purpose: PaymentPurpose | None
) -> Record:
    row = await bank.get_payment_request(session, request_id)
    if row is None or (purpose is not None and row.purpose != purpose.value):
        raise PaymentRequestNotFound(f"No payment request {request_id}.")
    return row


async def get_payment_request(
    session: AsyncSession, request_id: uuid.UUID, purpose: PaymentPurpose | None = None
) -> PaymentRequestRead:
    return _payment_request_read(await _payment_request_row(session, request_id, purpose))


async def payment_request_png(
    session: AsyncSession, request_id: uuid.UUID, purpose: PaymentPurpose | None = None
) -> bytes:
    row = await _payment_request_row(session, request_id, purpose)
    return qrimage.render_png(row.qr_payload)
