"""Bank notifications: crediting the payment request they pay, or parking them in suspense."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import events
from services.payments.repository import Record, bank, outbox
from services.payments.repository.balances import Leg
from services.payments.repository.journal import TransferDraft
from services.payments.schemas import (
    BankNotification,
    BankNotificationResult,
    NotificationOutcome,
    PaymentPurpose,
    PaymentRequestStatus,
    Source,
    SuspenseCause,
    TransferKind,
)
from services.payments.service.accounts import (
    BANK_CLEARING,
    SUSPENSE,
    WALLET_KIND_NAMES,
    revenue_account,
    shard_of,
)
from services.payments.service.payment_requests import find_reference
from services.payments.service.posting import post
from services.payments.settings import PaymentsSettings
from shared.events import ALERTS_TOPIC, LEDGER_TOPIC
from shared.ids import new_id
from shared.outbox import add_event


def _suspense_cause(
    notification: BankNotification,
    reference: str | None,
    request: Record | None,
    settings: PaymentsSettings,
) -> SuspenseCause | None:
    if (notification.bank_bin, notification.account) != (
        settings.bank_bin,
        settings.collection_account,
    ):
        return SuspenseCause.foreign_account
    if reference is None:
        return SuspenseCause.missing_reference
    if request is None:
        return SuspenseCause.unknown_reference
    if request.status == PaymentRequestStatus.paid.value:
        return SuspenseCause.already_paid
    if request.amount != notification.amount:
        return SuspenseCause.amount_mismatch
    return None


def _credit_for(request: Record, transfer_id: uuid.UUID, settings: PaymentsSettings) -> Leg:
    if request.purpose == PaymentPurpose.wallet_topup.value:
        return Leg(request.wallet_account_id, WALLET_KIND_NAMES)
    shard = shard_of(transfer_id, settings.hot_account_shards)
    return Leg.of(revenue_account(Source.parking, request.lot_id, shard))


async def receive_bank_notification(
    session: AsyncSession,
    notification: BankNotification,
    raw_body: bytes,
    settings: PaymentsSettings,
) -> BankNotificationResult:
    """Credit the payment request it pays, exactly once; anything else goes to suspense.
    `raw_body` is kept with it, as the bank signed it."""
    reference = find_reference(notification)
    request = (
        await bank.lock_payment_request_by_reference(session, reference)
        if reference is not None
        else None
    )
    cause = _suspense_cause(notification, reference, request, settings)
    notification_id = new_id()
    transfer_id = new_id()
    first = await bank.insert_notification(
        session,
        id=notification_id,
        bank_transaction_id=notification.transaction_id,
        amount=notification.amount,
        bank_bin=notification.bank_bin,
        account=notification.account,
        reference=reference,
        description=notification.description,
        occurred_at=notification.occurred_at,
        outcome=(NotificationOutcome.suspense if cause else NotificationOutcome.credited).value,
        cause=cause.value if cause else None,
        payment_request_id=request.id if request is not None else None,
        transfer_id=transfer_id,
        raw_body=raw_body,
    )
    if not first:
        stored = await bank.get_notification(session, notification.transaction_id)
        return BankNotificationResult(
            notification_id=stored.id,
            transaction_id=stored.bank_transaction_id,
            outcome=NotificationOutcome(stored.outcome),
            cause=SuspenseCause(stored.cause) if stored.cause else None,
            duplicate=True,
            transfer_id=stored.transfer_id,
            payment_request_id=stored.payment_request_id,
        )
    if cause is None and request is not None:
        await _settle_payment_request(session, request, notification_id, transfer_id, settings)
    else:
        await _park_in_suspense(
            session,
            notification,
            notification_id,
            transfer_id,
            reference,
            request,
            cause or SuspenseCause.unknown_reference,
        )
    return BankNotificationResult(
        notification_id=notification_id,
        transaction_id=notification.transaction_id,
        outcome=NotificationOutcome.suspense if cause else NotificationOutcome.credited,
        cause=cause,
        duplicate=False,
        transfer_id=transfer_id,
        payment_request_id=request.id if request is not None else None,
    )


async def _settle_payment_request(
    session: AsyncSession,
    request: Record,
    notification_id: uuid.UUID,
    transfer_id: uuid.UUID,
    settings: PaymentsSettings,
) -> None:
    topup = request.purpose == PaymentPurpose.wallet_topup.value
    credit = _credit_for(request, transfer_id, settings)
    draft = TransferDraft(
        id=transfer_id,
        kind=(TransferKind.topup if topup else TransferKind.payment).value,
        amount=request.amount,
        debit=Leg.of(BANK_CLEARING),
        credit=credit,
        wallet_account_id=request.wallet_account_id,
        source=None if topup else Source.parking.value,
        lot_id=request.lot_id,
        payment_request_id=request.id,
        bank_notification_id=notification_id,
    )
    await post(session, draft)
    await bank.mark_payment_request_paid(session, request.id, transfer_id)
    await add_event(
        session,
        outbox,
        LEDGER_TOPIC,
        events.ledger_key(draft),
        events.payment_request_paid(
            payment_request_id=request.id,
            purpose=request.purpose,
            reference=request.reference,
            amount=request.amount,
            transfer_id=transfer_id,
            wallet_account_id=request.wallet_account_id,
            lot_id=request.lot_id,
            parking_session_id=request.parking_session_id,
        ),
    )


async def _park_in_suspense(
    session: AsyncSession,
    notification: BankNotification,
    notification_id: uuid.UUID,
    transfer_id: uuid.UUID,
    reference: str | None,
    request: Record | None,
    cause: SuspenseCause,
) -> None:
    await post(
        session,
        TransferDraft(
            id=transfer_id,
            kind=TransferKind.suspense.value,
            amount=notification.amount,
            debit=Leg.of(BANK_CLEARING),
            credit=Leg.of(SUSPENSE),
            payment_request_id=request.id if request is not None else None,
            bank_notification_id=notification_id,
        ),
    )
    expected = int(request.amount) if request is not None else None
    await add_event(
        session,
        outbox,
        ALERTS_TOPIC,
        notification.transaction_id,
        events.notification_unmatched(
            bank_transaction_id=notification.transaction_id,
            cause=cause.value,
            amount=notification.amount,
            reference=reference,
            expected_amount=expected,
            payment_request_id=request.id if request is not None else None,
            suspense_transfer_id=transfer_id,
            detail=(
                f"{notification.amount} VND from the bank ({cause.value}) is in suspense;"
                " match it by hand or return it"
            ),
        ),
    )
