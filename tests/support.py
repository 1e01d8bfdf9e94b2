"""Helpers every service's tests share: a service as a real process, polling, the bank's
notifications, and reading what a service published on Kafka."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from citypass.bank import signed_headers
from citypass.servers import LocalServers, ManagedProcess, free_port, spawn
from services.operator.pipeline import LagReader, PartitionLag
from shared.events import EnvelopeError, Event
from shared.kafka import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
BANK_BIN = "970436"  # the payments settings' defaults: where riders' top-ups are paid to
COLLECTION_ACCOUNT = "0011004242424"


# Services as real processes ---------------------------------------------------------------------


def wait_ready(process: ManagedProcess, url: str, timeout_s: float = 60) -> None:
    """Until `url` answers /readyz; fails at once if the process dies."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.process.poll() is None, f"{process.name} died: see {process.log_path}"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{process.name} not ready: see {process.log_path}"
        time.sleep(0.1)


@dataclass
class ServiceProcess:
    """A service as a real process on a fixed port, which a test may stop and start again."""

    module: str
    port: int
    env: dict[str, str]
    log_path: Path
    managed: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> None:
        self.managed = spawn(
            self.module,
            [sys.executable, "-m", self.module],
            self.log_path,
            env=self.env,
            cwd=ROOT,
        )
        wait_ready(self.managed, self.url, timeout_s)

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop()
            self.managed = None


@contextmanager
def running_service(name: str, env: Mapping[str, str], log_path: Path) -> Iterator[ServiceProcess]:
    """`python -m services.<name>` on a free port (<NAME>_PORT), with `env` on top of this
    process's environment, ready; stopped on the way out."""
    port = free_port()
    process = ServiceProcess(
        f"services.{name}",
        port,
        {**os.environ, **env, f"{name.upper()}_PORT": str(port)},
        log_path,
    )
    try:
        process.start()
        yield process
    finally:
        process.stop()


@asynccontextmanager
async def service_client(url: str, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """Calls another service the way a service does: with its bearer token."""
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        yield client


# Waiting ------------------------------------------------------------------------------------------


async def wait_until(
    condition: Callable[[], Any],
    *,
    timeout_s: float = 60,
    interval_s: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll `condition` (plain or async) until it answers something truthy. The default bound
    is generous: on shared vCPUs the hypervisor has taken 60-80 % of the CPU for minutes, and
    asynchronous work (a consumer group rejoining) then takes several times its usual time."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(interval_s)


# The bank -----------------------------------------------------------------------------------------


def bank_notification_body(*, amount: int, reference: str | None, **fields: Any) -> bytes:
    """What the bank reports after a transfer to the collection account; `fields` override."""
    return orjson.dumps(
        {
            "transaction_id": f"FT{uuid.uuid4().hex[:20].upper()}",
            "amount": amount,
            "currency": "VND",
            "bank_bin": BANK_BIN,
            "account": COLLECTION_ACCOUNT,
            "reference": reference,
            "description": f"NAPTIEN {reference}" if reference else "chuyen tien",
            **fields,
        }
    )


async def bank_notifies(
    payments: httpx.AsyncClient, body: bytes, secret: str, timestamp: int | None = None
) -> httpx.Response:
    """The bank's signed notification, sent to payments as the bank sends it."""
    return await payments.post(
        "/v1/bank/notifications", content=body, headers=signed_headers(secret, body, timestamp)
    )


async def bank_credits(
    payments: httpx.AsyncClient, secret: str, *, amount: int, reference: str, **fields: Any
) -> None:
    """The bank pays `amount` for the top-up `reference`; payments must credit it."""
    body = bank_notification_body(amount=amount, reference=reference, **fields)
    response = await bank_notifies(payments, body, secret)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "credited", response.text


# Kafka --------------------------------------------------------------------------------------------


async def read_events(
    bootstrap: str, topic: str, wanted: Callable[[Event], bool], count: int, timeout_s: float = 60
) -> list[tuple[Event, bytes | None]]:
    """Read `topic` from the beginning with a consumer of its own (no group) until `count`
    distinct events satisfy `wanted`, or the timeout passes; each comes with its record key."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, metadata_max_age_ms=500
    )
    await consumer.start()
    found: list[tuple[Event, bytes | None]] = []
    seen: set[str] = set()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        partitions = consumer.partitions_for_topic(topic)
        while partitions is None:  # e.g. a restarted broker, until the topic is written again
            assert loop.time() < deadline, f"topic {topic} never appeared"
            await asyncio.sleep(0.2)  # the metadata refreshes every 500 ms
            partitions = consumer.partitions_for_topic(topic)
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        while len(found) < count and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=300, max_records=5000)
            for records in batches.values():
                for record in records:
                    try:
                        event = Event.from_record(record.headers, record.value)
                    except EnvelopeError:
                        continue  # another test's deliberate garbage on a shared topic
                    if event.id not in seen and wanted(event):
                        seen.add(event.id)  # at-least-once: a relay retry may repeat it
                        found.append((event, record.key))
    finally:
        await consumer.stop()
    return found


async def group_lags(
    bootstrap: str, group: str, topics: Sequence[str]
) -> list[PartitionLag] | None:
    """`group`'s committed offsets and lag on every partition of `topics` (the operator's own
    lag reader, which never joins the group); None when the broker did not answer in time (a
    stolen machine: ask again)."""
    reader = LagReader(bootstrap, {group: list(topics)}, include_listed=False)
    try:
        lags, _ = await reader.read(topics)
    except (KafkaError, TimeoutError, OSError):
        return None
    finally:
        await reader.close()
    return [lag for lag in lags if lag.group == group]


async def committed_past(bootstrap: str, group: str, sent: RecordMetadata) -> bool:
    """`group` committed an offset past the record `sent`: its handler is done with it (the kit
    consumer commits after the handler). A record handled says nothing of other partitions."""
    tp = TopicPartition(sent.topic, sent.partition)
    lags = await group_lags(bootstrap, group, [sent.topic])
    return lags is not None and any(
        lag.tp == tp and (lag.committed or 0) > sent.offset for lag in lags
    )


@asynccontextmanager
async def broker_stopped(servers: LocalServers) -> AsyncIterator[None]:
    """The broker down for the block, then back with the platform's topics. Its storage is in
    memory, so a restarted broker has none: they are created again, as `citypass stack` does at
    start-up, before the services' consumers look for them."""
    servers.stop_kafka()
    try:
        yield
    finally:
        servers.start_kafka()
        await ensure_topics(servers.kafka_bootstrap)
