"""No accepted validation without its event, whichever process dies and whenever.

The broker hangs (paused, not dead: connections stay open and nothing answers), gates keep
getting decisions, and the validation process is killed with SIGKILL at several points of the
hang. Another process starts, the broker resumes, and a plain consumer with no group counts
the events: every validation a gate heard "accept" for must be there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest

from citypass.servers import LocalServers, ManagedProcess, free_port, spawn
from services.validation import outbox, streams
from services.validation.app import build_app
from services.validation.service import Validator
from shared.fares.feed import HANOI
from shared.redis import connect
from tests.conftest import AppClient
from tests.support import ROOT, read_events, wait_ready, wait_until
from tests.validation.conftest import (
    ADMIN_TOKEN,
    Gate,
    issuer_config,
    make_ticket,
    provision_gate,
    scan,
    validation_body,
    validation_settings,
)

KILL_AFTER_S = (0.3, 2.0, 3.0)  # into the broker's hang
RELAY_TEST_REDIS_DB = 7  # only this test's relays read its streams
RIDERS = 16  # concurrent gates' requests


@pytest.fixture
def own_servers(servers: LocalServers, tmp_path: Path) -> Iterator[LocalServers]:
    """Redis and a broker of this test's own: the session's validation app relays the shared
    Redis's streams, and pausing the shared broker would stall other tests' consumers."""
    own = LocalServers(tmp_path, servers.postgres_port, free_port(), free_port())
    own.start_valkey()
    own.start_kafka()
    try:
        yield own
    finally:
        own.stop()


def _broker(servers: LocalServers) -> ManagedProcess:
    return next(m for m in servers.processes if m.name == "Kafka")


class Gates:
    """Validation processes started and killed one after the other on the same servers."""

    def __init__(self, servers: LocalServers, base_env: dict[str, str]) -> None:
        self.servers = servers
        self.base_env = base_env
        self.count = 0

    def start(self) -> tuple[ManagedProcess, str]:
        self.count += 1
        port = free_port()
        env = {
            **self.base_env,
            "VALIDATION_PORT": str(port),
            "VALIDATION_INSTANCE_ID": f"durable-{self.count}-{uuid.uuid4().hex[:6]}",
        }
        process = spawn(
            f"validation-durable-{self.count}",
            [sys.executable, "-m", "services.validation"],
            self.servers.log_dir / f"validation-durable-{self.count}.log",
            env=env,
            cwd=ROOT,
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, url)
        return process, url


async def _ride_until(
    client: httpx.AsyncClient, gate: Gate, deadline: float, accepted: set[str]
) -> None:
    """One gate's riders, one after another, until the deadline or the process dies."""
    while time.monotonic() < deadline:
        body = validation_body(gate, make_ticket().qr())
        try:
            answer = await client.post(
                "/v1/validations",
                content=body,
                headers=gate.headers("POST", "/v1/validations", body),
            )
        except httpx.HTTPError:
            return  # killed: the gate never heard an answer, so nobody was admitted
        if answer.status_code == 200 and answer.json()["decision"] == "accept":
            accepted.add(answer.json()["validation_id"])


@pytest.mark.fault
class TestProcessKilledWhileBrokerHangs:
    async def test_every_accepted_validation_has_its_event(
        self, own_servers: LocalServers, service_env: dict[str, str]
    ) -> None:
        env = {
            **os.environ,
            **service_env,
            "VALIDATION_REDIS_URL": own_servers.redis_url,
            "VALIDATION_KAFKA_BOOTSTRAP_SERVERS": own_servers.kafka_bootstrap,
            "VALIDATION_ADMIN_TOKEN": ADMIN_TOKEN,
            "VALIDATION_ISSUER_KEYS": orjson.dumps([issuer_config().model_dump()]).decode(),
            "VALIDATION_TICKETING_URL": "",
            "VALIDATION_NETWORK_FEED": str(HANOI),
            "VALIDATION_RUN_FARE_WORKER": "false",
            "VALIDATION_RELAY_STANDBY": "true",
            "VALIDATION_KAFKA_SEND_TIMEOUT_S": "2",
            "VALIDATION_RELAY_CLAIM_AFTER": "PT3S",
            "VALIDATION_LOG_LEVEL": "WARNING",
        }
        gates = Gates(own_servers, env)
        broker = _broker(own_servers).process
        accepted: set[str] = set()
        per_kill: list[int] = []
        for kill_after in KILL_AFTER_S:
            process, url = gates.start()
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                gate = await provision_gate(client, station="2A-06", direction="entry")
                before = len(accepted)
                os.kill(broker.pid, signal.SIGSTOP)
                try:
                    deadline = time.monotonic() + kill_after
                    riders = [
                        asyncio.create_task(_ride_until(client, gate, deadline + 5, accepted))
                        for _ in range(RIDERS)
                    ]
                    await asyncio.sleep(kill_after)
                    os.kill(process.process.pid, signal.SIGKILL)
                    await asyncio.gather(*riders)
                finally:
                    os.kill(broker.pid, signal.SIGCONT)
                process.process.wait(10)
                per_kill.append(len(accepted) - before)
        assert all(n > 0 for n in per_kill), f"no rider was admitted at some kill: {per_kill}"

        # A gates-only process stands by; with events waiting past relay_claim_after it takes
        # over and relays what the killed processes left in Redis.
        survivor, _ = gates.start()
        try:
            found = await read_events(
                own_servers.kafka_bootstrap,
                "transit.validations",
                lambda event: event.id in accepted,
                len(accepted),
                timeout_s=120,
            )
        finally:
            survivor.stop()
        delivered = {event.id for event, _ in found}
        assert delivered == accepted, (
            f"{len(accepted - delivered)} of {len(accepted)} accepted validations have no event "
            f"(admitted per kill: {per_kill})"
        )
        assert all(event.type.endswith("validation.accepted.v1") for event, _ in found)


