"""Background work of an operator process.

- the consumer handler (`EventSink.handle`, group `operator`, every topic): each event is read
  as a fact, run through the alert rules, then applied to the dashboard's aggregates and the
  live tail once (dedup by event id, in the same Redis script as the aggregates);
- the gate watch: every `gate_check_interval`, gates silent for `gate_silent_after` raise an
  alert;
- the pipeline monitor: consumer lag, outbox backlogs, every `pipeline_poll_interval`;
- the inventory watch: the provisioned gates and lots, every `inventory_poll_interval`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Histogram
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.operator import alerts, events, inventory, pipeline, repository
from services.operator.alerts import GateSeen, Thresholds, Verdict
from services.operator.network import OperatorNetwork
from services.operator.projection import (
    TOPICS,
    EventRefused,
    Fact,
    Table,
    read_fact,
    tail_entry,
    updates,
)
from services.operator.service import thresholds
from services.operator.settings import OperatorSettings
from shared.events import ALERTS_TOPIC, Event
from shared.health import describe_failure
from shared.kafka import Consumer, DeadLetter, Publisher

logger = logging.getLogger("citypass.operator.tasks")

EVENTS = Counter(
    "citypass_operator_events_total",
    "Events the operator console read, by outcome (applied, duplicate, stale, refused)",
    ["topic", "outcome"],
)
EVENT_DELAY = Histogram(
    "citypass_operator_event_delay_seconds",
    "From an event's time to its place on the dashboard",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
ALERTS_RAISED = Counter(
    "citypass_operator_alerts_raised_total", "Alerts raised by the console's rules", ["rule"]
)


class EventSink:
    """The consumer's handler: facts → alert rules → aggregates and tail, once per event."""

    def __init__(
        self,
        redis: Redis,
        publisher: Publisher,
        settings: OperatorSettings,
        network: OperatorNetwork,
    ) -> None:
        self.redis, self.publisher, self.settings = redis, publisher, settings
        self.network = network  # the versions in force at each fact's time
        self.thresholds: Thresholds = thresholds(settings)
        self.seen_ttl_s = int(settings.dedup_ttl.total_seconds())
        self.consumer = Consumer(
            settings.kafka_bootstrap_servers,
            TOPICS,
            settings.consumer_group,
            self.handle,
            publisher=publisher,
            start_from=settings.consumer_start_from,
        )

    async def handle(self, event: Event, record: ConsumerRecord) -> None:
        topic = record.topic
        try:
            fact = read_fact(event, topic)
        except EventRefused as refused:
            EVENTS.labels(topic, "refused").inc()
            # Parked at once: retrying cannot make an unknown type known.
            raise DeadLetter(refused.code, str(refused)) from refused
        now = time.time()
        if fact.at < now - self.seen_ttl_s:
            EVENTS.labels(topic, "stale").inc()  # older than every aggregate shown (and dedup)
            return
        network = self.network.at(fact.at)  # the version in force when it happened
        windows = alerts.windows(fact, self.thresholds)
        memory = alerts.memory_keys(fact, network)
        verdict = Verdict()
        if windows or memory:
            inputs = await repository.rule_inputs(
                self.redis, fact.id, fact.at, now, windows, memory
            )
            if inputs.seen:
                EVENTS.labels(topic, "duplicate").inc()
                return
            verdict = alerts.evaluate(fact, inputs.counts, inputs.memory, self.thresholds, network)
            await self.publish_alerts(verdict.alerts)
        # What the rules remember lands with the event, atomically: a redelivery after a crash
        # before this point evaluates the event again and republishes the same alert ids.
        applied = await self.apply(fact, verdict.remember)
        EVENTS.labels(topic, "applied" if applied else "duplicate").inc()
        if applied:
            EVENT_DELAY.observe(max(0.0, time.time() - event.time.timestamp()))

    async def apply(self, fact: Fact, remember: dict[str, tuple[str, float]] | None = None) -> bool:
        alert = alerts.alert_from_fact(fact)
        return await repository.apply(
            self.redis,
            fact.id,
            updates(fact, alert).items,
            tail_entry(fact, alert),
            seen_ttl_s=self.seen_ttl_s,
            tail_max=self.settings.tail_max_entries,
            remember=remember,
        )

    async def publish_alerts(self, raised: list[alerts.Alert]) -> None:
        """Publish, then show at once (the consumer will find them applied)."""
        for alert in raised:
            event = events.alert_raised(alert)
            await self.publisher.publish(ALERTS_TOPIC, alert.subject, event)
            await self.apply(read_fact(event, ALERTS_TOPIC))
            ALERTS_RAISED.labels(alert.rule.value).inc()
            logger.warning("alert %s: %s", alert.rule.value, alert.detail)

    async def watch_gates(self) -> None:
        interval = self.settings.gate_check_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check_gates(time.time())
            except (KafkaError, RedisError, TimeoutError, OSError) as exc:
                logger.warning("gate watch skipped a round: %s", describe_failure(exc))

    async def check_gates(self, now: float) -> list[alerts.Alert]:
        gates = await repository.read_table(self.redis, Table.gates)
        seen = [
            GateSeen(gate_id, float(g["last_seen"]), g.get("station"))
            for gate_id, g in gates.items()
        ]
        memory = await repository.read_memory(
            self.redis, [alerts.silent_memory_key(g.gate_id) for g in seen]
        )
        verdict = alerts.silent_gates(seen, memory, now, self.thresholds)
        await self.publish_alerts(verdict.alerts)
        await repository.remember(self.redis, verdict.remember)  # after: a crash re-raises
        return verdict.alerts

    def stop(self) -> None:
        self.consumer.stop()


