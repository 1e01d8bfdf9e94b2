"""Charges of a wallet, and their refunds."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.repository import functions, journal
from services.payments.repository.balances import Leg
from services.payments.repository.journal import TransferDraft
from services.payments.schemas import (
    ChargeCreate,
    ChargeRead,
    RefundCreate,
    RefundRead,
    TransferKind,
)
from services.payments.service.accounts import (
    REVENUE_KIND_NAMES,
    WALLET_KIND_NAMES,
    revenue_account,
    shard_of,
)
from services.payments.service.errors import RefundExceedsCharge, UnknownCharge
from services.payments.service.posting import answer_of, ledger_event, post
from services.payments.settings import PaymentsSettings
from shared.db import Database
from shared.idempotency import IdempotentRequest, StoredAnswer, response_template
from shared.ids import new_id

REFUNDABLE_KINDS = (TransferKind.charge.value, TransferKind.capture.value)


async def charge(
    db: Database, key: IdempotentRequest, request: ChargeCreate, settings: PaymentsSettings
) -> StoredAnswer:
    """Debit the wallet, credit a revenue sub-account: one statement with its key and answer."""
    transfer_id = request.transfer_id or new_id()
    revenue = revenue_account(
        request.source, request.lot_id, shard_of(transfer_id, settings.hot_account_shards)
    )
    draft = TransferDraft(
        id=transfer_id,
        kind=TransferKind.charge.value,
        amount=request.amount,
        debit=Leg(request.account_id, WALLET_KIND_NAMES),
        credit=Leg.of(revenue),
        wallet_account_id=request.account_id,
        source=request.source.value,
        lot_id=request.lot_id,
    )
    template = response_template(
        ChargeRead,
        ("balance", "posted_at"),
        id=transfer_id,
        account_id=request.account_id,
        amount=request.amount,
        source=request.source,
        lot_id=request.lot_id,
        revenue_account_id=revenue.id,
    )
    outcome = await functions.charge_once(db, key, draft, revenue, *ledger_event(draft), template)
    return answer_of(outcome, draft)


# Refunds ----------------------------------------------------------------------------------------


async def refund(session: AsyncSession, request: RefundCreate) -> RefundRead:
    """Back to the charged wallet, from the revenue sub-account the charge credited."""
    original = await journal.lock_transfer(session, request.charge_id)
    if (
        original is None
        or original.kind not in REFUNDABLE_KINDS
        or original.wallet_account_id is None
    ):
        raise UnknownCharge(f"No charge {request.charge_id}.", charge_id=str(request.charge_id))
    already = await journal.refunded_total(session, original.id)
    refundable = original.amount - already
    if request.amount > refundable:
        raise RefundExceedsCharge(
            f"Charge {original.id} of {original.amount} VND has {refundable} VND left to refund.",
            refundable=refundable,
            refunded_total=already,
        )
    transfer_id = request.transfer_id or new_id()
    posted = await post(
        session,
        TransferDraft(
            id=transfer_id,
            kind=TransferKind.refund.value,
            amount=request.amount,
            debit=Leg(original.credit_account_id, REVENUE_KIND_NAMES),
            credit=Leg(original.wallet_account_id, WALLET_KIND_NAMES),
            wallet_account_id=original.wallet_account_id,
            source=original.source,
            lot_id=original.lot_id,
            original_transfer_id=original.id,
        ),
    )
    return RefundRead(
        id=transfer_id,
        charge_id=original.id,
        account_id=original.wallet_account_id,
        amount=request.amount,
        refunded_total=already + request.amount,
        refundable=refundable - request.amount,
        balance=posted.credit_balance,
        posted_at=posted.posted_at,
    )
