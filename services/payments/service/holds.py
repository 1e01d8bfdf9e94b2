"""Holds: placing, reading, capturing, voiding and expiring them."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import events
from services.payments.repository import Record, balances, functions, hold_rows
from services.payments.repository.balances import Leg
from services.payments.repository.functions import Outcome, PostedDraft
from services.payments.repository.hold_rows import HoldTerms
from services.payments.repository.journal import OutboxEvent, PostedTransfer, TransferDraft
from services.payments.schemas import (
    HoldCapture,
    HoldCreate,
    HoldRead,
    HoldStatus,
    Source,
    TransferKind,
)
from services.payments.service.accounts import (
    HOLDS_KIND_NAMES,
    WALLET_KIND_NAMES,
    holds_account,
    revenue_account,
    shard_of,
)
from services.payments.service.errors import (
    CaptureExceedsHold,
    HoldExpired,
    HoldNotFound,
    HoldNotPending,
    HoldTooLong,
    LedgerCorrupted,
)
from services.payments.service.posting import answer_of, ledger_event, post
from services.payments.settings import PaymentsSettings
from shared.db import Database
from shared.errors import ProblemError
from shared.events import LEDGER_TOPIC
from shared.idempotency import (
    IdempotentRequest,
    StoredAnswer,
    claim,
    guarded_answer,
    refusal_detail,
    response_template,
)
from shared.ids import new_id


def _hold_read(row: Record, balance: int) -> HoldRead:
    status = HoldStatus(row.status)
    released = 0 if status is HoldStatus.pending else row.amount - row.captured_amount
    return HoldRead(
        id=row.id,
        account_id=row.wallet_account_id,
        amount=row.amount,
        captured_amount=row.captured_amount,
        released_amount=released,
        status=status,
        source=Source(row.source),
        lot_id=row.lot_id,
        hold_transfer_id=row.hold_transfer_id,
        capture_transfer_id=row.capture_transfer_id,
        release_transfer_id=row.release_transfer_id,
        balance=balance,
        expires_at=row.expires_at,
        created_at=row.created_at,
        settled_at=row.settled_at,
    )


async def place_hold(
    db: Database, key: IdempotentRequest, request: HoldCreate, settings: PaymentsSettings
) -> StoredAnswer:
    ttl = (
        settings.hold_ttl
        if request.expires_in_s is None
        else timedelta(seconds=request.expires_in_s)
    )
    if ttl > settings.hold_max_ttl:
        stored = await claim(db, key)  # the key's answer or conflict comes first, as ever
        if stored is None:
            raise HoldTooLong(
                f"A hold lasts at most {int(settings.hold_max_ttl.total_seconds())} s.",
                max_expires_in_s=int(settings.hold_max_ttl.total_seconds()),
            )
        return stored
    transfer_id = request.transfer_id or new_id()
    hold_id = new_id()
    escrow = holds_account(shard_of(transfer_id, settings.hot_account_shards))
    draft = TransferDraft(
        id=transfer_id,
        kind=TransferKind.hold.value,
        amount=request.amount,
        debit=Leg(request.account_id, WALLET_KIND_NAMES),
        credit=Leg.of(escrow),
        wallet_account_id=request.account_id,
        source=request.source.value,
        lot_id=request.lot_id,
        hold_id=hold_id,
    )
    template = response_template(
        HoldRead,
        ("balance", "expires_at", "created_at"),
        id=hold_id,
        account_id=request.account_id,
        amount=request.amount,
        captured_amount=0,
        released_amount=0,
        status=HoldStatus.pending,
        source=request.source,
        lot_id=request.lot_id,
        hold_transfer_id=transfer_id,
        capture_transfer_id=None,
        release_transfer_id=None,
        settled_at=None,
    )
    outcome = await functions.place_hold_once(
        db, key, draft, ttl, escrow, *ledger_event(draft), template
    )
    return answer_of(outcome, draft)


async def get_hold(session: AsyncSession, hold_id: uuid.UUID) -> HoldRead:
    row = await hold_rows.get_hold(session, hold_id)
    if row is None:
        raise HoldNotFound(f"No hold {hold_id}.")
    return _hold_read(row, await balances.balance_of(session, row.wallet_account_id))


def _release_draft(hold: HoldTerms, amount: int) -> TransferDraft:
    """`amount` of a hold back to its wallet."""
    return TransferDraft(
        id=new_id(),
        kind=TransferKind.release.value,
        amount=amount,
        debit=Leg(hold.holds_account_id, HOLDS_KIND_NAMES),
        credit=Leg(hold.wallet_account_id, WALLET_KIND_NAMES),
        wallet_account_id=hold.wallet_account_id,
        source=hold.source,
        lot_id=hold.lot_id,
        original_transfer_id=hold.hold_transfer_id,
        hold_id=hold.id,
    )


async def _release(
    session: AsyncSession, hold: Record, amount: int
) -> tuple[uuid.UUID, PostedTransfer]:
    """Give `amount` of a hold back to its wallet; returns the release transfer."""
    draft = _release_draft(HoldTerms.of(hold._mapping), amount)
    return draft.id, await post(session, draft)


def _posted(draft: TransferDraft) -> PostedDraft:
    return PostedDraft(draft, OutboxEvent.of(events.transfer_posted(draft)))


def _settled_template(
    hold: HoldTerms,
    status: HoldStatus,
    captured: int,
    capture: uuid.UUID | None,
    release: uuid.UUID | None,
) -> str:
    return response_template(
        HoldRead,
        ("balance", "settled_at"),
        id=hold.id,
        account_id=hold.wallet_account_id,
        amount=hold.amount,
        captured_amount=captured,
        released_amount=hold.amount - captured,
        status=status,
        source=Source(hold.source),
        lot_id=hold.lot_id,
        hold_transfer_id=hold.hold_transfer_id,
        capture_transfer_id=capture,
        release_transfer_id=release,
        expires_at=hold.expires_at,
        created_at=hold.created_at,
    )


def _hold_refusal(
    outcome: Outcome, hold_id: uuid.UUID, hold: HoldTerms | None, amount: int
) -> ProblemError:
    detail = refusal_detail(outcome)
    match outcome["outcome"]:
        case "hold_not_found":
            return HoldNotFound(f"No hold {hold_id}.")
        case "hold_not_pending":
            status = detail["hold_status"]
            return HoldNotPending(f"Hold {hold_id} is already {status}.", hold_status=status)
        case "hold_expired" if hold is not None:
            return HoldExpired(
                f"Hold {hold_id} expired at {hold.expires_at.isoformat()}; its funds are released.",
                expires_at=hold.expires_at.isoformat(),
            )
        case "capture_exceeds_hold":
            held = int(detail["held"])
            return CaptureExceedsHold(
                f"Hold {hold_id} reserves {held} VND; {amount} VND cannot be captured.", held=held
            )
    raise LedgerCorrupted(f"hold {hold_id}: unexpected outcome {outcome['outcome']}")


async def capture_hold(
    db: Database,
    key: IdempotentRequest,
    hold_id: uuid.UUID,
    request: HoldCapture,
    settings: PaymentsSettings,
) -> StoredAnswer:
    """Up to the held amount as revenue, the rest back to the wallet: one statement."""
    hold = await hold_rows.get_hold_terms(db, hold_id)
    capture = release = revenue = template = event_key = None
    if hold is not None:
        capture_id = new_id()
        revenue = revenue_account(
            Source(hold.source), hold.lot_id, shard_of(capture_id, settings.hot_account_shards)
        )
        capture = _posted(
            TransferDraft(
                id=capture_id,
                kind=TransferKind.capture.value,
                amount=request.amount,
                debit=Leg(hold.holds_account_id, HOLDS_KIND_NAMES),
                credit=Leg.of(revenue),
                wallet_account_id=hold.wallet_account_id,
                source=hold.source,
                lot_id=hold.lot_id,
                original_transfer_id=hold.hold_transfer_id,
                hold_id=hold.id,
            )
        )
        if hold.amount > request.amount:
            release = _posted(_release_draft(hold, hold.amount - request.amount))
        event_key = events.ledger_key(capture.draft)
        template = _settled_template(
            hold,
            HoldStatus.captured,
            request.amount,
            capture_id,
            release.draft.id if release else None,
        )
    outcome = await functions.capture_hold_once(
        db,
        key,
        hold_id,
        request.amount,
        revenue,
        capture,
        release,
        LEDGER_TOPIC,
        event_key,
        template,
    )
    answer = guarded_answer(outcome)
    if answer is None:
        raise _hold_refusal(outcome, hold_id, hold, request.amount)
    return answer


async def void_hold(db: Database, key: IdempotentRequest, hold_id: uuid.UUID) -> StoredAnswer:
    """All of a pending hold back to its wallet: one statement."""
    hold = await hold_rows.get_hold_terms(db, hold_id)
    release = template = event_key = None
    if hold is not None:
        release = _posted(_release_draft(hold, hold.amount))
        event_key = events.ledger_key(release.draft)
        template = _settled_template(hold, HoldStatus.voided, 0, None, release.draft.id)
    outcome = await functions.void_hold_once(
        db, key, hold_id, release, LEDGER_TOPIC, event_key, template
    )
    answer = guarded_answer(outcome)
    if answer is None:
        raise _hold_refusal(outcome, hold_id, hold, 0)
    return answer


async def expire_holds(session: AsyncSession, limit: int) -> int:
    """Void up to `limit` holds whose time is up; returns how many."""
    expired = await hold_rows.lock_expired_holds(session, limit)
    await balances.lock_accounts(session, [hold.wallet_account_id for hold in expired])
    for hold in expired:
        release_id, _ = await _release(session, hold, hold.amount)
        await hold_rows.settle_hold(
            session, hold.id, status=HoldStatus.expired.value, release_transfer_id=release_id
        )
    return len(expired)
