"""Riders: sign-up, log-in sessions and their refresh tokens, concession categories."""

from __future__ import annotations

import logging
import math
import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.ticketing import repository
from services.ticketing.auth import (
    hash_password,
    issue_access_token,
    new_refresh_token,
    refresh_token_hash,
    verify_password,
)
from services.ticketing.errors import RefreshTokenReused, TooManyLoginFailures
from services.ticketing.repository import Record
from services.ticketing.schemas import (
    CategoryDecision,
    CategoryStatus,
    LoginRequest,
    RiderCategory,
    RiderCreate,
    RiderRead,
    SessionRead,
)
from services.ticketing.service import LIST_LIMIT
from services.ticketing.settings import TicketingSettings
from shared.errors import Conflict, NotFound, Unauthorized
from shared.ids import new_id, utcnow

logger = logging.getLogger("citypass.ticketing")


def rider_read(row: Record) -> RiderRead:
    return RiderRead(
        id=row.id,
        phone=row.phone,
        category=RiderCategory(row.category),
        requested_category=(
            None if row.requested_category is None else RiderCategory(row.requested_category)
        ),
        category_status=CategoryStatus(row.category_status),
        wallet_account_id=row.wallet_account_id,
        created_at=row.created_at,
    )


async def rider_row(session: AsyncSession, rider_id: uuid.UUID, *, lock: bool = False) -> Record:
    row = await repository.get_rider(session, rider_id, lock=lock)
    if row is None:  # a valid token for a rider that no longer exists
        raise Unauthorized("This rider account does not exist.", code="unknown_rider")
    return row


async def _new_session(
    session: AsyncSession,
    rider: Record,
    settings: TicketingSettings,
    now: datetime,
    family_id: uuid.UUID | None = None,
) -> SessionRead:
    token, token_hash = new_refresh_token()
    await repository.insert_refresh_token(
        session,
        id=new_id(),
        rider_id=rider.id,
        family_id=family_id or new_id(),
        token_hash=token_hash,
        created_at=now,
        expires_at=now + settings.refresh_token_ttl,
    )
    return SessionRead(
        access_token=issue_access_token(rider.id, settings, now),
        expires_in=int(settings.access_token_ttl.total_seconds()),
        refresh_token=token,
        refresh_expires_in=int(settings.refresh_token_ttl.total_seconds()),
        rider=rider_read(rider),
    )


async def sign_up(
    session: AsyncSession, body: RiderCreate, password_hash: str, settings: TicketingSettings
) -> SessionRead:
    """A new rider (regular until an operator approves a requested concession)."""
    now = utcnow()
    concession = body.category is not RiderCategory.regular
    rider = await repository.insert_rider(
        session,
        id=new_id(),
        phone=body.phone,
        password_hash=password_hash,
        category=RiderCategory.regular.value,
        requested_category=body.category.value if concession else None,
        category_status=(CategoryStatus.pending if concession else CategoryStatus.none).value,
        created_at=now,
    )
    if rider is None:
        raise Conflict("A rider with this phone number exists: log in instead.", code="phone_taken")
    return await _new_session(session, rider, settings, now)


async def prepare_password(password: str, settings: TicketingSettings) -> str:
    """Argon2id, off the event loop: before the transaction, which it would hold up."""
    return await hash_password(password, settings)


async def log_in(
    session: AsyncSession, body: LoginRequest, settings: TicketingSettings
) -> SessionRead | None:
    """A new session, or None for a wrong phone number or password: that failure is recorded
    in `session`, so the caller commits it and then refuses (raising would roll it back)."""
    now = utcnow()
    failures = await repository.login_failures_of(session, body.phone)
    if failures is not None and failures.failures >= settings.login_failure_limit:
        until = failures.first_failed_at + settings.login_failure_window
        if until > now:
            raise TooManyLoginFailures(
                "Too many wrong passwords for this phone number; try again later.",
                retry_after_s=math.ceil((until - now).total_seconds()),
            )
    rider = await repository.get_rider_by_phone(session, body.phone)
    password_hash = None if rider is None else rider.password_hash
    if not await verify_password(password_hash, body.password, settings):
        await repository.record_login_failure(
            session, body.phone, now, settings.login_failure_window
        )
        return None
    assert rider is not None
    if failures is not None:
        await repository.clear_login_failures(session, body.phone)
    return await _new_session(session, rider, settings, now)


async def refresh_session(
    session: AsyncSession, token: str, settings: TicketingSettings
) -> SessionRead:
    """Trade a refresh token for a new pair. A token used twice was stolen: end its family."""
    now = utcnow()
    row = await repository.get_refresh_token(session, refresh_token_hash(token))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthorized("This refresh token is not valid: log in.", code="invalid_refresh_token")
    if row.used_at is not None:
        logger.warning("refresh token reused", extra={"rider_id": str(row.rider_id)})
        raise RefreshTokenReused(row.family_id)
    await repository.mark_refresh_token_used(session, row.id, now)
    rider = await rider_row(session, row.rider_id)
    return await _new_session(session, rider, settings, now, family_id=row.family_id)


async def log_out(session: AsyncSession, token: str) -> None:
    """Revoke the refresh token and every token rotated from the same login."""
    row = await repository.get_refresh_token(session, refresh_token_hash(token))
    if row is not None:
        await revoke_token_family(session, row.family_id)


async def revoke_token_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await repository.revoke_refresh_family(session, family_id, utcnow())


async def get_rider(session: AsyncSession, rider_id: uuid.UUID) -> RiderRead:
    return rider_read(await rider_row(session, rider_id))


async def request_category(
    session: AsyncSession, rider_id: uuid.UUID, category: RiderCategory
) -> RiderRead:
    """Ask for a concession category; it applies once an operator approves it."""
    rider = await rider_row(session, rider_id, lock=True)
    if category is RiderCategory.regular:  # giving up a concession needs nobody's approval
        values: dict[str, object] = {
            "category": category.value,
            "requested_category": None,
            "category_status": CategoryStatus.none.value,
        }
    elif category.value == rider.category:  # already in force: withdraw any other request
        values = {"requested_category": None, "category_status": CategoryStatus.approved.value}
    else:
        values = {
            "requested_category": category.value,
            "category_status": CategoryStatus.pending.value,
            "category_note": None,
        }
    return rider_read(await repository.update_rider(session, rider_id, **values))


async def category_requests(session: AsyncSession) -> list[RiderRead]:
    return [rider_read(r) for r in await repository.pending_category_requests(session, LIST_LIMIT)]


async def decide_category(
    session: AsyncSession, rider_id: uuid.UUID, decision: CategoryDecision
) -> RiderRead:
    rider = await repository.get_rider(session, rider_id, lock=True)
    if rider is None:
        raise NotFound(f"No rider {rider_id}.", code="rider_not_found")
    if rider.category_status != CategoryStatus.pending.value or rider.requested_category is None:
        raise Conflict("This rider has no category request pending.", code="no_pending_request")
    if decision.approve:
        values: dict[str, object] = {
            "category": rider.requested_category,
            "requested_category": None,
            "category_status": CategoryStatus.approved.value,
        }
    else:
        values = {"category_status": CategoryStatus.rejected.value}
    return rider_read(
        await repository.update_rider(session, rider_id, category_note=decision.note, **values)
    )
