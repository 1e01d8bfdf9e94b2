"""The issuer: its signing keys (creation, rotation, retirement) and the credentials it signs."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.ticketing import credentials, events, repository, tables
from services.ticketing.credentials import KeyWrap
from services.ticketing.repository import Record
from services.ticketing.schemas import (
    CredentialRead,
    IssuerKeyRead,
    KeySet,
    KeyStatus,
    Mode,
    RiderCategory,
    TicketStatus,
)
from services.ticketing.service import tickets
from services.ticketing.settings import TicketingSettings
from shared import ticketcodec
from shared.errors import Conflict
from shared.events import TICKETS_TOPIC
from shared.ids import new_id, utcnow
from shared.outbox import add_event


def key_read(row: Record) -> IssuerKeyRead:
    return IssuerKeyRead(
        kid=row.kid,
        public_key=credentials.b64url(row.public_key),
        status=KeyStatus(row.status),
        created_at=row.created_at,
        not_after=row.not_after,
        retired_at=row.retired_at,
    )


async def key_set(session: AsyncSession) -> KeySet:
    return KeySet(keys=[key_read(k) for k in await repository.list_issuer_keys(session)])


async def _create_issuer_key(session: AsyncSession, keywrap: KeyWrap, now: datetime) -> Record:
    sequence = await repository.next_issuer_key_sequence(session)
    kid = credentials.kid_for(sequence)
    private_key = ticketcodec.generate_device_key()  # an Ed25519 key pair like any other
    return await repository.insert_issuer_key(
        session,
        kid=kid,
        sequence=sequence,
        public_key=ticketcodec.public_key_bytes(private_key),
        private_key_wrapped=keywrap.wrap(kid, private_key),
        status=KeyStatus.active.value,
        created_at=now,
    )


async def ensure_issuer_key(session: AsyncSession, keywrap: KeyWrap) -> Record:
    """The active issuer key, created the first time (replicas agree through a lock)."""
    active = await repository.active_issuer_key(session)
    if active is not None:
        return active
    await repository.lock_issuer_keys(session)
    active = await repository.active_issuer_key(session)
    if active is not None:
        return active
    created = await _create_issuer_key(session, keywrap, utcnow())
    # Gates learn the first key as they learn rotations, without waiting for their next poll.
    await add_event(
        session,
        tables.outbox,
        TICKETS_TOPIC,
        events.ISSUER_KEYS_SUBJECT,
        events.issuer_keys_changed((await key_set(session)).keys),
    )
    return created


async def rotate_issuer_key(session: AsyncSession, keywrap: KeyWrap) -> KeySet:
    """A new key signs from now on; the old one retires once its last credential expires."""
    now = utcnow()
    await repository.lock_issuer_keys(session)
    current = await repository.active_issuer_key(session, for_update=True)
    if current is not None:
        last = await repository.last_expiry_signed_by(session, current.kid)
        await repository.update_issuer_key(
            session,
            current.kid,
            status=KeyStatus.retiring.value,
            retiring_at=now,
            not_after=max(last or now, now),
        )
    await _create_issuer_key(session, keywrap, now)
    keys = await key_set(session)
    await add_event(
        session,
        tables.outbox,
        TICKETS_TOPIC,
        events.ISSUER_KEYS_SUBJECT,
        events.issuer_keys_changed(keys.keys),
    )
    return keys


async def retire_issuer_keys(session: AsyncSession) -> list[str]:
    """Retire the retiring keys whose credentials have all expired; their kids."""
    retired = await repository.retire_issuer_keys(session, utcnow())
    if retired:
        keys = await key_set(session)
        await add_event(
            session,
            tables.outbox,
            TICKETS_TOPIC,
            events.ISSUER_KEYS_SUBJECT,
            events.issuer_keys_changed(keys.keys),
        )
    return [key.kid for key in retired]


def credential_read(
    row: Record, ticket: Record, device: Record, margin: timedelta
) -> CredentialRead:
    refresh_at = (
        row.valid_until if row.valid_until >= ticket.valid_until else row.valid_until - margin
    )
    return CredentialRead(
        ticket_id=row.ticket_id,
        kid=row.kid,
        credential=credentials.b64url(row.credential),
        issuer_signature=credentials.b64url(row.issuer_signature),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        refresh_at=refresh_at,
        device_id=device.id,
        device_fingerprint=device.fingerprint,
    )


async def credential_for(
    session: AsyncSession,
    keywrap: KeyWrap,
    settings: TicketingSettings,
    rider_id: uuid.UUID,
    ticket_id: uuid.UUID,
) -> CredentialRead:
    """The ticket's credential for the rider's active device, signed by the active key.

    The same credential is returned until less than `credential_refresh_margin` of it is left
    (or the signing key changed); then a fresh one is signed.
    """
    now = utcnow()
    ticket = await tickets.own_ticket(session, rider_id, ticket_id)
    if ticket.status == TicketStatus.revoked.value:
        raise Conflict("This ticket was revoked.", code="ticket_revoked")
    if ticket.valid_until <= now:
        raise Conflict("This ticket has expired.", code="ticket_expired")
    device = await repository.active_device(session, rider_id)
    if device is None:
        raise Conflict(
            "Register this phone's public key at POST /v1/devices first.", code="no_active_device"
        )
    key = await ensure_issuer_key(session, keywrap)
    margin = settings.credential_refresh_margin
    latest = await repository.latest_credential(session, ticket.id, device.id, key.kid)
    if latest is not None and (
        latest.valid_until >= ticket.valid_until or latest.valid_until - now > margin
    ):
        return credential_read(latest, ticket, device, margin)
    valid_from, valid_until = credentials.window(
        ticket.valid_from, ticket.valid_until, now, settings.credential_ttl
    )
    signed = ticketcodec.sign_credential(
        credentials.build(
            kid=key.kid,
            ticket_id=ticket.id,
            credential_code=ticket.credential_code,
            category=RiderCategory(ticket.rider_category),
            valid_from=valid_from,
            valid_until=valid_until,
            lines=credentials.scope(Mode(ticket.mode), list(ticket.lines)),
            device_key=device.public_key,
        ),
        keywrap.unwrap(key.kid, key.private_key_wrapped),
    )
    row = await repository.insert_credential(
        session,
        id=new_id(),
        ticket_id=ticket.id,
        device_id=device.id,
        kid=key.kid,
        credential=signed.credential_bytes,
        issuer_signature=signed.issuer_signature,
        valid_from=credentials.from_unix(valid_from),
        valid_until=credentials.from_unix(valid_until),
        issued_at=now,
    )
    return credential_read(row, ticket, device, margin)