class TestRelay:
    async def test_a_lost_group_is_created_again_and_nothing_waiting_is_skipped(
        self, http: httpx.AsyncClient, validator: Validator, servers: LocalServers
    ) -> None:
        redis = validator.redis
        for stream in streams.EVENT_STREAMS:
            await redis.xgroup_destroy(stream, outbox.GROUP)
        gate = await provision_gate(http, station="2A-07", direction="entry")

        decided = [await scan(http, gate, make_ticket().qr()) for _ in range(5)]

        ids = {d["validation_id"] for d in decided}
        found = await read_events(
            servers.kafka_bootstrap, "transit.validations", lambda e: e.id in ids, len(ids)
        )
        assert {event.id for event, _ in found} == ids

    async def test_an_entry_no_builder_reads_is_parked_not_dropped(
        self, http: httpx.AsyncClient, validator: Validator
    ) -> None:
        """A newer version's entry, read by this version's relay during a rolling upgrade."""
        redis = validator.redis
        stream = streams.EVENT_STREAMS[0]
        entry: dict[Any, Any] = {"k": "from-the-future", "c": "{}", "r": ""}
        entry_id = cast(bytes, await redis.xadd(stream, entry)).decode()

        async def parked() -> bool:
            copies = cast(
                list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(stream + "-unreadable")
            )
            return any(fields.get(b"k") == b"from-the-future" for _, fields in copies)

        await wait_until(parked, what="the entry parked")
        assert await redis.xrange(stream, entry_id, entry_id) == []

    async def test_consumers_of_gone_processes_with_nothing_pending_are_forgotten(
        self,
        http: httpx.AsyncClient,  # the app is running: its relay made the group
        validator: Validator,
    ) -> None:
        redis = validator.redis
        stream = streams.EVENT_STREAMS[1]
        gone = f"gone-{uuid.uuid4().hex[:8]}"
        await redis.xgroup_createconsumer(stream, outbox.GROUP, gone)

        def names(infos: list[dict[str, Any]]) -> set[str]:
            return {info["name"].decode() for info in infos}

        assert gone in names(await redis.xinfo_consumers(stream, outbox.GROUP))
        await streams.forget_gone_relays(redis, outbox.GROUP, "me", idle_ms=0)
        assert gone not in names(await redis.xinfo_consumers(stream, outbox.GROUP))

    async def test_a_relay_cut_off_from_kafka_lets_another_relay_its_entries(
        self, app_client: AppClient, servers: LocalServers, tmp_path: Path
    ) -> None:
        """A replica that reaches Redis but not Kafka: its entries must not stay with it."""
        redis_url = f"redis://127.0.0.1:{servers.redis_port}/{RELAY_TEST_REDIS_DB}"
        quick = {
            "redis_url": redis_url,
            "run_fare_worker": False,
            "relay_claim_after": timedelta(seconds=2),
            "relay_retry_interval": timedelta(milliseconds=200),
        }
        cut_off = validation_settings(
            tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", **quick
        )
        async with app_client(build_app(cut_off)) as http:
            gate = await provision_gate(http, station="2A-08", direction="entry")
            decided = [await scan(http, gate, make_ticket().qr()) for _ in range(10)]
            ids = {d["validation_id"] for d in decided}
            redis = connect(redis_url)
            try:

                async def held_by_the_cut_off_relay() -> bool:
                    pending = 0
                    for stream in streams.EVENT_STREAMS:
                        summary = await redis.xpending(stream, outbox.GROUP)
                        pending += int(summary["pending"])
                    return pending == len(ids)

                await wait_until(held_by_the_cut_off_relay, what="the cut-off relay to read them")
                async with app_client(build_app(validation_settings(tmp_path, **quick))):
                    found = await read_events(
                        servers.kafka_bootstrap,
                        "transit.validations",
                        lambda e: e.id in ids,
                        len(ids),
                        timeout_s=30,
                    )
            finally:
                await redis.flushdb()
                await redis.aclose()
        assert {event.id for event, _ in found} == ids
