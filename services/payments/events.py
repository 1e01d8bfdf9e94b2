"""What payments publishes (it consumes nothing yet).

`payments.ledger`, keyed by the wallet involved (or the credited account when no wallet is):
- `citypass.payments.transfer.posted.v1`: every transfer, once, through the outbox.
- `citypass.payments.payment_request.paid.v1`: a VietQR payment request was paid; parking
  consumes it for `parking_fee` requests (`parking_session_id` says which session).

`ops.alerts`, keyed by the bank transaction id:
- `citypass.payments.bank_notification.unmatched.v1`: money arrived that matches no payment
  request (unknown reference, wrong amount, paid twice…); it sits in the suspense account.
"""

from __future__ import annotations

import uuid
from typing import Any

from services.payments.repository.journal import TransferDraft
from shared.events import NOTIFICATION_UNMATCHED, PAYMENT_REQUEST_PAID, TRANSFER_POSTED, Event

SOURCE = "/citypass/payments"


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def ledger_key(draft: TransferDraft) -> str:
    return str(draft.wallet_account_id or draft.credit.account_id)


def transfer_posted(draft: TransferDraft) -> Event:
    return Event(
        type=TRANSFER_POSTED,
        source=SOURCE,
        subject=str(draft.id),
        data={
            "transfer_id": str(draft.id),
            "kind": draft.kind,
            "amount": draft.amount,
            "currency": "VND",
            "debit_account_id": str(draft.debit.account_id),
            "credit_account_id": str(draft.credit.account_id),
            "wallet_account_id": _text(draft.wallet_account_id),
            "source": draft.source,
            "lot_id": draft.lot_id,
            "original_transfer_id": _text(draft.original_transfer_id),
            "hold_id": _text(draft.hold_id),
            "payment_request_id": _text(draft.payment_request_id),
            "bank_notification_id": _text(draft.bank_notification_id),
        },
    )


def payment_request_paid(
    *,
    payment_request_id: uuid.UUID,
    purpose: str,
    reference: str,
    amount: int,
    transfer_id: uuid.UUID,
    wallet_account_id: uuid.UUID | None,
    lot_id: str | None,
    parking_session_id: str | None,
) -> Event:
    return Event(
        type=PAYMENT_REQUEST_PAID,
        source=SOURCE,
        subject=str(payment_request_id),
        data={
            "payment_request_id": str(payment_request_id),
            "purpose": purpose,
            "reference": reference,
            "amount": amount,
            "currency": "VND",
            "transfer_id": str(transfer_id),
            "wallet_account_id": _text(wallet_account_id),
            "lot_id": lot_id,
            "parking_session_id": parking_session_id,
        },
    )


def notification_unmatched(
    *,
    bank_transaction_id: str,
    cause: str,
    amount: int,
    reference: str | None,
    expected_amount: int | None,
    payment_request_id: uuid.UUID | None,
    suspense_transfer_id: uuid.UUID,
    detail: str,
) -> Event:
    data: dict[str, Any] = {
        "severity": "warning",
        "code": cause,
        "detail": detail,
        "bank_transaction_id": bank_transaction_id,
        "amount": amount,
        "currency": "VND",
        "reference": reference,
        "expected_amount": expected_amount,
        "payment_request_id": _text(payment_request_id),
        "suspense_transfer_id": str(suspense_transfer_id),
    }
    return Event(type=NOTIFICATION_UNMATCHED, source=SOURCE, subject=bank_transaction_id, data=data)
