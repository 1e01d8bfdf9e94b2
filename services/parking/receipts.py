"""Receipts of closed sessions: read with a receipt token, or found by plate and receipt code."""

from __future__ import annotations

import hmac
import uuid

from services.parking import repository, session_queries, tokens
from services.parking.context import Parking
from services.parking.lots import price_lines
from services.parking.schemas import (
    DebtStatus,
    ReceiptFound,
    ReceiptRead,
    SessionStatus,
    Settlement,
)
from services.parking.session_state import SessionState
from services.parking.settlement import (
    WALLET_KINDS,
    amount_owed,
    masked_plate,
    payment_qr,
    receipt_code,
    receipt_token,
)
from services.parking.tariffs import HANOI_TZ, VehicleType
from services.parking.tokens import ReceiptScope
from services.parking.vehicles import parse_plate
from services.parking.work import Work
from shared.errors import Conflict, Forbidden, NotFound, Unprocessable


def _check_token(context: Parking, session_id: uuid.UUID, token: str, need: ReceiptScope) -> None:
    secret = context.settings.token_secret.get_secret_value()
    scope = tokens.receipt_token_scope(secret, session_id, token)
    if scope is None:
        raise NotFound("No receipt for this session id and token.", code="receipt_not_found")
    if need is ReceiptScope.exit and scope is not ReceiptScope.exit:
        raise Forbidden(
            "This token only reads the receipt: disputes need the receipt token shown at the"
            " exit lane.",
            code="exit_token_required",
        )


async def _receipt(work: Work, row: SessionState) -> ReceiptRead:
    lot = await repository.get_lot(work.session, row.lot_id)
    assert lot is not None
    moved = await session_queries.payments_of_sessions(work.session, [row.session_id])
    refunded = -sum(payment.amount for payment in moved if payment.kind == "refund")
    wallet = [payment for payment in moved if payment.kind in WALLET_KINDS]
    by_qr = any(payment.kind == "vietqr" for payment in moved)
    reference = (
        row.payment_reference
        if by_qr or not wallet
        else str(sorted(wallet, key=lambda payment: payment.posted_at)[0].transfer_id)
    )
    owed = amount_owed(row)
    assert row.settlement is not None, "a closed session is settled"
    return ReceiptRead(
        session_id=row.session_id,
        lot_id=row.lot_id,
        lot_name=lot.name,
        lot_address=lot.address,
        plate=masked_plate(row),
        vehicle_type=VehicleType(row.vehicle_type),
        entry_at=row.entry_at.astimezone(HANOI_TZ),
        exit_at=row.left_at.astimezone(HANOI_TZ),
        duration_minutes=int((row.left_at - row.entry_at).total_seconds() // 60),
        lines=price_lines((row.priced or {}).get("lines", [])),
        fee=row.fee,
        paid_amount=row.paid_amount,
        refunded_amount=refunded,
        settlement=Settlement(row.settlement),
        payment_reference=reference,
        debt_status=DebtStatus(row.debt_status) if row.debt_status else None,
        amount_due=owed,
        payment=payment_qr(row) if owed and row.payment_amount == owed else None,
        receipt_code=receipt_code(work.context, row.session_id),
    )


async def closed_session_with_token(
    work: Work, session_id: uuid.UUID, token: str, need: ReceiptScope
) -> SessionState:
    _check_token(work.context, session_id, token, need)
    row = await session_queries.get_session(work.session, session_id)
    if row is None:
        raise NotFound("No receipt for this session id and token.", code="receipt_not_found")
    if row.status != SessionStatus.closed.value:
        raise Conflict("The vehicle has not left yet: no receipt.", code="session_not_closed")
    return row


async def receipt(work: Work, session_id: uuid.UUID, token: str) -> ReceiptRead:
    row = await closed_session_with_token(work, session_id, token, ReceiptScope.read)
    return await _receipt(work, row)


async def find_receipt(work: Work, plate: str, code: str) -> ReceiptFound:
    """The receipt of `plate` whose code is `code`, among those of the lookup horizon, with a
    token that reads it and does nothing else. The code is checked against each of the plate's
    sessions (an HMAC each, ~4 µs): nothing about codes is stored."""
    printed = tokens.typed_receipt_code(code)
    if printed is None:
        raise Unprocessable(
            f"A receipt code is {tokens.RECEIPT_CODE_LENGTH} letters and digits, as printed.",
            code="invalid_receipt_code",
        )
    found = parse_plate(plate)
    secret = work.context.settings.token_secret.get_secret_value()
    candidates = await session_queries.closed_session_ids_of_plate(
        work.session, found.key, work.now - work.context.settings.receipt_lookup_horizon
    )
    for session_id in candidates:
        if hmac.compare_digest(tokens.receipt_code(secret, session_id), printed):
            row = await session_queries.get_session(work.session, session_id)
            assert row is not None
            receipt = await _receipt(work, row)
            return ReceiptFound(
                **receipt.model_dump(),
                read_token=receipt_token(work.context, session_id, ReceiptScope.read),
            )
    raise NotFound("No receipt for this plate and code.", code="receipt_not_found")
