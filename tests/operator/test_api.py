"""The operator API: sessions and roles, the live stream and its tickets, the event search and
pipeline health, against a running console."""

from __future__ import annotations

import asyncio
import random
import string
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from citypass.servers import LocalServers, free_port
from services.operator import service
from services.operator.projection import TOPICS
from services.operator.repository import seen_key
from services.operator.schemas import Role
from services.parking import events as parking_events
from shared.events import SESSION_OPENED
from shared.kafka import Publisher
from tests.operator.conftest import (
    Console,
    eventually,
    operator_settings_for,
    running_console,
    sse,
    validation_event,
)

API = [
    ("GET", "/v1/me"),
    ("POST", "/v1/stream-tickets"),
    ("GET", "/v1/stream"),
    ("GET", "/v1/dashboard"),
    ("GET", "/v1/events"),
    ("GET", "/v1/alerts"),
    ("POST", "/v1/alerts/0193b2a4-7c1e-7000-8000-00000000a1e7/ack"),
    ("GET", "/v1/pipeline"),
]


@pytest.fixture(scope="module")
async def console(servers: LocalServers, operator_redis: Redis) -> AsyncIterator[Console]:
    """Pipeline health scrapes this very console's /metrics, and a port nobody listens on."""
    port = free_port()
    group = f"operator-api-{uuid.uuid4().hex[:8]}"
    settings = operator_settings_for(
        servers,
        consumer_group=group,
        lag_groups={group: list(TOPICS), "validation-fares": ["transit.validations"]},
        metrics_urls={
            "operator": f"http://127.0.0.1:{port}/metrics",
            "ticketing": f"http://127.0.0.1:{free_port()}/metrics",
        },
    )
    async with running_console(settings, port) as running:
        yield running


async def ticket(console: Console) -> str:
    response = await console.http.post("/v1/stream-tickets", headers=console.viewer)
    assert response.status_code == 201
    value: str = response.json()["ticket"]
    return value


class TestAuth:
    @pytest.mark.parametrize(("method", "path"), API, ids=[f"{m} {p}" for m, p in API])
    async def test_every_api_needs_a_session(
        self, console: Console, method: str, path: str
    ) -> None:
        missing = await console.http.request(method, path)
        forged = await console.http.request(
            method, path, headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."}
        )
        assert missing.status_code == 401
        assert forged.status_code == 401
        assert forged.headers["content-type"] == "application/problem+json"

    async def test_a_viewer_reads_but_only_an_admin_acknowledges(self, console: Console) -> None:
        alert = f"/v1/alerts/{uuid.uuid4()}/ack"
        assert (await console.http.get("/v1/dashboard", headers=console.viewer)).status_code == 200
        viewer = await console.http.post(alert, headers=console.viewer)
        admin = await console.http.post(alert, headers=console.admin)
        assert (viewer.status_code, viewer.json()["code"]) == (403, "admin_required")
        assert (admin.status_code, admin.json()["code"]) == (404, "alert_not_found")

    async def test_a_wrong_password_is_refused(self, console: Console) -> None:
        response = await console.http.post(
            "/v1/login", json={"username": "admin", "password": "not-the-password"}
        )
        assert (response.status_code, response.json()["code"]) == (401, "invalid_credentials")

    async def test_the_page_is_served_with_a_strict_content_policy(self, console: Console) -> None:
        page = await console.http.get("/")
        script = await console.http.get("/static/app.js")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert script.status_code == 200
        assert "EventSource" in script.text
        assert (await console.http.get("/static/../settings.py")).status_code == 404


async def attempt(console: Console, username: str, password: str, address: str) -> httpx.Response:
    """A login from `address`: uvicorn takes `X-Forwarded-For` from a trusted proxy, and the
    test client connects from 127.0.0.1, which it trusts by default."""
    return await console.http.post(
        "/v1/login",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": address},
    )


def address() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


async def new_operator(redis: Redis) -> tuple[str, str]:
    username, password = f"op-{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    await service.create_operator(redis, username, password, Role.viewer)
    return username, password


