"""A signed bank notification is recorded whatever text the payer or the bank put in it:
matched when it can be, else kept in suspense; its raw body is kept as the bank signed it."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
from sqlalchemy import text

from services.payments.settings import PaymentsSettings
from shared.db import Database
from tests.payments.conftest import balance, notification_body, notify, open_wallet, request_topup

NUL = "\x00"


async def stored_notification(ledger_db: Database, notification_id: str) -> dict[str, Any]:
    async with ledger_db.transaction() as session:
        row = (
            await session.execute(
                text(
                    "SELECT bank_transaction_id, account, description, occurred_at, outcome,"
                    " raw_body FROM bank_notifications WHERE id = :id"
                ),
                {"id": uuid.UUID(notification_id)},
            )
        ).one()
    return dict(row._mapping)


def with_lone_surrogate(body: bytes, field: str, before: str) -> bytes:
    """`body` with an unpaired `\\ud800` escape written into `field` (orjson cannot encode one)."""
    return body.replace(f'"{field}":"{before}'.encode(), f'"{field}":"\\ud800{before}'.encode())


class TestOddTextInNotifications:
    async def test_a_nul_in_the_description_still_credits_the_matching_top_up(
        self,
        anonymous: httpx.AsyncClient,
        http: httpx.AsyncClient,
        settings: PaymentsSettings,
        ledger_db: Database,
    ) -> None:
        wallet = await open_wallet(http)
        topup = await request_topup(http, wallet["id"], 25_000)
        body = notification_body(
            settings,
            amount=25_000,
            reference=None,
            description=f"NAPTIEN {topup['reference']}{NUL}chuyen tien",
        )

        first = await notify(anonymous, body)
        retry = await notify(anonymous, body)

        assert first.status_code == 200, first.text
        assert first.json()["outcome"] == "credited"
        assert retry.json()["duplicate"] is True
        assert await balance(http, wallet["id"]) == 25_000
        stored = await stored_notification(ledger_db, first.json()["notification_id"])
        assert stored["description"] == f"NAPTIEN {topup['reference']}\ufffdchuyen tien"
        assert stored["raw_body"] == body

    async def test_nul_in_the_transaction_id_and_account_is_kept_in_suspense(
        self,
        anonymous: httpx.AsyncClient,
        settings: PaymentsSettings,
        ledger_db: Database,
    ) -> None:
        transaction_id = f"FT{uuid.uuid4().hex[:12].upper()}{NUL}X"
        body = notification_body(
            settings,
            amount=17_000,
            reference=None,
            transaction_id=transaction_id,
            account=f"{settings.collection_account[:10]}{NUL}",
            description=f"{NUL}{NUL}",
        )

        first = await notify(anonymous, body)
        retry = await notify(anonymous, body)

        assert first.status_code == 200, first.text
        assert (first.json()["outcome"], first.json()["cause"]) == ("suspense", "foreign_account")
        assert first.json()["transaction_id"] == transaction_id.replace(NUL, "\ufffd")
        assert (retry.status_code, retry.json()["duplicate"]) == (200, True)
        stored = await stored_notification(ledger_db, first.json()["notification_id"])
        assert stored["outcome"] == "suspense"
        assert NUL not in stored["bank_transaction_id"] + stored["account"]
        assert orjson.loads(stored["raw_body"])["transaction_id"] == transaction_id

    async def test_a_lone_surrogate_and_an_impossible_date_are_recorded(
        self,
        anonymous: httpx.AsyncClient,
        settings: PaymentsSettings,
        ledger_db: Database,
    ) -> None:
        body = with_lone_surrogate(
            notification_body(
                settings,
                amount=9_000,
                reference=None,
                description="chuyen tien",
                occurred_at="0001-01-01T00:00:00+07:00",
            ),
            "description",
            "chuyen",
        )
        assert b"\\ud800" in body

        response = await notify(anonymous, body)

        assert response.status_code == 200, response.text
        assert (response.json()["outcome"], response.json()["cause"]) == (
            "suspense",
            "missing_reference",
        )
        stored = await stored_notification(ledger_db, response.json()["notification_id"])
        assert stored["description"] == "\ufffdchuyen tien"
        assert stored["occurred_at"] is None  # out of range; the raw body still says it
        assert stored["raw_body"] == body


class TestReconciliationDays:
    async def test_days_outside_the_service_range_are_422(self, http: httpx.AsyncClient) -> None:
        for path in (
            "/v1/reconciliation/0001-01-01",
            "/v1/reconciliation/9999-12-31",
            "/v1/reconciliation/0001-01-01.csv",
            "/v1/reconciliation/9999-12-31.csv",
            "/v1/reconciliation/9999-12-31?format=csv",
        ):
            response = await http.get(path)
            assert response.status_code == 422, (path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "validation_error"
