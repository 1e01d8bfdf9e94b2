"""The transactional outbox: events are written in the business transaction, then relayed.

`add_event` runs inside the caller's transaction; `OutboxRelay` moves committed rows to Kafka
with `FOR UPDATE SKIP LOCKED` (safe with several replicas) and deletes them only once the
broker acknowledged them: the delete is the batch's one statement, and its transaction commits
after the publish succeeded. A crash between publish and commit redelivers: consumers dedup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import orjson
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
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import CONNECTION_ERRORS, Database
from shared.events import Event
from shared.health import DEPENDENCY_ERRORS, describe_failure, raise_if_cancelled
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
        # The batch size written into the statement: with `LIMIT $1` PostgreSQL chose a
        # custom plan, planned anew at almost every poll.
        self._claim_sql = self._claim(str(int(batch_size)))
        self._probe_sql = f"SELECT EXISTS (SELECT 1 FROM {outbox.fullname})"

    def _claim(self, limit_parameter: str) -> str:
        """One statement: take the oldest rows no other relay holds, delete them, return them.
        The delete commits only after the broker acknowledged them (the caller's transaction)."""
        table = self.outbox.fullname
        return (
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id"
            f" LIMIT {limit_parameter} FOR UPDATE SKIP LOCKED)"
            " RETURNING id, topic, key, headers::text AS headers, payload"
        )

    async def _publish(self, rows: Sequence[Any]) -> int:
        if rows:
            await self.publisher.publish_many(
                [
                    (
                        row[1],
                        row[2],
                        row[4],
                        [(name, value.encode()) for name, value in orjson.loads(row[3])],
                    )
                    for row in sorted(rows, key=itemgetter(0))  # in commit order
                ]
            )
        return len(rows)

    async def relay_batch(self, session: AsyncSession) -> int:
        """Publish one batch inside `session`'s transaction; the caller commits the delete."""
        rows = (
            await session.execute(text(self._claim(":limit")), {"limit": self.batch_size})
        ).all()
        return await self._publish(rows)

    async def relay_once(self) -> int:
        """One batch in its own transaction, on the plain asyncpg pool (three round trips)."""
        pool = await self.database.raw_pool()
        async with pool.acquire() as connection, connection.transaction():
            published = await self._publish(await connection.fetch(self._claim_sql))
        OUTBOX_PUBLISHED.labels(self.service).inc(published)
        return published

    async def anything_to_relay(self) -> bool:
        """One autocommit statement: is there a row to relay? (An idle poll in a transaction
        costs three round trips: BEGIN, the delete, COMMIT.)"""
        pool = await self.database.raw_pool()
        return bool(await pool.fetchval(self._probe_sql))

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
        published = 0
        while not self._stopping.is_set():
            try:
                # After an empty poll, probe before taking a batch; a busy relay does not probe.
                if published or await self.anything_to_relay():
                    published = await self.relay_once()
                if loop.time() - last_gauge > 2:
                    count, age = await self.backlog()
                    OUTBOX_BACKLOG.labels(self.service).set(count)
                    OUTBOX_OLDEST.labels(self.service).set(age)
                    last_gauge = loop.time()
            except (*DEPENDENCY_ERRORS, *CONNECTION_ERRORS) as exc:
                raise_if_cancelled()
                logger.warning("outbox relay waits for its dependencies: %s", describe_failure(exc))
                published = 0
                await asyncio.sleep(1)
            except Exception:
                raise_if_cancelled()
                logger.exception("outbox relay failed, will retry")
                published = 0
                await asyncio.sleep(1)
            if published < self.batch_size:
                await asyncio.sleep(self.idle_sleep_s)

    def stop(self) -> None:
        self._stopping.set()