class TestLoginThrottle:
    async def test_a_user_name_is_refused_after_five_wrong_passwords(
        self, console: Console, operator_redis: Redis
    ) -> None:
        username, password = await new_operator(operator_redis)
        wrong = [await attempt(console, username, "guess", address()) for _ in range(5)]
        refused = await attempt(console, username, "guess", address())
        right = await attempt(console, username, password, address())
        assert [r.status_code for r in wrong] == [401] * 5
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "too_many_login_failures"
        assert 0 < int(refused.headers["retry-after"]) <= 15 * 60
        assert (right.status_code, right.json()["code"]) == (429, "too_many_login_failures")
        other, other_password = await new_operator(operator_redis)
        assert (await attempt(console, other, other_password, address())).status_code == 200

    async def test_a_client_address_is_refused_after_twenty_wrong_passwords(
        self, console: Console, operator_redis: Redis
    ) -> None:
        username, password = await new_operator(operator_redis)
        guesser = address()
        wrong = [
            await attempt(console, f"nobody-{n}-{uuid.uuid4().hex[:6]}", "guess", guesser)
            for n in range(20)
        ]
        refused = await attempt(console, username, password, guesser)
        assert [r.status_code for r in wrong] == [401] * 20
        assert (refused.status_code, refused.json()["code"]) == (429, "too_many_login_failures")
        assert int(refused.headers["retry-after"]) > 0
        assert (await attempt(console, username, password, address())).status_code == 200

    async def test_a_right_password_clears_its_user_names_failures(
        self, console: Console, operator_redis: Redis
    ) -> None:
        username, password = await new_operator(operator_redis)
        before = [await attempt(console, username, "guess", address()) for _ in range(4)]
        right = await attempt(console, username, password, address())
        after = [await attempt(console, username, "guess", address()) for _ in range(5)]
        assert [r.status_code for r in [*before, right, *after]] == [401] * 4 + [200] + [401] * 5

    async def test_the_console_answers_while_passwords_are_checked(self, console: Console) -> None:
        """Argon2id runs off the event loop: while eight wrong logins are being checked (each
        from its own name and address, under every limit), other requests keep being answered.
        On the event loop each check held every other request up: at most one or two got
        through between two checks."""
        flood = [
            asyncio.create_task(
                attempt(console, f"nobody-{uuid.uuid4().hex[:6]}", "guess", address())
            )
            for _ in range(8)
        ]
        await asyncio.sleep(0.01)
        answered = 0
        while not all(task.done() for task in flood):
            assert (await console.http.get("/v1/me", headers=console.viewer)).status_code == 200
            answered += 1
        results = await asyncio.gather(*flood)
        assert [r.status_code for r in results] == [401] * 8
        assert answered >= 4 * len(flood), f"{answered} requests answered during 8 checks"


class TestStream:
    async def test_a_ticket_opens_one_stream_only(self, console: Console) -> None:
        once = await ticket(console)
        async with console.http.stream("GET", "/v1/stream", params={"ticket": once}) as first:
            assert first.status_code == 200
            assert first.headers["content-type"].startswith("text/event-stream")
            name, _, summary = await asyncio.wait_for(anext(aiter(sse(first))), 5)
            assert name == "summary"
            assert "stations" in summary
        again = await console.http.get("/v1/stream", params={"ticket": once})
        assert (again.status_code, again.json()["code"]) == (401, "invalid_stream_ticket")

    async def test_new_events_arrive_live_and_a_reconnect_resumes_after_the_last_one(
        self, console: Console, publisher: Publisher
    ) -> None:
        gate = f"2A-09-{uuid.uuid4().hex[:4].upper()}"
        first = validation_event(station="2A-09", gate_id=gate)
        second = validation_event(station="2A-09", gate_id=gate)

        async def until(response: httpx.Response, event_id: str) -> tuple[str | None, list[str]]:
            seen: list[str] = []
            async for name, position, data in sse(response):
                if name == "tail":
                    seen.append(data["id"])
                    if data["id"] == event_id:
                        return position, seen
            raise AssertionError("stream ended")

        params = {"ticket": await ticket(console)}
        async with console.http.stream("GET", "/v1/stream", params=params) as live:
            await publisher.publish("transit.validations", str(first.data["ticket_id"]), first)
            position, _ = await asyncio.wait_for(until(live, first.id), 60)
        assert position is not None

        await publisher.publish("transit.validations", str(second.data["ticket_id"]), second)
        params = {"ticket": await ticket(console), "last_event_id": position}
        async with console.http.stream("GET", "/v1/stream", params=params) as resumed:
            _, seen = await asyncio.wait_for(until(resumed, second.id), 60)
        assert first.id not in seen

    async def test_a_bearer_token_also_opens_the_stream(self, console: Console) -> None:
        async with console.http.stream("GET", "/v1/stream", headers=console.viewer) as stream:
            assert stream.status_code == 200


