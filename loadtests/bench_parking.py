"""Parking lane decisions benchmark: entries and exits at a fixed rate, as signed lane devices.

    python -m loadtests.bench_parking [--rate 200] [--seconds 20] [--parking-url URL
                                      --payments-url URL]

Without URLs it starts real PostgreSQL, Valkey and Kafka in a temporary directory, migrates
every schema (`shared.migrations.upgrade_all`) and runs payments and parking as real uvicorn
processes (`python -m services.<name>`). It provisions a lot with 4 entry and 4 exit lanes
(a signed lane terminal on each), registers 400 cars to vehicle wallets funded through VietQR
and the signed bank webhook, then fires decisions open-loop (a new request every 1/rate s,
whatever the previous ones are doing, so slow answers cannot hide behind a slow client):

- half the journeys are registered cars: the entry places a wallet hold in payments, the exit
  prices the stay and captures the hold (the rest released);
- half are unregistered motorbikes: the exit prices the stay and asks payments for a dynamic
  VietQR for the exact fee (the bank's payment itself is not part of a decision, so it is
  not measured).

Prints the latency of every decision as the lane sees it (signing → the whole answer read and
parsed; every answer is checked and counted by outcome): p50/p95/p99/max for entries, exits and
both; the target is p99 ≤ 50 ms at 200 decisions/s on a 2-core machine that also runs the
databases, both services and this load generator. Requests that would exceed 256 in flight are
not sent and counted as `shed` errors (a lane does not queue hundreds of cars), and each waits
at most 10 s, so an overload ends the run instead of stretching it.

The lanes' client is the kit's keep-alive HTTP/1.1 client (`LaneClient`): httpx cost ~3 ms
of CPU per decision on the cores the servers need. With its own stack, the run also prints the
CPU time per decision of this process and of each server (from /proc), and how busy the
machine was otherwise (other processes, CPU stolen by the hypervisor, the disk the WAL is
fsynced on): the figures to judge a change by on a machine other work shares.

The run also says in which seconds the hypervisor stole under 3 % of the CPU (in that second and
the one before: `quiet_seconds`) and the p99 of the decisions that started in them
(`quiet_p99_ms`, with at least 100 of them): a diagnostic of whether a missed target is the
code's or the machine's, never the verdict, which is on every decision of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import secrets
import statistics
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop

from loadtests.figures import StealTimeline, percentile
from loadtests.stack import bank_pays_topup, local_services
from services.payments.settings import PaymentsSettings
from shared.devicesigning import DeviceSigner
from shared.http import KeepAliveClient

LANES = 4
REGISTERED_CARS = 400
WALLET_FUNDS = 10_000_000
WARM_UP_S = 2.0
MAX_IN_FLIGHT = 256  # beyond this the lanes would queue in the client: counted as shed
REQUEST_TIMEOUT_S = 10.0
STAYS = (timedelta(minutes=25), timedelta(hours=1, minutes=40), timedelta(hours=3, minutes=10))


@dataclass(frozen=True, slots=True)
class Secrets:
    payments_token: str
    webhook_secret: str
    admin_token: str


@dataclass
class Tally:
    entries: list[float] = field(default_factory=list)
    exits: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (started, elapsed)
    outcomes: Counter[str] = field(default_factory=Counter)
    late_starts: int = 0
    shed: int = 0


CPU_OF = ("parking", "payments", "postgres", "valkey", "kafka")  # the servers this run started
_KIND = (  # how each shows in its command line
    (b"services.parking", "parking"),
    (b"services.payments", "payments"),
    (b"postgres", "postgres"),
    (b"valkey-server", "valkey"),
    (b"tansu", "kafka"),
)
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_MACHINE = ("machine", "steal", "disk_busy_s", "wall")  # not processes of this run


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process, by each kind of server it started (PostgreSQL
    with its backends, living or ended) and by the whole machine (`machine`), from /proc."""
    used = dict.fromkeys(("bench", *CPU_OF), 0.0)
    times = os.times()
    used["bench"] = times.user + times.system
    me = os.getpid()
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            stats[int(entry.name)] = stat[stat.rindex(")") + 2 :].split()
    children = {pid: fields for pid, fields in stats.items() if int(fields[1]) == me}
    for pid, fields in children.items():
        try:
            command = (Path("/proc") / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        name = next((kind for marker, kind in _KIND if marker in command), None)
        if name is None:
            continue
        family = [fields]
        if name == "postgres":
            family += [f for f in stats.values() if int(f[1]) == pid]
        for member in family:  # utime, stime, then the ended children's cutime, cstime
            used[name] += sum(int(value) for value in member[11:15]) / _TICKS_PER_S
    # user nice system idle iowait irq softirq steal: all but idle and iowait were busy
    cpu = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    used["machine"] = (sum(cpu) - cpu[3] - cpu[4] - cpu[7]) / _TICKS_PER_S
    used["steal"] = cpu[7] / _TICKS_PER_S  # the hypervisor ran something else on our cores
    # The busiest disk's time doing I/O (ms): commits wait for WAL fsyncs on it.
    used["disk_busy_s"] = (
        max(
            (int(line.split()[12]) for line in Path("/proc/diskstats").read_text().splitlines()),
            default=0,
        )
        / 1000
    )
    return used


@dataclass
class Lanes:
    lot_id: str
    entries: list[tuple[str, DeviceSigner]]
    exits: list[tuple[str, DeviceSigner]]


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.is_error:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.text}")
    body: dict[str, Any] = response.json()
    return body


