"""Validation hot-path benchmark: gate decisions at fixed offered rates, at saturation, offline.

    python -m loadtests.bench_validation [--seconds 8] [--rates 250,500,1000] [--profile FILE]
    python -m loadtests.bench_validation --url URL --admin-token T [--kafka HOST:PORT]

Without --url it starts real Valkey and Kafka in a temporary directory and the service as a
real uvicorn process (`python -m services.validation`; under cProfile with --profile). It loads
a fresh issuer key through the admin API, announces a pass product on Kafka, provisions
both-way metro gates, and sends signed `POST /v1/validations` with fresh dynamic QRs (every
tap is accepted: riders alternate entry and exit) over raw keep-alive HTTP/1.1 connections:

- fixed offered rates (open loop, latency counted from the scheduled send time): the server's
  own p50/p99 from its Prometheus histogram, the client's p99, and validations/s achieved;
- saturation (closed loop): validations/s, and `GET /healthz` served by the same process in
  the same run, the no-op baseline;
- the SDK's offline validator: decisions/s on one core (CPU time).

Targets on a 2-core machine: p99 ≤ 10 ms at 1,000 validations/s; saturated throughput ≥ 50 %
of the no-op endpoint; offline ≥ 3,000 decisions/s per core.

Diagnostics beside the verdicts, for a machine whose vCPUs the hypervisor shares: per offered
rate, the seconds in which (and in the second before which) it stole under 3 % of the CPU and
the client-side p99 of the requests due in them (`quiet_seconds`, `client_quiet_p99_ms`); for
saturation, the steal during the validation phase and during the no-op phase, whose ratio a
difference between the two distorts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import math
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from citypass.gate import OfflineValidator
from citypass.servers import LocalServers, ManagedProcess, free_port, spawn
from loadtests.figures import StealTimeline, cpu_times, percentile, steal_share
from loadtests.stack import wait_ready
from services.validation.memory import decode_public_key
from shared.devicesigning import DeviceSigner
from shared.events import TICKET_ISSUED, TICKETS_TOPIC, Event
from shared.fares.feed import HANOI
from shared.http import KeepAliveClient, KeepAliveConnection
from shared.kafka import Publisher
from shared.ticketcodec import (
    Credential,
    RiderCategory,
    SignedCredential,
    make_dynamic_qr,
    public_key_bytes,
    sign_credential,
)

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = "BENCH-PASS"
ROUTE = "/v1/validations"
GATES = 8
CONNECTIONS = 64


# Riders, gates and requests -----------------------------------------------------------------------


@dataclass
class Rider:
    device: Ed25519PrivateKey
    signed: SignedCredential
    ticket_id: str
    counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def qr(self, at: int) -> str:
        return make_dynamic_qr(self.signed, self.device, at=at, counter=next(self.counter))


def make_riders(count: int, kid: str, issuer: Ed25519PrivateKey) -> list[Rider]:
    now = int(time.time())
    riders = []
    for _ in range(count):
        device = Ed25519PrivateKey.generate()
        credential = Credential(
            kid=kid,
            ticket_id=uuid.uuid4(),
            product=PRODUCT,
            rider_category=RiderCategory.REGULAR,
            valid_from=now - 86_400,
            valid_until=now + 30 * 86_400,
            lines=("*",),
            device_public_key=public_key_bytes(device),
        )
        riders.append(Rider(device, sign_credential(credential, issuer), str(credential.ticket_id)))
    return riders


def validation_requests(
    count: int, riders: list[Rider], gates: list[DeviceSigner], http: KeepAliveClient
) -> list[bytes]:
    """`count` signed requests, each with a fresh QR; rider i taps every len(riders) requests."""
    now = int(time.time())
    scanned_at = datetime.now(UTC).isoformat()
    requests = []
    for index in range(count):
        rider = riders[index % len(riders)]
        gate = gates[index % len(gates)]
        body = orjson.dumps(
            {"qr": rider.qr(now), "gate_id": gate.device_id, "scanned_at": scanned_at}
        )
        requests.append(http.request("POST", ROUTE, body, gate.headers("POST", ROUTE, body)))
    return requests


@contextlib.asynccontextmanager
async def connections(host: str, port: int, count: int) -> AsyncIterator[list[KeepAliveConnection]]:
    """The load generator's own connections (the kit's lean client: it must cost less than
    the server it measures)."""
    opened = [await KeepAliveConnection.open(host, port) for _ in range(count)]
    try:
        yield opened
    finally:
        for connection in opened:
            connection.close()


@dataclass
class Phase:
    sent: int = 0
    started: float = 0.0  # perf_counter
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (due, latency), open loop
    statuses: Counter[int] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)


def _tally(phase: Phase, status: int, body: bytes) -> None:
    phase.statuses[status] += 1
    if status == 200 and body.startswith(b'{"validation_id"'):
        phase.decisions[orjson.loads(body)["reason"]] += 1


async def open_loop(
    host: str, port: int, requests: list[bytes], rate: float, concurrency: int
) -> Phase:
    """Send request i at t0 + i/rate; latency counts from that scheduled time."""
    phase = Phase()
    schedule = itertools.count()
    async with connections(host, port, concurrency) as opened:
        started = phase.started = time.perf_counter()

        async def worker(connection: KeepAliveConnection) -> None:
            while (index := next(schedule)) < len(requests):
                due = started + index / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                status, body = await connection.exchange(requests[index])
                latency = time.perf_counter() - due
                phase.latencies_s.append(latency)
                phase.timeline.append((due, latency))
                _tally(phase, status, body)

        await asyncio.gather(*(worker(c) for c in opened))
        phase.elapsed_s = time.perf_counter() - started
    phase.sent = len(requests)
    return phase


async def closed_loop(
    host: str, port: int, next_request: Callable[[], bytes | None], seconds: float, concurrency: int
) -> Phase:
    """Each connection sends its next request as soon as the previous answer arrives."""
    phase = Phase()
    async with connections(host, port, concurrency) as opened:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker(connection: KeepAliveConnection) -> None:
            while time.perf_counter() < deadline and (request := next_request()) is not None:
                sent = time.perf_counter()
                status, body = await connection.exchange(request)
                phase.latencies_s.append(time.perf_counter() - sent)
                _tally(phase, status, body)
                phase.sent += 1

        await asyncio.gather(*(worker(c) for c in opened))
        phase.elapsed_s = time.perf_counter() - started
    return phase


# The server's view: its Prometheus histogram ----------------------------------------------------


Buckets = dict[float, float]


def histogram(metrics: str, method: str, route: str) -> Buckets:
    buckets: Buckets = {}
    for family in text_string_to_metric_families(metrics):
        if family.name != "citypass_http_request_duration_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_bucket")
                and labels.get("method") == method
                and labels.get("route") == route
            ):
                buckets[float(labels["le"])] = sample.value
    return buckets


def cpu_seconds(metrics: str) -> float:
    """The service process's CPU time (prometheus_client's process collector)."""
    for family in text_string_to_metric_families(metrics):
        if family.name == "process_cpu_seconds":
            return float(family.samples[0].value)
    return math.nan


def quantile(before: Buckets, after: Buckets, q: float) -> float:
    """The q-quantile of what happened between two scrapes (linear within a bucket), seconds."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower_bound
            share = (rank - lower_count) / max(cumulative - lower_count, 1e-9)
            return lower_bound + share * (bound - lower_bound)
        lower_bound, lower_count = bound, cumulative
    return lower_bound


