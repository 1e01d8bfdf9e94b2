"""Payments rules: wallets, the double-entry ledger, charges, holds, refunds, VietQR top-ups.

No SQL here (see repository.py), no HTTP (see endpoints.py), and never a commit: the caller's
transaction holds the balances, the journal and the outbox event together.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
import zlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

import uuid_utils
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import events, reconciliation, repository
from services.payments.repository import (
    HoldTerms,
    Leg,
    OutboxEvent,
    Outcome,
    PostedDraft,
    PostedTransfer,
    Record,
    SystemAccount,
    TransferDraft,
)
from services.payments.schemas import (
    WALLET_KINDS,
    AccountCreate,
    AccountKind,
    AccountMismatch,
    AccountRead,
    BankNotification,
    BankNotificationResult,
    ChargeCreate,
    ChargeRead,
    HoldCapture,
    HoldCreate,
    HoldRead,
    HoldStatus,
    LedgerInvariant,
    NotificationOutcome,
    ParkingPaymentCreate,
    PaymentPurpose,
    PaymentRequestRead,
    PaymentRequestStatus,
    ReconciliationReport,
    RefundCreate,
    RefundRead,
    Source,
    SuspenseCause,
    TopupCreate,
    TransferKind,
    UnbalancedTransfer,
)
from services.payments.settings import PaymentsSettings
from shared import qrimage, vietqr
from shared.db import Database
from shared.errors import Conflict, NotFound, ProblemError, Unprocessable
from shared.idempotency import (
    IdempotentRequest,
    StoredAnswer,
    claim,
    guarded_answer,
    refusal_detail,
    response_template,
)
from shared.outbox import add_event


class InsufficientFunds(ProblemError):
    status, code, title = 402, "insufficient_funds", "Insufficient funds"


class UnknownAccount(Unprocessable):
    code, title = "unknown_account", "Unknown account"


class UnknownCharge(Unprocessable):
    code, title = "unknown_charge", "Unknown charge"


class RefundExceedsCharge(Unprocessable):
    code, title = "refund_exceeds_charge", "Refund exceeds the charge"


class CaptureExceedsHold(Unprocessable):
    code, title = "capture_exceeds_hold", "Capture exceeds the hold"


class HoldTooLong(Unprocessable):
    code, title = "hold_too_long", "Hold expiry too far away"


class DuplicateTransfer(Conflict):
    code, title = "duplicate_transfer", "Transfer id already used"


class HoldNotPending(Conflict):
    code, title = "hold_not_pending", "Hold already settled"


class HoldExpired(Conflict):
    code, title = "hold_expired", "Hold expired"


class HoldNotFound(NotFound):
    code, title = "hold_not_found", "No such hold"


class PaymentRequestNotFound(NotFound):
    code, title = "payment_request_not_found", "No such payment request"


class LedgerCorrupted(RuntimeError):
    """A system account cannot cover what the ledger says it holds: never a client's fault."""


WALLET_KIND_NAMES = tuple(kind.value for kind in WALLET_KINDS)
REVENUE_KIND_NAMES = (AccountKind.transit_revenue.value, AccountKind.parking_revenue.value)
HOLDS_KIND_NAMES = (AccountKind.holds.value,)
REFUNDABLE_KINDS = (TransferKind.charge.value, TransferKind.capture.value)
BANK_CLEARING = SystemAccount("bank_clearing", AccountKind.bank_clearing.value)
SUSPENSE = SystemAccount("suspense", AccountKind.suspense.value)

# Crockford base32: no I, L, O, U, so a reference read aloud or retyped survives.
REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_PREFIX = "CP"
REFERENCE_PATTERN = re.compile(rf"\b({REFERENCE_PREFIX}[{REFERENCE_ALPHABET}]{{10}})\b")
# Shown by the rider's bank app as the transfer description ("nạp tiền", "phí gửi xe").
QR_PURPOSE_LABELS = {PaymentPurpose.wallet_topup: "NAPTIEN", PaymentPurpose.parking_fee: "PHIGUIXE"}
POST_ATTEMPTS = 3
LEDGER_REPORT_LIMIT = 100
ALL_TIME = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))


def new_id() -> uuid.UUID:
    return uuid.UUID(str(uuid_utils.uuid7()))


def shard_of(transfer_id: uuid.UUID, shards: int) -> int:
    """Spreads the credits of one hot account over `shards` rows, stable per transfer."""
    return zlib.crc32(transfer_id.bytes) % shards


def revenue_account(source: Source, lot_id: str | None, shard: int) -> SystemAccount:
    if source is Source.transit:
        return SystemAccount(
            f"transit_revenue#{shard}", AccountKind.transit_revenue.value, None, shard
        )
    return SystemAccount(
        f"parking_revenue:{lot_id}#{shard}", AccountKind.parking_revenue.value, lot_id, shard
    )


