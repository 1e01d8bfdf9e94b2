"""Tickets: what a rider holds, and operators' revocations."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.ticketing import events, repository, tables
from services.ticketing.repository import Record
from services.ticketing.schemas import Mode, ProductKind, RiderCategory, TicketRead, TicketStatus
from services.ticketing.service import LIST_LIMIT
from shared.errors import NotFound
from shared.events import TICKETS_TOPIC
from shared.ids import utcnow
from shared.outbox import add_event


def ticket_read(row: Record, now: datetime | None = None) -> TicketRead:
    status = TicketStatus(row.status)
    if status is TicketStatus.active and row.valid_until <= (now or utcnow()):
        status = TicketStatus.expired
    return TicketRead(
        id=row.id,
        purchase_id=row.purchase_id,
        product_code=row.product_code,
        kind=ProductKind(row.kind),
        mode=Mode(row.mode),
        rider_category=RiderCategory(row.rider_category),
        rides=row.rides,
        lines=list(row.lines),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        status=status,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
    )


async def list_tickets(session: AsyncSession, rider_id: uuid.UUID) -> list[TicketRead]:
    now = utcnow()
    return [
        ticket_read(t, now) for t in await repository.list_tickets(session, rider_id, LIST_LIMIT)
    ]


async def own_ticket(session: AsyncSession, rider_id: uuid.UUID, ticket_id: uuid.UUID) -> Record:
    ticket = await repository.get_ticket(session, ticket_id, rider_id=rider_id)
    if ticket is None:
        raise NotFound(f"You have no ticket {ticket_id}.", code="ticket_not_found")
    return ticket


async def get_ticket(
    session: AsyncSession, rider_id: uuid.UUID, ticket_id: uuid.UUID
) -> TicketRead:
    return ticket_read(await own_ticket(session, rider_id, ticket_id))


async def revoke_ticket(session: AsyncSession, ticket_id: uuid.UUID, reason: str) -> TicketRead:
    """Operators: fraud, a refund outside the app… Gates deny it once the event arrives."""
    ticket = await repository.get_ticket(session, ticket_id, lock=True)
    if ticket is None:
        raise NotFound(f"No ticket {ticket_id}.", code="ticket_not_found")
    if ticket.status == TicketStatus.revoked.value:
        return ticket_read(ticket)
    revoked = await repository.revoke_ticket(session, ticket_id, utcnow(), reason)
    device = await repository.active_device(session, ticket.rider_id)
    await add_event(
        session,
        tables.outbox,
        TICKETS_TOPIC,
        str(ticket_id),
        events.ticket_revoked(
            revoked, device_key_fingerprint=None if device is None else device.fingerprint
        ),
    )
    return ticket_read(revoked)