async def _provision(parking: httpx.AsyncClient, admin: dict[str, str]) -> Lanes:
    lot_id = f"B{uuid.uuid4().hex[:6].upper()}"
    _ok(
        await parking.put(
            f"/v1/lots/{lot_id}",
            json={
                "name": "Benchmark lot",
                "district": "Ba Đình",
                "address": "Đường Độc Lập",
                "motorbike_capacity": 100_000,
                "car_capacity": 100_000,
            },
            headers=admin,
        )
    )
    lanes = Lanes(lot_id, [], [])
    for direction, label, bucket in (("entry", "IN", lanes.entries), ("exit", "OUT", lanes.exits)):
        for number in range(1, LANES + 1):
            lane_id = f"{lot_id}-{label}{number}"
            _ok(
                await parking.put(
                    f"/v1/lots/{lot_id}/lanes/{lane_id}",
                    json={"direction": direction},
                    headers=admin,
                )
            )
            device = _ok(
                await parking.post(
                    "/v1/devices",
                    json={
                        "device_id": f"bench-{lane_id.lower()}",
                        "kind": "lane_terminal",
                        "lot_id": lot_id,
                        "lane_id": lane_id,
                    },
                    headers=admin,
                )
            )
            bucket.append((lane_id, DeviceSigner(device["device_id"], device["secret"])))
    return lanes