def holds_account(shard: int) -> SystemAccount:
    return SystemAccount(f"holds#{shard}", AccountKind.holds.value, None, shard)


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


# Accounts ---------------------------------------------------------------------------------------


def _account_read(row: Record) -> AccountRead:
    return AccountRead.model_validate(row, from_attributes=True)


async def open_wallet(session: AsyncSession, request: AccountCreate) -> AccountRead:
    """One wallet per owner and kind: opening it again returns the same account."""
    row = await repository.upsert_account(
        session,
        code=f"{request.kind.value}:{request.owner_id}",
        kind=request.kind.value,
        owner_id=request.owner_id,
        allow_negative=False,
    )
    return _account_read(row)


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> AccountRead:
    row = await repository.get_account(session, account_id)
    if row is None:
        raise NotFound(f"No account {account_id}.", code="account_not_found")
    return _account_read(row)


async def _wallet(session: AsyncSession, account_id: uuid.UUID) -> Record:
    row = await repository.get_account(session, account_id)
    if row is None or row.kind not in WALLET_KIND_NAMES:
        raise UnknownAccount(f"No wallet {account_id}.", account_id=str(account_id))
    return row


# Posting ----------------------------------------------------------------------------------------


def _is_duplicate_transfer(error: IntegrityError) -> bool:
    constraint = getattr(getattr(error.orig, "__cause__", None), "constraint_name", None)
    return constraint == "transfers_pkey"


