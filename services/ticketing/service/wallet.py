"""The rider's payments wallet and its top-ups (over HTTP: these own their transactions)."""

from __future__ import annotations

import hashlib
import uuid

from services.ticketing import repository
from services.ticketing.payments import Payments
from services.ticketing.schemas import TopupRead, WalletRead
from services.ticketing.service import riders
from shared.db import Database
from shared.errors import NotFound


async def ensure_wallet(db: Database, payments: Payments, rider_id: uuid.UUID) -> uuid.UUID:
    """The rider's payments wallet, opened on first need (owns its transactions)."""
    async with db.transaction() as session:
        rider = await riders.rider_row(session, rider_id)
    if rider.wallet_account_id is not None:
        wallet_id: uuid.UUID = rider.wallet_account_id
        return wallet_id
    account = await payments.open_wallet(rider_id)  # payments returns the same one if repeated
    async with db.transaction() as session:
        await repository.update_rider(session, rider_id, wallet_account_id=account.id)
    return account.id


async def wallet(db: Database, payments: Payments, rider_id: uuid.UUID) -> WalletRead:
    account = await payments.account(await ensure_wallet(db, payments, rider_id))
    return WalletRead(account_id=account.id, balance=account.balance)


def _topup_read(topup: object) -> TopupRead:
    return TopupRead.model_validate(topup, from_attributes=True)


async def create_topup(
    db: Database, payments: Payments, rider_id: uuid.UUID, amount: int, key: str
) -> TopupRead:
    wallet_id = await ensure_wallet(db, payments, rider_id)
    # Scoped to the rider and of fixed length, whatever the rider's own key looks like.
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    topup = await payments.create_topup(
        account_id=wallet_id, amount=amount, key=f"ticketing:topup:{rider_id}:{digest}"
    )
    return _topup_read(topup)


async def get_topup(
    db: Database, payments: Payments, rider_id: uuid.UUID, topup_id: uuid.UUID
) -> TopupRead:
    async with db.transaction() as session:
        rider = await riders.rider_row(session, rider_id)
    missing = NotFound(f"You have no top-up {topup_id}.", code="topup_not_found")
    if rider.wallet_account_id is None:
        raise missing
    try:
        topup = await payments.topup(topup_id)
    except NotFound:
        raise missing from None
    if topup.account_id != rider.wallet_account_id:
        raise missing
    return _topup_read(topup)