# The run ------------------------------------------------------------------------------------------


async def _setup(
    http: httpx.AsyncClient, admin: dict[str, str], kafka_bootstrap: str | None
) -> tuple[str, Ed25519PrivateKey, list[DeviceSigner]]:
    issuer = Ed25519PrivateKey.generate()
    kid = f"bn{uuid.uuid4().hex[:3]}"  # kid, product and lines share ~20 bytes of the QR
    public_key = base64.b64encode(public_key_bytes(issuer)).decode()
    loaded = await http.put(
        f"/v1/issuer-keys/{kid}", json={"public_key": public_key}, headers=admin
    )
    loaded.raise_for_status()
    gates = []
    for _ in range(GATES):
        gate_id = f"BENCH-{uuid.uuid4().hex[:8].upper()}"
        created = await http.post(
            "/v1/gates",
            json={"gate_id": gate_id, "station": "2A-06", "direction": "both"},
            headers=admin,
        )
        created.raise_for_status()
        gates.append(DeviceSigner(gate_id, created.json()["secret"]))
    if kafka_bootstrap:
        await _announce_pass(http, kafka_bootstrap, kid, issuer, gates[0])
    return kid, issuer, gates


async def _announce_pass(
    http: httpx.AsyncClient,
    kafka_bootstrap: str,
    kid: str,
    issuer: Ed25519PrivateKey,
    gate: DeviceSigner,
) -> None:
    """Ticketing sells one BENCH-PASS: the service learns the product is an unlimited pass."""
    [rider] = make_riders(1, kid, issuer)
    publisher = Publisher(kafka_bootstrap)
    try:
        event = Event(
            type=TICKET_ISSUED,
            source="/citypass/ticketing",
            subject=rider.ticket_id,
            data={"ticket_id": rider.ticket_id, "product_code": PRODUCT, "kind": "pass"},
        )
        await publisher.publish(TICKETS_TOPIC, rider.ticket_id, event)
    finally:
        await publisher.close()
    for _ in range(600):
        await asyncio.sleep(0.1)
        bundle = await http.get("/v1/gate-bundle", headers=gate.headers("GET", "/v1/gate-bundle"))
        if bundle.status_code == 200 and PRODUCT in _bundle_payload(bundle.json())["products"]:
            return
    raise RuntimeError("the service never learnt the BENCH-PASS product from Kafka")