class PipelineMonitor:
    def __init__(self, redis: Redis, settings: OperatorSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.reader = pipeline.LagReader(
            settings.kafka_bootstrap_servers,
            settings.lag_groups,
            timeout_s=settings.kafka_send_timeout_s,
        )

    async def run(self) -> None:
        interval = self.settings.pipeline_poll_interval.total_seconds()
        async with httpx.AsyncClient(timeout=self.settings.scrape_timeout_s) as client:
            while True:
                try:
                    await self.check(client)
                except (RedisError, TimeoutError, OSError) as exc:
                    logger.warning("pipeline check failed: %s", describe_failure(exc))
                await asyncio.sleep(interval)

    async def check(self, client: httpx.AsyncClient) -> dict[str, Any]:
        services = list(
            await asyncio.gather(
                *(
                    pipeline.scrape(client, name, url)
                    for name, url in sorted(self.settings.metrics_urls.items())
                )
            )
        )
        kafka_error = None
        try:
            lags, dead_letters = await self.reader.read(TOPICS)
        except (KafkaError, TimeoutError, OSError) as exc:
            kafka_error = describe_failure(exc)
            lags, dead_letters = [], None
            await self.reader.close()  # reconnect next time
        pipeline.export(lags, dead_letters)
        snapshot = pipeline.snapshot(lags, services, dead_letters, kafka_error)
        data = snapshot.model_dump(mode="json")
        ttl = int(max(60.0, 3 * self.settings.pipeline_poll_interval.total_seconds()))
        await repository.save_pipeline(self.redis, data, ttl)
        return data

    async def close(self) -> None:
        await self.reader.close()


class InventoryWatch:
    """Reads the provisioned gates and lots from their owners (see inventory.py)."""

    def __init__(self, redis: Redis, settings: OperatorSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.urls = {
            kind: url
            for kind, url in (
                (inventory.Kind.gates, settings.gates_url),
                (inventory.Kind.lots, settings.lots_url),
            )
            if url is not None
        }

    async def run(self) -> None:
        interval = self.settings.inventory_poll_interval.total_seconds()
        async with httpx.AsyncClient(timeout=self.settings.scrape_timeout_s) as client:
            while True:
                try:
                    await self.check(client)
                except (RedisError, TimeoutError, OSError) as exc:
                    logger.warning("inventory check failed: %s", describe_failure(exc))
                await asyncio.sleep(interval)

    async def check(self, client: httpx.AsyncClient) -> None:
        for kind, url in self.urls.items():
            previous = await repository.load_listing(self.redis, kind)
            listing = await inventory.read(client, kind, url, previous)
            if listing.error:
                logger.warning("provisioned %s not read: %s", kind.value, listing.error)
            await repository.save_listing(self.redis, kind, listing)
