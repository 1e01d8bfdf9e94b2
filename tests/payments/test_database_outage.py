"""PostgreSQL restarted under a client's charges: the outage answers 503 with Retry-After, never
500, and the first request after the restart succeeds (no stale pooled connection fails it)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from citypass.servers import LocalServers, free_port
from shared.migrations import upgrade_all
from tests.payments.conftest import SERVICE_TOKEN, WEBHOOK_SECRET, new_key
from tests.support import ServiceProcess, bank_credits, running_service

FUNDS = 10_000_000
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    sent_at: float
    status: int
    code: str | None
    retry_after: str | None


@pytest.fixture
def own_postgres(servers: LocalServers, tmp_path: Path) -> Iterator[LocalServers]:
    """A PostgreSQL of this test's own (restarting the session's would disturb other tests),
    beside the session's Valkey and Kafka."""
    own = LocalServers(tmp_path, free_port(), servers.redis_port, servers.kafka_port)
    own.start_postgres()
    try:
        upgrade_all(own.database_url)
        yield own
    finally:
        own.stop()


@pytest.fixture
def payments(own_postgres: LocalServers, tmp_path: Path) -> Iterator[ServiceProcess]:
    env = {
        "PAYMENTS_ENVIRONMENT": "test",
        "PAYMENTS_DATABASE_URL": own_postgres.database_url,
        "PAYMENTS_KAFKA_BOOTSTRAP_SERVERS": own_postgres.kafka_bootstrap,
        "PAYMENTS_SERVICE_TOKEN": SERVICE_TOKEN,
        "PAYMENTS_BANK_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    with running_service("payments", env, tmp_path / "payments.log") as process:
        yield process


def restart_postgres(servers: LocalServers, down_s: float) -> None:
    """Stop the server (fast shutdown, as an operator's restart), wait, start it again."""
    for managed in [m for m in servers.processes if m.name == "PostgreSQL"]:
        managed.stop()
        servers.processes.remove(managed)
    time.sleep(down_s)
    servers.start_postgres()


async def funded_wallet(client: httpx.AsyncClient) -> str:
    wallet = await client.post(
        "/v1/accounts", json={"kind": "rider_wallet", "owner_id": f"outage-{uuid.uuid4().hex}"}
    )
    assert wallet.status_code == 201, wallet.text
    account_id: str = wallet.json()["id"]
    topup = await client.post(
        "/v1/topups",
        json={"account_id": account_id, "amount": FUNDS},
        headers={"Idempotency-Key": new_key()},
    )
    assert topup.status_code == 201, topup.text
    await bank_credits(client, WEBHOOK_SECRET, amount=FUNDS, reference=topup.json()["reference"])
    return account_id


async def charge(client: httpx.AsyncClient, account_id: str) -> Answer:
    sent_at = time.monotonic()
    response = await client.post(
        "/v1/charges",
        json={"account_id": account_id, "amount": 1_000, "source": "transit"},
        headers={"Idempotency-Key": new_key()},
    )
    code = response.json().get("code") if response.status_code >= 400 else None
    return Answer(sent_at, response.status_code, code, response.headers.get("retry-after"))


@pytest.mark.fault
class TestPostgresRestart:
    async def test_charges_get_503_during_the_outage_and_succeed_right_after(
        self, payments: ServiceProcess, own_postgres: LocalServers
    ) -> None:
        async with httpx.AsyncClient(
            base_url=payments.url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=15
        ) as client:
            account_id = await funded_wallet(client)
            # Warm both pools: the plain one (charges) and SQLAlchemy's (reads, the webhook).
            warm = await asyncio.gather(*(charge(client, account_id) for _ in range(10)))
            assert {a.status for a in warm} == {201}
            assert (await client.get(f"/v1/accounts/{account_id}")).status_code == 200

            answers: list[Answer] = []
            stop = asyncio.Event()

            async def keep_charging() -> None:
                while not stop.is_set():
                    answers.append(await charge(client, account_id))

            charging = asyncio.create_task(keep_charging())
            await asyncio.sleep(0.5)
            await asyncio.to_thread(restart_postgres, own_postgres, 2.0)
            restarted_at = time.monotonic()
            stop.set()
            await charging

            first_charge = await charge(client, account_id)
            first_read = await client.get(f"/v1/accounts/{account_id}")
            after = [await charge(client, account_id) for _ in range(20)]

        statuses = [a.status for a in answers]
        outage = [a for a in answers if a.status != 201]
        assert 500 not in statuses
        assert outage, "no request met the outage"
        assert {(a.status, a.code) for a in outage} == {(503, "database_unavailable")}
        assert all(a.retry_after and int(a.retry_after) > 0 for a in outage)
        assert all(a.status == 201 for a in answers if a.sent_at >= restarted_at)
        assert first_charge.status == 201, first_charge
        assert first_read.status_code == 200, first_read.text
        assert {a.status for a in after} == {201}
        logger.info(
            "%d charges across the restart: %d × 503, %d × 201, 0 × 500",
            len(answers),
            len(outage),
            statuses.count(201),
        )