def _bundle_payload(signed: dict[str, str]) -> dict[str, dict[str, object]]:
    payload: dict[str, dict[str, object]] = orjson.loads(
        base64.urlsafe_b64decode(signed["payload"] + "=" * (-len(signed["payload"]) % 4))
    )
    return payload


async def _offline_rate(
    http: httpx.AsyncClient, gate: DeviceSigner, riders: list[Rider], decisions: int
) -> float:
    key = (await http.get("/v1/gate-bundle/key")).json()
    signed = (
        await http.get("/v1/gate-bundle", headers=gate.headers("GET", "/v1/gate-bundle"))
    ).json()
    validator = OfflineValidator.from_signed(signed, decode_public_key(key["public_key"]))
    now = int(time.time())
    codes = [riders[i % len(riders)].qr(now) for i in range(decisions)]
    for code in codes[: len(riders)]:  # the gate has seen each credential once already
        validator.decide(code)
    timed = codes[len(riders) :]
    cpu = time.process_time()
    for code in timed:
        validator.decide(code)
    return len(timed) / (time.process_time() - cpu)


async def run(
    url: str,
    admin_token: str,
    kafka_bootstrap: str | None = None,
    *,
    rates: tuple[int, ...] = (250, 500, 1000),
    seconds: float = 8.0,
    saturation_s: float = 6.0,
    concurrency: int = CONNECTIONS,
    riders: int = 2_000,
    offline_decisions: int = 6_000,
) -> dict[str, float]:
    """Run every phase against a running service; figures in ms, per second and ratios."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    raw = KeepAliveClient(url)  # builds the requests the phases send
    admin = {"Authorization": f"Bearer {admin_token}"}
    figures: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        kid, issuer, gates = await _setup(http, admin, kafka_bootstrap)
        people = make_riders(riders, kid, issuer)
        warm = validation_requests(2 * riders, people, gates, raw)  # each credential once
        await closed_loop(host, port, _pop_from(warm), 60, 16)

        for rate in rates:
            requests = validation_requests(int(rate * seconds), people, gates, raw)
            before = histogram((await http.get("/metrics")).text, "POST", ROUTE)
            steal = StealTimeline()
            sampling = asyncio.create_task(steal.run())
            phase = await open_loop(host, port, requests, rate, concurrency)
            sampling.cancel()
            after = histogram((await http.get("/metrics")).text, "POST", ROUTE)
            figures[f"rate_{rate}_achieved_per_s"] = phase.sent / phase.elapsed_s
            figures[f"rate_{rate}_server_p50_ms"] = quantile(before, after, 0.50) * 1000
            figures[f"rate_{rate}_server_p95_ms"] = quantile(before, after, 0.95) * 1000
            figures[f"rate_{rate}_server_p99_ms"] = quantile(before, after, 0.99) * 1000
            client = sorted(phase.latencies_s)
            figures[f"rate_{rate}_client_p99_ms"] = 1000 * percentile(client, 0.99)
            figures[f"rate_{rate}_errors"] = float(phase.sent - phase.statuses[200])
            figures[f"rate_{rate}_accepted_share"] = phase.decisions["ok"] / max(1, phase.sent)
            quiet = steal.quiet_seconds(phase.started, int(seconds))
            in_quiet = sorted(
                latency for due, latency in phase.timeline if int(due - phase.started) in quiet
            )
            figures[f"rate_{rate}_quiet_seconds"] = float(len(quiet))
            figures[f"rate_{rate}_client_quiet_p99_ms"] = (
                1000 * percentile(in_quiet, 0.99) if len(in_quiet) >= 100 else math.nan
            )

        budget = validation_requests(int(3_000 * saturation_s), people, gates, raw)
        cpu_before = cpu_seconds((await http.get("/metrics")).text)
        machine_before = cpu_times()
        saturated = await closed_loop(host, port, _pop_from(budget), saturation_s, concurrency)
        machine_between = cpu_times()
        cpu_between = cpu_seconds((await http.get("/metrics")).text)
        noop = raw.request("GET", "/healthz")
        baseline = await closed_loop(host, port, lambda: noop, saturation_s, concurrency)
        machine_after = cpu_times()
        cpu_after = cpu_seconds((await http.get("/metrics")).text)
        # The ratio compares two phases: steal in one and not the other distorts it.
        figures["saturated_steal_share"] = steal_share(machine_before, machine_between)
        figures["noop_steal_share"] = steal_share(machine_between, machine_after)
        figures["saturated_validations_per_s"] = saturated.sent / saturated.elapsed_s
        figures["saturated_errors"] = float(saturated.sent - saturated.statuses[200])
        figures["noop_per_s"] = baseline.sent / baseline.elapsed_s
        # CPU the service spent per request: independent of what else the machine runs.
        figures["validation_cpu_ms"] = (cpu_between - cpu_before) * 1000 / saturated.sent
        figures["noop_cpu_ms"] = (cpu_after - cpu_between) * 1000 / baseline.sent
        figures["saturated_ratio_to_noop"] = (
            figures["saturated_validations_per_s"] / figures["noop_per_s"]
        )
        figures["offline_decisions_per_s_per_core"] = await _offline_rate(
            http, gates[0], people, offline_decisions
        )
    return figures


def _pop_from(requests: list[bytes]) -> Callable[[], bytes | None]:
    iterator = iter(requests)
    return lambda: next(iterator, None)


# Running it on this machine ---------------------------------------------------------------------


# uvicorn re-raises SIGTERM once it has shut down; exiting through SystemExit instead lets the
# profile be written.
PROFILED_SERVICE = """
import cProfile, signal, sys, time
from services.validation.settings import ValidationSettings
from shared.run import serve
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
profile = cProfile.Profile(time.process_time)
profile.enable()
try:
    serve("validation", ValidationSettings())
