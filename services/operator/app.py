"""Builds the operator service: live operations dashboard, alerts and pipeline health."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import orjson
from fastapi import FastAPI

from services.operator import endpoints, repository, service
from services.operator.live import Broadcaster
from services.operator.network import OperatorNetwork
from services.operator.settings import OperatorSettings
from services.operator.tasks import EventSink, InventoryWatch, PipelineMonitor
from shared.app import Runtime, create_app, supervised

DESCRIPTION = """\
The operations console of CityPass: sign-in with roles (`viewer`, `admin`), the live
dashboard at `/` (validations per station, rejection reasons, gates, parking occupancy,
revenue today, a live event tail, alerts), alerts raised from every event stream, and the
health of the event pipeline (consumer lag, outbox backlogs). Gates and lots are
listed from validation's and parking's own lists, so those that never reported show too.

Every API needs `Authorization: Bearer <access_token>` from `POST /v1/login`; acknowledging an
alert needs the `admin` role. Live updates: `POST /v1/stream-tickets`, then server-sent
events from `GET /v1/stream?ticket=…`.
"""


def build_app(settings: OperatorSettings | None = None) -> FastAPI:
    settings = settings or OperatorSettings()
    runtime = Runtime("operator", settings, uses_redis=True)
    redis = runtime.kv
    network = OperatorNetwork()
    sink = EventSink(redis, runtime.publisher, settings, network)
    monitor = PipelineMonitor(redis, settings)
    passwords = service.Passwords(settings.password_threads)

    async def summary() -> bytes:
        board = await service.dashboard(redis, settings, network, time.time())
        return orjson.dumps(board.model_dump(mode="json"))

    broadcaster = Broadcaster(
        redis,
        summary,
        summary_interval_s=settings.summary_interval.total_seconds(),
        summary_refresh_s=settings.summary_refresh.total_seconds(),
    )
    runtime.workers += [
        supervised("operator-consumer", sink.consumer.run),
        supervised("gate-watch", sink.watch_gates),
        supervised("pipeline-health", monitor.run),
        supervised("inventory-watch", InventoryWatch(redis, settings).run),
        supervised("live-stream", broadcaster.run),
    ]
    if settings.ticketing_url:
        interval_s = settings.network_refresh.total_seconds()
        follow = partial(network.follow, settings.ticketing_url, settings.currency, interval_s)
        runtime.workers.append(supervised("network-versions", follow))

    async def start() -> None:
        await repository.load_scripts(redis)
        if not settings.ticketing_url and settings.network_feed is not None:
            await asyncio.to_thread(network.local, settings.network_feed, settings.currency)

    async def stop() -> None:
        sink.stop()
        await monitor.close()
        passwords.close()

    runtime.on_stop.append(stop)
    app = create_app(
        runtime,
        endpoints.routers,
        title="CityPass operator console",
        description=DESCRIPTION,
        on_start=[start],
    )
    app.state.broadcaster = broadcaster
    app.state.network = network
    app.state.sink = sink
    app.state.monitor = monitor
    app.state.passwords = passwords
    return app
