"""The transactional outbox and consumer dedup, against the real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import Column, Integer, MetaData, String, Table, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from citypass.servers import LocalServers
from shared.db import Database
from shared.events import Event
from shared.inbox import first_delivery, processed_events_table
from shared.kafka import Publisher
from shared.outbox import OutboxRelay, add_event, outbox_table
from tests.support import broker_stopped

SCHEMA = "kit_outbox_test"
metadata = MetaData()
outbox = outbox_table(metadata)
processed = processed_events_table(metadata)
orders = Table(
    "orders",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("applied", Integer, nullable=False, server_default="0"),
)


@pytest.fixture(scope="module")
async def database(servers: LocalServers) -> AsyncIterator[Database]:
    db = Database(servers.database_url, SCHEMA)
    async with db.engine.begin() as connection:
        await connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        await connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        await connection.run_sync(metadata.create_all)
    yield db
    await db.close()


@pytest.fixture
async def publisher(servers: LocalServers) -> AsyncIterator[Publisher]:
    pub = Publisher(servers.kafka_bootstrap, send_timeout_s=3)
    yield pub
    await pub.close()


async def read_events(bootstrap: str, topic: str, count: int, timeout_s: float = 15) -> list[Event]:
    """An independent consumer: its own group, from the beginning of the topic."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    events: list[Event] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(events) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    events += [Event.from_record(r.headers, r.value) for r in records]
    finally:
        await consumer.stop()
    return events


def order_event(order_id: str) -> Event:
    return Event(
        type="citypass.test.order.placed.v1",
        source="/tests/outbox",
        subject=order_id,
        data={"order_id": order_id},
    )


async def place_order(session: AsyncSession, topic: str) -> Event:
    order_id = str(uuid.uuid4())
    event = order_event(order_id)
    await session.execute(orders.insert().values(id=order_id))
    await add_event(session, outbox, topic, order_id, event)
    return event


async def apply_once(database: Database, event: Event) -> None:
    """What an idempotent consumer does: the effect and the dedup row in one transaction."""
    async with database.transaction() as session:
        if await first_delivery(session, processed, "test-consumer", event.id):
            await session.execute(
                update(orders)
                .where(orders.c.id == event.data["order_id"])
                .values(applied=orders.c.applied + 1)
            )


async def applied_count(database: Database, order_id: str) -> int:
    async with database.transaction() as session:
        count = await session.scalar(select(orders.c.applied).where(orders.c.id == order_id))
    return int(count or 0)


class TestOutbox:
    async def test_committed_row_and_event_reach_an_independent_consumer(
        self, database: Database, publisher: Publisher, servers: LocalServers
    ) -> None:
        topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
        async with database.transaction() as session:
            event = await place_order(session, topic)

        relay = OutboxRelay("test", database, outbox, publisher)
        assert await relay.relay_once() >= 1

        (received,) = await read_events(servers.kafka_bootstrap, topic, 1)
        assert received.id == event.id
        assert received.type == "citypass.test.order.placed.v1"
        assert received.data == {"order_id": event.subject}
        assert await relay.backlog() == (0, 0.0)

    async def test_rolled_back_transaction_leaves_no_event(self, database: Database) -> None:
        topic = "test.outbox.rollback"
        placed: list[Event] = []

        async def fail_after_insert() -> None:
            async with database.transaction() as session:
                placed.append(await place_order(session, topic))
                raise RuntimeError("business rule failed after the insert")

        with pytest.raises(RuntimeError):
            await fail_after_insert()
        event_id = placed[0].id
        async with database.transaction() as session:
            left = await session.scalar(select(outbox.c.id).where(outbox.c.event_id == event_id))
        assert left is None

    async def test_relay_dying_after_publish_redelivers_and_consumer_applies_once(
        self, database: Database, publisher: Publisher, servers: LocalServers
    ) -> None:
        topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
        async with database.transaction() as session:
            event = await place_order(session, topic)
        relay = OutboxRelay("test", database, outbox, publisher)

        async def publish_then_die() -> None:
            async with database.transaction() as session:
                assert await relay.relay_batch(session) >= 1
                raise ConnectionResetError("relay killed between publish and commit")

        # The relay publishes, then dies before its delete commits: the row stays.
        with pytest.raises(ConnectionResetError):
            await publish_then_die()
        assert (await relay.backlog())[0] >= 1
        assert await relay.relay_once() >= 1  # the restarted relay publishes it again

        received = await read_events(servers.kafka_bootstrap, topic, 2)
        assert [e.id for e in received] == [event.id, event.id]
        for delivery in received:
            await apply_once(database, delivery)
        assert await applied_count(database, event.subject) == 1

    @pytest.mark.fault
    async def test_event_committed_while_broker_is_down_is_delivered_after_recovery(
        self, database: Database, publisher: Publisher, servers: LocalServers
    ) -> None:
        topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
        relay = OutboxRelay("test", database, outbox, publisher)
        await relay.relay_once()  # drain what earlier tests left
        async with broker_stopped(servers):
            async with database.transaction() as session:
                event = await place_order(session, topic)
            with pytest.raises((OSError, TimeoutError, Exception)):
                await relay.relay_once()
            assert (await relay.backlog())[0] == 1

        async with asyncio.timeout(30):
            while (await relay.backlog())[0]:
                try:
                    await relay.relay_once()
                except Exception:
                    await asyncio.sleep(0.5)
        (received,) = await read_events(servers.kafka_bootstrap, topic, 1)
        assert received.id == event.id
