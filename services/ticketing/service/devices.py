"""Devices: the rider's one active phone key, switches between phones, revocations."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.ticketing import credentials, events, repository, tables
from services.ticketing.errors import DeviceSwitchLimit
from services.ticketing.repository import Record
from services.ticketing.schemas import DeviceCreate, DeviceRead, DeviceStatus
from services.ticketing.service import riders
from services.ticketing.settings import TicketingSettings
from shared.errors import Conflict, NotFound, Unprocessable
from shared.events import TICKETS_TOPIC
from shared.ids import new_id, utcnow
from shared.outbox import add_event


def device_read(row: Record) -> DeviceRead:
    return DeviceRead(
        id=row.id,
        public_key=credentials.b64url(row.public_key),
        fingerprint=row.fingerprint,
        label=row.label,
        status=DeviceStatus(row.status),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
    )


async def _revoke_device(
    session: AsyncSession,
    device: Record,
    now: datetime,
    reason: str,
    replaced_by: str | None = None,
) -> Record:
    revoked = await repository.revoke_device(session, device.id, now, reason)
    await add_event(
        session,
        tables.outbox,
        TICKETS_TOPIC,
        str(device.rider_id),
        events.device_revoked(
            revoked,
            ticket_ids=await repository.live_ticket_ids(session, device.rider_id, now),
            replaced_by=replaced_by,
            deny_until=await repository.last_credential_expiry(session, device.id),
        ),
    )
    return revoked


async def register_device(
    session: AsyncSession, rider_id: uuid.UUID, body: DeviceCreate, settings: TicketingSettings
) -> tuple[DeviceRead, bool]:
    """The rider's one active device; True when it is new (the previous one is revoked)."""
    try:
        public_key = credentials.device_public_key(body.public_key)
    except ValueError as error:
        raise Unprocessable(str(error), code="invalid_public_key") from None
    now = utcnow()
    await riders.rider_row(session, rider_id, lock=True)  # one registration per rider at a time
    current = await repository.active_device(session, rider_id)
    if current is not None and current.public_key == public_key:
        return device_read(current), False
    fingerprint = credentials.fingerprint(public_key)
    if await repository.device_key_known(session, fingerprint):
        raise Conflict(
            "This key was registered before; a new device needs a newly generated key.",
            code="device_key_reused",
        )
    is_switch = await repository.has_devices(session, rider_id)
    if is_switch:
        since = now - settings.device_switch_window
        if (
            await repository.switches_since(session, rider_id, since)
            >= settings.device_switch_limit
        ):
            oldest = await repository.oldest_switch_since(session, rider_id, since)
            retry_at = (oldest or now) + settings.device_switch_window
            raise DeviceSwitchLimit(
                f"At most {settings.device_switch_limit} device switches per "
                f"{settings.device_switch_window.days} days; the next is possible at "
                f"{retry_at.isoformat()}.",
                retry_at=retry_at.isoformat(),
            )
    if current is not None:
        await _revoke_device(session, current, now, "replaced by a new device", fingerprint)
    device = await repository.insert_device(
        session,
        id=new_id(),
        rider_id=rider_id,
        public_key=public_key,
        fingerprint=fingerprint,
        label=body.label,
        status=DeviceStatus.active.value,
        is_switch=is_switch,
        created_at=now,
    )
    await add_event(
        session,
        tables.outbox,
        TICKETS_TOPIC,
        str(rider_id),
        events.device_registered(
            device, ticket_ids=await repository.live_ticket_ids(session, rider_id, now)
        ),
    )
    return device_read(device), True


async def list_devices(session: AsyncSession, rider_id: uuid.UUID) -> list[DeviceRead]:
    return [device_read(d) for d in await repository.list_devices(session, rider_id)]


async def _own_device(
    session: AsyncSession, rider_id: uuid.UUID, device_id: uuid.UUID, *, lock: bool = False
) -> Record:
    device = await repository.get_device(session, rider_id, device_id, lock=lock)
    if device is None:
        raise NotFound(f"You have no device {device_id}.", code="device_not_found")
    return device


async def get_device(
    session: AsyncSession, rider_id: uuid.UUID, device_id: uuid.UUID
) -> DeviceRead:
    return device_read(await _own_device(session, rider_id, device_id))


async def revoke_device(
    session: AsyncSession, rider_id: uuid.UUID, device_id: uuid.UUID
) -> DeviceRead:
    """A lost or sold phone: its credentials are denied from now on."""
    await riders.rider_row(session, rider_id, lock=True)
    device = await _own_device(session, rider_id, device_id, lock=True)
    if device.status == DeviceStatus.revoked.value:
        return device_read(device)
    return device_read(await _revoke_device(session, device, utcnow(), "revoked by the rider"))
