"""Builds the parking service: lots, tariffs, sessions, occupancy, receipts, audit.

Background workers (their work in tasks.py): the outbox relay, the `payments.ledger` consumer
(VietQR payments open barriers and settle debts; revenue movements feed the audit), the debt
collector, the reference refresh and the idempotency purge.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from services.parking import events, lots, repository, tasks
from services.parking.admin_endpoints import admin
from services.parking.context import Parking
from services.parking.endpoints import lane_routes, lanes, public
from services.parking.settings import ParkingSettings
from shared.app import Runtime, create_app, supervised
from shared.events import LEDGER_TOPIC
from shared.kafka import Consumer
from shared.outbox import OutboxRelay

logger = logging.getLogger("citypass.parking")


def build_app(settings: ParkingSettings | None = None) -> FastAPI:
    settings = settings or ParkingSettings()
    runtime = Runtime("parking", settings, schema="parking", uses_redis=True)
    context = Parking.build(settings, runtime)
    relay = OutboxRelay("parking", runtime.db, repository.outbox, runtime.publisher)
    consumer = Consumer(
        settings.kafka_bootstrap_servers,
        [LEDGER_TOPIC],
        events.CONSUMER_GROUP,
        tasks.ledger_handler(context),
        publisher=runtime.publisher,
    )
    runtime.workers += [
        supervised("outbox-relay", relay.run),
        supervised("payments-ledger-consumer", consumer.run),
        supervised("debt-collector", tasks.debt_collector(context)),
        supervised("reference-refresh", tasks.reference_refresh(context)),
        supervised("idempotency-purge", context.idempotency.purge_forever),
    ]
    runtime.on_stop.append(context.payments.close)
    if context.occupancy.lanes is not None:
        runtime.on_stop.append(context.occupancy.lanes.close)

    async def load_reference() -> None:
        await context.reference.reload()

    async def sync_capacity() -> None:
        async with runtime.db.transaction() as session:
            await lots.sync_all_capacity(session, context.occupancy)

    app = create_app(
        runtime,
        (public, lanes, admin),
        title="CityPass parking",
        description=(
            "Cashless parking: lots, lanes and devices, dated tariffs, entry and exit decisions,"
            " wallet holds and VietQR at the barrier, receipts, disputes, revenue audit.\n\n"
            "Lane terminals and cameras sign every request (`X-Device-Id`, `X-Device-Timestamp`,"
            " `X-Device-Nonce`, `X-Device-Signature`: HMAC-SHA256 with the device secret, see"
            " shared/devicesigning.py) and send an `Idempotency-Key` with each decision."
            " Operators send `Authorization: Bearer <PARKING_ADMIN_TOKEN>`. Money is whole VND;"
            " times carry their offset; days are Hanoi days."
        ),
        on_start=[load_reference, sync_capacity],
        hot_routes=lane_routes.bind(context),
    )
    app.state.parking = context
    return app
