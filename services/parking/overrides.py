"""Operators' overrides of a session (plate, times, waived fee, forced close) and their refunds."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from services.parking import events, session_queries
from services.parking.schemas import (
    DebtStatus,
    OverrideAction,
    OverrideCreate,
    OverrideRead,
    SessionStatus,
    Settlement,
)
from services.parking.session_state import Override, SessionState
from services.parking.settlement import (
    WALLET_KINDS,
    close_as_debt,
    close_session,
    price_exit,
    session_row,
)
from services.parking.vehicles import parse_plate
from services.parking.work import Work
from shared.errors import Conflict, ServiceUnavailable, Unprocessable
from shared.events import SESSION_OVERRIDDEN, SESSIONS_TOPIC
from shared.ids import new_id
from shared.payments_client import PaymentsRefused, PaymentsUnavailable

logger = logging.getLogger("citypass.parking")


def override_read(row: Override) -> OverrideRead:
    return OverrideRead(
        override_id=row.override_id,
        session_id=row.session_id,
        action=OverrideAction(row.action),
        operator=row.operator,
        reason=row.reason,
        fee_before=row.fee_before,
        fee_after=row.fee_after,
        refund_amount=row.refund_amount,
        refund_status=row.refund_status,
        created_at=row.created_at,
    )


def _require_closed(row: SessionState) -> None:
    if row.status != SessionStatus.closed.value:
        raise Conflict(
            f"Session {row.session_id} is still {row.status}.", code="session_not_closed"
        )


async def _refund(work: Work, row: SessionState, amount: int) -> tuple[int, str]:
    """Give `amount` back through payments, from the session's wallet payments.

    What was paid by bank transfer cannot be refunded by payments (it has no payout), so
    the rest is reported as `payout_required`.
    """
    moved = await session_queries.payments_of_sessions(work.session, [row.session_id])
    refunded_of: dict[str, int] = {}
    for payment in moved:
        if payment.kind == "refund" and payment.reference:
            refunded_of[payment.reference] = refunded_of.get(payment.reference, 0) - payment.amount
    remaining, refunded, failed = amount, 0, False
    wallet = sorted(
        (payment for payment in moved if payment.kind in WALLET_KINDS),
        key=lambda payment: payment.posted_at,
        reverse=True,
    )
    for payment in wallet:
        already = refunded_of.get(str(payment.transfer_id), 0)
        take = min(int(payment.amount) - already, remaining)
        if take <= 0:
            continue
        try:
            posted = await work.context.payments.refund(
                payment.transfer_id,
                take,
                key=f"parking-refund:{row.session_id}:{payment.transfer_id}:{already}:{take}",
            )
        except PaymentsUnavailable:
            raise ServiceUnavailable(
                "Payments cannot refund now; nothing was changed, retry.",
                code="payments_unavailable",
            ) from None
        except PaymentsRefused as refused:
            logger.error("refund of %s refused: %s", payment.transfer_id, refused)
            failed = True
            continue
        work.record_payment(row, posted, "refund", str(payment.transfer_id))
        remaining -= take
        refunded += take
        if remaining == 0:
            break
    if remaining == 0:
        return refunded, "refunded"
    return refunded, "refund_failed" if failed else "payout_required"


async def _rebalance(work: Work, row: SessionState) -> tuple[SessionState, int, str | None]:
    """After a fee change: refund what was paid beyond it, or bill what is now missing."""
    fee, paid = row.priced_fee, row.paid_amount
    refund_amount, refund_status = 0, None
    if paid > fee:
        refund_amount, refund_status = await _refund(work, row, paid - fee)
        paid -= refund_amount
    owed = fee - paid
    if owed > 0:
        debt_status: str | None = DebtStatus.outstanding.value
    elif row.debt_status == DebtStatus.outstanding.value:
        debt_status = DebtStatus.paid.value if fee else None
    else:
        debt_status = row.debt_status
    row = work.update_session(
        row,
        paid_amount=paid,
        debt_status=debt_status,
        debt_next_attempt_at=work.now if owed > 0 else None,
    )
    return row, refund_amount, refund_status


def _corrected_times(
    work: Work, row: SessionState, entry_at: datetime | None, exit_at: datetime | None
) -> tuple[datetime, datetime]:
    entry = entry_at or row.entry_at
    exit_ = exit_at or row.exit_at or work.now
    for moment in (entry, exit_):
        if moment > work.now + work.context.settings.max_clock_skew:
            raise Unprocessable("A corrected time lies in the future.", code="timestamp_in_future")
    if exit_ < entry:
        raise Unprocessable("The exit is before the entry.", code="exit_before_entry")
    return entry, exit_


async def apply_override(work: Work, session_id: uuid.UUID, body: OverrideCreate) -> OverrideRead:
    """An operator's manual change to a session; every one is kept and shown in the audit."""
    row = await session_row(work, session_id, lock=True)
    fee_before = row.fee
    refund_amount, refund_status = 0, None
    details: dict[str, Any] = {}
    if body.action is OverrideAction.correct_plate:
        if body.plate is None:
            raise Unprocessable("Give the corrected plate.", code="plate_required")
        plate = parse_plate(body.plate)
        if row.status != SessionStatus.closed.value:
            other = await session_queries.open_session_for_plate(
                work.session, row.lot_id, plate.key
            )
            if other is not None and other.session_id != row.session_id:
                raise Conflict(
                    f"{plate.display} is inside already ({other.session_id}).",
                    code="plate_already_inside",
                )
        details = {"plate_before": row.plate, "plate_after": plate.display}
        reasons = [r for r in row.review_reasons if r not in ("low_confidence", "plate_mismatch")]
        row = work.update_session(
            row,
            plate=plate.display,
            plate_key=plate.key,
            review_reasons=reasons,
        )
    elif body.action is OverrideAction.correct_times:
        _require_closed(row)
        entry_at, exit_at = _corrected_times(work, row, body.entry_at, body.exit_at)
        fee, priced = await price_exit(work, row, entry_at, exit_at)
        details = {
            "entry_at_before": row.entry_at.isoformat(),
            "exit_at_before": row.left_at.isoformat(),
            "entry_at_after": entry_at.isoformat(),
            "exit_at_after": exit_at.isoformat(),
        }
        row = work.update_session(row, entry_at=entry_at, exit_at=exit_at, fee=fee, priced=priced)
        row, refund_amount, refund_status = await _rebalance(work, row)
    elif body.action is OverrideAction.waive_fee:
        _require_closed(row)
        row = work.update_session(row, fee=0, settlement=Settlement.waived.value)
        row, refund_amount, refund_status = await _rebalance(work, row)
    else:
        if row.status == SessionStatus.closed.value:
            raise Conflict(f"Session {row.session_id} is closed already.", code="session_closed")
        entry_at, exit_at = _corrected_times(work, row, None, body.exit_at or work.now)
        fee, priced = await price_exit(work, row, entry_at, exit_at)
        row = work.update_session(
            row,
            exit_at=exit_at,
            exit_recorded_at=work.now,
            fee=fee,
            priced=priced,
        )
        row = (
            await close_as_debt(work, row)
            if fee
            else await close_session(work, row, Settlement.free)
        )
    override = await session_queries.insert_override(
        work.session,
        override_id=new_id(),
        session_id=row.session_id,
        lot_id=row.lot_id,
        action=body.action.value,
        operator=body.operator,
        reason=body.reason,
        fee_before=fee_before,
        fee_after=row.fee,
        refund_amount=refund_amount,
        refund_status=refund_status,
        details=details,
    )
    work.publish(
        SESSIONS_TOPIC,
        str(row.session_id),
        events.session_event(
            SESSION_OVERRIDDEN,
            row.session_id,
            {
                "lot_id": row.lot_id,
                "override_id": str(override.override_id),
                "action": body.action.value,
                "operator": body.operator,
                "fee_before": fee_before,
                "fee_after": row.fee,
                "refund_amount": refund_amount,
                "refund_status": refund_status,
            },
        ),
    )
    return override_read(override)
