"""The console's network comes from ticketing's versions (NetworkSync against a ticketing
double serving real feed zips): station names and the impossible-travel rule's distances are
the feed's, and a version with longer distances changes what is impossible."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from citypass.servers import LocalServers
from shared.kafka import Publisher
from tests.fares.support import edited
from tests.operator.conftest import (
    Console,
    eventually,
    operator_settings_for,
    running_console,
    serve,
    validation_event,
)
from tests.validation.conftest import PublishedVersions, hanoi_zip

VALIDATIONS = "transit.validations"
SWITCH = time.time() - 2 * 3600


@pytest.fixture
async def synced_console(
    servers: LocalServers, operator_redis: Redis, tmp_path: Path
) -> AsyncIterator[Console]:
    published = PublishedVersions()
    published.publish(datetime.fromtimestamp(0, UTC), hanoi_zip())
    # From SWITCH on 2A-12 (Yên Nghĩa) is 130 km down the line: 2A-01 → 2A-12 takes 3 h 15.
    longer = edited(tmp_path, "stop_times", "2A-12,12,13\n", "2A-12,12,130\n")
    published.publish(datetime.fromtimestamp(SWITCH, UTC), hanoi_zip(longer))
    ticketing = FastAPI()
    published.route(ticketing)
    async with serve(ticketing) as url:
        settings = operator_settings_for(
            servers, ticketing_url=url, network_feed=None, network_refresh=0.2
        )
        async with running_console(settings) as console:
            await eventually(_loaded(console))
            yield console


def _loaded(console: Console) -> Any:
    async def check() -> bool:
        return bool(console.app.state.network.at(time.time()))

    return check


async def alerts_of(console: Console, ticket: str) -> list[dict[str, Any]]:
    alerts = (await console.http.get("/v1/alerts", headers=console.viewer)).json()
    return [a for a in alerts if a.get("subject") == ticket or ticket in str(a)]


class TestFeedDistances:
    async def test_impossible_travel_uses_the_version_in_force(
        self, synced_console: Console, publisher: Publisher
    ) -> None:
        before, after = str(uuid.uuid4()), str(uuid.uuid4())
        for ticket, start in ((before, SWITCH - 4000), (after, SWITCH + 600)):
            # 50 minutes from 2A-01 to 2A-12: possible over 13 km, not over 130 km.
            entry = validation_event(
                ticket_id=ticket, station="2A-01", gate_id="2A-01-EN", decided_at=start
            )
            exit_ = validation_event(
                ticket_id=ticket,
                station="2A-12",
                gate_id="2A-12-EX",
                decided_at=start + 3000,
                action="exit",
            )
            for event in (entry, exit_):  # one partition: `before` is read first
                await publisher.publish(VALIDATIONS, after, event)
        ticket = after

        [alert] = await eventually(lambda: alerts_of(synced_console, ticket))
        board = await synced_console.http.get("/v1/dashboard", headers=synced_console.viewer)
        names = {s["place"]: s["name"] for s in board.json()["stations"]}

        assert alert["rule"] == "impossible_travel"
        assert alert["params"]["min_seconds"] == int(130 / 40 * 3600)  # the feed's distance
        assert names["2A-12"] == "Yên Nghĩa"
        assert await alerts_of(synced_console, before) == []  # by the version then in force