class TestEventSearch:
    async def test_filters_by_ticket_gate_plate_and_type(
        self, console: Console, publisher: Publisher, operator_redis: Redis
    ) -> None:
        ticket_id = str(uuid.uuid4())
        gate = f"3-06-{uuid.uuid4().hex[:4].upper()}"
        # A series no other test uses: parking tests in the same worker publish real plates.
        series = "".join(random.choices(string.ascii_uppercase, k=2))
        plate = f"{random.randint(10, 99)}{series}-***.{random.randint(0, 99):02d}"
        mine = validation_event(station="3-06", gate_id=gate, ticket_id=ticket_id)
        other = validation_event(station="3-06", gate_id=gate)
        entered = parking_events.session_event(
            SESSION_OPENED,
            uuid.uuid4(),
            {"lot_id": "BD-02", "plate": plate, "vehicle_type": "motorbike"},
        )
        await publisher.publish("transit.validations", ticket_id, mine)
        await publisher.publish("transit.validations", str(other.data["ticket_id"]), other)
        await publisher.publish("parking.sessions", entered.subject, entered)

        async def search(**params: Any) -> list[str]:
            response = await console.http.get("/v1/events", params=params, headers=console.viewer)
            assert response.status_code == 200
            return [e["id"] for e in response.json()]

        async def all_applied() -> bool:
            keys = [seen_key(e.id) for e in (mine, other, entered)]
            return bool(await operator_redis.exists(*keys) == len(keys))

        await eventually(all_applied)
        assert await search(ticket=ticket_id[:8]) == [mine.id]
        assert set(await search(gate=gate.lower())) == {mine.id, other.id}
        assert await search(plate=plate.split("-")[0].lower(), type="parking") == [entered.id]
        assert entered.id not in await search(type="validation", limit=500)
        assert (
            await console.http.get("/v1/events?type=<b>", headers=console.viewer)
        ).status_code == 422


class TestPipeline:
    async def test_lag_per_group_and_partition_and_each_service_backlog(
        self, console: Console
    ) -> None:
        async def health() -> dict[str, Any] | None:
            body = (await console.http.get("/v1/pipeline", headers=console.viewer)).json()
            groups = {g["group"] for g in body["groups"]}
            ready = body["checked_at"] and console.settings.consumer_group in groups
            # The first check may run before uvicorn listens: the console's own scrape fails.
            up = {s["service"] for s in body["services"] if s["up"]}
            return body if ready and "operator" in up else None

        body = await eventually(health, timeout_s=60)
        assert body["kafka_error"] is None
        mine = [p for p in body["partitions"] if p["group"] == console.settings.consumer_group]
        assert {p["topic"] for p in mine} == set(TOPICS)
        assert len(mine) == 36  # every partition of the six topics it reads
        assert all(p["lag"] >= 0 and p["end"] >= 0 for p in mine)
        fares = [p for p in body["partitions"] if p["group"] == "validation-fares"]
        assert len(fares) == 12  # transit.validations' partitions, read or not
        services = {s["service"]: s for s in body["services"]}
        assert services["operator"]["up"] is True
        assert services["ticketing"]["up"] is False
        assert services["ticketing"]["error"]
        assert body["dead_letter_records"] is not None


class TestEventSearchBounds:
    @pytest.mark.parametrize("before", ["0-0", "00-00", "000-0"])
    async def test_a_cursor_before_the_first_position_finds_nothing(
        self, console: Console, before: str
    ) -> None:
        response = await console.http.get(
            "/v1/events", params={"before": before}, headers=console.viewer
        )
        assert response.status_code == 200
        assert response.json() == []


class TestInventory:
    async def test_an_unreadable_gate_or_lot_list_is_said_not_guessed(
        self, servers: LocalServers, operator_redis: Redis
    ) -> None:
        """Nothing listens where validation and parking should list gates and lots: the
        dashboard says the provisioned counts are unknown, and why, instead of showing only
        the gates and lots that reported as if they were all."""
        nowhere = f"http://127.0.0.1:{free_port()}"
        settings = operator_settings_for(
            servers, gates_url=f"{nowhere}/v1/gates", lots_url=f"{nowhere}/v1/lots"
        )
        async with running_console(settings) as running:

            async def read_failed() -> dict[str, Any] | None:
                board = (await running.http.get("/v1/dashboard", headers=running.viewer)).json()
                failed = board["gate_summary"]["list_error"] and board["lot_summary"]["list_error"]
                return board if failed else None

            board = await eventually(read_failed, timeout_s=30)
        assert board["gate_summary"]["provisioned"] is None
        assert board["gate_summary"]["listed_at"] is None
        assert nowhere in board["gate_summary"]["list_error"]
        assert board["lot_summary"]["provisioned"] is None
