"""Payments fixtures: the app in-process on the real servers, and factories for its data."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from citypass.servers import LocalServers
from services.payments.app import build_app
from services.payments.settings import PaymentsSettings
from shared.db import Database
from tests.conftest import AppClient
from tests.support import bank_credits, bank_notification_body, bank_notifies

SERVICE_TOKEN = "test-payments-service-token"
WEBHOOK_SECRET = "test-bank-webhook-secret"


@pytest.fixture(scope="session")
def settings(configured: None) -> PaymentsSettings:
    return PaymentsSettings(
        service_token=SERVICE_TOKEN,
        bank_webhook_secret=WEBHOOK_SECRET,
        hold_expiry_interval=timedelta(milliseconds=200),
    )


@pytest.fixture(scope="session")
def payments_app(settings: PaymentsSettings) -> FastAPI:
    return build_app(settings)


@pytest.fixture(scope="session")
async def http(app_client: AppClient, payments_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The payments app for the whole session (its workers run: outbox relay, hold expiry),
    called with the service token."""
    async with app_client(payments_app) as client:
        client.headers["Authorization"] = f"Bearer {SERVICE_TOKEN}"
        # The app's logging setup logs every in-process request at INFO: thousands here.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        yield client


@pytest.fixture
async def anonymous(
    http: httpx.AsyncClient, payments_app: FastAPI
) -> AsyncIterator[httpx.AsyncClient]:
    """The same running app, called without a token (the bank, or an intruder)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(payments_app), base_url="http://testserver"
    ) as client:
        yield client


@pytest.fixture(scope="session")
async def ledger_db(migrated: LocalServers) -> AsyncIterator[Database]:
    """Direct read access, to check what the API says against what the ledger holds."""
    database = Database(migrated.database_url, "payments", pool_size=2)
    yield database
    await database.close()


def new_key() -> str:
    return str(uuid.uuid4())


async def open_wallet(http: httpx.AsyncClient, kind: str = "rider_wallet") -> dict[str, Any]:
    response = await http.post(
        "/v1/accounts", json={"kind": kind, "owner_id": f"test-{uuid.uuid4().hex[:16]}"}
    )
    assert response.status_code == 201, response.text
    wallet: dict[str, Any] = response.json()
    return wallet


async def balance(http: httpx.AsyncClient, account_id: str) -> int:
    response = await http.get(f"/v1/accounts/{account_id}")
    assert response.status_code == 200, response.text
    value: int = response.json()["balance"]
    return value


def notification_body(
    settings: PaymentsSettings, *, amount: int, reference: str | None, **fields: Any
) -> bytes:
    """What the bank reports after a transfer to these settings' collection account."""
    to_us = {"bank_bin": settings.bank_bin, "account": settings.collection_account}
    return bank_notification_body(amount=amount, reference=reference, **(to_us | fields))


async def notify(http: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await bank_notifies(http, body, WEBHOOK_SECRET)


async def request_topup(http: httpx.AsyncClient, account_id: str, amount: int) -> dict[str, Any]:
    response = await http.post(
        "/v1/topups",
        json={"account_id": account_id, "amount": amount},
        headers={"Idempotency-Key": new_key()},
    )
    assert response.status_code == 201, response.text
    topup: dict[str, Any] = response.json()
    return topup


async def fund_wallet(
    http: httpx.AsyncClient, settings: PaymentsSettings, account_id: str, amount: int
) -> dict[str, Any]:
    """Top up through the real path: VietQR request, then the bank's signed notification."""
    topup = await request_topup(http, account_id, amount)
    await bank_credits(
        http,
        WEBHOOK_SECRET,
        amount=amount,
        reference=topup["reference"],
        bank_bin=settings.bank_bin,
        account=settings.collection_account,
    )
    return topup


async def charge(
    http: httpx.AsyncClient,
    account_id: str,
    amount: int,
    *,
    key: str | None = None,
    **fields: Any,
) -> httpx.Response:
    body = {"account_id": account_id, "amount": amount, "source": "transit", **fields}
    return await http.post("/v1/charges", json=body, headers={"Idempotency-Key": key or new_key()})


async def postings_of(ledger_db: Database, account_id: str) -> int:
    async with ledger_db.transaction() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM postings WHERE account_id = :id"),
            {"id": uuid.UUID(account_id)},
        )
    return int(count or 0)
