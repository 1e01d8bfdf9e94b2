"""Charges benchmark: concurrent clients post `POST /v1/charges` as fast as they can.

    python -m loadtests.bench_charges [--url URL] [--clients 16] [--seconds 10]

Without --url it starts real PostgreSQL, Valkey and Kafka in a temporary directory, migrates
the schemas and runs the service as `python -m services.payments` (uvicorn). Each
client owns a wallet topped up through VietQR and the signed bank webhook, keeps one
keep-alive connection, and sends a fresh Idempotency-Key per charge. Prints charges/s, p50 and
p99; the target on a 2-core machine is ≥ 500 charges/s with p99 ≤ 50 ms.

The load generator shares the machine with what it measures, so the charging clients speak
HTTP/1.1 over plain asyncio streams (about a tenth of httpx's CPU per request): a latency is
from the first byte sent to the last byte of the answer, and every answer's status is counted.
The service's own CPU per charge comes from its `process_cpu_seconds_total` metric.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import orjson
import uvloop

from loadtests.figures import percentile
from loadtests.stack import bank_pays_topup, local_services
from services.payments.settings import PaymentsSettings
from shared.http import KeepAliveClient

FARE = 8_000  # a Hanoi bus ride, VND
WALLET_FUNDS = 100_000_000  # the largest single top-up
WARM_UP_S = 1.0


@dataclass(frozen=True, slots=True)
class Credentials:
    service_token: str
    webhook_secret: str


@dataclass
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)


async def _funded_wallet(http: httpx.AsyncClient, credentials: Credentials) -> str:
    opened = await http.post(
        "/v1/accounts", json={"kind": "rider_wallet", "owner_id": f"bench-{uuid.uuid4().hex}"}
    )
    opened.raise_for_status()
    wallet_id: str = opened.json()["id"]
    topup = await http.post(
        "/v1/topups",
        json={"account_id": wallet_id, "amount": WALLET_FUNDS},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    topup.raise_for_status()
    await bank_pays_topup(http, topup.json()["qr"], WALLET_FUNDS, credentials.webhook_secret)
    return wallet_id


async def _client(
    payments_url: str,
    credentials: Credentials,
    wallet_id: str,
    measure_from: float,
    stop_at: float,
    tally: Tally,
) -> None:
    """One rider app: its own keep-alive connection, one charge at a time."""
    body = orjson.dumps({"account_id": wallet_id, "amount": FARE, "source": "transit"})
    http = KeepAliveClient(
        payments_url,
        headers={"Authorization": f"Bearer {credentials.service_token}"},
        timeout_s=30,
        max_connections=1,
    )
    try:
        while (started := time.perf_counter()) < stop_at:
            key = {"Idempotency-Key": str(uuid.uuid4())}
            status, _ = await http.exchange(http.request("POST", "/v1/charges", body, key))
            if started >= measure_from:
                tally.latencies_s.append(time.perf_counter() - started)
                tally.statuses[status] += 1
    finally:
        await http.close()


async def _cpu_seconds(http: httpx.AsyncClient) -> float:
    """The service process's CPU time so far (Prometheus' process collector)."""
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith("process_cpu_seconds_total "):
            return float(line.split()[1])
    return float("nan")


def _http(payments_url: str, credentials: Credentials, connections: int) -> httpx.AsyncClient:
    # One client per simulated caller: a shared pool costs httpx ~4x the CPU per request
    # with 16 callers, and the load generator shares the machine with what it measures.
    return httpx.AsyncClient(
        base_url=payments_url,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=30,
        headers={"Authorization": f"Bearer {credentials.service_token}"},
    )


async def _measure(
    payments_url: str, clients: int, seconds: float, credentials: Credentials
) -> dict[str, float]:
    async with _http(payments_url, credentials, connections=clients) as http:
        wallets = await asyncio.gather(*(_funded_wallet(http, credentials) for _ in range(clients)))
    tally = Tally()
    measure_from = time.perf_counter() + WARM_UP_S
    stop_at = measure_from + seconds
    async with _http(payments_url, credentials, connections=1) as http:

        async def cpu_in_window() -> float:
            await asyncio.sleep(measure_from - time.perf_counter())
            before = await _cpu_seconds(http)
            await asyncio.sleep(stop_at - time.perf_counter())
            return await _cpu_seconds(http) - before

        charging = asyncio.gather(
            *(
                _client(payments_url, credentials, wallet, measure_from, stop_at, tally)
                for wallet in wallets
            )
        )
        cpu_s = await cpu_in_window()
        await charging
        invariant = (await http.get("/v1/ledger/invariant")).json()
    ordered = sorted(tally.latencies_s)
    succeeded = tally.statuses[201]
    return {
        "clients": float(clients),
        "seconds": seconds,
        "charges": float(succeeded),
        "errors": float(sum(tally.statuses.values()) - succeeded),
        "charges_per_s": succeeded / seconds,
        "p50_ms": 1000 * percentile(ordered, 0.50),
        "p95_ms": 1000 * percentile(ordered, 0.95),
        "p99_ms": 1000 * percentile(ordered, 0.99),
        "max_ms": 1000 * (ordered[-1] if ordered else float("nan")),
        "mean_ms": 1000 * (statistics.fmean(ordered) if ordered else float("nan")),
        # The service's CPU per answer in the window (its process only, not PostgreSQL's).
        "server_cpu_ms_per_charge": 1000 * cpu_s / max(1, sum(tally.statuses.values())),
        "ledger_ok": 1.0 if invariant.get("ok") else 0.0,
    }


async def run(
    payments_url: str | None = None, clients: int = 16, seconds: float = 10
) -> dict[str, float]:
    """Benchmark `payments_url`, or a local stack started for the run when it is None."""
    if payments_url is not None:
        settings = PaymentsSettings()
        credentials = Credentials(
            settings.service_token.get_secret_value(),
            settings.bank_webhook_secret.get_secret_value(),
        )
        return await _measure(payments_url, clients, seconds, credentials)
    credentials = Credentials(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    payments_settings = {
        "PAYMENTS_SERVICE_TOKEN": credentials.service_token,
        "PAYMENTS_BANK_WEBHOOK_SECRET": credentials.webhook_secret,
    }
    async with local_services(
        ["payments"], lambda _urls: payments_settings, workdir_prefix="bench-charges-"
    ) as urls:
        return await _measure(urls["payments"], clients, seconds, credentials)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running payments service (token from PAYMENTS_*)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    result = uvloop.run(run(args.url, args.clients, args.seconds))
    print(
        f"{result['charges_per_s']:.0f} charges/s with {args.clients} clients over"
        f" {args.seconds:g} s: p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms,"
        f" p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms;"
        f" service CPU {result['server_cpu_ms_per_charge']:.2f} ms per charge;"
        f" {result['errors']:.0f} errors; ledger {'OK' if result['ledger_ok'] else 'BROKEN'}"
    )
    return 0 if result["errors"] == 0 and result["ledger_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
