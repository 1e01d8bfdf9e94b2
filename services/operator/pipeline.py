"""Pipeline health: consumer lag from Kafka, outbox backlogs from each service.

Lag is read the way `kafka-consumer-groups --describe` does it: the group's committed offset
against the partition's end offset; its age is the timestamp of the oldest record the group has
not processed. The operator has no database, so outbox backlogs come from each service's
`/metrics` (`citypass_outbox_backlog_events`, `citypass_outbox_oldest_age_seconds`): the
PostgreSQL outboxes' rows, and validation's entries in its Redis streams.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families

from services.operator.schemas import (
    GroupLagRead,
    PartitionLagRead,
    PipelineRead,
    ServiceHealthRead,
)
from shared.health import describe_failure
from shared.kafka import DEAD_LETTER_TOPIC

logger = logging.getLogger("citypass.operator.pipeline")

LAG_RECORDS = Gauge(
    "citypass_operator_consumer_lag_records",
    "Records a consumer group has not processed yet",
    ["group", "topic", "partition"],
)
LAG_SECONDS = Gauge(
    "citypass_operator_consumer_lag_seconds",
    "Age of the oldest record a consumer group has not processed",
    ["group", "topic", "partition"],
)
DEAD_LETTER_RECORDS = Gauge(
    "citypass_operator_deadletter_records", "Records retained on the dead-letter topic"
)


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    tp: TopicPartition
    committed: int | None
    end: int
    lag: int
    lag_seconds: float = 0.0


class LagReader:
    """Long-lived Kafka clients: one without a group (end offsets, record timestamps) and one
    per group to read its committed offsets (it never joins the group, so it never steals a
    partition from the real members)."""

    def __init__(
        self,
        bootstrap: str,
        known: Mapping[str, list[str]],
        *,
        timeout_s: float = 5.0,
        include_listed: bool = True,  # also the active groups the broker lists
    ) -> None:
        self.bootstrap = bootstrap
        self.known = dict(known)
        self.include_listed = include_listed
        self.timeout_s = timeout_s
        self._probe: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._groups: dict[str, AIOKafkaConsumer] = {}
        self._stamps: dict[Position, float] = {}  # record timestamps (s)

    async def _client(self, group: str | None) -> AIOKafkaConsumer:
        if group is None and self._probe is not None:
            return self._probe
        if group is not None and group in self._groups:
            return self._groups[group]
        client = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            request_timeout_ms=int(self.timeout_s * 1000),
            max_partition_fetch_bytes=64 * 1024,  # only the first record of a partition is read
        )
        await asyncio.wait_for(client.start(), self.timeout_s)
        if group is None:
            self._probe = client
        else:
            self._groups[group] = client
        return client

    async def _active_groups(self) -> list[str]:
        """Consumer groups the broker lists that have members now (a group left behind by an
        old process is not shown once its members are gone)."""
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=int(self.timeout_s * 1000)
            )
            await asyncio.wait_for(admin.start(), self.timeout_s)
            self._admin = admin
        listed = await asyncio.wait_for(self._admin.list_consumer_groups(), self.timeout_s)
        names = [str(row[0]) for row in listed if len(row) < 2 or row[1] in ("consumer", "")]
        if not names:
            return []
        try:
            described = await asyncio.wait_for(
                self._admin.describe_consumer_groups(names), self.timeout_s
            )
        except (KafkaError, TimeoutError, ValueError) as exc:
            # Some brokers (the local Tansu) answer DescribeGroups in a form aiokafka cannot
            # always decode: show every listed group rather than none.
            logger.debug("cannot describe consumer groups: %s", describe_failure(exc))
            await self._close_admin()
            return names
        # DescribeGroups: (error_code, group_id, state, protocol_type, protocol, members, …)
        return [
            str(group[1])
            for response in described
            for group in response.groups
            if group[0] == 0 and group[5]
        ]

    async def read(self, topics: Iterable[str]) -> tuple[list[PartitionLag], int | None]:
        """Lag of every known or active group, and the records on the dead-letter topic."""
        probe = await self._client(None)
        await asyncio.wait_for(probe.topics(), self.timeout_s)  # refresh metadata
        all_topics = sorted({*topics, *(t for ts in self.known.values() for t in ts)})
        partitions = {
            topic: sorted(probe.partitions_for_topic(topic) or ()) for topic in all_topics
        }
        tps = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
        dead_partitions = probe.partitions_for_topic(DEAD_LETTER_TOPIC) or ()
        dead = [TopicPartition(DEAD_LETTER_TOPIC, p) for p in dead_partitions]
        ends = await asyncio.wait_for(probe.end_offsets([*tps, *dead]), self.timeout_s)
        starts = await asyncio.wait_for(probe.beginning_offsets([*tps, *dead]), self.timeout_s)
        dead_letters = sum(ends[tp] - starts[tp] for tp in dead) if dead else None
        groups = dict.fromkeys(self.known)
        for group in await self._active_groups() if self.include_listed else ():
            groups.setdefault(group)
        lags: list[PartitionLag] = []
        for group in groups:
            client = await self._client(group)
            own = set(self.known.get(group, ()))
            committed = await asyncio.wait_for(
                asyncio.gather(*(client.committed(tp) for tp in tps)), self.timeout_s
            )
            for tp, offset in zip(tps, committed, strict=True):
                if offset is None and tp.topic not in own:
                    continue  # a listed group that never read this topic
                position = offset if offset is not None else starts[tp]
                lags.append(PartitionLag(group, tp, offset, ends[tp], max(0, ends[tp] - position)))
        ages = await self._ages(probe, lags, starts)
        return [
            dataclasses.replace(lag, lag_seconds=ages.get(_position(lag, starts), 0.0))
            for lag in lags
        ], dead_letters

    @staticmethod
    def _position(
        lag: PartitionLag, starts: Mapping[TopicPartition, int]
    ) -> tuple[TopicPartition, int]:
        return lag.tp, lag.committed if lag.committed is not None else starts[lag.tp]

    async def _ages(
        self,
        probe: AIOKafkaConsumer,
        lags: list[PartitionLag],
        starts: Mapping[TopicPartition, int],
    ) -> dict[Position, float]:
        """Age of the first unprocessed record of each lagging partition. A record's timestamp
        never changes, so it is read once per (partition, offset) and remembered."""
        wanted = {_position(lag, starts) for lag in lags if lag.lag > 0}
        missing: dict[TopicPartition, list[int]] = {}
        for tp, offset in wanted - self._stamps.keys():
            missing.setdefault(tp, []).append(offset)
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        for round_offsets in _rounds(missing):
            probe.assign(list(round_offsets))
            for tp, offset in round_offsets.items():
                probe.seek(tp, offset)
            pending = set(round_offsets)
            while pending and asyncio.get_running_loop().time() < deadline:
                batches = await probe.getmany(*pending, timeout_ms=200, max_records=10)
                for tp, records in batches.items():
                    if records and tp in pending:
                        self._stamps[(tp, round_offsets[tp])] = records[0].timestamp / 1000
                        pending.discard(tp)
        probe.assign([])
        if len(self._stamps) > 50_000:  # forget positions no group is at any more
            self._stamps = {key: self._stamps[key] for key in wanted if key in self._stamps}
        now = time.time()
        return {key: max(0.0, now - self._stamps[key]) for key in wanted if key in self._stamps}

    async def close(self) -> None:
        clients = [c for c in (self._probe, *self._groups.values()) if c is not None]
        self._probe, self._groups = None, {}
        for client in clients:
            try:
                await asyncio.wait_for(client.stop(), self.timeout_s)
            except (KafkaError, TimeoutError, OSError) as exc:
                logger.warning("lag reader client did not stop cleanly: %s", exc)
        await self._close_admin()

    async def _close_admin(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            try:
                await asyncio.wait_for(admin.close(), self.timeout_s)
            except (KafkaError, TimeoutError, OSError) as exc:
                logger.warning("lag reader admin did not stop cleanly: %s", exc)


Position = tuple[TopicPartition, int]


def _position(lag: PartitionLag, starts: Mapping[TopicPartition, int]) -> Position:
    """Where the group reads next in the partition (its start when it never committed)."""
    return lag.tp, lag.committed if lag.committed is not None else starts[lag.tp]


def _rounds(offsets: Mapping[TopicPartition, list[int]]) -> list[dict[TopicPartition, int]]:
    """Split (partition, offset) pairs so that each round seeks a partition once."""
    rounds: list[dict[TopicPartition, int]] = []
    for tp, values in offsets.items():
        for i, offset in enumerate(sorted(set(values))):
            while len(rounds) <= i:
                rounds.append({})
            rounds[i][tp] = offset
    return rounds


def parse_metrics(service: str, url: str, text: str) -> ServiceHealthRead:
    """The pipeline figures in one service's Prometheus exposition text."""
    backlog: float | None = None
    oldest: float | None = None
    dead: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "citypass_outbox_backlog_events":
                backlog = (backlog or 0.0) + sample.value
            elif sample.name == "citypass_outbox_oldest_age_seconds":
                oldest = max(oldest or 0.0, sample.value)
            elif sample.name == "citypass_consumer_dead_letters_total":
                dead = (dead or 0.0) + sample.value
    return ServiceHealthRead(
        service=service,
        url=url,
        up=True,
        outbox_backlog=backlog,
        outbox_oldest_age_seconds=oldest,
        dead_letters=dead,
    )


