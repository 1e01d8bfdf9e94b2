"""Posting a transfer (`post`, through the database's one posting engine, `post_transfer` in
services/payments/sql/), and why the database posted nothing (`refusal_of`)."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import events
from services.payments.repository import journal
from services.payments.repository.functions import Outcome
from services.payments.repository.journal import OutboxEvent, PostedTransfer, TransferDraft
from services.payments.service.accounts import WALLET_KIND_NAMES
from services.payments.service.errors import (
    DuplicateTransfer,
    InsufficientFunds,
    LedgerCorrupted,
    UnknownAccount,
)
from shared.errors import ProblemError
from shared.events import LEDGER_TOPIC
from shared.idempotency import StoredAnswer, guarded_answer, refusal_detail


def ledger_event(draft: TransferDraft) -> tuple[str, str, OutboxEvent]:
    """The topic, key and `transfer.posted` event of a transfer, as the engine writes them."""
    event = OutboxEvent.of(events.transfer_posted(draft))
    return LEDGER_TOPIC, events.ledger_key(draft), event


async def post(session: AsyncSession, draft: TransferDraft) -> PostedTransfer:
    """Post one transfer and its `transfer.posted` event, or raise why it cannot be posted."""
    try:
        row = await journal.post_transfer(session, draft, *ledger_event(draft))
    except IntegrityError as error:
        constraint = getattr(getattr(error.orig, "__cause__", None), "constraint_name", None)
        if constraint == "transfers_pkey":
            raise refusal_of({"outcome": "duplicate_transfer", "detail": None}, draft) from None
        raise
    if row.refusal is not None:
        raise refusal_of({"outcome": "refused", "detail": row.refusal}, draft)
    return PostedTransfer(int(row.debit_balance), int(row.credit_balance), row.posted_at)


def answer_of(outcome: Outcome, draft: TransferDraft) -> StoredAnswer:
    """The answer of a one-round-trip function that posts `draft`, or why it posted nothing."""
    answer = guarded_answer(outcome)
    if answer is None:
        raise refusal_of(outcome, draft)
    return answer


def refusal_of(outcome: Outcome, draft: TransferDraft) -> ProblemError:
    """Why the database posted nothing for `draft`; a short account that is not a wallet is a
    corrupted ledger (raised, never a client's fault)."""
    detail = refusal_detail(outcome)
    match detail.get("code", outcome["outcome"]):
        case "insufficient_funds" if detail["kind"] in WALLET_KIND_NAMES:
            balance = int(detail["balance"])
            shortfall = draft.amount - balance
            return InsufficientFunds(
                f"The wallet is {shortfall} VND short of {draft.amount} VND.",
                shortfall=shortfall,
                amount=draft.amount,
                balance=balance,
                account_id=str(draft.debit.account_id),
            )
        case "insufficient_funds":
            raise LedgerCorrupted(
                f"account {detail['account_id']} holds {detail['balance']} VND, less than the"
                f" {draft.amount} VND of transfer {draft.id}"
            )
        case "unknown_account":
            leg = (
                draft.debit if detail["account_id"] == str(draft.debit.account_id) else draft.credit
            )
            kinds = " or ".join(leg.kinds)
            return UnknownAccount(
                f"No {kinds} account {leg.account_id}.", account_id=str(leg.account_id)
            )
        case "duplicate_transfer":
            return DuplicateTransfer(
                f"Transfer id {draft.id} is already in the ledger.", transfer_id=str(draft.id)
            )
    raise LedgerCorrupted(f"transfer {draft.id}: unexpected outcome {outcome['outcome']}")
