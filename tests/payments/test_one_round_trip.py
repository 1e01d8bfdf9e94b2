"""Answers the database renders and stores (charges, holds, parking payment requests): the same
bytes pydantic would write, and the same Idempotency-Key rules as every other money path."""

from __future__ import annotations

import uuid

import httpx
import pytest

from services.payments.schemas import ChargeRead
from services.payments.settings import PaymentsSettings
from shared.db import Database
from tests.payments.conftest import charge, fund_wallet, new_key, open_wallet, postings_of


async def place_hold(
    http: httpx.AsyncClient, account_id: str, amount: int, key: str
) -> httpx.Response:
    body = {"account_id": account_id, "amount": amount, "source": "parking", "lot_id": "lot-rt"}
    return await http.post("/v1/holds", json=body, headers={"Idempotency-Key": key})


async def funded_hold(
    http: httpx.AsyncClient, settings: PaymentsSettings, amount: int
) -> dict[str, str]:
    wallet = await open_wallet(http, "vehicle_wallet")
    await fund_wallet(http, settings, wallet["id"], 100_000)
    placed = await place_hold(http, wallet["id"], amount, new_key())
    assert placed.status_code == 201, placed.text
    hold: dict[str, str] = placed.json()
    return hold


class TestRenderedAnswers:
    async def test_a_charge_reads_back_as_its_schema_writes_it(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 20_000)

        response = await charge(http, wallet["id"], 8_000)

        assert response.status_code == 201, response.text
        parsed = ChargeRead.model_validate_json(response.content)
        assert parsed.model_dump_json().encode() == response.content
        assert parsed.balance == 12_000

    async def test_a_placed_hold_is_what_reading_it_answers(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 100_000)

        placed = await place_hold(http, wallet["id"], 30_000, new_key())

        assert placed.status_code == 201, placed.text
        read = await http.get(f"/v1/holds/{placed.json()['id']}")
        assert placed.content == read.content

    @pytest.mark.parametrize("captured", [18_000, 30_000])
    async def test_a_captured_hold_is_what_reading_it_answers(
        self, http: httpx.AsyncClient, settings: PaymentsSettings, captured: int
    ) -> None:
        hold = await funded_hold(http, settings, 30_000)

        response = await http.post(
            f"/v1/holds/{hold['id']}/capture",
            json={"amount": captured},
            headers={"Idempotency-Key": new_key()},
        )

        assert response.status_code == 200, response.text
        assert response.content == (await http.get(f"/v1/holds/{hold['id']}")).content

    async def test_a_voided_hold_is_what_reading_it_answers(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        hold = await funded_hold(http, settings, 30_000)

        response = await http.post(
            f"/v1/holds/{hold['id']}/void", headers={"Idempotency-Key": new_key()}
        )

        assert response.status_code == 200, response.text
        assert response.content == (await http.get(f"/v1/holds/{hold['id']}")).content

    async def test_a_parking_payment_request_is_what_reading_it_answers(
        self, http: httpx.AsyncClient
    ) -> None:
        body = {"lot_id": "lot-rt", "parking_session_id": f"s-{uuid.uuid4().hex}", "amount": 25_000}

        response = await http.post(
            "/v1/payment-requests", json=body, headers={"Idempotency-Key": new_key()}
        )

        assert response.status_code == 201, response.text
        read = await http.get(f"/v1/payment-requests/{response.json()['id']}")
        assert response.content == read.content


class TestReplays:
    async def test_a_hold_capture_and_void_replay_their_first_bytes(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 100_000)
        place_key, capture_key, void_key = new_key(), new_key(), new_key()
        placed = await place_hold(http, wallet["id"], 10_000, place_key)
        other = (await place_hold(http, wallet["id"], 20_000, new_key())).json()
        captured = await http.post(
            f"/v1/holds/{placed.json()['id']}/capture",
            json={"amount": 4_000},
            headers={"Idempotency-Key": capture_key},
        )
        voided = await http.post(
            f"/v1/holds/{other['id']}/void", headers={"Idempotency-Key": void_key}
        )

        replays = [
            await place_hold(http, wallet["id"], 10_000, place_key),
            await http.post(
                f"/v1/holds/{placed.json()['id']}/capture",
                json={"amount": 4_000},
                headers={"Idempotency-Key": capture_key},
            ),
            await http.post(f"/v1/holds/{other['id']}/void", headers={"Idempotency-Key": void_key}),
        ]

        for first, replay in zip((placed, captured, voided), replays, strict=True):
            assert (replay.status_code, replay.content) == (first.status_code, first.content)
            assert replay.headers["idempotent-replayed"] == "true"
        assert (await http.get(f"/v1/accounts/{wallet['id']}")).json()["balance"] == 96_000

    async def test_a_refused_charge_stores_nothing_and_its_retry_runs_again(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 5_000)
        key = new_key()

        refused = await charge(http, wallet["id"], 8_000, key=key)
        await fund_wallet(http, settings, wallet["id"], 5_000)
        retried = await charge(http, wallet["id"], 8_000, key=key)

        assert (refused.status_code, refused.json()["shortfall"]) == (402, 3_000)
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers
        assert retried.json()["balance"] == 2_000


class TestKeyChecksComeFirst:
    async def test_a_hold_too_long_under_a_used_key_is_the_keys_conflict(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 100_000)
        key = new_key()
        await place_hold(http, wallet["id"], 10_000, key)
        too_long = {
            "account_id": wallet["id"],
            "amount": 10_000,
            "source": "parking",
            "lot_id": "lot-rt",
            "expires_in_s": 10**7,
        }

        reused = await http.post("/v1/holds", json=too_long, headers={"Idempotency-Key": key})
        fresh = await http.post("/v1/holds", json=too_long, headers={"Idempotency-Key": new_key()})

        assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")
        assert (fresh.status_code, fresh.json()["code"]) == (422, "hold_too_long")

    async def test_a_missing_key_is_400_even_with_a_bad_body(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/charges", json={"amount": "lots"})

        assert (response.status_code, response.json()["code"]) == (400, "idempotency_key_missing")

    async def test_a_key_too_long_is_listed_with_the_body_errors(
        self, http: httpx.AsyncClient, ledger_db: Database
    ) -> None:
        wallet = await open_wallet(http)

        response = await http.post(
            "/v1/charges",
            json={"account_id": wallet["id"], "amount": -5, "source": "transit"},
            headers={"Idempotency-Key": "k" * 256},
        )

        assert (response.status_code, response.json()["code"]) == (422, "validation_error")
        where = {tuple(error["loc"]) for error in response.json()["errors"]}
        assert where == {("header", "Idempotency-Key"), ("body", "amount")}
        assert await postings_of(ledger_db, wallet["id"]) == 0