async def scrape(client: httpx.AsyncClient, service: str, url: str) -> ServiceHealthRead:
    try:
        response = await client.get(url)
        response.raise_for_status()
        return parse_metrics(service, url, response.text)
    except (httpx.HTTPError, ValueError) as exc:
        return ServiceHealthRead(service=service, url=url, up=False, error=describe_failure(exc))


def export(lags: list[PartitionLag], dead_letters: int | None) -> None:
    LAG_RECORDS.clear()
    LAG_SECONDS.clear()
    for lag in lags:
        labels = (lag.group, lag.tp.topic, str(lag.tp.partition))
        LAG_RECORDS.labels(*labels).set(lag.lag)
        LAG_SECONDS.labels(*labels).set(lag.lag_seconds)
    if dead_letters is not None:
        DEAD_LETTER_RECORDS.set(dead_letters)


def snapshot(
    lags: list[PartitionLag],
    services: list[ServiceHealthRead],
    dead_letters: int | None,
    kafka_error: str | None,
) -> PipelineRead:
    groups: dict[str, list[PartitionLag]] = {}
    for lag in lags:
        groups.setdefault(lag.group, []).append(lag)
    return PipelineRead(
        checked_at=datetime.now(UTC),
        kafka_error=kafka_error,
        groups=[
            GroupLagRead(
                group=group,
                lag=sum(p.lag for p in parts),
                lag_seconds=max((p.lag_seconds for p in parts), default=0.0),
                partitions=len(parts),
            )
            for group, parts in sorted(groups.items())
        ],
        partitions=[
            PartitionLagRead(
                group=lag.group,
                topic=lag.tp.topic,
                partition=lag.tp.partition,
                committed=lag.committed,
                end=lag.end,
                lag=lag.lag,
                lag_seconds=round(lag.lag_seconds, 3),
            )
            for lag in lags
        ],
        services=services,
        dead_letter_records=dead_letters,
    )
