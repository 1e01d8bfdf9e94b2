"""Drivers' disputes of closed sessions: opened with the exit receipt token, resolved by operators.

An accepted dispute becomes an override.
"""

from __future__ import annotations

import uuid

from services.parking import events, session_queries
from services.parking.overrides import apply_override, override_read
from services.parking.receipts import closed_session_with_token
from services.parking.schemas import (
    DisputeCreate,
    DisputeRead,
    DisputeReason,
    DisputeResolve,
    DisputeStatus,
    OverrideAction,
    OverrideCreate,
)
from services.parking.session_state import Dispute
from services.parking.tokens import ReceiptScope
from services.parking.work import Work
from shared.errors import Conflict, NotFound, Unprocessable
from shared.events import SESSION_DISPUTE_RESOLVED, SESSION_DISPUTED, SESSIONS_TOPIC
from shared.ids import new_id


async def _dispute_read(work: Work, row: Dispute) -> DisputeRead:
    override = (
        await session_queries.get_override(work.session, row.override_id)
        if row.override_id
        else None
    )
    return DisputeRead(
        dispute_id=row.dispute_id,
        session_id=row.session_id,
        status=DisputeStatus(row.status),
        reason=DisputeReason(row.reason),
        detail=row.detail,
        claimed_entry_at=row.claimed_entry_at,
        claimed_exit_at=row.claimed_exit_at,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
        resolution_note=row.resolution_note,
        override=override_read(override) if override is not None else None,
    )


async def open_dispute(
    work: Work, session_id: uuid.UUID, token: str, body: DisputeCreate
) -> DisputeRead:
    """A driver contests a closed session (wrong plate, wrong times…) with the receipt token
    shown at the exit: the proof of having been there, which no lookup hands out."""
    row = await closed_session_with_token(work, session_id, token, ReceiptScope.exit)
    if body.reason is DisputeReason.wrong_times and not (
        body.claimed_entry_at or body.claimed_exit_at
    ):
        raise Unprocessable(
            "Say which times are right: claimed_entry_at and/or claimed_exit_at.",
            code="claim_required",
        )
    dispute = await session_queries.insert_dispute(
        work.session,
        dispute_id=new_id(),
        session_id=row.session_id,
        status=DisputeStatus.open.value,
        reason=body.reason.value,
        detail=body.detail,
        claimed_entry_at=body.claimed_entry_at,
        claimed_exit_at=body.claimed_exit_at,
    )
    if dispute is None:
        raise Conflict("This session already has an open dispute.", code="dispute_open")
    work.publish(
        SESSIONS_TOPIC,
        str(row.session_id),
        events.session_event(
            SESSION_DISPUTED,
            row.session_id,
            {
                "lot_id": row.lot_id,
                "dispute_id": str(dispute.dispute_id),
                "reason": body.reason.value,
            },
        ),
    )
    return await _dispute_read(work, dispute)


async def disputes_of_receipt(work: Work, session_id: uuid.UUID, token: str) -> list[DisputeRead]:
    row = await closed_session_with_token(work, session_id, token, ReceiptScope.exit)
    return [
        await _dispute_read(work, dispute)
        for dispute in await session_queries.disputes_of_session(work.session, row.session_id)
    ]


async def list_disputes(work: Work, status: DisputeStatus | None, limit: int) -> list[DisputeRead]:
    rows = await session_queries.list_disputes(
        work.session, status.value if status else None, limit
    )
    return [await _dispute_read(work, row) for row in rows]


async def resolve_dispute(work: Work, dispute_id: uuid.UUID, body: DisputeResolve) -> DisputeRead:
    """Accept (the session is corrected and the difference refunded) or reject a dispute."""
    dispute = await session_queries.get_dispute(work.session, dispute_id, lock=True)
    if dispute is None:
        raise NotFound(f"No dispute {dispute_id}.", code="dispute_not_found")
    if dispute.status != DisputeStatus.open.value:
        raise Conflict(f"Dispute {dispute_id} is {dispute.status} already.", code="dispute_closed")
    override_id = None
    if body.outcome == "accepted":
        entry_at = body.entry_at or dispute.claimed_entry_at
        exit_at = body.exit_at or dispute.claimed_exit_at
        times = dispute.reason != DisputeReason.wrong_plate.value and (entry_at or exit_at)
        override = await apply_override(
            work,
            dispute.session_id,
            OverrideCreate(
                action=OverrideAction.correct_times if times else OverrideAction.waive_fee,
                operator=body.operator,
                reason=f"dispute {dispute_id}: {body.note}"[:500],
                entry_at=entry_at if times else None,
                exit_at=exit_at if times else None,
            ),
        )
        override_id = override.override_id
    dispute = await session_queries.update_dispute(
        work.session,
        dispute_id,
        status=body.outcome,
        resolved_at=work.now,
        resolution_note=body.note,
        override_id=override_id,
    )
    work.publish(
        SESSIONS_TOPIC,
        str(dispute.session_id),
        events.session_event(
            SESSION_DISPUTE_RESOLVED,
            dispute.session_id,
            {"dispute_id": str(dispute_id), "outcome": body.outcome},
        ),
    )
    return await _dispute_read(work, dispute)
