"""Accounts: wallets and the system accounts named by their code, and their SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.repository import Record, accounts

# uuid5(namespace, code) names every system account, so no lookup is needed to find one.
SYSTEM_ACCOUNT_NAMESPACE = uuid.UUID("6f1c2a40-3d1e-4b8e-9a57-5b0c9e7d2f11")

ACCOUNT_COLUMNS = (
    accounts.c.id,
    accounts.c.code,
    accounts.c.kind,
    accounts.c.owner_id,
    accounts.c.allow_negative,
    accounts.c.balance,
)


@lru_cache(maxsize=4096)
def system_account_id(code: str) -> uuid.UUID:
    return uuid.uuid5(SYSTEM_ACCOUNT_NAMESPACE, code)


async def upsert_account(
    session: AsyncSession, *, code: str, kind: str, owner_id: str | None, allow_negative: bool
) -> Record:
    await session.execute(
        insert(accounts)
        .values(
            id=uuid.uuid4(), code=code, kind=kind, owner_id=owner_id, allow_negative=allow_negative
        )
        .on_conflict_do_nothing(index_elements=["code"])
    )
    return (await session.execute(select(*ACCOUNT_COLUMNS).where(accounts.c.code == code))).one()


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> Record | None:
    return (
        await session.execute(select(*ACCOUNT_COLUMNS).where(accounts.c.id == account_id))
    ).first()


async def lock_accounts(session: AsyncSession, account_ids: Sequence[uuid.UUID]) -> None:
    """Row locks in id order, so two transactions never wait for each other in a cycle."""
    await session.execute(
        select(accounts.c.id)
        .where(accounts.c.id.in_(sorted(set(account_ids))))
        .order_by(accounts.c.id)
        .with_for_update()
    )


async def balance_of(session: AsyncSession, account_id: uuid.UUID) -> int:
    balance = await session.scalar(select(accounts.c.balance).where(accounts.c.id == account_id))
    return int(balance or 0)


@dataclass(frozen=True, slots=True)
class SystemAccount:
    """A revenue, holds, clearing or suspense account; created on its first credit."""

    code: str
    kind: str
    owner_id: str | None = None
    shard: int | None = None

    @property
    def id(self) -> uuid.UUID:
        return system_account_id(self.code)


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a transfer: an existing account of one of `kinds`, or a system account."""

    account_id: uuid.UUID
    kinds: tuple[str, ...]
    system: SystemAccount | None = None

    @classmethod
    def of(cls, account: SystemAccount) -> Leg:
        return cls(account.id, (account.kind,), account)
