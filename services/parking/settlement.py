"""Settling a session: the price, the wallet, the VietQR or a debt, the close, the exit decision.

Money rules:
- A wallet is touched only for a session whose vehicle was identified with confidence at entry
  (account QR, RFID tag, or a plate read at or above the review threshold).
- Every call that moves money carries an Idempotency-Key derived from the session (and the
  amount), so retries and replicas never move it twice.
- Nobody leaves through cash: the fee comes from the wallet, from a VietQR paid at the
  barrier, or, when the lane was offline or payments/the bank too slow, it becomes a debt on
  the plate, collected later from the wallet or by VietQR.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.parking import events, plates, session_queries, tokens
from services.parking.context import Device, Parking
from services.parking.lots import price_lines
from services.parking.payments import Posted
from services.parking.schemas import (
    DebtStatus,
    ExitDecision,
    ExitOutcome,
    PaymentQR,
    SessionStatus,
    Settlement,
)
from services.parking.session_state import SessionState
from services.parking.tariffs import TariffError, VehicleType, price_session
from services.parking.tokens import ReceiptScope
from services.parking.work import UnitOfWork, Work
from shared.errors import Conflict, Forbidden, NotFound, ServiceUnavailable, Unprocessable
from shared.events import OCCUPANCY_TOPIC, SESSION_CLOSED, SESSION_PAYMENT_REQUIRED, SESSIONS_TOPIC
from shared.ids import utcnow
from shared.payments_client import PaymentsRefused, PaymentsUnavailable

logger = logging.getLogger("citypass.parking")

WALLET_KINDS = ("capture", "charge")
SETTLED_REASONS = {
    Settlement.free: "free",
    Settlement.wallet: "paid_from_wallet",
    Settlement.vietqr: "paid_by_vietqr",
    Settlement.debt: "debt_recorded",
    Settlement.waived: "waived",
}


def masked_plate(row: SessionState) -> str:
    return plates.normalise(row.plate).masked()


async def price_exit(
    work: UnitOfWork, row: SessionState, entry_at: datetime, exit_at: datetime
) -> tuple[int, dict[str, Any]]:
    vehicle_type = VehicleType(row.vehicle_type)
    try:
        priced = price_session(
            entry_at,
            exit_at,
            vehicle_type,
            work.context.reference.tariffs_for(row.lot_id, vehicle_type),
            lot_id=row.lot_id,
        )
    except TariffError as error:
        raise Unprocessable(str(error), code=error.code) from None
    return priced.total, priced.to_dict()


@dataclass(frozen=True, slots=True)
class WalletOutcome:
    posted: Posted | None  # None: the wallet could not pay
    kind: str  # capture or charge
    hold_status: str | None


async def take_from_wallet(context: Parking, row: SessionState, amount: int) -> WalletOutcome:
    """Capture the entry hold for `amount`, or charge the wallet; PaymentsUnavailable escapes."""
    payments = context.payments
    hold_status = row.hold_status
    if row.hold_id is not None and hold_status == "held":
        if row.hold_amount is not None and amount <= row.hold_amount:
            try:
                hold = await payments.capture_hold(
                    row.hold_id, amount, key=f"parking-capture:{row.session_id}:{amount}"
                )
            except PaymentsRefused as refused:  # expired or already settled: charge instead
                logger.info("hold %s not capturable (%s); charging", row.hold_id, refused.code)
                hold_status = "lapsed"
            else:
                assert hold.capture_transfer_id is not None
                posted = Posted(hold.capture_transfer_id, amount, hold.settled_at or utcnow())
                return WalletOutcome(posted, "capture", "captured")
        else:
            try:
                await payments.void_hold(row.hold_id, key=f"parking-void:{row.session_id}")
                hold_status = "voided"
            except PaymentsRefused:
                hold_status = "lapsed"
    try:
        posted = await payments.charge(
            account_id=row.wallet,
            amount=amount,
            lot_id=row.lot_id,
            key=f"parking-charge:{row.session_id}:{amount}",
        )
    except PaymentsRefused as refused:
        if refused.status != 402:
            logger.error("payments refused a parking charge: %s", refused)
        return WalletOutcome(None, "charge", hold_status)
    return WalletOutcome(posted, "charge", hold_status)


async def release_hold(work: UnitOfWork, row: SessionState) -> str | None:
    """Give a hold back (nothing to pay from it); retried later if payments is away."""
    status: str | None = row.hold_status
    if row.hold_id is None or status not in ("held", "release_pending"):
        return status
    try:
        await work.context.payments.void_hold(row.hold_id, key=f"parking-void:{row.session_id}")
    except PaymentsUnavailable:
        return "release_pending"
    except PaymentsRefused:
        return "lapsed"
    return "voided"


async def settle_exit(
    work: UnitOfWork, row: SessionState, fee: int, pending: dict[str, Any], *, offline: bool
) -> SessionState:
    """Collect the fee of a session at its exit. `pending` (the exit's own values) is written
    with the outcome in one update; returns the updated row."""
    if fee == 0:
        hold_status = await release_hold(work, row)
        return await close_session(work, row, Settlement.free, hold_status=hold_status, **pending)
    if row.wallet_account_id is not None:
        try:
            outcome = await take_from_wallet(work.context, row, fee)
        except PaymentsUnavailable as error:
            return await _fallback(work, row, pending, reason=str(error))
        if outcome.posted is not None:
            work.record_payment(row, outcome.posted, outcome.kind, None)
            return await close_session(
                work,
                row,
                Settlement.wallet,
                paid=outcome.posted.amount,
                hold_status=outcome.hold_status,
                **pending,
            )
        pending = {**pending, "hold_status": outcome.hold_status}
    if offline:
        return await close_as_debt(work, row, **pending)
    await work.keep_place()  # at the barrier until the VietQR is paid
    try:
        request = await work.context.payments.request_payment(
            lot_id=row.lot_id,
            session_id=row.session_id,
            amount=fee,
            key=f"parking-qr:{row.session_id}:{fee}",
        )
    except (PaymentsUnavailable, PaymentsRefused) as error:
        return await _fallback(work, row, pending, reason=str(error))
    row = work.update_session(
        row,
        status=SessionStatus.awaiting_payment.value,
        payment_request_id=request.payment_request_id,
        payment_reference=request.reference,
        payment_qr=request.qr,
        payment_amount=request.amount,
        payment_requested_at=work.now,
        **pending,
    )
    work.publish(
        SESSIONS_TOPIC,
        str(row.session_id),
        events.session_event(
            SESSION_PAYMENT_REQUIRED,
            row.session_id,
            {
                "lot_id": row.lot_id,
                "lane_id": row.exit_lane_id,
                "fee": fee,
                "payment_request_id": str(request.payment_request_id),
                "reference": request.reference,
            },
        ),
    )
    return row


async def _fallback(
    work: UnitOfWork, row: SessionState, pending: dict[str, Any], *, reason: str
) -> SessionState:
    """Payments cannot settle now: let the vehicle out and bill the plate, or ask to retry."""
    if not work.context.settings.fallback_enabled:
        raise ServiceUnavailable(
            "Payments did not answer; retry the exit.", code="payments_unavailable"
        )
    logger.warning("session %s leaves on the fallback: %s", row.session_id, reason)
    return await close_as_debt(work, row, **pending)


async def close_as_debt(work: UnitOfWork, row: SessionState, **pending: Any) -> SessionState:
    # Collected by the debt worker: a wallet is retried, otherwise a VietQR is prepared for
    # the receipt unless one exists already (the barrier's).
    needs_work = row.wallet_account_id is not None or row.payment_request_id is None
    return await close_session(
        work,
        row,
        Settlement.debt,
        debt_status=DebtStatus.outstanding,
        debt_next_attempt_at=work.now if needs_work else None,
        **pending,
    )


async def close_session(
    work: UnitOfWork,
    row: SessionState,
    settlement: Settlement,
    *,
    paid: int = 0,
    hold_status: str | None = None,
    debt_status: DebtStatus | None = None,
    debt_next_attempt_at: datetime | None = None,
    **pending: Any,
) -> SessionState:
    vehicle_type = VehicleType(row.vehicle_type)
    count = await work.release_place(row.lot_id, vehicle_type)
    row = work.update_session(
        row,
        status=SessionStatus.closed.value,
        settlement=settlement.value,
        paid_amount=row.paid_amount + paid,
        hold_status=hold_status if hold_status is not None else row.hold_status,
        debt_status=debt_status.value if debt_status else None,
        debt_next_attempt_at=debt_next_attempt_at,
        closed_at=work.now,
        **pending,
    )
    work.publish(
        SESSIONS_TOPIC,
        str(row.session_id),
        events.session_event(SESSION_CLOSED, row.session_id, _closed_data(row)),
    )
    work.publish(
        OCCUPANCY_TOPIC,
        row.lot_id,
        events.occupancy_changed(
            row.lot_id,
            vehicle_type,
            count,
            change=-1,
            session_id=row.session_id,
            at=row.left_at,
        ),
    )
    return row


def _closed_data(row: SessionState) -> dict[str, Any]:
    priced = row.priced or {}
    return {
        "lot_id": row.lot_id,
        "lane_id": row.exit_lane_id,
        "vehicle_type": row.vehicle_type,
        "plate": masked_plate(row),
        "entry_at": row.entry_at.isoformat(),
        "exit_at": row.left_at.isoformat(),
        "offline": row.exit_offline,
        "fee": row.fee,
        "currency": "VND",
        "settlement": row.settlement,
        "paid_amount": row.paid_amount,
        "debt_amount": amount_owed(row),
        "payment_request_id": str(row.payment_request_id) if row.payment_request_id else None,
        "lines": [
            {"kind": line["kind"], "tariff_id": line["tariff_id"], "amount": line["amount"]}
            for line in priced.get("lines", [])
        ],
    }


def amount_owed(row: SessionState) -> int:
    if row.debt_status != DebtStatus.outstanding.value or row.fee is None:
        return 0
    return max(int(row.fee) - int(row.paid_amount), 0)


def receipt_token(context: Parking, session_id: uuid.UUID, scope: ReceiptScope) -> str:
    secret = context.settings.token_secret.get_secret_value()
    return tokens.receipt_token(secret, session_id, scope)


def receipt_code(context: Parking, session_id: uuid.UUID) -> str:
    return tokens.receipt_code(context.settings.token_secret.get_secret_value(), session_id)


def payment_qr(row: SessionState) -> PaymentQR | None:
    if row.payment_request_id is None or row.payment_qr is None:
        return None
    return PaymentQR(
        payment_request_id=row.payment_request_id,
        reference=row.payment_reference,
        amount=row.payment_amount,
        qr=row.payment_qr,
    )


def exit_decision(context: Parking, row: SessionState) -> ExitDecision:
    status = SessionStatus(row.status)
    if status is SessionStatus.open:
        raise Conflict(
            f"Session {row.session_id} has no exit yet: the vehicle is inside.", code="not_at_exit"
        )
    settlement = Settlement(row.settlement) if row.settlement else None
    waiting = status is SessionStatus.awaiting_payment
    fallback_after = (
        row.qr_shown_at + context.settings.payment_wait
        if waiting and context.settings.fallback_enabled
        else None
    )
    # Only here, to the lane the driver stands at: the proof that opens disputes.
    exit_token = None if waiting else receipt_token(context, row.session_id, ReceiptScope.exit)
    return ExitDecision(
        decision=ExitOutcome.pay if waiting else ExitOutcome.open,
        reason="payment_required" if waiting else SETTLED_REASONS[settlement or Settlement.free],
        session_id=row.session_id,
        status=status,
        lot_id=row.lot_id,
        lane_id=row.exit_lane_id,
        plate=row.plate,
        vehicle_type=VehicleType(row.vehicle_type),
        entry_at=row.entry_at,
        exit_at=row.exit_at,
        fee=row.fee,
        lines=price_lines((row.priced or {}).get("lines", [])),
        settlement=settlement,
        payment=payment_qr(row) if waiting else None,
        fallback_after=fallback_after,
        debt_amount=amount_owed(row),
        receipt_token=exit_token,
        receipt_code=None if waiting else receipt_code(context, row.session_id),
    )


async def session_row(work: Work, session_id: uuid.UUID, *, lock: bool = False) -> SessionState:
    row = await session_queries.get_session(work.session, session_id, lock=lock)
    if row is None:
        raise NotFound(f"No session {session_id}.", code="session_not_found")
    return row


async def exit_status(work: Work, device: Device | None, session_id: uuid.UUID) -> ExitDecision:
    row = await session_row(work, session_id)
    if device is not None and device.lot_id != row.lot_id:
        raise Forbidden(f"Session {session_id} is at another lot.", code="device_not_in_lot")
    return exit_decision(work.context, row)


async def fallback_exit(work: Work, device: Device, session_id: uuid.UUID) -> ExitDecision:
    """The bank is slow: after `payment_wait` the lane lets the vehicle out as a debt."""
    context = work.context
    row = await session_row(work, session_id, lock=True)
    if device.lot_id != row.lot_id:
        raise Forbidden(f"Session {session_id} is at another lot.", code="device_not_in_lot")
    if row.status == SessionStatus.closed.value:
        return exit_decision(context, row)
    if row.status != SessionStatus.awaiting_payment.value:
        raise Conflict("The vehicle has no exit decision to fall back from.", code="not_at_exit")
    if not context.settings.fallback_enabled:
        raise Conflict("The fallback is disabled for this service.", code="fallback_disabled")
    allowed_at = row.qr_shown_at + context.settings.payment_wait
    if work.now < allowed_at:
        raise Conflict(
            f"Keep showing the VietQR until {allowed_at.isoformat()}.",
            code="payment_wait_not_over",
            fallback_after=allowed_at.isoformat(),
        )
    return exit_decision(context, await close_as_debt(work, row))
