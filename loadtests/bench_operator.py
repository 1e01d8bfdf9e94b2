"""Operator console benchmark: how long from an event on Kafka to the operator's dashboard.

    python -m loadtests.bench_operator [--events 3000] [--rate 200]

Starts real Valkey and Kafka in a temporary directory and the operator service as
`python -m services.operator` (uvicorn), signs in, follows the live stream (`GET /v1/stream`,
server-sent events) and publishes gate validations on `transit.validations` at a steady rate,
in the shape the validation service publishes them. Each event's delay runs from the moment
it was handed to Kafka to the moment its line arrived on the stream, which happens after the
consumer applied it to the aggregates (one Redis script does both). Prints p50, p99 and max;
the target is p99 ≤ 1 s. Finally checks the dashboard counted every event exactly once.

    python -m loadtests.bench_operator --login-flood [--seconds 10] [--clients 4]

measures instead what a flood of wrong passwords does to the console's other users: four
clients send wrong logins as fast as they are answered while one operator reads the dashboard
(`GET /v1/dashboard`) five times a second; prints that request's p50/p95/max and how the
flood was answered (401 checked, 429 throttled). Each flooding client guesses `admin`'s
password from its own address (`X-Forwarded-For`, which uvicorn trusts from 127.0.0.1).
`--unthrottled` raises the login limits out of reach, so that every guess is checked: what
the bounded Argon2id pool alone does for the console.

The default rate, 200 validations/s, is about twice a weekday peak of the whole network
(~1 M bus and metro rides a day, a tenth of them in the peak hour: ~30/s, plus their fares,
parking and ledger events). One operator process handles one event at a time (the kit's
consumer); more throughput comes from more processes in the same group.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from citypass.servers import LocalServers, ManagedProcess, free_port, spawn
from loadtests.figures import percentile
from loadtests.stack import ROOT, wait_ready
from services.operator import service
from services.operator.schemas import Role
from services.validation import events as validation_events
from shared import redis as redis_kit
from shared.events import VALIDATIONS_TOPIC, Event
from shared.fares.feed import HANOI, read_feed
from shared.fares.lines import NetworkMap
from shared.kafka import Publisher, ensure_topics

BATCH_INTERVAL_S = 0.02

STATIONS = NetworkMap.of(read_feed(HANOI)).stations  # Hanoi's, as the console reads them


@dataclass(frozen=True, slots=True)
class Stack:
    bootstrap: str
    url: str
    token: str


def gate_validation(station: str, n: int) -> Event:
    """A gate's accepted entry, as services/validation publishes it."""
    now = time.time()
    data = {
        "validation_id": str(uuid.uuid4()),
        "decision": "accept",
        "reason": "ok",
        "reason_detail": None,
        "action": "entry",
        "message_vi": "Mời qua",
        "message_en": "Welcome",
        "ticket_id": str(uuid.uuid4()),
        "product": "METRO-DAY",
        "remaining_rides": None,
        "fare": None,
        "balance": None,
        "gate_id": f"{station}-EN",
        "decided_at": validation_events.iso(now),
        "station": station,
        "line": STATIONS[station].line,
        "route": None,
        "kind": "pass",
        "rider_category": "regular",
        "wallet_account_id": None,
        "qr_at": validation_events.iso(now - 3),
        "qr_counter": n,
        "scanned_at": validation_events.iso(now),
        "entry": None,
        "offline": False,
    }
    return validation_events.validation(data, accepted=True)


