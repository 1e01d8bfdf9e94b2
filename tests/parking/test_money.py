"""Money after the barrier: fallback debts, receipts, disputes and refunds, the revenue audit."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from citypass.servers import free_port
from services.parking.context import Parking
from services.parking.payments import Payments
from services.parking.tariffs import DEFAULT_TARIFFS, HANOI_TZ, VehicleType, price_session
from tests.parking.conftest import (
    ADMIN,
    PAYMENT_WAIT,
    Lot,
    balance,
    bank_pays,
    create_lot,
    enter,
    fund,
    leave,
    now,
    plate_read,
    random_plate,
    register_vehicle,
    wait_for_open,
)


def fee_of(entry_at: datetime, exit_at: datetime, vehicle_type: VehicleType, lot: Lot) -> int:
    return price_session(entry_at, exit_at, vehicle_type, DEFAULT_TARIFFS, lot_id=lot.lot_id).total


async def receipt_of(http: httpx.AsyncClient, decision: dict[str, Any]) -> dict[str, Any]:
    response = await http.get(
        f"/v1/receipts/{decision['session_id']}", params={"token": decision["receipt_token"]}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def eventually(
    read: Any, done: Any, timeout_s: float = 20, pause_s: float = 0.2
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value: dict[str, Any] = await read()
        if done(value):
            return value
        assert asyncio.get_running_loop().time() < deadline, value
        await asyncio.sleep(pause_s)


async def pay_by_wallet(
    http: httpx.AsyncClient,
    payments: httpx.AsyncClient,
    payments_url: str,
    lot: Lot,
    exit_at: datetime,
    stay: timedelta,
) -> tuple[dict[str, Any], str]:
    plate = random_plate("car")
    vehicle = await register_vehicle(http, plate)
    await fund(payments, payments_url, vehicle["wallet_account_id"], 500_000)
    await enter(http, lot, exit_at - stay, plate_read=plate_read(plate))
    left = await leave(http, lot, exit_at, plate_read=plate_read(plate))
    assert left.json()["reason"] == "paid_from_wallet", left.text
    return left.json(), vehicle["wallet_account_id"]


async def pay_by_vietqr(
    http: httpx.AsyncClient, payments_url: str, lot: Lot, exit_at: datetime, stay: timedelta
) -> dict[str, Any]:
    plate = random_plate("motorbike")
    await enter(http, lot, exit_at - stay, plate_read=plate_read(plate))
    decision = (await leave(http, lot, exit_at, plate_read=plate_read(plate))).json()
    assert decision["decision"] == "pay", decision
    await bank_pays(decision["payment"]["qr"], payments_url)
    return await wait_for_open(http, lot, decision["session_id"])


async def leave_unpaid(
    http: httpx.AsyncClient, lot: Lot, exit_at: datetime, stay: timedelta
) -> dict[str, Any]:
    """The VietQR is shown, the bank stays silent, the lane uses the fallback: a debt."""
    plate = random_plate("car")
    await enter(http, lot, exit_at - stay, plate_read=plate_read(plate))
    decision = (await leave(http, lot, exit_at, plate_read=plate_read(plate))).json()
    assert decision["decision"] == "pay", decision
    await asyncio.sleep(PAYMENT_WAIT.total_seconds())
    released = await http.post(
        f"/v1/sessions/{decision['session_id']}/fallback-exit",
        headers={"Idempotency-Key": str(uuid.uuid4())},
        auth=lot.exit.auth,
    )
    assert released.status_code == 200, released.text
    body: dict[str, Any] = released.json()
    return body


class TestFallback:
    async def test_a_slow_bank_lets_the_vehicle_out_and_the_debt_is_paid_later(
        self, http: httpx.AsyncClient, payments_url: str
    ) -> None:
        lot = await create_lot(http)
        plate = random_plate("motorbike")
        await enter(http, lot, now() - timedelta(hours=1), plate_read=plate_read(plate))
        decision = (await leave(http, lot, now(), plate_read=plate_read(plate))).json()
        assert decision["decision"] == "pay"
        assert decision["fallback_after"] is not None
        early = await http.post(
            f"/v1/sessions/{decision['session_id']}/fallback-exit",
            headers={"Idempotency-Key": str(uuid.uuid4())},
            auth=lot.exit.auth,
        )
        assert early.status_code == 409
        assert early.json()["code"] == "payment_wait_not_over"

        await asyncio.sleep(PAYMENT_WAIT.total_seconds())
        released = await http.post(
            f"/v1/sessions/{decision['session_id']}/fallback-exit",
            headers={"Idempotency-Key": str(uuid.uuid4())},
            auth=lot.exit.auth,
        )
        assert released.status_code == 200, released.text
        opened = released.json()
        assert (opened["decision"], opened["reason"]) == ("open", "debt_recorded")
        assert opened["debt_amount"] == decision["fee"]
        owed = await receipt_of(http, opened)
        assert owed["amount_due"] == decision["fee"]
        assert owed["payment"]["qr"] == decision["payment"]["qr"]  # the QR still pays it

        await bank_pays(owed["payment"]["qr"], payments_url)
        paid = await eventually(
            lambda: receipt_of(http, opened), lambda receipt: receipt["amount_due"] == 0
        )
        assert paid["debt_status"] == "paid"
        assert paid["paid_amount"] == decision["fee"]

    async def test_an_offline_exit_is_billed_later_never_shown_a_qr(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http)
        plate = random_plate("car")
        at = now() - timedelta(hours=3)
        await enter(http, lot, at, plate_read=plate_read(plate))
        decision = (
            await leave(
                http, lot, at + timedelta(hours=2), plate_read=plate_read(plate), offline=True
            )
        ).json()
        assert (decision["decision"], decision["reason"]) == ("open", "debt_recorded")
        assert decision["payment"] is None
        # The debt collector prepares a VietQR for the receipt.
        receipt = await eventually(
            lambda: receipt_of(http, decision), lambda receipt: receipt["payment"] is not None
        )
        assert receipt["payment"]["amount"] == receipt["amount_due"] == decision["fee"]

    async def test_payments_unreachable_lets_a_registered_vehicle_out_on_the_fallback(
        self,
        http: httpx.AsyncClient,
        app: FastAPI,
        payments: httpx.AsyncClient,
        payments_url: str,
    ) -> None:
        lot = await create_lot(http)
        plate = random_plate("car")
        vehicle = await register_vehicle(http, plate)
        await fund(payments, payments_url, vehicle["wallet_account_id"], 300_000)
        await enter(http, lot, now() - timedelta(hours=1), plate_read=plate_read(plate))
        context: Parking = app.state.parking
        reachable = context.payments
        context.payments = Payments(f"http://127.0.0.1:{free_port()}", "token", 0.5)
        try:
            decision = (await leave(http, lot, now(), plate_read=plate_read(plate))).json()
        finally:
            await context.payments.close()
            context.payments = reachable
        assert (decision["decision"], decision["reason"]) == ("open", "debt_recorded")
        # Back with payments, the collector takes the debt from the wallet (the entry hold).
        receipt = await eventually(
            lambda: receipt_of(http, decision),
            lambda receipt: receipt["debt_status"] == "paid",
        )
        assert receipt["paid_amount"] == decision["fee"]
        assert await balance(payments, vehicle["wallet_account_id"]) == 300_000 - decision["fee"]

    async def test_a_registered_vehicle_short_of_funds_pays_by_vietqr(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http)
        plate = random_plate("car")
        await register_vehicle(http, plate)
        entry = (
            await enter(http, lot, now() - timedelta(hours=1), plate_read=plate_read(plate))
        ).json()
        assert entry["hold_status"] == "insufficient_funds"
        decision = (await leave(http, lot, now(), plate_read=plate_read(plate))).json()
        assert decision["decision"] == "pay"
        assert decision["payment"]["amount"] == decision["fee"]


class TestReceipts:
    async def test_a_receipt_needs_its_token(self, http: httpx.AsyncClient) -> None:
        lot = await create_lot(http)
        plate = random_plate()
        await enter(http, lot, now() - timedelta(minutes=5), plate_read=plate_read(plate))
        decision = (await leave(http, lot, now(), plate_read=plate_read(plate))).json()
        wrong = await http.get(f"/v1/receipts/{decision['session_id']}", params={"token": "A" * 22})
        assert wrong.status_code == 404
        assert wrong.json()["code"] == "receipt_not_found"
        assert (await receipt_of(http, decision))["settlement"] == "free"


class TestDisputes:
    async def test_an_accepted_wrong_times_dispute_refunds_the_difference_to_the_wallet(
        self, http: httpx.AsyncClient, payments: httpx.AsyncClient, payments_url: str
    ) -> None:
        lot = await create_lot(http)
        exit_at = now() - timedelta(minutes=1)
        stay = timedelta(hours=3, minutes=10)
        decision, wallet = await pay_by_wallet(http, payments, payments_url, lot, exit_at, stay)
        charged = decision["fee"]
        claimed_entry = exit_at - timedelta(minutes=10)  # within the grace period: free
        disputed = await http.post(
            f"/v1/receipts/{decision['session_id']}/disputes",
            params={"token": decision["receipt_token"]},
            json={
                "reason": "wrong_times",
                "detail": "I arrived ten minutes before leaving.",
                "claimed_entry_at": claimed_entry.isoformat(),
            },
        )
        assert disputed.status_code == 201, disputed.text
        before = await balance(payments, wallet)

        resolved = await http.post(
            f"/v1/disputes/{disputed.json()['dispute_id']}/resolve",
            json={"outcome": "accepted", "operator": "ops-lan", "note": "camera log agrees"},
            headers=ADMIN,
        )
        assert resolved.status_code == 200, resolved.text
        corrected = fee_of(claimed_entry, exit_at, VehicleType.CAR, lot)
        assert corrected == 0 < charged
        override = resolved.json()["override"]
        assert (override["fee_before"], override["fee_after"]) == (charged, corrected)
        assert override["refund_amount"] == charged - corrected
        assert override["refund_status"] == "refunded"
        assert await balance(payments, wallet) == before + charged - corrected
        receipt = await receipt_of(http, decision)
        assert receipt["fee"] == corrected
        assert receipt["refunded_amount"] == charged - corrected
        assert datetime.fromisoformat(receipt["entry_at"]) == claimed_entry

    async def test_a_rejected_dispute_changes_nothing(
        self, http: httpx.AsyncClient, payments: httpx.AsyncClient, payments_url: str
    ) -> None:
        lot = await create_lot(http)
        decision, wallet = await pay_by_wallet(
            http, payments, payments_url, lot, now(), timedelta(hours=2, minutes=30)
        )
        disputed = await http.post(
            f"/v1/receipts/{decision['session_id']}/disputes",
            params={"token": decision["receipt_token"]},
            json={"reason": "wrong_plate", "detail": "Not my car."},
        )
        again = await http.post(
            f"/v1/receipts/{decision['session_id']}/disputes",
            params={"token": decision["receipt_token"]},
            json={"reason": "other", "detail": "Still not my car."},
        )
        assert again.status_code == 409
        assert again.json()["code"] == "dispute_open"
        before = await balance(payments, wallet)
        resolved = await http.post(
            f"/v1/disputes/{disputed.json()['dispute_id']}/resolve",
            json={"outcome": "rejected", "operator": "ops-lan", "note": "plate clearly visible"},
            headers=ADMIN,
        )
        assert resolved.json()["status"] == "rejected"
        assert resolved.json()["override"] is None
        assert await balance(payments, wallet) == before
        assert (await receipt_of(http, decision))["fee"] == decision["fee"]


class TestOverrides:
    async def test_a_vehicle_gone_without_an_exit_read_is_closed_as_a_debt(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http)
        plate = random_plate()
        entry = (
            await enter(http, lot, now() - timedelta(hours=2), plate_read=plate_read(plate))
        ).json()
        override = await http.post(
            f"/v1/sessions/{entry['session_id']}/overrides",
            json={
                "action": "close_as_debt",
                "operator": "ops-lan",
                "reason": "barrier raised by hand, camera offline",
            },
            headers=ADMIN,
        )
        assert override.status_code == 201, override.text
        session = (await http.get(f"/v1/sessions/{entry['session_id']}", headers=ADMIN)).json()
        assert (session["status"], session["settlement"], session["debt_status"]) == (
            "closed",
            "debt",
            "outstanding",
        )
        occupancy = (await http.get(f"/v1/lots/{lot.lot_id}/occupancy")).json()
        assert all(row["occupied"] == 0 for row in occupancy["vehicles"])

    async def test_a_misread_plate_is_corrected_and_the_flag_cleared(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http)
        entry = (
            await enter(http, lot, now(), plate_read=plate_read(random_plate(), confidence=0.3))
        ).json()
        right = random_plate()
        override = await http.post(
            f"/v1/sessions/{entry['session_id']}/overrides",
            json={
                "action": "correct_plate",
                "operator": "ops-lan",
                "reason": "image check",
                "plate": right,
            },
            headers=ADMIN,
        )
        assert override.status_code == 201, override.text
        session = (await http.get(f"/v1/sessions/{entry['session_id']}", headers=ADMIN)).json()
        assert session["plate"] == right
        assert session["needs_review"] is False


class TestAudit:
    async def test_the_day_is_explained_to_the_dong_and_the_unpaid_session_is_listed(
        self, http: httpx.AsyncClient, payments: httpx.AsyncClient, payments_url: str
    ) -> None:
        lot = await create_lot(http)
        exit_at = now() - timedelta(seconds=30)
        day = exit_at.astimezone(HANOI_TZ).date()
        by_wallet, _ = await pay_by_wallet(
            http, payments, payments_url, lot, exit_at, timedelta(hours=3, minutes=10)
        )
        by_qr = await pay_by_vietqr(http, payments_url, lot, exit_at, timedelta(hours=2))
        unpaid = await leave_unpaid(http, lot, exit_at, timedelta(hours=1, minutes=30))
        fees = by_wallet["fee"] + by_qr["fee"] + unpaid["fee"]

        async def read() -> dict[str, Any]:
            response = await http.get(f"/v1/audit/{lot.lot_id}/{day}", headers=ADMIN)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        report = await eventually(
            read,
            lambda report: report["totals"]["payments_observed"] == by_wallet["fee"] + by_qr["fee"],
        )
        totals = report["totals"]
        assert totals["unexplained"] == 0, report["problems"]
        assert report["ok"] is True
        assert totals["sessions"] == 3
        assert totals["expected"] == fees
        assert totals["collected"] == by_wallet["fee"] + by_qr["fee"]
        assert totals["outstanding"] == unpaid["fee"]
        assert totals["payments_reported"] == totals["ledger"] == totals["payments_observed"]
        assert [line["session_id"] for line in report["sessions_without_payment"]] == [
            unpaid["session_id"]
        ]
        assert report["payments_without_session"] == []
        assert report["tariff_mismatches"] == []

        exported = await http.get(f"/v1/audit/{lot.lot_id}/{day}.csv", headers=ADMIN)
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        unexplained = next(row for row in rows if row["id"] == "unexplained")
        assert unexplained["amount"] == "0"
        assert {
            row["session_id"] for row in rows if row["section"] == "session_without_payment"
        } == {unpaid["session_id"]}

    async def test_revenue_no_session_explains_is_listed_as_a_payment_without_session(
        self, http: httpx.AsyncClient, payments: httpx.AsyncClient, payments_url: str
    ) -> None:
        lot = await create_lot(http)
        wallet = (
            await payments.post(
                "/v1/accounts",
                json={"kind": "vehicle_wallet", "owner_id": f"stray-{uuid.uuid4().hex[:10]}"},
            )
        ).json()["id"]
        await fund(payments, payments_url, wallet, 50_000)
        stray = await payments.post(
            "/v1/charges",
            json={
                "account_id": wallet,
                "amount": 20_000,
                "source": "parking",
                "lot_id": lot.lot_id,
            },
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert stray.status_code == 201, stray.text
        day = datetime.now(UTC).astimezone(HANOI_TZ).date()

        async def read() -> dict[str, Any]:
            body: dict[str, Any] = (
                await http.get(f"/v1/audit/{lot.lot_id}/{day}", headers=ADMIN)
            ).json()
            return body

        report = await eventually(read, lambda report: report["payments_without_session"])
        assert [line["transfer_id"] for line in report["payments_without_session"]] == [
            stray.json()["id"]
        ]
        assert report["totals"]["payments_without_session"] == 20_000
        assert report["totals"]["unexplained"] == 0
