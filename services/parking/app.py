"""Builds the parking service: lots, tariffs, sessions, occupancy, receipts, audit.

Background workers: the outbox relay, the `payments.ledger` consumer (VietQR payments open
barriers and settle debts; revenue movements feed the audit) and the debt collector.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import ConsumerRecord
from fastapi import FastAPI

from services.parking import events, lots, repository, session_queries, tasks
from services.parking.admin_endpoints import admin
from services.parking.context import Parking
from services.parking.endpoints import lane_routes, lanes, public
from services.parking.settings import ParkingSettings
from services.parking.work import transaction
from shared.app import Runtime, Worker, create_app, supervised
from shared.events import Event
from shared.inbox import first_delivery
from shared.kafka import Consumer, Handler
from shared.outbox import OutboxRelay

logger = logging.getLogger("citypass.parking")

DEBT_BATCH = 20
IDEMPOTENCY_PURGE_INTERVAL_S = 3600.0


def ledger_handler(context: Parking) -> Handler:
    async def handle(event: Event, _record: ConsumerRecord) -> None:
        if event.type == events.TRANSFER_POSTED:  # transit fares are most of the topic
            await tasks.on_transfer_posted(context, event)
            return
        if event.type != events.PAYMENT_REQUEST_PAID:
            return
        async with transaction(context) as work:
            if await first_delivery(
                work.session, repository.processed_events, events.CONSUMER_GROUP, event.id
            ):
                await tasks.on_payment_request_paid(work, event)

    return handle


def debt_collector(context: Parking) -> Worker:
    """Retries debts (wallet first, else a VietQR for the receipt) and pending hold releases."""

    async def run() -> None:
        interval = min(context.settings.debt_retry_interval.total_seconds(), 5.0)
        while True:
            async with transaction(context) as work:
                due = await session_queries.debts_due(work.session, work.now, DEBT_BATCH)
                for row in due:
                    await tasks.collect_debt(work, row)
                    await work.flush()  # one unit of work per session
                holds = await session_queries.holds_to_release(work.session, DEBT_BATCH)
                for row in holds:
                    await tasks.release_pending_hold(work, row)
                    await work.flush()
            if len(due) < DEBT_BATCH and len(holds) < DEBT_BATCH:
                await asyncio.sleep(interval)

    return run


def reference_refresh(context: Parking) -> Worker:
    """Reloads lots, lanes and tariffs, so that changes made on other replicas arrive."""

    async def run() -> None:
        while True:
            await asyncio.sleep(context.settings.cache_ttl.total_seconds())
            await context.reference.reload()

    return run


def idempotency_purge(context: Parking) -> Worker:
    async def run() -> None:
        while True:
            await context.idempotency.purge_expired()
            await asyncio.sleep(IDEMPOTENCY_PURGE_INTERVAL_S)

    return run


def build_app(settings: ParkingSettings | None = None) -> FastAPI:
    settings = settings or ParkingSettings()
    runtime = Runtime("parking", settings, schema="parking", uses_redis=True)
    context = Parking.build(settings, runtime)
    relay = OutboxRelay("parking", runtime.db, repository.outbox, runtime.publisher)
    consumer = Consumer(
        settings.kafka_bootstrap_servers,
        [events.LEDGER_TOPIC],
        events.CONSUMER_GROUP,
        ledger_handler(context),
        publisher=runtime.publisher,
    )
    runtime.workers += [
        supervised("outbox-relay", relay.run),
        supervised("payments-ledger-consumer", consumer.run),
        supervised("debt-collector", debt_collector(context)),
        supervised("reference-refresh", reference_refresh(context)),
        supervised("idempotency-purge", idempotency_purge(context)),
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
