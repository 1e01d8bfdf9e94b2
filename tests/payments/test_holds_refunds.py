"""Holds (reserve, capture for less, void, expire) and refunds (partial, repeated, bounded)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import text

from services.payments.settings import PaymentsSettings
from shared.db import Database
from tests.payments.conftest import balance, charge, fund_wallet, new_key, open_wallet, postings_of


async def place_hold(
    http: httpx.AsyncClient, account_id: str, amount: int, **fields: Any
) -> httpx.Response:
    body = {"account_id": account_id, "amount": amount, "source": "parking", "lot_id": "lot-holds"}
    return await http.post("/v1/holds", json=body | fields, headers={"Idempotency-Key": new_key()})


async def capture(http: httpx.AsyncClient, hold_id: str, amount: int) -> httpx.Response:
    return await http.post(
        f"/v1/holds/{hold_id}/capture",
        json={"amount": amount},
        headers={"Idempotency-Key": new_key()},
    )


async def refund(http: httpx.AsyncClient, charge_id: str, amount: int) -> httpx.Response:
    return await http.post(
        "/v1/refunds",
        json={"charge_id": charge_id, "amount": amount},
        headers={"Idempotency-Key": new_key()},
    )


class TestHolds:
    async def test_placing_a_hold_reserves_the_funds(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 100_000)

        response = await place_hold(http, wallet["id"], 30_000)

        assert response.status_code == 201, response.text
        hold = response.json()
        assert (hold["status"], hold["amount"], hold["balance"]) == ("pending", 30_000, 70_000)
        assert await balance(http, wallet["id"]) == 70_000

    async def test_capture_for_less_releases_the_rest(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 100_000)
        hold = (await place_hold(http, wallet["id"], 30_000)).json()

        response = await capture(http, hold["id"], 18_000)

        assert response.status_code == 200, response.text
        captured = response.json()
        assert (captured["status"], captured["captured_amount"], captured["released_amount"]) == (
            "captured",
            18_000,
            12_000,
        )
        assert captured["capture_transfer_id"]
        assert captured["release_transfer_id"]
        assert await balance(http, wallet["id"]) == 82_000

    async def test_capture_of_everything_releases_nothing(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 50_000)
        hold = (await place_hold(http, wallet["id"], 25_000)).json()

        captured = (await capture(http, hold["id"], 25_000)).json()

        assert (captured["released_amount"], captured["release_transfer_id"]) == (0, None)
        assert await balance(http, wallet["id"]) == 25_000

    async def test_void_releases_everything(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 100_000)
        hold = (await place_hold(http, wallet["id"], 30_000)).json()

        response = await http.post(
            f"/v1/holds/{hold['id']}/void", headers={"Idempotency-Key": new_key()}
        )

        assert response.status_code == 200, response.text
        voided = response.json()
        assert (voided["status"], voided["released_amount"], voided["balance"]) == (
            "voided",
            30_000,
            100_000,
        )
        assert await balance(http, wallet["id"]) == 100_000

    async def test_expiry_voids_the_hold_automatically(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 100_000)
        hold = (await place_hold(http, wallet["id"], 40_000, expires_in_s=1)).json()
        assert await balance(http, wallet["id"]) == 60_000

        for _ in range(100):
            state = (await http.get(f"/v1/holds/{hold['id']}")).json()
            if state["status"] != "pending":
                break
            await asyncio.sleep(0.1)

        assert (state["status"], state["released_amount"]) == ("expired", 40_000)
        assert await balance(http, wallet["id"]) == 100_000
        late = await capture(http, hold["id"], 10_000)
        assert (late.status_code, late.json()["code"]) == (409, "hold_not_pending")

    async def test_capture_more_than_held_is_422_and_moves_nothing(
        self, http: httpx.AsyncClient, settings: PaymentsSettings, ledger_db: Database
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 100_000)
        hold = (await place_hold(http, wallet["id"], 30_000)).json()
        postings_before = await postings_of(ledger_db, wallet["id"])

        response = await capture(http, hold["id"], 30_001)

        assert response.status_code == 422
        assert (response.json()["code"], response.json()["held"]) == (
            "capture_exceeds_hold",
            30_000,
        )
        assert (await http.get(f"/v1/holds/{hold['id']}")).json()["status"] == "pending"
        assert await postings_of(ledger_db, wallet["id"]) == postings_before

    async def test_a_settled_hold_cannot_be_captured_again(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 50_000)
        hold = (await place_hold(http, wallet["id"], 20_000)).json()
        await capture(http, hold["id"], 5_000)

        again = await capture(http, hold["id"], 5_000)

        assert again.status_code == 409
        assert (again.json()["code"], again.json()["hold_status"]) == (
            "hold_not_pending",
            "captured",
        )
        assert await balance(http, wallet["id"]) == 45_000

    async def test_a_hold_beyond_the_funds_is_402(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 10_000)

        response = await place_hold(http, wallet["id"], 30_000)

        assert response.status_code == 402
        assert response.json()["shortfall"] == 20_000

    async def test_an_expiry_no_time_type_holds_is_422_not_a_failure(
        self, http: httpx.AsyncClient
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")

        response = await place_hold(http, wallet["id"], 10_000, expires_in_s=23311409987605962752)

        assert (response.status_code, response.json()["code"]) == (422, "validation_error")
        assert [e["loc"] for e in response.json()["errors"]] == [["body", "expires_in_s"]]

    async def test_unknown_hold_is_404(self, http: httpx.AsyncClient) -> None:
        response = await capture(http, str(uuid.uuid4()), 1_000)

        assert (response.status_code, response.json()["code"]) == (404, "hold_not_found")

    async def test_a_malformed_hold_id_and_body_are_one_422_listing_both(
        self, http: httpx.AsyncClient
    ) -> None:
        response = await http.post(
            "/v1/holds/not-a-uuid/capture",
            json={"amount": -5},
            headers={"Idempotency-Key": new_key()},
        )
        voided = await http.post("/v1/holds/42/void", headers={"Idempotency-Key": new_key()})
        unkeyed = await http.post("/v1/holds/not-a-uuid/void")

        assert (response.status_code, response.json()["code"]) == (422, "validation_error")
        assert [e["loc"] for e in response.json()["errors"]] == [
            ["path", "hold_id"],
            ["body", "amount"],
        ]
        assert response.json()["instance"] == "/v1/holds/not-a-uuid/capture"
        assert [e["loc"] for e in voided.json()["errors"]] == [["path", "hold_id"]]
        assert (unkeyed.status_code, unkeyed.json()["code"]) == (400, "idempotency_key_missing")

    async def test_a_void_replays_its_first_answer(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 50_000)
        hold = (await place_hold(http, wallet["id"], 20_000)).json()
        key = {"Idempotency-Key": new_key()}

        first = await http.post(f"/v1/holds/{hold['id']}/void", headers=key)
        again = await http.post(f"/v1/holds/{hold['id']}/void", headers=key)

        assert first.status_code == 200
        assert (again.status_code, again.content) == (200, first.content)
        assert again.headers["idempotent-replayed"] == "true"
        assert await balance(http, wallet["id"]) == 50_000


class TestRefunds:
    async def test_partial_and_repeated_refunds_never_exceed_the_charge(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 50_000)
        charge_id = (await charge(http, wallet["id"], 20_000)).json()["id"]

        first = await refund(http, charge_id, 5_000)
        second = await refund(http, charge_id, 10_000)
        too_much = await refund(http, charge_id, 6_000)
        rest = await refund(http, charge_id, 5_000)
        beyond = await refund(http, charge_id, 1)

        assert (first.json()["refunded_total"], first.json()["refundable"]) == (5_000, 15_000)
        assert (second.json()["refunded_total"], second.json()["refundable"]) == (15_000, 5_000)
        assert too_much.status_code == 422
        assert (too_much.json()["code"], too_much.json()["refundable"]) == (
            "refund_exceeds_charge",
            5_000,
        )
        assert (rest.status_code, rest.json()["refundable"]) == (201, 0)
        assert beyond.status_code == 422
        assert await balance(http, wallet["id"]) == 50_000

    async def test_refund_goes_back_to_the_charged_wallet(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        charged, bystander = await open_wallet(http), await open_wallet(http)
        await fund_wallet(http, settings, charged["id"], 30_000)
        await fund_wallet(http, settings, bystander["id"], 30_000)
        charge_id = (await charge(http, charged["id"], 12_000)).json()["id"]

        response = await refund(http, charge_id, 12_000)

        assert response.status_code == 201, response.text
        assert response.json()["account_id"] == charged["id"]
        assert await balance(http, charged["id"]) == 30_000
        assert await balance(http, bystander["id"]) == 30_000

    async def test_concurrent_refunds_stay_within_the_charge(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 50_000)
        charge_id = (await charge(http, wallet["id"], 20_000)).json()["id"]

        responses = await asyncio.gather(*(refund(http, charge_id, 3_000) for _ in range(10)))

        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] * 6 + [422] * 4
        assert await balance(http, wallet["id"]) == 30_000 + 18_000

    async def test_a_captured_hold_can_be_refunded(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 50_000)
        hold = (await place_hold(http, wallet["id"], 30_000)).json()
        captured = (await capture(http, hold["id"], 25_000)).json()

        response = await refund(http, captured["capture_transfer_id"], 25_000)

        assert response.status_code == 201, response.text
        assert await balance(http, wallet["id"]) == 50_000

    async def test_unknown_charge_is_422(self, http: httpx.AsyncClient) -> None:
        response = await refund(http, str(uuid.uuid4()), 1_000)

        assert (response.status_code, response.json()["code"]) == (422, "unknown_charge")

    async def test_a_top_up_is_not_refundable(
        self, http: httpx.AsyncClient, settings: PaymentsSettings, ledger_db: Database
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 10_000)
        async with ledger_db.transaction() as session:
            transfer_id = await session.scalar(
                text("SELECT id FROM transfers WHERE wallet_account_id = :w AND kind = 'topup'"),
                {"w": uuid.UUID(wallet["id"])},
            )

        response = await refund(http, str(transfer_id), 1_000)

        assert (response.status_code, response.json()["code"]) == (422, "unknown_charge")
