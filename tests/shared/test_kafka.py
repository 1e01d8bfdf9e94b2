"""The kit's publisher against the real local broker: batches land where `send()` would put
each record, in order per key, with their headers."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from citypass.servers import LocalServers
from shared.kafka import TOPICS, Publisher

PARTITIONS = {topic.name: topic.partitions for topic in TOPICS}


async def read_back(
    bootstrap: str, topics: list[str], run: str, expected: int
) -> list[tuple[str, int, bytes, bytes, list[tuple[str, bytes]]]]:
    """(topic, partition, key, value, headers) of this run's records, in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(
            [TopicPartition(t, p) for t in topics for p in range(PARTITIONS[t])]  # every one
        )
        await consumer.seek_to_beginning()
        found: list[tuple[str, int, bytes, bytes, list[tuple[str, bytes]]]] = []
        async with asyncio.timeout(30):
            while len(found) < expected:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        if record.key is not None and record.key.startswith(run.encode()):
                            headers = list(record.headers)
                            found.append(
                                (tp.topic, tp.partition, record.key, record.value, headers)
                            )
        return found
    finally:
        await consumer.stop()


async def test_records_land_on_the_key_partition_in_order_with_headers(
    servers: LocalServers,
) -> None:
    run = uuid.uuid4().hex[:8]
    keys = [f"{run}-{n}" for n in range(40)]
    big = b"x" * 2_000  # one key gets more than a 16 KB record batch: a second batch follows
    records = []
    for sequence in range(30):
        for key in keys:
            value = f"{key}|{sequence}|".encode() + (big if key == keys[0] else b"")
            headers = [("ce_id", f"{key}-{sequence}".encode())]
            records.append(("transit.validations", key, value, headers))
    records += [("ops.alerts", key, b"alert", []) for key in keys[:5]]
    publisher = Publisher(servers.kafka_bootstrap)
    try:
        await publisher.publish_many(records)
    finally:
        await publisher.close()

    found = await read_back(
        servers.kafka_bootstrap, ["transit.validations", "ops.alerts"], run, len(records)
    )

    assert len(found) == len(records)
    sequences: dict[tuple[str, bytes], list[int]] = defaultdict(list)
    for topic, partition, raw_key, value, headers in found:
        # What AIOKafkaProducer.send() and Java clients choose for this key.
        assert partition == (murmur2(raw_key) & 0x7FFFFFFF) % PARTITIONS[topic]
        if topic == "transit.validations":
            name, number, _padding = value.split(b"|")
            sequence = int(number)
            assert name == raw_key
            assert headers == [("ce_id", raw_key + f"-{sequence}".encode())]
            sequences[(topic, raw_key)].append(sequence)
    assert all(seen == list(range(30)) for seen in sequences.values())
    assert len(sequences) == len(keys)
