"""Background work of the parking service: payments' events, debt collection, holds to give
back, the reference refresh (each worker runs `supervised` in every replica)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from aiokafka import ConsumerRecord
from pydantic import ValidationError

from services.parking import events, lane_sql, repository, session_queries
from services.parking.context import Parking
from services.parking.payments import Posted
from services.parking.schemas import DebtStatus, SessionStatus, Settlement
from services.parking.session_state import SessionState
from services.parking.settlement import amount_owed, close_session, release_hold, take_from_wallet
from services.parking.work import Work, transaction
from shared.app import Worker
from shared.events import (
    PAYMENT_REQUEST_PAID,
    SESSION_DEBT_SETTLED,
    SESSIONS_TOPIC,
    TRANSFER_POSTED,
    Event,
)
from shared.inbox import first_delivery
from shared.kafka import Handler
from shared.payments_client import PaymentsRefused, PaymentsUnavailable

logger = logging.getLogger("citypass.parking")

DEBT_RETRY_CAP = timedelta(hours=6)
DEBT_BATCH = 20
SIGNED_KINDS = {"charge": 1, "capture": 1, "payment": 1, "refund": -1}


# Events from payments ---------------------------------------------------------------------------


async def on_payment_request_paid(work: Work, event: Event) -> None:
    """A VietQR for a session was paid: open the barrier, or settle the debt."""
    try:
        paid = events.PaymentRequestPaid.model_validate(event.data)
    except ValidationError:
        paid = None
    if paid is None or paid.parking_session_id is None:
        logger.info("payment event %s is not for a parking session", event.id)
        return
    amount = paid.amount
    row = await session_queries.get_session(work.session, paid.parking_session_id, lock=True)
    if row is None:
        logger.warning(
            "paid request %s names unknown session %s",
            paid.payment_request_id,
            paid.parking_session_id,
        )
        return
    if await session_queries.payment_recorded(work.session, paid.transfer_id):
        return
    posted = Posted(paid.transfer_id, amount, event.time)
    work.record_payment(row, posted, "vietqr", paid.reference or "")
    paid_total = int(row.paid_amount) + amount
    if row.status == SessionStatus.awaiting_payment.value and paid_total >= row.priced_fee:
        await close_session(work, row, Settlement.vietqr, paid=amount)
        return
    if row.debt_status == DebtStatus.outstanding.value and paid_total >= row.priced_fee:
        await _settle_debt(work, row, amount)
        return
    # Paid twice, or for a fee since corrected: the audit lists the session as overpaid.
    work.update_session(row, paid_amount=paid_total)


async def on_transfer_posted(context: Parking, event: Event) -> None:
    """Keep the lot's revenue movements, to explain every dong in the audit; once per event
    (its dedup and the movement are one statement)."""
    posted = events.TransferPosted.model_validate(event.data)
    sign = SIGNED_KINDS.get(posted.kind)
    if posted.source != "parking" or not posted.lot_id or sign is None:
        return
    await lane_sql.record_ledger_event(
        context.db,
        events.CONSUMER_GROUP,
        event.id,
        transfer_id=posted.transfer_id,
        lot_id=posted.lot_id,
        kind=posted.kind,
        amount=sign * posted.amount,
        hold_id=posted.hold_id,
        payment_request_id=posted.payment_request_id,
        original_transfer_id=posted.original_transfer_id,
        posted_at=event.time,
    )


# Debts ------------------------------------------------------------------------------------------


async def _settle_debt(work: Work, row: SessionState, amount: int) -> SessionState:
    row = work.update_session(
        row,
        paid_amount=int(row.paid_amount) + amount,
        debt_status=DebtStatus.paid.value,
        debt_next_attempt_at=None,
    )
    work.publish(
        SESSIONS_TOPIC,
        str(row.session_id),
        events.session_event(
            SESSION_DEBT_SETTLED,
            row.session_id,
            {"lot_id": row.lot_id, "fee": row.fee, "paid_amount": row.paid_amount},
        ),
    )
    return row


async def collect_debt(work: Work, row: SessionState) -> None:
    """One attempt at a debt: the wallet first, else a VietQR the driver pays from the receipt."""
    context = work.context
    owed = amount_owed(row)
    if owed == 0:
        await _settle_debt(work, row, 0)
        return
    retry_in = context.settings.debt_retry_interval
    if row.wallet_account_id is not None:
        try:
            outcome = await take_from_wallet(context, row, owed)
        except PaymentsUnavailable:
            work.update_session(row, debt_next_attempt_at=work.now + retry_in)
            return
        if outcome.posted is not None:
            work.record_payment(row, outcome.posted, outcome.kind, None)
            row = work.update_session(row, hold_status=outcome.hold_status)
            await _settle_debt(work, row, outcome.posted.amount)
            return
        row = work.update_session(row, hold_status=outcome.hold_status)
        retry_in = min(retry_in * 20, DEBT_RETRY_CAP)  # the owner may top up the wallet
    next_attempt = work.now + retry_in if row.wallet_account_id is not None else None
    if row.payment_request_id is None or row.payment_qr is None or row.payment_amount != owed:
        try:
            request = await context.payments.request_payment(
                lot_id=row.lot_id,
                session_id=row.session_id,
                amount=owed,
                key=f"parking-debt-qr:{row.session_id}:{owed}",
            )
        except (PaymentsUnavailable, PaymentsRefused) as error:
            logger.warning("no VietQR for debt %s yet: %s", row.session_id, error)
            next_attempt = work.now + context.settings.debt_retry_interval
        else:
            row = work.update_session(
                row,
                payment_request_id=request.payment_request_id,
                payment_reference=request.reference,
                payment_qr=request.qr,
                payment_amount=request.amount,
                payment_requested_at=work.now,
            )
    work.update_session(row, debt_next_attempt_at=next_attempt)


async def release_pending_hold(work: Work, row: SessionState) -> None:
    status = await release_hold(work, row)
    work.update_session(row, hold_status=status)


# Workers ----------------------------------------------------------------------------------------


def ledger_handler(context: Parking) -> Handler:
    async def handle(event: Event, _record: ConsumerRecord) -> None:
        if event.type == TRANSFER_POSTED:  # transit fares are most of the topic
            await on_transfer_posted(context, event)
            return
        if event.type != PAYMENT_REQUEST_PAID:
            return
        async with transaction(context) as work:
            if await first_delivery(
                work.session, repository.processed_events, events.CONSUMER_GROUP, event.id
            ):
                await on_payment_request_paid(work, event)

    return handle


def debt_collector(context: Parking) -> Worker:
    """Retries debts (wallet first, else a VietQR for the receipt) and pending hold releases."""

    async def run() -> None:
        interval = min(context.settings.debt_retry_interval.total_seconds(), 5.0)
        while True:
            async with transaction(context) as work:
                due = await session_queries.debts_due(work.session, work.now, DEBT_BATCH)
                for row in due:
                    await collect_debt(work, row)
                    await work.flush()  # one unit of work per session
                holds = await session_queries.holds_to_release(work.session, DEBT_BATCH)
                for row in holds:
                    await release_pending_hold(work, row)
                    await work.flush()
            if len(due) < DEBT_BATCH and len(holds) < DEBT_BATCH:
                await asyncio.sleep(interval)

    return run


def reference_refresh(context: Parking) -> Worker:
    """Reloads lots, lanes and tariffs, so that changes made on other replicas arrive."""

    async def run() -> None:
        while True:
            await asyncio.sleep(context.settings.cache_ttl.total_seconds())
            await context.reference.reload()

    return run
