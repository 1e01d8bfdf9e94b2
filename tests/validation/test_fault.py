"""With the broker away, gates keep getting decisions; every event arrives once it is back.

The broker is paused (SIGSTOP), not restarted: the local broker keeps topics in memory only, so
a restarted one has none until the platform recreates them. While clients and the harness
raced to create them, Tansu answered `UnknownError` to some writes, and 15 to 580 of 1,000
events it had acknowledged never appeared (none left in Redis; 2 runs in 5 this session, under
load). That race does not exist with a production broker, whose topics outlive a restart; it
is noted as not root-caused. The relay's side of a broker that refuses connections is
covered by tests/shared/test_outbox.py and the kill test in test_durability.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from citypass.servers import LocalServers, free_port
from services.validation import streams
from services.validation.app import build_app
from tests.conftest import AppClient
from tests.support import read_events, wait_until
from tests.validation.conftest import (
    make_ticket,
    provision_gate,
    scan,
    validation_body,
    validation_settings,
)

VALIDATIONS = 1_000
RIDERS = 50  # each taps in and out through one both-way gate, 20 times


@pytest.mark.fault
class TestBrokerDown:
    async def test_decisions_go_on_and_every_event_is_delivered_after_recovery(
        self, http: httpx.AsyncClient, app: FastAPI, servers: LocalServers
    ) -> None:
        redis = app.state.validator.redis
        gate = await provision_gate(http, station="3-06", direction="both")
        riders = [make_ticket() for _ in range(RIDERS)]

        async def ride(ticket_index: int) -> list[dict[str, object]]:
            ticket = riders[ticket_index]
            return [await scan(http, gate, ticket.qr()) for _ in range(VALIDATIONS // RIDERS)]

        async with broker_paused(servers):
            started = time.monotonic()
            decided = [
                d for batch in await asyncio.gather(*map(ride, range(RIDERS))) for d in batch
            ]
            elapsed = time.monotonic() - started
            # Every decision's event is already durable: it waits in Redis for the broker.
            assert await streams.event_backlog(redis) >= VALIDATIONS

        assert len(decided) == VALIDATIONS
        assert {d["decision"] for d in decided} == {"accept"}
        assert elapsed < 30, f"gates waited for the broker: {elapsed:.1f} s"
        ids = {str(d["validation_id"]) for d in decided}
        found = await read_events(
            servers.kafka_bootstrap,
            "transit.validations",
            lambda e: e.data.get("gate_id") == gate.gate_id,
            VALIDATIONS,
            timeout_s=90,
        )
        delivered = {event.id for event, _ in found}  # consumers deduplicate on the event id
        missing = ids - delivered
        assert not missing, (
            f"{len(missing)} of {len(ids)} events not in Kafka after 90 s; "
            f"{await _still_waiting(redis, missing)} of them still in the Redis streams"
        )
        await wait_until(
            lambda: _backlog_is_empty(redis), what="the outbox streams to empty", timeout_s=60
        )


@contextlib.asynccontextmanager
async def broker_paused(servers: LocalServers) -> AsyncIterator[None]:
    broker = next(m for m in servers.processes if m.name == "Kafka").process
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.pid, signal.SIGCONT)


async def _still_waiting(redis: Redis, validation_ids: set[str]) -> int:
    waiting = 0
    for stream in streams.EVENT_STREAMS:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(stream))
        for _, fields in entries:
            waiting += orjson.loads(fields[b"c"]).get("vid") in validation_ids
    return waiting


async def _backlog_is_empty(redis: Redis) -> bool:
    return await streams.event_backlog(redis) == 0


@pytest.mark.fault
class TestRedisDown:
    async def test_gate_is_told_to_decide_offline(
        self, app_client: AppClient, servers: LocalServers, tmp_path: Path
    ) -> None:
        own = LocalServers(tmp_path, servers.postgres_port, free_port(), servers.kafka_port)
        own.start_valkey()
        try:
            settings = validation_settings(tmp_path, redis_url=own.redis_url)
            async with app_client(build_app(settings)) as http:
                gate = await provision_gate(http, station="2A-08")
                assert (await scan(http, gate, make_ticket().qr()))["decision"] == "accept"
                own.stop()
                body = validation_body(gate, make_ticket().qr())
                response = await http.post(
                    "/v1/validations",
                    content=body,
                    headers=gate.headers("POST", "/v1/validations", body),
                )
        finally:
            own.stop()

        assert response.status_code == 503
        assert response.json()["code"] == "state_unavailable"
        assert response.headers["retry-after"] == "1"
