"""8 clients × 500 charges on one wallet, with retries and concurrent duplicates of keys."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import text

from services.payments.settings import PaymentsSettings
from shared.db import Database
from tests.payments.conftest import balance, charge, fund_wallet, open_wallet

CLIENTS = 8
CHARGES_PER_CLIENT = 500
TOP_UPS = (15_000_000, 10_000_000, 5_000_000)  # less than the ~40 M asked: some charges fail


@dataclass
class Outcomes:
    charged: dict[str, int] = field(default_factory=dict)  # key → amount, for every 201
    refused: set[str] = field(default_factory=set)
    statuses: list[int] = field(default_factory=list)
    balances_seen: list[int] = field(default_factory=list)


async def one_client(
    http: httpx.AsyncClient, wallet_id: str, seed: int, outcomes: Outcomes
) -> None:
    draw = random.Random(seed)
    for _ in range(CHARGES_PER_CLIENT):
        key, amount = str(uuid.uuid4()), draw.randrange(5_000, 15_001, 500)
        style = draw.random()
        if style < 0.1:  # the app timed out and fired again while the first was running
            responses = list(
                await asyncio.gather(*(charge(http, wallet_id, amount, key=key) for _ in range(3)))
            )
        else:
            responses = [await charge(http, wallet_id, amount, key=key)]
            if style < 0.3:  # a plain retry after the answer was lost
                responses.append(await charge(http, wallet_id, amount, key=key))
        created = [r for r in responses if r.status_code == 201]
        for response in responses:
            outcomes.statuses.append(response.status_code)
            assert response.status_code in (201, 402, 409), response.text
        if created:
            assert all(r.content == created[0].content for r in created)
            outcomes.charged[key] = amount
            outcomes.balances_seen.append(created[0].json()["balance"])
        elif any(r.status_code == 402 for r in responses):
            outcomes.refused.add(key)


@pytest.mark.slow
async def test_one_wallet_under_concurrent_charges_and_retries(
    http: httpx.AsyncClient, settings: PaymentsSettings, ledger_db: Database
) -> None:
    wallet = await open_wallet(http)
    for amount in TOP_UPS:
        await fund_wallet(http, settings, wallet["id"], amount)
    outcomes = Outcomes()
    done = asyncio.Event()

    async def watch_balance() -> None:
        while not done.is_set():
            outcomes.balances_seen.append(await balance(http, wallet["id"]))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_balance())
    try:
        await asyncio.gather(
            *(one_client(http, wallet["id"], seed, outcomes) for seed in range(CLIENTS))
        )
    finally:
        done.set()
        await watcher

    expected = sum(TOP_UPS) - sum(outcomes.charged.values())
    assert await balance(http, wallet["id"]) == expected
    assert min(outcomes.balances_seen) >= 0
    assert 409 in outcomes.statuses, "concurrent duplicates should have met in flight"
    assert outcomes.refused, "the wallet should have run dry: the test must exercise 402s"
    assert len(outcomes.charged) + len(outcomes.refused) == CLIENTS * CHARGES_PER_CLIENT
    async with ledger_db.transaction() as session:
        count, total = (
            await session.execute(
                text(
                    "SELECT count(*), coalesce(sum(amount), 0) FROM transfers"
                    " WHERE wallet_account_id = :id AND kind = 'charge'"
                ),
                {"id": uuid.UUID(wallet["id"])},
            )
        ).one()
    assert (count, total) == (len(outcomes.charged), sum(outcomes.charged.values()))
    invariant = (await http.get("/v1/ledger/invariant")).json()
    assert invariant["ok"] is True, invariant
