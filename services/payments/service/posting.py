"""Posting a transfer from Python (`post`), and why the database posted nothing (`refusal_of`)."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import events
from services.payments.repository import balances, journal
from services.payments.repository.functions import Outcome
from services.payments.repository.journal import PostedTransfer, TransferDraft
from services.payments.service.accounts import WALLET_KIND_NAMES
from services.payments.service.errors import (
    DuplicateTransfer,
    InsufficientFunds,
    LedgerCorrupted,
    UnknownAccount,
)
from shared.errors import Conflict, ProblemError
from shared.events import LEDGER_TOPIC
from shared.idempotency import refusal_detail

POST_ATTEMPTS = 3


def _is_duplicate_transfer(error: IntegrityError) -> bool:
    constraint = getattr(getattr(error.orig, "__cause__", None), "constraint_name", None)
    return constraint == "transfers_pkey"


async def _refusal(session: AsyncSession, draft: TransferDraft) -> ProblemError | None:
    """Why nothing was posted, or None when a concurrent credit since made it possible."""
    found = {
        row.id: row
        for row in await balances.get_accounts(
            session, [draft.debit.account_id, draft.credit.account_id]
        )
    }
    legs = [draft.debit] if draft.credit.system is not None else [draft.debit, draft.credit]
    for leg in legs:
        row = found.get(leg.account_id)
        if row is None or row.kind not in leg.kinds:
            kinds = " or ".join(leg.kinds)
            return UnknownAccount(
                f"No {kinds} account {leg.account_id}.", account_id=str(leg.account_id)
            )
    debit = found[draft.debit.account_id]
    if debit.allow_negative or debit.balance >= draft.amount:
        return None
    if debit.kind not in WALLET_KIND_NAMES:
        raise LedgerCorrupted(
            f"account {debit.code} holds {debit.balance} VND, less than the {draft.amount} VND"
            f" of transfer {draft.id}"
        )
    shortfall = draft.amount - int(debit.balance)
    return InsufficientFunds(
        f"The wallet is {shortfall} VND short of {draft.amount} VND.",
        shortfall=shortfall,
        amount=draft.amount,
        balance=int(debit.balance),
        account_id=str(draft.debit.account_id),
    )


async def post(session: AsyncSession, draft: TransferDraft) -> PostedTransfer:
    """Post one transfer and its `transfer.posted` event, or raise why it cannot be posted."""
    event = events.transfer_posted(draft)
    key = events.ledger_key(draft)
    for _ in range(POST_ATTEMPTS):
        try:
            posted = await journal.post_transfer(session, draft, LEDGER_TOPIC, key, event)
        except IntegrityError as error:
            if _is_duplicate_transfer(error):
                raise DuplicateTransfer(
                    f"Transfer id {draft.id} is already in the ledger.", transfer_id=str(draft.id)
                ) from None
            raise
        if posted is not None:
            return posted
        refusal = await _refusal(session, draft)
        if refusal is not None:
            raise refusal
    raise Conflict(
        "The account changed under this transfer several times; retry.", code="ledger_contention"
    )


def refusal_of(outcome: Outcome, draft: TransferDraft) -> ProblemError:
    """Why the database posted nothing for `draft` (a wallet debit)."""
    match outcome["outcome"]:
        case "insufficient_funds":
            balance = int(refusal_detail(outcome)["balance"])
            shortfall = draft.amount - balance
            return InsufficientFunds(
                f"The wallet is {shortfall} VND short of {draft.amount} VND.",
                shortfall=shortfall,
                amount=draft.amount,
                balance=balance,
                account_id=str(draft.debit.account_id),
            )
        case "unknown_account":
            kinds = " or ".join(draft.debit.kinds)
            return UnknownAccount(
                f"No {kinds} account {draft.debit.account_id}.",
                account_id=str(draft.debit.account_id),
            )
        case "duplicate_transfer":
            return DuplicateTransfer(
                f"Transfer id {draft.id} is already in the ledger.", transfer_id=str(draft.id)
            )
    raise LedgerCorrupted(f"transfer {draft.id}: unexpected outcome {outcome['outcome']}")