@contextlib.asynccontextmanager
async def local_stack(extra_env: dict[str, str] | None = None) -> AsyncIterator[Stack]:
    """Valkey, Kafka and the operator process, all fresh, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="citypass-bench-operator-") as tmp:
        servers = LocalServers(Path(tmp), free_port(), free_port(), free_port())
        servers.start_valkey()
        servers.start_kafka()
        operator: ManagedProcess | None = None
        try:
            await ensure_topics(servers.kafka_bootstrap)
            port = free_port()
            env = {
                **os.environ,
                "OPERATOR_ENVIRONMENT": "test",
                "OPERATOR_PORT": str(port),
                "OPERATOR_REDIS_URL": servers.redis_url,
                "OPERATOR_KAFKA_BOOTSTRAP_SERVERS": servers.kafka_bootstrap,
                "OPERATOR_METRICS_URLS": "{}",
                "OPERATOR_LOG_LEVEL": "WARNING",
                "OPERATOR_TICKETING_URL": "",
                "OPERATOR_NETWORK_FEED": str(HANOI),
                **(extra_env or {}),
            }
            password = secrets.token_urlsafe(16)
            redis = redis_kit.connect(servers.redis_url)
            try:
                await service.create_operator(redis, "bench", password, Role.viewer)
            finally:
                await redis.aclose()
            operator = spawn(
                "operator",
                [sys.executable, "-m", "services.operator"],
                servers.log_dir / "operator.log",
                env=env,
                cwd=ROOT,
            )
            url = f"http://127.0.0.1:{port}"
            token = await _sign_in(url, password, operator)
            yield Stack(servers.kafka_bootstrap, url, token)
        finally:
            if operator is not None:
                operator.stop()
            servers.stop()


async def _sign_in(url: str, password: str, operator: ManagedProcess) -> str:
    await wait_ready(url, operator)
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        response = await http.post("/v1/login", json={"username": "bench", "password": password})
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token


class Arrivals:
    """When each event's tail line arrived on the stream; wait for a set of them."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self._wanted: set[str] = set()
        self._complete = asyncio.Event()

    async def follow(self, response: httpx.Response) -> None:
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:") and name == "tail":
                entry: dict[str, Any] = orjson.loads(line.removeprefix("data:"))
                self.at.setdefault(entry["id"], time.perf_counter())
                self._wanted.discard(entry["id"])
                if not self._wanted:
                    self._complete.set()

    async def wait(self, ids: set[str], timeout_s: float) -> None:
        self._wanted = ids - self.at.keys()
        self._complete.clear()
        if self._wanted:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._complete.wait(), timeout_s)


async def measure(stack: Stack, events: int, rate: float) -> dict[str, float]:
    stations = sorted(STATIONS)
    sent: dict[str, float] = {}
    arrivals = Arrivals()
    publisher = Publisher(stack.bootstrap)
    headers = {"Authorization": f"Bearer {stack.token}"}
    async with (
        httpx.AsyncClient(base_url=stack.url, timeout=None, headers=headers) as http,
        http.stream("GET", "/v1/stream") as stream,
    ):
        follower = asyncio.create_task(arrivals.follow(stream))
        try:
            warm_up = gate_validation(stations[0], 0)  # the consumer group joins first
            await publisher.publish(VALIDATIONS_TOPIC, str(warm_up.data["ticket_id"]), warm_up)
            await arrivals.wait({warm_up.id}, 60)
            per_batch = max(1, round(rate * BATCH_INTERVAL_S))
            started = time.perf_counter()
            for first in range(0, events, per_batch):
                batch = [
                    gate_validation(stations[n % len(stations)], n)
                    for n in range(first, min(events, first + per_batch))
                ]
                at = time.perf_counter()
                await publisher.publish_many(
                    [
                        (VALIDATIONS_TOPIC, str(e.data["ticket_id"]), e.value(), e.headers())
                        for e in batch
                    ]
                )
                for event in batch:
                    sent[event.id] = at
                next_at = started + (first + per_batch) / rate
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            published_s = time.perf_counter() - started
            await arrivals.wait(set(sent), 30)
        finally:
            follower.cancel()
            await publisher.close()
        board = (await http.get("/v1/dashboard")).json()
    counted = board["today"]["accepted"] - 1  # without the warm-up event
    delays = sorted(arrivals.at[i] - sent[i] for i in sent if i in arrivals.at)
    return {
        "events": float(events),
        "rate_per_s": events / published_s,
        "arrived": float(len(delays)),
        "counted": float(counted),
        "p50_s": percentile(delays, 0.50),
        "p95_s": percentile(delays, 0.95),
        "p99_s": percentile(delays, 0.99),
        "max_s": delays[-1] if delays else float("nan"),
    }


