"""End to end on real servers and the real payments service: entries, exits, payment, receipts."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx

from services.parking.tariffs import DEFAULT_TARIFFS, VehicleType, price_session
from tests.parking.conftest import (
    ADMIN,
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


class TestRegisteredCar:
    async def test_three_hours_ten_minutes_is_charged_once_with_a_receipt(
        self, http: httpx.AsyncClient, payments: httpx.AsyncClient, payments_url: str
    ) -> None:
        lot = await create_lot(http)
        plate = random_plate("car")
        vehicle = await register_vehicle(http, plate)
        wallet = vehicle["wallet_account_id"]
        await fund(payments, payments_url, wallet, 500_000)
        exit_at = now() - timedelta(minutes=1)
        entry_at = exit_at - timedelta(hours=3, minutes=10)

        entered = await enter(http, lot, entry_at, plate_read=plate_read(plate))
        assert entered.status_code == 200, entered.text
        entry = entered.json()
        assert entry["decision"] == "open"
        assert entry["registered"] is True
        assert entry["hold_status"] == "held"
        assert await balance(payments, wallet) == 500_000 - entry["hold_amount"]

        exit_event = lot.event(lot.exit, exit_at, plate_read=plate_read(plate))
        exit_key = {"Idempotency-Key": str(uuid.uuid4())}
        left = await http.post("/v1/exits", json=exit_event, headers=exit_key, auth=lot.exit.auth)
        assert left.status_code == 200, left.text
        decision = left.json()
        expected = price_session(
            entry_at, exit_at, VehicleType.CAR, DEFAULT_TARIFFS, lot_id=lot.lot_id
        ).total
        assert decision["decision"] == "open"
        assert decision["reason"] == "paid_from_wallet"
        assert decision["fee"] == expected > 0
        assert await balance(payments, wallet) == 500_000 - expected

        # Charged once: the lane's retry replays the decision, a second read is a double exit.
        retried = await http.post(
            "/v1/exits", json=exit_event, headers=exit_key, auth=lot.exit.auth
        )
        assert retried.content == left.content
        again = await leave(http, lot, now(), plate_read=plate_read(plate))
        assert again.json()["code"] == "already_exited"
        assert await balance(payments, wallet) == 500_000 - expected

        receipt = await http.get(
            f"/v1/receipts/{decision['session_id']}",
            params={"token": decision["receipt_token"]},
        )
        assert receipt.status_code == 200, receipt.text
        body = receipt.json()
        assert body["fee"] == body["paid_amount"] == expected
        assert body["plate"].endswith(plate[-2:])
        assert "*" in body["plate"]
        assert sum(line["amount"] for line in body["lines"]) == expected
        assert body["payment_reference"]

        session = await http.get(f"/v1/sessions/{decision['session_id']}", headers=ADMIN)
        assert session.json()["hold_status"] == "captured"


class TestUnregisteredMotorbike:
    async def test_vietqr_paid_through_the_bank_sandbox_opens_the_barrier(
        self, http: httpx.AsyncClient, payments_url: str
    ) -> None:
        lot = await create_lot(http)
        plate = random_plate("motorbike")
        exit_at = now() - timedelta(seconds=5)
        entered = await enter(http, lot, exit_at - timedelta(hours=2), plate_read=plate_read(plate))
        assert entered.json()["registered"] is False

        left = await leave(http, lot, exit_at, plate_read=plate_read(plate))
        assert left.status_code == 200, left.text
        decision = left.json()
        assert decision["decision"] == "pay"
        assert decision["payment"]["amount"] == decision["fee"] > 0
        assert decision["payment"]["reference"] in decision["payment"]["qr"]

        output = await bank_pays(decision["payment"]["qr"], payments_url)
        assert "credited" in output
        opened = await wait_for_open(http, lot, decision["session_id"])
        assert opened["reason"] == "paid_by_vietqr"
        assert opened["receipt_token"]
