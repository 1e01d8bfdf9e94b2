"""Topic creation: replicas as asked (docker-compose asks for 3), else one per broker that
answers, at most three. The local broker (Tansu) records the replication factor it is given
whatever its broker count, so both cases are visible on it."""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient

from citypass.servers import LocalServers
from shared.kafka import Topic, ensure_topics


async def _replicas(bootstrap: str, name: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([name])
    finally:
        await admin.close()
    return [len(partition["replicas"]) for partition in described["partitions"]]


class TestEnsureTopics:
    async def test_the_replication_factor_asked_for_is_the_one_created(
        self, servers: LocalServers
    ) -> None:
        name = f"test.replicated.{uuid.uuid4().hex[:8]}"

        await ensure_topics(servers.kafka_bootstrap, [Topic(name, 2, "x")], replication_factor=3)

        assert await _replicas(servers.kafka_bootstrap, name) == [3, 3]

    async def test_without_one_each_partition_gets_a_replica_per_broker(
        self, servers: LocalServers
    ) -> None:
        name = f"test.local.{uuid.uuid4().hex[:8]}"

        await ensure_topics(servers.kafka_bootstrap, [Topic(name, 2, "x")])

        assert await _replicas(servers.kafka_bootstrap, name) == [1, 1]  # the one local broker
