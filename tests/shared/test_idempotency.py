"""Idempotency-Key semantics on a real PostgreSQL: the four cases of the IETF draft."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, text
from starlette.responses import Response

from citypass.servers import LocalServers
from shared.app import Runtime, RuntimeDep, create_app
from shared.idempotency import (
    GUARD_FUNCTIONS,
    OUTCOME_TYPE,
    Idempotency,
    IdempotencyDep,
    idempotency_keys_table,
)
from shared.migrations import KIT, function_directory
from shared.settings import ServiceSettings

SCHEMA = "kit_idempotency_test"
metadata = MetaData()
keys = idempotency_keys_table(metadata)
payments = Table(
    "payments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("amount", Integer, nullable=False),
)


class PaymentCreate(BaseModel):
    amount: int
    slow: bool = False


class PaymentRead(BaseModel):
    id: str
    amount: int


router = APIRouter()


@router.post("/payments", status_code=201, response_model=PaymentRead)
async def create_payment(body: PaymentCreate, key: IdempotencyDep, rt: RuntimeDep) -> Response:
    async with Idempotency(rt.db, keys).call(key) as call:
        if call.replay:
            return call.replay
        payment_id = str(uuid.uuid4())
        await call.session.execute(payments.insert().values(id=payment_id, amount=body.amount))
        if body.slow:
            await call.session.execute(text("SELECT pg_sleep(0.5)"))
        return await call.respond(201, PaymentRead(id=payment_id, amount=body.amount))


@pytest.fixture(scope="module")
async def client(servers: LocalServers) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServiceSettings(
        environment="test",
        database_url=servers.database_url,
        kafka_bootstrap_servers=servers.kafka_bootstrap,
    )
    runtime = Runtime("kit-test", settings, schema=SCHEMA)
    async with runtime.db.engine.begin() as connection:
        await connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        await connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        await connection.run_sync(metadata.create_all)
        await connection.execute(text(f"SET LOCAL search_path = {SCHEMA}"))
        await connection.execute(text(OUTCOME_TYPE))
        for name in GUARD_FUNCTIONS:
            sql = (function_directory(KIT) / f"{name}.sql").read_text()
            await connection.exec_driver_sql(sql)
    app: FastAPI = create_app(runtime, [router], title="kit test", description="")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://kit") as http,
    ):
        yield http


async def count_payments(client: httpx.AsyncClient, amount: int) -> int:
    runtime: Runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]
    async with runtime.db.transaction() as session:
        count = await session.scalar(
            select(func.count()).select_from(payments).where(payments.c.amount == amount)
        )
    return int(count or 0)


def unique_amount() -> int:
    return uuid.uuid4().int % 10**9


class TestIdempotencyKey:
    async def test_missing_key_is_400_and_nothing_is_recorded(
        self, client: httpx.AsyncClient
    ) -> None:
        amount = unique_amount()
        response = await client.post("/payments", json={"amount": amount})
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "idempotency_key_missing"
        assert await count_payments(client, amount) == 0

    async def test_replay_returns_the_first_response_byte_for_byte(
        self, client: httpx.AsyncClient
    ) -> None:
        amount = unique_amount()
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        first = await client.post("/payments", json={"amount": amount}, headers=headers)
        again = await client.post("/payments", json={"amount": amount}, headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert await count_payments(client, amount) == 1

    async def test_same_key_with_a_different_body_is_422(self, client: httpx.AsyncClient) -> None:
        amount = unique_amount()
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        await client.post("/payments", json={"amount": amount}, headers=headers)
        reused = await client.post("/payments", json={"amount": amount + 1}, headers=headers)
        assert reused.status_code == 422
        assert reused.json()["code"] == "idempotency_key_reused"
        assert await count_payments(client, amount + 1) == 0

    async def test_concurrent_duplicate_while_first_in_flight_is_409(
        self, client: httpx.AsyncClient
    ) -> None:
        amount = unique_amount()
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        body = {"amount": amount, "slow": True}
        responses = await asyncio.gather(
            *(client.post("/payments", json=body, headers=headers) for _ in range(5))
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201, 409, 409, 409, 409]
        conflict = next(r for r in responses if r.status_code == 409)
        assert conflict.json()["code"] == "idempotency_key_in_flight"
        assert await count_payments(client, amount) == 1
        # Once the first has finished, a retry is a replay of its response.
        replay = await client.post("/payments", json=body, headers=headers)
        created = next(r for r in responses if r.status_code == 201)
        assert replay.status_code == 201
        assert replay.content == created.content

    async def test_failed_first_attempt_leaves_the_key_free_for_a_retry(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        failed = await client.post("/payments", json={"amount": "lots"}, headers=headers)
        assert failed.status_code == 422
        amount = unique_amount()
        retried = await client.post("/payments", json={"amount": amount}, headers=headers)
        assert retried.status_code == 201