async def _refusal(session: AsyncSession, draft: TransferDraft) -> ProblemError | None:
    """Why nothing was posted, or None when a concurrent credit since made it possible."""
    found = {
        row.id: row
        for row in await repository.get_accounts(
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


async def _post(session: AsyncSession, draft: TransferDraft) -> PostedTransfer:
    """Post one transfer and its `transfer.posted` event, or raise why it cannot be posted."""
    event = events.transfer_posted(draft)
    key = events.ledger_key(draft)
    for _ in range(POST_ATTEMPTS):
        try:
            posted = await repository.post_transfer(session, draft, events.LEDGER_TOPIC, key, event)
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


def _refusal_of(outcome: Outcome, draft: TransferDraft) -> ProblemError:
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


# Charges ----------------------------------------------------------------------------------------


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
    outcome = await repository.charge_once(
        db,
        key,
        draft,
        revenue,
        events.LEDGER_TOPIC,
        events.ledger_key(draft),
        OutboxEvent.of(events.transfer_posted(draft)),
        template,
    )
    answer = guarded_answer(outcome)
    if answer is None:
        raise _refusal_of(outcome, draft)
    return answer


# Holds ------------------------------------------------------------------------------------------


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
    outcome = await repository.place_hold_once(
        db,
        key,
        draft,
        ttl,
        escrow,
        events.LEDGER_TOPIC,
        events.ledger_key(draft),
        OutboxEvent.of(events.transfer_posted(draft)),
        template,
    )
    answer = guarded_answer(outcome)
    if answer is None:
        raise _refusal_of(outcome, draft)
    return answer


async def get_hold(session: AsyncSession, hold_id: uuid.UUID) -> HoldRead:
    row = await repository.get_hold(session, hold_id)
    if row is None:
        raise HoldNotFound(f"No hold {hold_id}.")
    return _hold_read(row, await repository.balance_of(session, row.wallet_account_id))


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
    return draft.id, await _post(session, draft)


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
    hold = await repository.get_hold_terms(db, hold_id)
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
    outcome = await repository.capture_hold_once(
        db,
        key,
        hold_id,
        request.amount,
        capture,
        revenue,
        release,
        events.LEDGER_TOPIC,
        event_key,
        template,
    )
    answer = guarded_answer(outcome)
    if answer is None:
        raise _hold_refusal(outcome, hold_id, hold, request.amount)
    return answer


async def void_hold(db: Database, key: IdempotentRequest, hold_id: uuid.UUID) -> StoredAnswer:
    """All of a pending hold back to its wallet: one statement."""
    hold = await repository.get_hold_terms(db, hold_id)
    release = template = event_key = None
    if hold is not None:
        release = _posted(_release_draft(hold, hold.amount))
        event_key = events.ledger_key(release.draft)
        template = _settled_template(hold, HoldStatus.voided, 0, None, release.draft.id)
    outcome = await repository.void_hold_once(
        db, key, hold_id, release, events.LEDGER_TOPIC, event_key, template
    )
    answer = guarded_answer(outcome)
    if answer is None:
        raise _hold_refusal(outcome, hold_id, hold, 0)
    return answer


async def expire_holds(session: AsyncSession, limit: int) -> int:
    """Void up to `limit` holds whose time is up; returns how many."""
    expired = await repository.lock_expired_holds(session, limit)
    await repository.lock_accounts(session, [hold.wallet_account_id for hold in expired])
    for hold in expired:
        release_id, _ = await _release(session, hold, hold.amount)
        await repository.settle_hold(
            session, hold.id, status=HoldStatus.expired.value, release_transfer_id=release_id
        )
    return len(expired)


# Refunds ----------------------------------------------------------------------------------------


async def refund(session: AsyncSession, request: RefundCreate) -> RefundRead:
    """Back to the charged wallet, from the revenue sub-account the charge credited."""
    original = await repository.lock_transfer(session, request.charge_id)
    if (
        original is None
        or original.kind not in REFUNDABLE_KINDS
        or original.wallet_account_id is None
    ):
        raise UnknownCharge(f"No charge {request.charge_id}.", charge_id=str(request.charge_id))
    already = await repository.refunded_total(session, original.id)
    refundable = original.amount - already
    if request.amount > refundable:
        raise RefundExceedsCharge(
            f"Charge {original.id} of {original.amount} VND has {refundable} VND left to refund.",
            refundable=refundable,
            refunded_total=already,
        )
    transfer_id = request.transfer_id or new_id()
    posted = await _post(
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


# VietQR payment requests ------------------------------------------------------------------------


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
    row = await repository.insert_payment_request(
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
    wallet = await _wallet(session, request.account_id)
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
    outcome = await repository.parking_payment_request_once(
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
    row = await repository.get_payment_request(session, request_id)
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


# Bank notifications -----------------------------------------------------------------------------


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
        await repository.lock_payment_request_by_reference(session, reference)
        if reference is not None
        else None
    )
    cause = _suspense_cause(notification, reference, request, settings)
    notification_id = new_id()
    transfer_id = new_id()
    first = await repository.insert_notification(
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
        stored = await repository.get_notification(session, notification.transaction_id)
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
    await _post(session, draft)
    await repository.mark_payment_request_paid(session, request.id, transfer_id)
    await add_event(
        session,
        repository.outbox,
        events.LEDGER_TOPIC,
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
    await _post(
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
        repository.outbox,
        events.ALERTS_TOPIC,
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


# Ledger checks ----------------------------------------------------------------------------------


async def check_ledger(session: AsyncSession) -> LedgerInvariant:
    """Sum of all postings is 0, every transfer balances, every balance equals its postings.

    Must be the first thing the transaction does: it reads one consistent snapshot.
    """
    await repository.use_consistent_snapshot(session)
    totals = await repository.ledger_totals(session)
    unbalanced = await repository.unbalanced_transfers(session, *ALL_TIME, LEDGER_REPORT_LIMIT)
    mismatched = await repository.accounts_not_matching_postings(session, LEDGER_REPORT_LIMIT)
    return LedgerInvariant(
        ok=totals.postings_total == 0
        and totals.balances_total == 0
        and not unbalanced
        and not mismatched,
        postings_total=totals.postings_total,
        balances_total=totals.balances_total,
        accounts_checked=totals.accounts_checked,
        transfers_checked=totals.transfers_checked,
        unbalanced_transfers=[
            UnbalancedTransfer.model_validate(row, from_attributes=True) for row in unbalanced
        ],
        mismatched_accounts=[
            AccountMismatch.model_validate(row, from_attributes=True) for row in mismatched
        ],
        checked_at=datetime.now(UTC),
    )


async def reconcile(session: AsyncSession, day: date) -> ReconciliationReport:
    """Must be the first thing the transaction does: it reads one consistent snapshot."""
    await repository.use_consistent_snapshot(session)
    since, until = reconciliation.day_window(day)
    unpaid_count, unpaid_amount = await repository.unpaid_requests_between(session, since, until)
    facts = reconciliation.DayFacts(
        notifications=[
            reconciliation.NotificationLine(
                bank_transaction_id=row.bank_transaction_id,
                amount=row.amount,
                reference=row.reference,
                outcome=row.outcome,
                cause=row.cause,
                expected_amount=row.expected_amount,
                transfer_amount=row.transfer_amount,
            )
            for row in await repository.notifications_between(session, since, until)
        ],
        clearing_amount=await repository.clearing_movement_between(session, since, until),
        paid_without_notification=[
            reconciliation.PaidRequestLine(row.id, row.reference, row.amount)
            for row in await repository.paid_requests_without_notification(session, since, until)
        ],
        unpaid_requests=unpaid_count,
        unpaid_amount=unpaid_amount,
        journal=[
            reconciliation.JournalLine(
                row.source, row.lot_id, row.kind, row.transfer_count, row.amount
            )
            for row in await repository.revenue_journal_between(session, since, until)
        ],
        ledger_revenue=[
            reconciliation.LedgerRevenueLine(row.kind, row.owner_id, row.amount)
            for row in await repository.revenue_postings_between(session, since, until)
        ],
        unbalanced=[
            reconciliation.UnbalancedLine(row.transfer_id, row.legs, row.postings_total)
            for row in await repository.unbalanced_transfers(
                session, since, until, LEDGER_REPORT_LIMIT
            )
        ],
    )
    return reconciliation.build_report(day, facts)
