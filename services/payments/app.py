"""Builds the payments service: wallets, the double-entry ledger, VietQR top-ups."""

from __future__ import annotations

from fastapi import FastAPI

from services.payments import endpoints, repository
from services.payments.settings import PaymentsSettings
from shared.app import Runtime, create_app, supervised
from shared.outbox import OutboxRelay


def build_app(settings: PaymentsSettings | None = None) -> FastAPI:
    settings = settings or PaymentsSettings()
    runtime = Runtime("payments", settings, schema="payments")
    relay = OutboxRelay("payments", runtime.db, repository.outbox, runtime.publisher)
    runtime.workers.append(supervised("outbox-relay", relay.run))
    app = create_app(
        runtime,
        [endpoints.router],
        title="CityPass payments",
        description="Wallets, the double-entry ledger, charges, holds, refunds and VietQR top-ups.",
    )
    app.state.runtime = runtime
    return app
