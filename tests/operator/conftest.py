"""The operator console against the real servers.

Each test module gets one operator process-in-a-task (uvicorn on a free port, workers running)
with its own Redis database (flushed) and its own consumer group, and publishes real events
on the real Kafka topics. A consumer group needs ~5 s to join on the local broker, which is why
the app is shared by the tests of a module; tests use their own stations, gates and tickets.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis

from citypass.servers import LocalServers, free_port
from services.operator import service
from services.operator.app import build_app
from services.operator.projection import TOPICS
from services.operator.schemas import Role
from services.operator.settings import OperatorSettings
from services.validation import events as validation_events
from shared import redis as redis_kit
from shared.events import Event
from shared.fares.feed import HANOI
from shared.kafka import Publisher
from tests.support import group_lags

OPERATOR_REDIS_DB = 3  # other services' tests use database 0 of the same Valkey
# The browser test's own validation service: its issuer key set must not replace the one the
# validation tests configured in database 0 (each service instance owns its configured keys).
BROWSER_VALIDATION_REDIS_DB = 4
ADMIN_PASSWORD = "admin-test-password"
VIEWER_PASSWORD = "viewer-test-password"


def operator_settings_for(servers: LocalServers, **changes: Any) -> OperatorSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "redis_url": f"redis://127.0.0.1:{servers.redis_port}/{OPERATOR_REDIS_DB}",
        "kafka_bootstrap_servers": servers.kafka_bootstrap,
        "consumer_group": f"operator-test-{uuid.uuid4().hex[:12]}",
        "metrics_urls": {},
        "gates_url": None,  # nothing listens on the `make run` ports in tests
        "ticketing_url": None,
        "network_feed": HANOI,
        "lots_url": None,
        "inventory_poll_interval": timedelta(seconds=1),
        "pipeline_poll_interval": timedelta(seconds=1),
        "gate_check_interval": timedelta(hours=1),
        "summary_interval": timedelta(milliseconds=200),
    }
    values.update(changes)
    return OperatorSettings(**values)


@asynccontextmanager
async def serve(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """Run `app` (lifespan and workers included) under uvicorn in this event loop."""
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        ws="none",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        assert not task.done(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@dataclass
class Console:
    """A running operator app and an HTTP client for it."""

    app: FastAPI
    url: str
    http: httpx.AsyncClient
    settings: OperatorSettings
    admin: dict[str, str]
    viewer: dict[str, str]


@asynccontextmanager
async def running_console(
    settings: OperatorSettings, port: int | None = None
) -> AsyncIterator[Console]:
    app = build_app(settings)
    async with serve(app, port) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield Console(
            app,
            url,
            http,
            settings,
            await login(http, "admin", ADMIN_PASSWORD),
            await login(http, "viewer", VIEWER_PASSWORD),
        )


async def login(http: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await http.post("/v1/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="module")
async def operator_redis(servers: LocalServers) -> AsyncIterator[Redis]:
    redis = redis_kit.connect(f"redis://127.0.0.1:{servers.redis_port}/{OPERATOR_REDIS_DB}")
    await redis.flushdb()
    await service.create_operator(redis, "admin", ADMIN_PASSWORD, Role.admin)
    await service.create_operator(redis, "viewer", VIEWER_PASSWORD, Role.viewer)
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
async def console(servers: LocalServers, operator_redis: Redis) -> AsyncIterator[Console]:
    async with running_console(operator_settings_for(servers)) as running:
        yield running


@pytest.fixture(scope="module")
async def publisher(servers: LocalServers) -> AsyncIterator[Publisher]:
    kafka = Publisher(servers.kafka_bootstrap)
    try:
        yield kafka
    finally:
        await kafka.close()


async def sse(
    response: httpx.Response,
) -> AsyncIterator[tuple[str, str | None, dict[str, Any]]]:
    """Server-sent events of a streaming response: (event, id, JSON data)."""
    name, event_id = "message", None
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield name, event_id, json.loads("\n".join(data))
            name, event_id, data = "message", None, []
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("id:"):
            event_id = line.removeprefix("id:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout_s: float = 60.0, interval_s: float = 0.05
) -> Any:
    """Poll `check` until it answers something truthy; fail with its last answer."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s; last answer: {last!r}")


async def caught_up(bootstrap: str, group: str, topics: Sequence[str] = TOPICS) -> bool:
    """The group committed offsets up to the end of every partition of `topics` (False when the
    broker did not answer in time)."""
    lags = await group_lags(bootstrap, group, topics)
    return lags is not None and sum(lag.lag for lag in lags) == 0  # uncommitted: from the start


def validation_event(
    *,
    gate_id: str = "2A-05-EN",
    station: str | None = "2A-05",
    accepted: bool = True,
    reason: str | None = None,
    ticket_id: str | None = None,
    decided_at: float | None = None,
    action: str = "entry",
) -> Event:
    """A gate decision in the shape services/validation publishes (see `Validator._decide`),
    built with validation's own event constructor."""
    validation_id = str(uuid.uuid4())
    at = decided_at if decided_at is not None else time.time()
    line = station.split("-")[0] if station else None
    data: dict[str, Any] = {
        "validation_id": validation_id,
        "decision": "accept" if accepted else "reject",
        "reason": "ok" if accepted else (reason or "replayed"),
        "reason_detail": None,
        "action": action if accepted else "none",
        "message_vi": "Mời qua" if accepted else "Mã QR đã được sử dụng",
        "message_en": "Welcome" if accepted else "QR code already used",
        "ticket_id": ticket_id or str(uuid.uuid4()),
        "product": "METRO-SINGLE",
        "remaining_rides": 0,
        "fare": None,
        "balance": None,
        "gate_id": gate_id,
        "decided_at": validation_events.iso(at),
        "station": station,
        "line": line,
        "route": None,
        "kind": "single",
        "rider_category": "regular",
        "wallet_account_id": None,
        "qr_at": validation_events.iso(at - 2),
        "qr_counter": 1,
        "scanned_at": validation_events.iso(at),
        "entry": None,
        "offline": False,
    }
    return validation_events.validation(data, accepted=accepted)
