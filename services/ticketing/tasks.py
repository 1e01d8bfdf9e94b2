"""Background work of the ticketing service (each runs `supervised` in every replica)."""

from __future__ import annotations

import asyncio
import logging

from services.ticketing.payments import Payments
from services.ticketing.service import issuer, purchases
from services.ticketing.settings import TicketingSettings
from shared.app import Worker
from shared.db import Database
from shared.fares.versions import NetworkSync

logger = logging.getLogger("citypass.ticketing.tasks")


def purchase_reconciler(
    database: Database, payments: Payments, settings: TicketingSettings, network: NetworkSync
) -> Worker:
    """Resolves purchases left pending (payments down, a lost answer, a crash): see
    `purchases.reconcile_purchases`. Replicas share the work through SKIP LOCKED."""

    async def run() -> None:
        while True:
            claimed = await purchases.reconcile_purchases(database, payments, settings, network)
            if claimed < purchases.RECONCILE_BATCH:
                await asyncio.sleep(settings.reconcile_interval.total_seconds())

    return run


def key_retirement(database: Database, settings: TicketingSettings) -> Worker:
    """Retires issuer keys once every credential they signed has expired."""

    async def run() -> None:
        while True:
            async with database.transaction() as session:
                retired = await issuer.retire_issuer_keys(session)
            if retired:
                logger.info("issuer keys retired: %s", ", ".join(retired))
            await asyncio.sleep(settings.key_retirement_interval.total_seconds())

    return run


def network_refresh(network: NetworkSync, settings: TicketingSettings) -> Worker:
    """Reads the version list (one small query) and loads the feeds it has not seen: a version
    imported through another replica is priced here from its start, within the interval."""

    async def run() -> None:
        while True:
            await asyncio.sleep(settings.network_refresh_interval.total_seconds())
            await network.refresh()

    return run
