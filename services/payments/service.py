"""Payments rules: accounts. No SQL here (see repository.py), no HTTP (see endpoints.py)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import repository
from services.payments.schemas import AccountCreate, AccountRead
from shared.errors import NotFound


async def open_wallet(session: AsyncSession, request: AccountCreate) -> AccountRead:
    """One wallet per owner and kind: opening it again returns the same account."""
    row = await repository.upsert_account(
        session,
        code=f"{request.kind.value}:{request.owner_id}",
        kind=request.kind.value,
        owner_id=request.owner_id,
        allow_negative=False,
    )
    return AccountRead.model_validate(row, from_attributes=True)


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> AccountRead:
    row = await repository.get_account(session, account_id)
    if row is None:
        raise NotFound(f"No account {account_id}.", code="account_not_found")
    return AccountRead.model_validate(row, from_attributes=True)
