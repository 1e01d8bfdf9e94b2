"""The transactional outbox: events are written in the business transaction, then relayed.

`add_event` runs inside the caller's transaction; `OutboxRelay` moves committed rows to Kafka
with `FOR UPDATE SKIP LOCKED` (safe with several replicas) and deletes them only once the
broker acknowledged them. A crash between publish and delete redelivers: consumers dedup.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Database
from shared.events import Event
from shared.health import DEPENDENCY_ERRORS, describe_failure
from shared.kafka import Publisher
from shared.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST, OUTBOX_PUBLISHED

logger = logging.getLogger("citypass.outbox")


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("event_id", UUID(as_uuid=False), nullable=False, unique=True),
        Column("topic", String(100), nullable=False),
        Column("key", String(200), nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def add_event(
    session: AsyncSession, outbox: Table, topic: str, key: str, event: Event
) -> None:
    await session.execute(
        outbox.insert().values(
            event_id=event.id,
            topic=topic,
            key=key,
            headers=[[name, value.decode()] for name, value in event.headers()],
            payload=event.value(),
        )
    )


class OutboxRelay:
    def __init__(
        self,
        service: str,
        database: Database,
        outbox: Table,
        publisher: Publisher,
        *,
        batch_size: int = 200,
        idle_sleep_s: float = 0.05,
    ) -> None:
        self.service = service
        self.database = database
        self.outbox = outbox
        self.publisher = publisher
        self.batch_size = batch_size
        self.idle_sleep_s = idle_sleep_s
        self._stopping = asyncio.Event()

    async def relay_batch(self, session: AsyncSession) -> int:
        """Publish one batch inside `session`'s transaction; the caller commits the delete."""
        rows = (
            await session.execute(
                select(
                    self.outbox.c.id,
                    self.outbox.c.topic,
                    self.outbox.c.key,
                    self.outbox.c.headers,
                    self.outbox.c.payload,
                )
                .order_by(self.outbox.c.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not rows:
            return 0
        await self.publisher.publish_many(
            [
                (row.topic, row.key, row.payload, [(n, v.encode()) for n, v in row.headers])
                for row in rows
            ]
        )
        await session.execute(
            self.outbox.delete().where(self.outbox.c.id.in_([r.id for r in rows]))
        )
        return len(rows)

    async def relay_once(self) -> int:
        async with self.database.transaction() as session:
            published = await self.relay_batch(session)
        OUTBOX_PUBLISHED.labels(self.service).inc(published)
        return published

    async def backlog(self) -> tuple[int, float]:
        async with self.database.transaction() as session:
            count, oldest = (
                await session.execute(select(func.count(), func.min(self.outbox.c.created_at)))
            ).one()
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        return int(count), age

    async def run(self) -> None:
        last_gauge = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                published = await self.relay_once()
                if loop.time() - last_gauge > 2:
                    count, age = await self.backlog()
                    OUTBOX_BACKLOG.labels(self.service).set(count)
                    OUTBOX_OLDEST.labels(self.service).set(age)
                    last_gauge = loop.time()
            except DEPENDENCY_ERRORS as exc:
                logger.warning("outbox relay waits for its dependencies: %s", describe_failure(exc))
                published = 0
                await asyncio.sleep(1)
            except Exception:
                logger.exception("outbox relay failed, will retry")
                published = 0
                await asyncio.sleep(1)
            if published < self.batch_size:
                await asyncio.sleep(self.idle_sleep_s)

    def stop(self) -> None:
        self._stopping.set()
