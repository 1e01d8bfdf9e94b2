"""Wallets and system accounts: which account a transfer touches; opening and reading wallets."""

from __future__ import annotations

import uuid
import zlib

from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.repository import Record, balances
from services.payments.repository.balances import SystemAccount
from services.payments.schemas import WALLET_KINDS, AccountCreate, AccountKind, AccountRead, Source
from services.payments.service.errors import UnknownAccount
from shared.errors import NotFound

WALLET_KIND_NAMES = tuple(kind.value for kind in WALLET_KINDS)
REVENUE_KIND_NAMES = (AccountKind.transit_revenue.value, AccountKind.parking_revenue.value)
HOLDS_KIND_NAMES = (AccountKind.holds.value,)
BANK_CLEARING = SystemAccount("bank_clearing", AccountKind.bank_clearing.value)
SUSPENSE = SystemAccount("suspense", AccountKind.suspense.value)


def shard_of(transfer_id: uuid.UUID, shards: int) -> int:
    """Spreads the credits of one hot account over `shards` rows, stable per transfer."""
    return zlib.crc32(transfer_id.bytes) % shards


def revenue_account(source: Source, lot_id: str | None, shard: int) -> SystemAccount:
    if source is Source.transit:
        return SystemAccount(
            f"transit_revenue#{shard}", AccountKind.transit_revenue.value, None, shard
        )
    return SystemAccount(
        f"parking_revenue:{lot_id}#{shard}", AccountKind.parking_revenue.value, lot_id, shard
    )


def holds_account(shard: int) -> SystemAccount:
    return SystemAccount(f"holds#{shard}", AccountKind.holds.value, None, shard)


def _account_read(row: Record) -> AccountRead:
    return AccountRead.model_validate(row, from_attributes=True)


async def open_wallet(session: AsyncSession, request: AccountCreate) -> AccountRead:
    """One wallet per owner and kind: opening it again returns the same account."""
    row = await balances.upsert_account(
        session,
        code=f"{request.kind.value}:{request.owner_id}",
        kind=request.kind.value,
        owner_id=request.owner_id,
        allow_negative=False,
    )
    return _account_read(row)


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> AccountRead:
    row = await balances.get_account(session, account_id)
    if row is None:
        raise NotFound(f"No account {account_id}.", code="account_not_found")
    return _account_read(row)


async def find_wallet(session: AsyncSession, account_id: uuid.UUID) -> Record:
    row = await balances.get_account(session, account_id)
    if row is None or row.kind not in WALLET_KIND_NAMES:
        raise UnknownAccount(f"No wallet {account_id}.", account_id=str(account_id))
    return row
