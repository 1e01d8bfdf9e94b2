"""Builds the payments service: wallets, the double-entry ledger, VietQR top-ups."""

from __future__ import annotations

from fastapi import FastAPI

from services.payments import endpoints, repository, tasks
from services.payments.settings import PaymentsSettings
from shared.app import Runtime, create_app, supervised
from shared.idempotency import Idempotency
from shared.outbox import OutboxRelay


def build_app(settings: PaymentsSettings | None = None) -> FastAPI:
    settings = settings or PaymentsSettings()
    runtime = Runtime("payments", settings, schema="payments")
    relay = OutboxRelay("payments", runtime.db, repository.outbox, runtime.publisher)
    idempotency = Idempotency(runtime.db, repository.idempotency_keys)
    runtime.workers += [
        supervised("outbox-relay", relay.run),
        supervised("hold-expiry", tasks.hold_expiry(runtime.db, settings)),
        supervised("idempotency-purge", idempotency.purge_forever),
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
