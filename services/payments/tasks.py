"""Background work of the payments service (each runs `supervised` in every replica)."""

from __future__ import annotations

import asyncio
import logging

from services.payments.service import holds
from services.payments.settings import PaymentsSettings
from shared.app import Worker
from shared.db import Database

logger = logging.getLogger("citypass.payments.tasks")

EXPIRY_BATCH = 100


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
