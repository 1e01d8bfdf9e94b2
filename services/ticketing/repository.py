"""Every SQL statement of the ticketing service.

Lock order, so that concurrent requests never wait for each other in a cycle: the rider row,
then the purchase, then issuer keys (the signing key is read FOR SHARE, rotation takes it
FOR UPDATE under an advisory lock).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from sqlalchemy import DateTime, Table, case, delete, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.ticketing.tables import (
    credentials,
    devices,
    issuer_keys,
    login_failures,
    network_versions,
    purchases,
    refresh_tokens,
    riders,
    tickets,
)
from services.ticketing.tables import metadata as metadata  # read by the kit's Alembic env

Record: TypeAlias = Row[Any]

ISSUER_KEYS_LOCK = 0x7469636B6574  # advisory lock id: key creation and rotation, one at a time


# Network versions -------------------------------------------------------------------------------


_VERSION_COLUMNS = [c for c in network_versions.c if c.name != "feed"]


async def insert_network_version(session: AsyncSession, **values: Any) -> None:
    await session.execute(network_versions.insert().values(**values))


async def list_network_versions(session: AsyncSession) -> Sequence[Record]:
    """Every version without its feed, by the instant it takes effect."""
    statement = select(*_VERSION_COLUMNS).order_by(network_versions.c.effective_from)
    return (await session.execute(statement)).all()


async def network_version_at(session: AsyncSession, effective_from: datetime) -> Record | None:
    statement = select(*_VERSION_COLUMNS).where(network_versions.c.effective_from == effective_from)
    return (await session.execute(statement)).first()


async def network_feed(session: AsyncSession, version_id: uuid.UUID) -> bytes | None:
    statement = select(network_versions.c.feed).where(network_versions.c.id == version_id)
    feed: bytes | None = await session.scalar(statement)
    return feed


async def lock_network_versions(session: AsyncSession) -> None:
    """Imports one at a time: the instant checks and the insert see every earlier import."""
    await session.execute(text("LOCK TABLE network_versions IN SHARE ROW EXCLUSIVE MODE"))


# Riders and refresh tokens ----------------------------------------------------------------------


async def insert_rider(session: AsyncSession, **values: Any) -> Record | None:
    """None when the phone number is taken."""
    row: Record | None = (
        await session.execute(
            insert(riders)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[riders.c.phone])
            .returning(riders)
        )
    ).first()
    return row


async def _by_id(
    session: AsyncSession,
    table: Table,
    row_id: uuid.UUID,
    *,
    rider_id: uuid.UUID | None = None,
    lock: bool = False,
) -> Record | None:
    """A row by id; with `rider_id` only that rider's own (someone else's is indistinguishable
    from a missing one); `lock` takes it FOR UPDATE."""
    statement = select(table).where(table.c.id == row_id)
    if rider_id is not None:
        statement = statement.where(table.c.rider_id == rider_id)
    if lock:
        statement = statement.with_for_update()
    return (await session.execute(statement)).first()


async def get_rider(
    session: AsyncSession, rider_id: uuid.UUID, *, lock: bool = False
) -> Record | None:
    return await _by_id(session, riders, rider_id, lock=lock)


async def get_rider_by_phone(session: AsyncSession, phone: str) -> Record | None:
    return (await session.execute(select(riders).where(riders.c.phone == phone))).first()


async def login_failures_of(session: AsyncSession, phone: str) -> Record | None:
    return (
        await session.execute(select(login_failures).where(login_failures.c.phone == phone))
    ).first()


async def record_login_failure(
    session: AsyncSession, phone: str, now: datetime, window: timedelta
) -> None:
    """One more wrong password; a count older than `window` starts again from 1."""
    fresh = login_failures.c.first_failed_at > now - window
    statement = insert(login_failures).values(phone=phone, failures=1, first_failed_at=now)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[login_failures.c.phone],
            set_={
                "failures": case((fresh, login_failures.c.failures + 1), else_=1),
                "first_failed_at": case((fresh, login_failures.c.first_failed_at), else_=now),
            },
        )
    )


async def clear_login_failures(session: AsyncSession, phone: str) -> None:
    await session.execute(delete(login_failures).where(login_failures.c.phone == phone))


async def update_rider(session: AsyncSession, rider_id: uuid.UUID, **values: Any) -> Record:
    row: Record = (
        await session.execute(
            update(riders).where(riders.c.id == rider_id).values(**values).returning(riders)
        )
    ).one()
    return row


async def pending_category_requests(session: AsyncSession, limit: int) -> Sequence[Record]:
    return (
        await session.execute(
            select(riders)
            .where(riders.c.category_status == "pending")
            .order_by(riders.c.created_at)
            .limit(limit)
        )
    ).all()


async def insert_refresh_token(session: AsyncSession, **values: Any) -> None:
    await session.execute(refresh_tokens.insert().values(**values))


async def get_refresh_token(session: AsyncSession, token_hash: bytes) -> Record | None:
    return (
        await session.execute(
            select(refresh_tokens)
            .where(refresh_tokens.c.token_hash == token_hash)
            .with_for_update()
        )
    ).first()


async def mark_refresh_token_used(session: AsyncSession, token_id: uuid.UUID, at: datetime) -> None:
    await session.execute(
        update(refresh_tokens).where(refresh_tokens.c.id == token_id).values(used_at=at)
    )


async def revoke_refresh_family(session: AsyncSession, family_id: uuid.UUID, at: datetime) -> None:
    await session.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=at)
    )


# Devices ----------------------------------------------------------------------------------------


async def active_device(
    session: AsyncSession, rider_id: uuid.UUID, *, lock: bool = False
) -> Record | None:
    statement = select(devices).where(devices.c.rider_id == rider_id, devices.c.status == "active")
    if lock:
        statement = statement.with_for_update()
    return (await session.execute(statement)).first()


async def has_devices(session: AsyncSession, rider_id: uuid.UUID) -> bool:
    found = await session.scalar(
        select(devices.c.id).where(devices.c.rider_id == rider_id).limit(1)
    )
    return found is not None


async def device_key_known(session: AsyncSession, fingerprint: str) -> bool:
    found = await session.scalar(
        select(devices.c.id).where(devices.c.fingerprint == fingerprint).limit(1)
    )
    return found is not None


async def switches_since(session: AsyncSession, rider_id: uuid.UUID, since: datetime) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(devices)
        .where(devices.c.rider_id == rider_id, devices.c.is_switch, devices.c.created_at > since)
    )
    return int(count or 0)


async def oldest_switch_since(
    session: AsyncSession, rider_id: uuid.UUID, since: datetime
) -> datetime | None:
    oldest: datetime | None = await session.scalar(
        select(func.min(devices.c.created_at)).where(
            devices.c.rider_id == rider_id, devices.c.is_switch, devices.c.created_at > since
        )
    )
    return oldest


async def insert_device(session: AsyncSession, **values: Any) -> Record:
    row: Record = (
        await session.execute(devices.insert().values(**values).returning(devices))
    ).one()
    return row


async def _revoke(
    session: AsyncSession, table: Table, row_id: uuid.UUID, at: datetime, reason: str
) -> Record:
    row: Record = (
        await session.execute(
            update(table)
            .where(table.c.id == row_id)
            .values(status="revoked", revoked_at=at, revoke_reason=reason)
            .returning(table)
        )
    ).one()
    return row


async def revoke_device(
    session: AsyncSession, device_id: uuid.UUID, at: datetime, reason: str
) -> Record:
    return await _revoke(session, devices, device_id, at, reason)


async def list_devices(session: AsyncSession, rider_id: uuid.UUID) -> Sequence[Record]:
    return (
        await session.execute(
            select(devices)
            .where(devices.c.rider_id == rider_id)
            .order_by(devices.c.created_at.desc())
        )
    ).all()


async def get_device(
    session: AsyncSession, rider_id: uuid.UUID, device_id: uuid.UUID, *, lock: bool = False
) -> Record | None:
    return await _by_id(session, devices, device_id, rider_id=rider_id, lock=lock)


async def last_credential_expiry(session: AsyncSession, device_id: uuid.UUID) -> datetime | None:
    until: datetime | None = await session.scalar(
        select(func.max(credentials.c.valid_until)).where(credentials.c.device_id == device_id)
    )
    return until


# Purchases --------------------------------------------------------------------------------------


async def get_purchase_by_key(
    session: AsyncSession, rider_id: uuid.UUID, key: str
) -> Record | None:
    return (
        await session.execute(
            select(purchases).where(
                purchases.c.rider_id == rider_id, purchases.c.idempotency_key == key
            )
        )
    ).first()


async def insert_purchase(session: AsyncSession, **values: Any) -> Record | None:
    """None when this rider already used the key (a concurrent twin won)."""
    row: Record | None = (
        await session.execute(
            insert(purchases)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["rider_id", "idempotency_key"])
            .returning(purchases)
        )
    ).first()
    return row


async def get_purchase(
    session: AsyncSession,
    purchase_id: uuid.UUID,
    *,
    rider_id: uuid.UUID | None = None,
    lock: bool = False,
) -> Record | None:
    return await _by_id(session, purchases, purchase_id, rider_id=rider_id, lock=lock)


async def update_purchase(session: AsyncSession, purchase_id: uuid.UUID, **values: Any) -> Record:
    row: Record = (
        await session.execute(
            update(purchases)
            .where(purchases.c.id == purchase_id)
            .values(**values)
            .returning(purchases)
        )
    ).one()
    return row


async def list_purchases(
    session: AsyncSession, rider_id: uuid.UUID, limit: int
) -> Sequence[Record]:
    return (
        await session.execute(
            select(purchases)
            .where(purchases.c.rider_id == rider_id)
            .order_by(purchases.c.created_at.desc())
            .limit(limit)
        )
    ).all()


async def claim_pending_purchases(
    session: AsyncSession,
    now: datetime,
    *,
    backoff: timedelta,
    max_backoff: timedelta,
    limit: int,
) -> Sequence[Record]:
    """Unresolved purchases due for another attempt, pushed back by `backoff` × 2^attempts.

    SKIP LOCKED: two replicas never claim the same purchase. A new purchase is first due
    `purchase_retry_after` after creation, which leaves it to its own request until then.
    """
    due = (
        select(purchases.c.id)
        .where(
            purchases.c.status.in_(("pending", "cancelling")), purchases.c.next_attempt_at <= now
        )
        .order_by(purchases.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    seconds = func.least(
        backoff.total_seconds() * func.power(2, func.least(purchases.c.attempts, 16)),
        max_backoff.total_seconds(),
    )
    next_attempt_at = literal(now, DateTime(timezone=True)) + func.make_interval(
        0, 0, 0, 0, 0, 0, seconds
    )
    rows: Sequence[Record] = (
        await session.execute(
            update(purchases)
            .where(purchases.c.id.in_(due))
            .values(attempts=purchases.c.attempts + 1, next_attempt_at=next_attempt_at)
            .returning(purchases)
        )
    ).all()
    return rows


# Tickets ----------------------------------------------------------------------------------------


async def insert_ticket(session: AsyncSession, **values: Any) -> Record:
    row: Record = (
        await session.execute(tickets.insert().values(**values).returning(tickets))
    ).one()
    return row


async def get_ticket(
    session: AsyncSession,
    ticket_id: uuid.UUID,
    *,
    rider_id: uuid.UUID | None = None,
    lock: bool = False,
) -> Record | None:
    return await _by_id(session, tickets, ticket_id, rider_id=rider_id, lock=lock)


async def get_ticket_of_purchase(session: AsyncSession, purchase_id: uuid.UUID) -> Record | None:
    return (
        await session.execute(select(tickets).where(tickets.c.purchase_id == purchase_id))
    ).first()


async def list_tickets(session: AsyncSession, rider_id: uuid.UUID, limit: int) -> Sequence[Record]:
    return (
        await session.execute(
            select(tickets)
            .where(tickets.c.rider_id == rider_id)
            .order_by(tickets.c.created_at.desc())
            .limit(limit)
        )
    ).all()


async def live_ticket_ids(session: AsyncSession, rider_id: uuid.UUID, now: datetime) -> list[str]:
    ids = await session.scalars(
        select(tickets.c.id).where(
            tickets.c.rider_id == rider_id,
            tickets.c.status == "active",
            tickets.c.valid_until > now,
        )
    )
    return [str(ticket_id) for ticket_id in ids]


async def revoke_ticket(
    session: AsyncSession, ticket_id: uuid.UUID, at: datetime, reason: str
) -> Record:
    return await _revoke(session, tickets, ticket_id, at, reason)


# Issuer keys and credentials --------------------------------------------------------------------


async def lock_issuer_keys(session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ISSUER_KEYS_LOCK})


async def active_issuer_key(session: AsyncSession, *, for_update: bool = False) -> Record | None:
    """FOR SHARE by signers, FOR UPDATE by rotation: rotation waits for signings in flight."""
    statement = select(issuer_keys).where(issuer_keys.c.status == "active")
    statement = statement.with_for_update() if for_update else statement.with_for_update(read=True)
    return (await session.execute(statement)).first()


async def next_issuer_key_sequence(session: AsyncSession) -> int:
    highest = await session.scalar(select(func.max(issuer_keys.c.sequence)))
    return int(highest or 0) + 1


async def insert_issuer_key(session: AsyncSession, **values: Any) -> Record:
    row: Record = (
        await session.execute(issuer_keys.insert().values(**values).returning(issuer_keys))
    ).one()
    return row


async def update_issuer_key(session: AsyncSession, kid: str, **values: Any) -> Record:
    row: Record = (
        await session.execute(
            update(issuer_keys)
            .where(issuer_keys.c.kid == kid)
            .values(**values)
            .returning(issuer_keys)
        )
    ).one()
    return row


async def list_issuer_keys(session: AsyncSession) -> Sequence[Record]:
    return (
        await session.execute(select(issuer_keys).order_by(issuer_keys.c.sequence.desc()))
    ).all()


async def retire_issuer_keys(session: AsyncSession, now: datetime) -> Sequence[Record]:
    rows: Sequence[Record] = (
        await session.execute(
            update(issuer_keys)
            .where(issuer_keys.c.status == "retiring", issuer_keys.c.not_after <= now)
            .values(status="retired", retired_at=now)
            .returning(issuer_keys)
        )
    ).all()
    return rows


async def last_expiry_signed_by(session: AsyncSession, kid: str) -> datetime | None:
    until: datetime | None = await session.scalar(
        select(func.max(credentials.c.valid_until)).where(credentials.c.kid == kid)
    )
    return until


async def latest_credential(
    session: AsyncSession, ticket_id: uuid.UUID, device_id: uuid.UUID, kid: str
) -> Record | None:
    return (
        await session.execute(
            select(credentials)
            .where(
                credentials.c.ticket_id == ticket_id,
                credentials.c.device_id == device_id,
                credentials.c.kid == kid,
            )
            .order_by(credentials.c.issued_at.desc())
            .limit(1)
        )
    ).first()


async def insert_credential(session: AsyncSession, **values: Any) -> Record:
    row: Record = (
        await session.execute(credentials.insert().values(**values).returning(credentials))
    ).one()
    return row