async def _registered_car(
    parking: httpx.AsyncClient,
    payments: httpx.AsyncClient,
    admin: dict[str, str],
    keys: Secrets,
    number: int,
) -> str:
    plate = f"30K-{number // 100:03d}.{number % 100:02d}"
    for _ in range(5):  # 503: payments did not open the wallet in time; the API says retry
        registered = await parking.post(
            "/v1/vehicles",
            json={"plate": plate, "vehicle_type": "car", "owner_id": f"bench-{number}"},
            headers=admin,
        )
        if registered.status_code != 503:
            break
        await asyncio.sleep(1)
    vehicle = _ok(registered)
    topup = _ok(
        await payments.post(
            "/v1/topups",
            json={"account_id": vehicle["wallet_account_id"], "amount": WALLET_FUNDS},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
    )
    await bank_pays_topup(payments, topup["qr"], WALLET_FUNDS, keys.webhook_secret)
    return plate


@dataclass
class Journey:
    plate: str
    registered: bool
    stay: timedelta


class LaneClient:
    """What the lane terminals send: signed JSON POSTs over keep-alive HTTP/1.1 connections
    (shared.http.KeepAliveClient; httpx cost this process ~3 ms of CPU per decision, on the
    cores the servers need). One connection per request in flight, reused when idle."""

    def __init__(self, base_url: str) -> None:
        self.http = KeepAliveClient(
            base_url, timeout_s=REQUEST_TIMEOUT_S, max_connections=MAX_IN_FLIGHT
        )

    async def post(
        self, path: str, body: bytes, signer: DeviceSigner, key: str
    ) -> tuple[int, bytes]:
        headers = signer.headers("POST", path, body) | {"Idempotency-Key": key}
        # Not sent twice: a lane would sign its retry afresh (a nonce is used once).
        return await self.http.exchange(
            self.http.request("POST", path, body, headers), repeatable=False
        )

    async def close(self) -> None:
        await self.http.close()


class Workload:
    """Alternates entries of new journeys with exits of the oldest vehicles inside."""

    def __init__(self, lanes: Lanes, cars: list[str]) -> None:
        self.lanes = lanes
        self.free_cars = deque(cars)
        self.inside: deque[Journey] = deque()
        self.random = random.Random(20261122)
        self.tick = 0

    def next_request(self) -> tuple[str, str, DeviceSigner, dict[str, Any], Journey | None]:
        self.tick += 1
        now = datetime.now(UTC)
        exit_turn = self.tick % 2 == 0 and len(self.inside) > 50
        if exit_turn:
            journey = self.inside.popleft()
            lane_id, signer = self.random.choice(self.lanes.exits)
            body = self._event(lane_id, now, journey.plate)
            return "exit", "/v1/exits", signer, body, journey
        registered = self.free_cars and self.random.random() < 0.5
        if registered:
            plate = self.free_cars.popleft()
        else:
            digits = self.random.randrange(100_000)
            plate = f"29-B{1 + self.random.randrange(9)} {digits // 100:03d}.{digits % 100:02d}"
        journey = Journey(plate, bool(registered), self.random.choice(STAYS))
        lane_id, signer = self.random.choice(self.lanes.entries)
        self.inside.append(journey)
        body = self._event(lane_id, now - journey.stay, plate)
        return "entry", "/v1/entries", signer, body, None

    def _event(self, lane_id: str, at: datetime, plate: str) -> dict[str, Any]:
        return {
            "lot_id": self.lanes.lot_id,
            "lane_id": lane_id,
            "occurred_at": at.isoformat(),
            "plate_read": {"plate": plate, "confidence": 0.96},
        }

    def finished(self, journey: Journey | None) -> None:
        if journey is not None and journey.registered:
            self.free_cars.append(journey.plate)


async def _decide(
    lanes: LaneClient,
    workload: Workload,
    request: tuple[str, str, DeviceSigner, dict[str, Any], Journey | None],
    measured: bool,
    tally: Tally,
) -> None:
    """One decision, timed from signing to the whole answer read and parsed."""
    kind, path, signer, body, journey = request
    started = time.perf_counter()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            status, content = await lanes.post(path, orjson.dumps(body), signer, str(uuid.uuid4()))
        answer = orjson.loads(content)
        outcome = f"{kind} {status} {answer.get('reason') or answer.get('code')}"
    except (OSError, TimeoutError, orjson.JSONDecodeError, AttributeError) as error:
        outcome = f"{kind} {type(error).__name__}"
    elapsed = time.perf_counter() - started
    workload.finished(journey)
    if measured:
        (tally.entries if kind == "entry" else tally.exits).append(elapsed)
        tally.timeline.append((started, elapsed))
        tally.outcomes[outcome] += 1


async def _measure(
    parking_url: str, payments_url: str, keys: Secrets, rate: float, seconds: float
) -> dict[str, float]:
    admin = {"Authorization": f"Bearer {keys.admin_token}"}
    limits = httpx.Limits(
        max_connections=256, max_keepalive_connections=256, keepalive_expiry=4
    )  # under uvicorn's 5 s keep-alive, so a connection is never reused as it closes
    async with (
        httpx.AsyncClient(
            base_url=parking_url, limits=limits, timeout=REQUEST_TIMEOUT_S
        ) as parking,
        httpx.AsyncClient(
            base_url=payments_url,
            timeout=30,
            headers={"Authorization": f"Bearer {keys.payments_token}"},
        ) as payments,
    ):
        provisioned = await _provision(parking, admin)
        cars: list[str] = []
        for start in range(0, REGISTERED_CARS, 10):
            cars += await asyncio.gather(
                *(
                    _registered_car(parking, payments, admin, keys, number)
                    for number in range(start, min(start + 10, REGISTERED_CARS))
                )
            )
        workload = Workload(provisioned, cars)
        lanes = LaneClient(parking_url)
        tally = Tally()
        # Set-up left ~10^6 objects here: out of the collector's sight, a full collection in
        # the run stops costing this lane simulator 20-155 ms stalls that it would count as the
        # servers' latency (as the services do after their start-up).
        gc.freeze()
        print(f"firing {rate:g} decisions/s", file=sys.stderr, flush=True)
        steal = StealTimeline()
        sampling = asyncio.create_task(steal.run())
        tasks: set[asyncio.Task[None]] = set()
        interval = 1 / rate
        began = time.perf_counter()
        measure_from = began + WARM_UP_S
        stop_at = measure_from + seconds
        sent = 0
        cpu_from: dict[str, float] | None = None
        while (due := began + sent * interval) < stop_at:
            if cpu_from is None and due >= measure_from:
                cpu_from = _cpu_seconds() | {"wall": time.perf_counter()}
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.005:
                tally.late_starts += 1
            sent += 1
            if len(tasks) >= MAX_IN_FLIGHT:
                if due >= measure_from:
                    tally.shed += 1
                continue
            task = asyncio.create_task(
                _decide(lanes, workload, workload.next_request(), due >= measure_from, tally)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
        sampling.cancel()
        cpu_to = _cpu_seconds() | {"wall": time.perf_counter()}
        await lanes.close()
    both = sorted(tally.entries + tally.exits)
    entries, exits = sorted(tally.entries), sorted(tally.exits)
    errors = tally.shed + sum(
        count
        for outcome, count in tally.outcomes.items()
        if not outcome.split()[1].startswith("200")
    )
    result = {
        "rate_target": rate,
        "seconds": seconds,
        "decisions": float(len(both)),
        "decisions_per_s": len(both) / seconds,
        "errors": float(errors),
        "late_starts": float(tally.late_starts),
        "shed": float(tally.shed),
        "p50_ms": 1000 * percentile(both, 0.50),
        "p95_ms": 1000 * percentile(both, 0.95),
        "p99_ms": 1000 * percentile(both, 0.99),
        "max_ms": 1000 * (both[-1] if both else float("nan")),
        "mean_ms": 1000 * (statistics.fmean(both) if both else float("nan")),
        "entry_p50_ms": 1000 * percentile(entries, 0.50),
        "entry_p99_ms": 1000 * percentile(entries, 0.99),
        "exit_p50_ms": 1000 * percentile(exits, 0.50),
        "exit_p99_ms": 1000 * percentile(exits, 0.99),
    }
    quiet = steal.quiet_seconds(measure_from, int(seconds))
    in_quiet = sorted(
        elapsed for started, elapsed in tally.timeline if int(started - measure_from) in quiet
    )
    result["quiet_seconds"] = float(len(quiet))
    enough = len(in_quiet) >= 100
    result["quiet_p99_ms"] = 1000 * percentile(in_quiet, 0.99) if enough else float("nan")
    if cpu_from is not None and both:
        ours = 0.0
        for name, seconds_used in cpu_to.items():
            spent = seconds_used - cpu_from[name]
            if name not in _MACHINE and seconds_used > 0:
                result[f"{name}_cpu_ms_per_decision"] = 1000 * spent / len(both)
                ours += spent
        window = cpu_to["wall"] - cpu_from["wall"]
        machine = cpu_to["machine"] - cpu_from["machine"]
        result["stack_cpu_cores"] = ours / window  # this run: the bench and its servers
        result["other_cpu_cores"] = max(machine - ours, 0.0) / window  # whatever else ran
        result["steal_cpu_cores"] = (cpu_to["steal"] - cpu_from["steal"]) / window
        disk_busy = cpu_to["disk_busy_s"] - cpu_from["disk_busy_s"]
        result["disk_busy_percent"] = 100 * disk_busy / window
    for outcome, count in sorted(tally.outcomes.items()):
        result[f"outcome {outcome}"] = float(count)
    return result


async def run(
    parking_url: str | None = None,
    payments_url: str | None = None,
    rate: float = 200.0,
    seconds: float = 20.0,
) -> dict[str, float]:
    """Benchmark running services (tokens from PARKING_*/PAYMENTS_* settings), or a local
    stack started for the run when no URLs are given."""
    if parking_url is not None and payments_url is not None:
        from services.parking.settings import ParkingSettings

        payments_settings, parking_settings = PaymentsSettings(), ParkingSettings()
        keys = Secrets(
            payments_settings.service_token.get_secret_value(),
            payments_settings.bank_webhook_secret.get_secret_value(),
            parking_settings.admin_token.get_secret_value(),
        )
        return await _measure(parking_url, payments_url, keys, rate, seconds)
    keys = Secrets(*(secrets.token_urlsafe(24) for _ in range(3)))

    def settings(urls: Mapping[str, str]) -> dict[str, str]:
        return {
            "PAYMENTS_SERVICE_TOKEN": keys.payments_token,
            "PAYMENTS_BANK_WEBHOOK_SECRET": keys.webhook_secret,
            "PARKING_PAYMENTS_URL": urls["payments"],
            "PARKING_PAYMENTS_SERVICE_TOKEN": keys.payments_token,
            "PARKING_ADMIN_TOKEN": keys.admin_token,
            "PARKING_TOKEN_SECRET": secrets.token_urlsafe(24),
        }

    async with local_services(
        ["payments", "parking"], settings, workdir_prefix="bench-parking-"
    ) as urls:
        return await _measure(urls["parking"], urls["payments"], keys, rate, seconds)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parking-url", help="a running parking service (with --payments-url)")
    parser.add_argument("--payments-url", help="the payments service it uses")
    parser.add_argument("--rate", type=float, default=200.0, help="decisions per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    # uvloop, as the services run: the default loop cost this process ~0.3 ms per decision.
    result = uvloop.run(run(args.parking_url, args.payments_url, args.rate, args.seconds))
    print(
        f"{result['decisions_per_s']:.0f} decisions/s (target {args.rate:g}) over"
        f" {args.seconds:g} s: p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms,"
        f" p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms"
        f" (entries p99 {result['entry_p99_ms']:.1f} ms, exits p99 {result['exit_p99_ms']:.1f} ms);"
        f" {result['errors']:.0f} errors ({result['shed']:.0f} shed: over {MAX_IN_FLIGHT} in"
        f" flight), {result['late_starts']:.0f} late starts"
    )
    print(
        f"  seconds the hypervisor left whole: {result['quiet_seconds']:.0f} of {args.seconds:g};"
        f" p99 of the decisions started in them {result['quiet_p99_ms']:.1f} ms (a diagnostic)"
    )
    cpu = [
        f"{name.removesuffix('_cpu_ms_per_decision')} {value:.2f}"
        for name, value in result.items()
        if name.endswith("_cpu_ms_per_decision")
    ]
    if cpu:
        print(f"  CPU ms per decision: {', '.join(cpu)}")
        print(
            f"  CPU cores busy: this run {result['stack_cpu_cores']:.2f}, other work on the"
            f" machine {result['other_cpu_cores']:.2f}, stolen by the hypervisor"
            f" {result['steal_cpu_cores']:.2f} (of {os.cpu_count()}); disk busy"
            f" {result['disk_busy_percent']:.0f} % (commits wait for WAL fsyncs there);"
            f" load average {_load()}"
        )
    for name, value in result.items():
        if name.startswith("outcome "):
            print(f"  {name[8:]}: {value:.0f}")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
