"""Daily reconciliation: the endpoint on real data, and the pure rules on crafted facts."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, datetime

import httpx
import orjson
import pytest

from services.payments.reconciliation import (
    HANOI,
    DayFacts,
    JournalLine,
    LedgerRevenueLine,
    NotificationLine,
    build_report,
    day_window,
)
from services.payments.settings import PaymentsSettings
from tests.payments.conftest import (
    charge,
    fund_wallet,
    new_key,
    notification_body,
    notify,
    open_wallet,
    request_topup,
)


def today_in_hanoi() -> date:
    return datetime.now(HANOI).date()


class TestReconciliationReport:
    async def test_reports_revenue_per_lot_and_every_mismatch_with_its_cause(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        lot_id = f"lot-{uuid.uuid4().hex[:8]}"
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 100_000)
        charges = [
            (await charge(http, wallet["id"], 10_000, source="parking", lot_id=lot_id)).json()
            for _ in range(2)
        ]
        await http.post(
            "/v1/refunds",
            json={"charge_id": charges[0]["id"], "amount": 3_000},
            headers={"Idempotency-Key": new_key()},
        )
        unpaid = await request_topup(http, wallet["id"], 60_000)
        mismatched = await request_topup(http, wallet["id"], 70_000)
        body = notification_body(settings, amount=7_000, reference=mismatched["reference"])
        await notify(http, body)
        transaction_id = orjson.loads(body)["transaction_id"]

        report = (await http.get(f"/v1/reconciliation/{today_in_hanoi()}")).json()

        lot = next(line for line in report["revenue"] if line["lot_id"] == lot_id)
        assert (lot["charges"], lot["charged_amount"], lot["refunds"], lot["refunded_amount"]) == (
            2,
            20_000,
            1,
            3_000,
        )
        assert lot["net_amount"] == lot["ledger_amount"] == 17_000
        bank_mismatch = next(
            m for m in report["mismatches"] if m["subject"] == f"bank transaction {transaction_id}"
        )
        assert (bank_mismatch["cause"], bank_mismatch["expected"], bank_mismatch["actual"]) == (
            "amount_mismatch",
            70_000,
            7_000,
        )
        assert not any(unpaid["reference"] in m["detail"] for m in report["mismatches"])
        assert report["bank"]["unpaid_requests"] >= 1
        assert report["ok"] is False
        assert report["timezone"] == "Asia/Ho_Chi_Minh"
        assert not any(m["area"] in ("revenue", "ledger") for m in report["mismatches"])

    async def test_csv_carries_the_same_report(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        body = notification_body(settings, amount=5_000, reference=None)
        await notify(http, body)
        transaction_id = orjson.loads(body)["transaction_id"]
        day = today_in_hanoi()

        by_suffix = await http.get(f"/v1/reconciliation/{day}.csv")
        by_query = await http.get(f"/v1/reconciliation/{day}", params={"format": "csv"})

        assert by_suffix.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(by_suffix.text)))
        assert {"total", "info", "mismatch"} <= {row["record"] for row in rows}
        ours = [row for row in rows if row["subject"] == f"bank transaction {transaction_id}"]
        assert [(r["record"], r["cause"], r["actual"]) for r in ours] == [
            ("mismatch", "missing_reference", "5000")
        ]
        assert {r["subject"] for r in csv.DictReader(io.StringIO(by_query.text))} >= {
            r["subject"] for r in rows
        }

    async def test_a_day_without_activity_is_clean(self, http: httpx.AsyncClient) -> None:
        report = (await http.get("/v1/reconciliation/2001-01-01")).json()

        assert report["ok"] is True
        assert report["mismatches"] == report["revenue"] == []
        assert report["bank"]["notifications"] == 0

    @pytest.mark.parametrize("day", ["2026-02-30", "0", "1700000000", "2026-3-1"])
    async def test_an_invalid_day_is_422(self, http: httpx.AsyncClient, day: str) -> None:
        assert (await http.get(f"/v1/reconciliation/{day}")).status_code == 422
        assert (await http.get(f"/v1/reconciliation/{day}.csv")).status_code == 422


def facts(**changes: object) -> DayFacts:
    base: dict[str, object] = {
        "notifications": [],
        "clearing_amount": 0,
        "paid_without_notification": [],
        "unpaid_requests": 0,
        "unpaid_amount": 0,
        "journal": [],
        "ledger_revenue": [],
        "unbalanced": [],
    }
    return DayFacts(**(base | changes))  # type: ignore[arg-type]


class TestReconciliationRules:
    def test_the_day_is_a_hanoi_calendar_day(self) -> None:
        start, end = day_window(date(2026, 3, 1))

        assert start.isoformat() == "2026-03-01T00:00:00+07:00"
        assert (end - start).total_seconds() == 86_400

    def test_revenue_that_moved_differently_from_the_journal_is_a_mismatch(self) -> None:
        report = build_report(
            date(2026, 3, 1),
            facts(
                journal=[
                    JournalLine("transit", None, "charge", 3, 24_000),
                    JournalLine("transit", None, "refund", 1, 8_000),
                ],
                ledger_revenue=[LedgerRevenueLine("transit_revenue", None, 24_000)],
            ),
        )

        assert [(m.cause, m.expected, m.actual) for m in report.mismatches] == [
            ("revenue_differs_from_journal", 16_000, 24_000)
        ]

    def test_a_notification_the_ledger_lacks_is_a_mismatch(self) -> None:
        notification = NotificationLine(
            "FT1", 50_000, "CP0123456789", "credited", None, 50_000, None
        )

        report = build_report(
            date(2026, 3, 1), facts(notifications=[notification], clearing_amount=0)
        )

        assert {m.cause for m in report.mismatches} == {
            "notification_not_in_ledger",
            "clearing_differs_from_notifications",
        }

    def test_unpaid_requests_are_counted_not_reported(self) -> None:
        report = build_report(date(2026, 3, 1), facts(unpaid_requests=3, unpaid_amount=90_000))

        assert report.ok
        assert (report.bank.unpaid_requests, report.bank.unpaid_amount) == (3, 90_000)
