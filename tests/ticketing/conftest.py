"""Ticketing fixtures: the real payments service as a process, ticketing in-process, factories.

Payments runs as a real uvicorn process (`python -m services.payments`) so that a test can
stop and restart it; ticketing talks to it over HTTP exactly as in production.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from citypass.servers import LocalServers
from services.ticketing.app import build_app
from services.ticketing.credentials import b64url
from services.ticketing.seed import FIRST_VERSION_FROM
from services.ticketing.service import network
from services.ticketing.settings import TicketingSettings
from shared.db import Database
from shared.fares.feed import HANOI
from shared.ids import utcnow
from shared.ticketcodec import generate_device_key, public_key_bytes
from tests.conftest import AppClient
from tests.support import (
    BANK_BIN,
    COLLECTION_ACCOUNT,
    bank_credits,
    running_service,
    service_client,
)

# Re-exported: the rider app browser test imports them from here.
from tests.support import ROOT as ROOT
from tests.support import ServiceProcess as ServiceProcess

PAYMENTS_TOKEN = "test-payments-service-token"
WEBHOOK_SECRET = "test-bank-webhook-secret"
OPERATOR_TOKEN = "test-ticketing-operator-token"


@pytest.fixture(scope="session")
def payments_process(
    migrated: LocalServers, service_env: dict[str, str]
) -> Iterator[ServiceProcess]:
    env = {
        **service_env,
        "PAYMENTS_SERVICE_TOKEN": PAYMENTS_TOKEN,
        "PAYMENTS_BANK_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PAYMENTS_BANK_BIN": BANK_BIN,
        "PAYMENTS_COLLECTION_ACCOUNT": COLLECTION_ACCOUNT,
    }
    log_path = migrated.log_dir / "ticketing-tests-payments.log"
    with running_service("payments", env, log_path) as process:
        yield process


def ticketing_settings(payments_url: str, **overrides: Any) -> TicketingSettings:
    values: dict[str, Any] = {
        "payments_url": payments_url,
        "payments_service_token": PAYMENTS_TOKEN,
        "operator_token": OPERATOR_TOKEN,
        "payments_timeout_s": 2.0,
        "purchase_retry_after": timedelta(seconds=1),
        "purchase_retry_max_backoff": timedelta(seconds=2),
        "reconcile_interval": timedelta(milliseconds=200),
        "key_retirement_interval": timedelta(milliseconds=200),
        # Cheaper Argon2id than production (64 MiB, 3 passes): many riders sign up here.
        "password_memory_kib": 8 * 1024,
        "password_time_cost": 1,
        "password_parallelism": 1,
        **overrides,
    }
    return TicketingSettings(**values)


@pytest.fixture(scope="session")
def settings(configured: None, payments_process: ServiceProcess) -> TicketingSettings:
    return ticketing_settings(payments_process.url)


@pytest.fixture(scope="session")
async def ticketing_db(migrated: LocalServers) -> AsyncIterator[Database]:
    database = Database(migrated.database_url, "ticketing", pool_size=2)
    hanoi = network.prepare_feed(HANOI, "VND")
    async with database.transaction() as session:
        await network.seed_version(session, hanoi, FIRST_VERSION_FROM, utcnow())
    yield database
    await database.close()


@pytest.fixture(scope="session")
async def ledger_db(migrated: LocalServers) -> AsyncIterator[Database]:
    """Read access to the payments ledger, to check ticketing against what really moved."""
    database = Database(migrated.database_url, "payments", pool_size=2)
    yield database
    await database.close()


@pytest.fixture(scope="session")
async def http(
    app_client: AppClient, settings: TicketingSettings, ticketing_db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    """One ticketing app for the session, workers included, against the payments process."""
    async with app_client(build_app(settings)) as client:
        yield client


@pytest.fixture(scope="session")
async def payments_http(payments_process: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(payments_process.url, PAYMENTS_TOKEN) as client:
        yield client


OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


@dataclass
class RiderAccount:
    id: str
    phone: str
    password: str
    access_token: str
    refresh_token: str
    wallet_account_id: str | None
    device_key: Ed25519PrivateKey | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def new_phone() -> str:
    """A fresh, valid Vietnamese mobile number (Viettel 098 prefix), national form."""
    return f"098{uuid.uuid4().int % 10**7:07d}"


def new_key() -> str:
    return str(uuid.uuid4())


async def sign_up(
    http: httpx.AsyncClient, *, category: str = "regular", password: str = "correct horse 42"
) -> RiderAccount:
    phone = new_phone()
    response = await http.post(
        "/v1/riders", json={"phone": phone, "password": password, "category": category}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return RiderAccount(
        id=body["rider"]["id"],
        phone=body["rider"]["phone"],
        password=password,
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
        wallet_account_id=body["rider"]["wallet_account_id"],
    )


async def register_device(
    http: httpx.AsyncClient, rider: RiderAccount, key: Ed25519PrivateKey | None = None
) -> dict[str, Any]:
    key = key or generate_device_key()
    response = await http.post(
        "/v1/devices", json={"public_key": b64url(public_key_bytes(key))}, headers=rider.auth
    )
    assert response.status_code == 201, response.text
    rider.device_key = key
    device: dict[str, Any] = response.json()
    return device


async def approve_category(http: httpx.AsyncClient, rider: RiderAccount) -> None:
    response = await http.post(
        f"/v1/admin/riders/{rider.id}/category", json={"approve": True}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text


async def fund(
    http: httpx.AsyncClient, payments_http: httpx.AsyncClient, rider: RiderAccount, amount: int
) -> None:
    """Top up through the real path: ticketing asks payments for a VietQR, the bank pays it."""
    topup = await http.post(
        "/v1/wallet/topups",
        json={"amount": amount},
        headers={**rider.auth, "Idempotency-Key": new_key()},
    )
    assert topup.status_code == 201, topup.text
    await bank_credits(
        payments_http, WEBHOOK_SECRET, amount=amount, reference=topup.json()["reference"]
    )


async def buy(
    http: httpx.AsyncClient,
    rider: RiderAccount,
    product: str,
    *,
    key: str | None = None,
    line: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"product_code": product}
    if line is not None:
        body["line"] = line
    return await http.post(
        "/v1/purchases", json=body, headers={**rider.auth, "Idempotency-Key": key or new_key()}
    )


async def balance(http: httpx.AsyncClient, rider: RiderAccount) -> int:
    response = await http.get("/v1/wallet", headers=rider.auth)
    assert response.status_code == 200, response.text
    value: int = response.json()["balance"]
    return value


async def scalar(database: Database, sql: str, **params: Any) -> Any:
    async with database.transaction() as session:
        return await session.scalar(text(sql), params)


def zipped(feed: Path) -> bytes:
    """A feed directory as the zip an operator uploads."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(feed.glob("*.txt")):
            archive.write(path, path.name)
    return buffer.getvalue()


def with_product(feed: Path, code: str, price: int, *, credential_code: str = "") -> Path:
    """Adds a metro day-pass-like product on sale for regular riders to a feed directory."""
    with (feed / "fare_products.txt").open("a", encoding="utf-8") as out:
        out.write(f"{code},Thử {code},regular,,{price},VND\n")
    with (feed / "citypass_products.txt").open("a", encoding="utf-8") as out:
        out.write(f"{code},Test {code},pass,metro,1,,0,0,,{credential_code or code[-6:]}\n")
    return feed


async def publish(
    http: httpx.AsyncClient, feed: bytes, *, effective_from: datetime | None = None
) -> httpx.Response:
    """POST /v1/network/versions as an operator: the feed from `effective_from` (default now)."""
    params = {} if effective_from is None else {"effective_from": effective_from.isoformat()}
    return await http.post(
        "/v1/network/versions",
        content=feed,
        params=params,
        headers={**OPERATOR, "Idempotency-Key": new_key(), "Content-Type": "application/zip"},
    )
