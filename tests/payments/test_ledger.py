"""The ledger: invariants (endpoint and CLI), append-only, balanced, every transfer published."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from citypass.cli import main as citypass
from citypass.servers import LocalServers
from services.payments.repository.balances import system_account_id
from services.payments.settings import PaymentsSettings
from shared.db import Database
from shared.events import LEDGER_TOPIC, TRANSFER_POSTED
from tests.payments.conftest import charge, fund_wallet, new_key, open_wallet
from tests.support import read_events


class TestInvariant:
    async def test_the_endpoint_reports_a_balanced_ledger(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 30_000)
        await charge(http, wallet["id"], 9_000)

        report = (await http.get("/v1/ledger/invariant")).json()

        assert report["ok"] is True, report
        assert (report["postings_total"], report["balances_total"]) == (0, 0)
        assert report["unbalanced_transfers"] == report["mismatched_accounts"] == []
        assert report["transfers_checked"] >= 2

    async def test_the_cli_checks_the_same_rules(
        self,
        http: httpx.AsyncClient,
        settings: PaymentsSettings,
        servers: LocalServers,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 10_000)

        exit_code = await asyncio.to_thread(
            citypass, ["bank", "check-ledger", "--database-url", servers.database_url]
        )

        assert exit_code == 0
        assert "Ledger OK" in capsys.readouterr().out


class TestLedgerIntegrity:
    async def test_posted_transfers_cannot_be_changed(
        self, http: httpx.AsyncClient, settings: PaymentsSettings, ledger_db: Database
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 10_000)

        for statement in (
            "UPDATE transfers SET amount = 1 WHERE wallet_account_id = :wallet",
            "DELETE FROM postings WHERE account_id = :wallet",
        ):
            with pytest.raises(DBAPIError, match="append-only"):
                await execute(ledger_db, (statement, {"wallet": uuid.UUID(wallet["id"])}))

    async def test_an_unbalanced_transfer_never_commits(
        self, http: httpx.AsyncClient, ledger_db: Database
    ) -> None:
        wallet = await open_wallet(http)
        names = {"t": uuid.uuid4(), "wallet": uuid.UUID(wallet["id"])}
        one_sided = (
            (
                "INSERT INTO transfers (id, kind, amount, debit_account_id, credit_account_id)"
                " VALUES (:t, 'topup', 500, :clearing, :wallet)",
                names | {"clearing": system_account_id("bank_clearing")},
            ),
            ("INSERT INTO postings VALUES (:t, :wallet, 500)", names),
        )

        with pytest.raises(DBAPIError, match="not balanced"):
            await execute(ledger_db, *one_sided)

    async def test_checks_fired_early_do_not_let_a_later_posting_through(
        self, http: httpx.AsyncClient, ledger_db: Database
    ) -> None:
        wallet, other = await open_wallet(http), await open_wallet(http)
        names = {"t": uuid.uuid4(), "wallet": uuid.UUID(wallet["id"])}
        clearing = system_account_id("bank_clearing")
        balanced_then_more: tuple[tuple[str, dict[str, Any]], ...] = (
            (
                "INSERT INTO transfers (id, kind, amount, debit_account_id, credit_account_id)"
                " VALUES (:t, 'topup', 500, :clearing, :wallet)",
                names | {"clearing": clearing},
            ),
            (
                "INSERT INTO postings VALUES (:t, :clearing, -500), (:t, :wallet, 500)",
                names | {"clearing": clearing},
            ),
            ("SET CONSTRAINTS ALL IMMEDIATE", {}),  # the transfer is checked, and balanced
            ("SET CONSTRAINTS ALL DEFERRED", {}),
            (
                "INSERT INTO postings VALUES (:t, :other, 700)",
                {**names, "other": uuid.UUID(other["id"])},
            ),
        )

        with pytest.raises(DBAPIError, match="not balanced"):
            await execute(ledger_db, *balanced_then_more)


async def execute(database: Database, *statements: tuple[str, dict[str, Any]]) -> None:
    """Run raw SQL in one transaction, as an operator with database access could."""
    async with database.transaction() as session:
        for sql, parameters in statements:
            await session.execute(text(sql), parameters)


class TestPublishing:
    async def test_every_posted_transfer_goes_out_on_payments_ledger(
        self,
        http: httpx.AsyncClient,
        settings: PaymentsSettings,
        ledger_db: Database,
        servers: LocalServers,
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 200_000)
        charge_id = (await charge(http, wallet["id"], 10_000)).json()["id"]
        await http.post(
            "/v1/refunds",
            json={"charge_id": charge_id, "amount": 4_000},
            headers={"Idempotency-Key": new_key()},
        )
        hold_body = {"account_id": wallet["id"], "amount": 30_000, "source": "transit"}
        for action, body in (("capture", {"amount": 20_000}), ("void", None)):
            hold = await http.post(
                "/v1/holds", json=hold_body, headers={"Idempotency-Key": new_key()}
            )
            settled = await http.post(
                f"/v1/holds/{hold.json()['id']}/{action}",
                json=body,
                headers={"Idempotency-Key": new_key()},
            )
            assert settled.status_code == 200, settled.text
        async with ledger_db.transaction() as session:
            posted = {
                str(transfer_id)
                for transfer_id in await session.scalars(
                    text("SELECT id FROM transfers WHERE wallet_account_id = :id"),
                    {"id": uuid.UUID(wallet["id"])},
                )
            }
        kinds = ["topup", "charge", "refund", "hold", "capture", "release", "hold", "release"]
        assert len(posted) == len(kinds)

        events = await read_events(
            servers.kafka_bootstrap,
            LEDGER_TOPIC,
            lambda event: event.type == TRANSFER_POSTED and event.data["transfer_id"] in posted,
            count=len(posted),
        )

        assert {event.data["transfer_id"] for event, _ in events} == posted
        assert sorted(event.data["kind"] for event, _ in events) == sorted(kinds)
        assert {key for _, key in events} == {wallet["id"].encode()}
