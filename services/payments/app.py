"""Builds the payments service: wallets, the double-entry ledger, VietQR top-ups."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

from services.payments import endpoints, repository
from services.payments.service import holds
from services.payments.settings import PaymentsSettings
from shared.app import Runtime, Worker, create_app, supervised
from shared.db import Database
from shared.idempotency import Idempotency
from shared.outbox import OutboxRelay

logger = logging.getLogger("citypass.payments")

EXPIRY_BATCH = 100
IDEMPOTENCY_PURGE_INTERVAL_S = 3600.0


def hold_expiry(database: Database, settings: PaymentsSettings) -> Worker:
    """Voids holds whose time is up, a batch per transaction, until none is left."""

    async def run() -> None:
        while True:
            async with database.transaction() as session:
                expired = await holds.expire_holds(session, EXPIRY_BATCH)
            if expired:
                logger.info("voided %d expired holds", expired)
            if expired < EXPIRY_BATCH:
                await asyncio.sleep(settings.hold_expiry_interval.total_seconds())

    return run


def idempotency_purge(store: Idempotency) -> Worker:
    async def run() -> None:
        while True:
            await store.purge_expired()
            await asyncio.sleep(IDEMPOTENCY_PURGE_INTERVAL_S)

    return run


def build_app(settings: PaymentsSettings | None = None) -> FastAPI:
    settings = settings or PaymentsSettings()
    runtime = Runtime("payments", settings, schema="payments")
    relay = OutboxRelay("payments", runtime.db, repository.outbox, runtime.publisher)
    idempotency = Idempotency(runtime.db, repository.idempotency_keys)
    runtime.workers += [
        supervised("outbox-relay", relay.run),
        supervised("hold-expiry", hold_expiry(runtime.db, settings)),
        supervised("idempotency-purge", idempotency_purge(idempotency)),
    ]
    app = create_app(
        runtime,
        [endpoints.router, endpoints.bank_router],
        title="CityPass payments",
        description=(
            "Wallets, the double-entry ledger, charges, holds, refunds, VietQR top-ups and "
            "parking payments, bank notifications and daily reconciliation. Every `/v1` route "
            "except the bank webhook needs `Authorization: Bearer <service token>`; every "
            "money-moving POST needs an `Idempotency-Key`. Amounts are whole VND."
        ),
        hot_routes=endpoints.hot.bind(endpoints.Ledger(runtime.db, settings)),
    )
    app.state.settings = settings
    app.state.idempotency = idempotency
    return app