async def run(events: int = 3000, rate: float = 200.0) -> dict[str, float]:
    """Event-to-dashboard delay of `events` validations published at `rate` per second."""
    async with local_stack() as stack:
        return await measure(stack, events, rate)


async def measure_login_flood(stack: Stack, seconds: float, clients: int) -> dict[str, float]:
    """p95 of a signed-in operator's dashboard reads while `clients` flood wrong logins."""
    answers: dict[int, int] = {}
    stop = asyncio.Event()

    async def flood(n: int) -> None:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            while not stop.is_set():
                response = await http.post(
                    "/v1/login",
                    json={"username": "admin", "password": "wrong-password"},
                    headers={"X-Forwarded-For": f"10.0.0.{n + 1}"},
                )
                answers[response.status_code] = answers.get(response.status_code, 0) + 1

    headers = {"Authorization": f"Bearer {stack.token}"}
    timings: list[float] = []
    async with httpx.AsyncClient(base_url=stack.url, timeout=30, headers=headers) as http:
        for _ in range(20):  # warm up before the flood
            (await http.get("/v1/dashboard")).raise_for_status()
        flooders = [asyncio.create_task(flood(n)) for n in range(clients)]
        deadline = time.perf_counter() + seconds
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                (await http.get("/v1/dashboard")).raise_for_status()
                timings.append(time.perf_counter() - started)
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await asyncio.gather(*flooders, return_exceptions=True)
    timings.sort()
    return {
        "requests": float(len(timings)),
        "p50_s": percentile(timings, 0.50),
        "p95_s": percentile(timings, 0.95),
        "max_s": timings[-1] if timings else float("nan"),
        "logins_401": float(answers.get(401, 0)),
        "logins_429": float(answers.get(429, 0)),
    }


async def run_login_flood(
    seconds: float = 10.0, clients: int = 4, *, unthrottled: bool = False
) -> dict[str, float]:
    out_of_reach = "1000000000"
    limits = (
        {
            "OPERATOR_LOGIN_FAILURE_LIMIT": out_of_reach,
            "OPERATOR_LOGIN_CLIENT_FAILURE_LIMIT": out_of_reach,
        }
        if unthrottled
        else {}
    )
    async with local_stack(limits) as stack:
        return await measure_login_flood(stack, seconds, clients)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--login-flood", action="store_true", help="see the module's doc")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--unthrottled", action="store_true", help="login limits out of reach")
    args = parser.parse_args()
    if args.login_flood:
        flood = asyncio.run(
            run_login_flood(args.seconds, args.clients, unthrottled=args.unthrottled)
        )
        print(
            f"GET /v1/dashboard during {args.clients} clients' wrong logins:"
            f" p50 {flood['p50_s'] * 1000:.1f} ms, p95 {flood['p95_s'] * 1000:.1f} ms,"
            f" max {flood['max_s'] * 1000:.1f} ms over {flood['requests']:.0f} requests;"
            f" logins answered 401 x{flood['logins_401']:.0f}, 429 x{flood['logins_429']:.0f}"
        )
        return 0
    result = asyncio.run(run(args.events, args.rate))
    print(
        f"{result['arrived']:.0f}/{result['events']:.0f} events on the dashboard stream at"
        f" {result['rate_per_s']:.0f}/s: p50 {result['p50_s'] * 1000:.0f} ms,"
        f" p95 {result['p95_s'] * 1000:.0f} ms, p99 {result['p99_s'] * 1000:.0f} ms,"
        f" max {result['max_s'] * 1000:.0f} ms; counted {result['counted']:.0f} once each"
    )
    ok = result["arrived"] == result["events"] == result["counted"] and result["p99_s"] <= 1.0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