finally:
    profile.disable()
    profile.dump_stats(sys.argv[1])
"""


async def local_run(args: argparse.Namespace) -> dict[str, float]:
    """Valkey and Kafka in a temporary directory, the service as a real uvicorn process."""
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as workdir:
        root = Path(workdir)
        servers = LocalServers(root, free_port(), free_port(), free_port())
        process: ManagedProcess | None = None
        fare_worker: ManagedProcess | None = None
        try:
            servers.start_valkey()
            servers.start_kafka()
            port = free_port()
            token = f"bench-admin-{uuid.uuid4().hex}"
            env = {
                **os.environ,
                "VALIDATION_ENVIRONMENT": "test",
                "VALIDATION_REDIS_URL": servers.redis_url,
                "VALIDATION_KAFKA_BOOTSTRAP_SERVERS": servers.kafka_bootstrap,
                "VALIDATION_ADMIN_TOKEN": token,
                "VALIDATION_TICKETING_URL": "",
                "VALIDATION_NETWORK_FEED": str(HANOI),
                "VALIDATION_LOG_LEVEL": "WARNING",
            }
            gate_env = {
                **env,
                "VALIDATION_PORT": str(port),
                "VALIDATION_RUN_FARE_WORKER": str(args.fare_worker == "in-process").lower(),
                # As deployed: the gates' process relays events only when the other does not.
                "VALIDATION_RELAY_STANDBY": str(args.fare_worker == "separate").lower(),
            }
            argv = [sys.executable, "-m", "services.validation"]
            if args.fare_worker == "separate":  # as `make run` and docker-compose deploy it
                fares_port = free_port()
                fares_env = {**env, "VALIDATION_PORT": str(fares_port)}
                fares_env["VALIDATION_RUN_FARE_WORKER"] = "true"
                fare_worker = spawn(
                    "validation-fares", argv, root / "fares.log", env=fares_env, cwd=ROOT
                )
                await wait_ready(f"http://127.0.0.1:{fares_port}", fare_worker)
            if args.profile:
                argv = [sys.executable, "-c", PROFILED_SERVICE, args.profile]
            process = spawn("validation", argv, root / "validation.log", env=gate_env, cwd=ROOT)
            url = f"http://127.0.0.1:{port}"
            await wait_ready(url, process)
            return await run(
                url,
                token,
                servers.kafka_bootstrap,
                rates=args.rates,
                seconds=args.seconds,
                saturation_s=args.saturation_seconds,
            )
        finally:
            for managed in (process, fare_worker):
                if managed is not None:
                    managed.stop(timeout_s=30)
            servers.stop()


def report(figures: dict[str, float], rates: tuple[int, ...]) -> str:
    lines = [
        f"{'offered/s':>10} {'achieved/s':>11} {'server p50':>11} {'server p99':>11} "
        f"{'client p99':>11} {'errors':>7} {'accepted':>9}"
    ]
    for rate in rates:
        lines.append(
            f"{rate:>10} {figures[f'rate_{rate}_achieved_per_s']:>11.0f} "
            f"{figures[f'rate_{rate}_server_p50_ms']:>8.2f} ms "
            f"{figures[f'rate_{rate}_server_p99_ms']:>8.2f} ms "
            f"{figures[f'rate_{rate}_client_p99_ms']:>8.2f} ms "
            f"{figures[f'rate_{rate}_errors']:>7.0f} "
            f"{figures[f'rate_{rate}_accepted_share']:>8.1%}"
        )
    lines.append(
        "seconds the hypervisor left whole (client p99 in them, a diagnostic): "
        + ", ".join(
            f"{rate}/s {figures[f'rate_{rate}_quiet_seconds']:.0f}"
            f" ({figures[f'rate_{rate}_client_quiet_p99_ms']:.1f} ms)"
            for rate in rates
        )
    )
    lines.append(
        f"saturated: {figures['saturated_validations_per_s']:.0f} validations/s, "
        f"no-op GET /healthz {figures['noop_per_s']:.0f}/s, "
        f"ratio {figures['saturated_ratio_to_noop']:.0%} (target ≥ 50 %); CPU stolen"
        f" {figures['saturated_steal_share']:.0%} and {figures['noop_steal_share']:.0%}"
    )
    lines.append(
        f"service CPU per request: validation {figures['validation_cpu_ms']:.2f} ms, "
        f"no-op {figures['noop_cpu_ms']:.2f} ms (throughput ratio by CPU: "
        f"{figures['noop_cpu_ms'] / figures['validation_cpu_ms']:.0%})"
    )
    lines.append(
        f"offline validator: {figures['offline_decisions_per_s_per_core']:.0f} decisions/s "
        "per core (target ≥ 3,000)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running validation service (default: start one)")
    parser.add_argument("--admin-token", help="its admin token (with --url)")
    parser.add_argument("--kafka", help="its Kafka bootstrap, to announce the bench product")
    parser.add_argument("--seconds", type=float, default=8.0, help="per offered rate")
    parser.add_argument("--saturation-seconds", type=float, default=6.0)
    parser.add_argument(
        "--rates",
        type=lambda text: tuple(int(r) for r in text.split(",")),
        default=(250, 500, 1000),
        help="offered validations/s, comma-separated",
    )
    parser.add_argument("--profile", help="run the local service under cProfile, write here")
    parser.add_argument(
        "--fare-worker",
        choices=("separate", "in-process", "none"),
        default="separate",
        help="where the fare worker runs: its own process, as deployed (default), inside the "
        "gates' process, or not at all (VALIDATION_RUN_FARE_WORKER)",
    )
    args = parser.parse_args()
    if args.url:
        if not args.admin_token:
            parser.error("--url needs --admin-token")
        figures = asyncio.run(
            run(
                args.url,
                args.admin_token,
                args.kafka,
                rates=args.rates,
                seconds=args.seconds,
                saturation_s=args.saturation_seconds,
            )
        )
    else:
        figures = asyncio.run(local_run(args))
    print(report(figures, args.rates))


if __name__ == "__main__":
    main()
