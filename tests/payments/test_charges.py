"""Charges: debit a wallet, credit (sharded) revenue; bad input, funds, idempotency, auth."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from services.payments.settings import PaymentsSettings
from shared.db import Database
from tests.payments.conftest import (
    balance,
    charge,
    fund_wallet,
    new_key,
    open_wallet,
    postings_of,
)


class TestCharge:
    async def test_debits_the_wallet_and_credits_transit_revenue(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 50_000)

        response = await charge(http, wallet["id"], 8_000)

        assert response.status_code == 201, response.text
        charged = response.json()
        assert (charged["amount"], charged["balance"], charged["source"]) == (
            8_000,
            42_000,
            "transit",
        )
        assert await balance(http, wallet["id"]) == 42_000
        revenue = (await http.get(f"/v1/accounts/{charged['revenue_account_id']}")).json()
        assert revenue["kind"] == "transit_revenue"

    async def test_parking_charge_credits_the_lots_revenue(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http, "vehicle_wallet")
        await fund_wallet(http, settings, wallet["id"], 100_000)
        lot_id = f"lot-{uuid.uuid4().hex[:8]}"

        response = await charge(http, wallet["id"], 25_000, source="parking", lot_id=lot_id)

        assert response.status_code == 201, response.text
        revenue = (await http.get(f"/v1/accounts/{response.json()['revenue_account_id']}")).json()
        assert (revenue["kind"], revenue["owner_id"]) == ("parking_revenue", lot_id)

    async def test_revenue_is_spread_over_sub_accounts(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 1_000_000)

        responses = [await charge(http, wallet["id"], 1_000) for _ in range(24)]

        sub_accounts = {r.json()["revenue_account_id"] for r in responses}
        assert 1 < len(sub_accounts) <= settings.hot_account_shards
        kinds = {(await http.get(f"/v1/accounts/{a}")).json()["kind"] for a in sub_accounts}
        assert kinds == {"transit_revenue"}

    async def test_client_transfer_id_names_the_charge_and_is_unique(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 50_000)
        transfer_id = str(uuid.uuid4())

        first = await charge(http, wallet["id"], 1_000, transfer_id=transfer_id)
        again = await charge(http, wallet["id"], 1_000, transfer_id=transfer_id)

        assert first.status_code == 201
        assert first.json()["id"] == transfer_id
        assert again.status_code == 409
        assert again.json()["code"] == "duplicate_transfer"
        assert await balance(http, wallet["id"]) == 49_000


class TestInsufficientFunds:
    async def test_states_the_shortfall_and_posts_nothing(
        self, http: httpx.AsyncClient, settings: PaymentsSettings, ledger_db: Database
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 10_000)
        postings_before = await postings_of(ledger_db, wallet["id"])

        response = await charge(http, wallet["id"], 12_500)

        assert response.status_code == 402
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert (problem["code"], problem["shortfall"]) == ("insufficient_funds", 2_500)
        assert await balance(http, wallet["id"]) == 10_000
        assert await postings_of(ledger_db, wallet["id"]) == postings_before


BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("negative", {"amount": -1_000}, "validation_error"),
    ("zero", {"amount": 0}, "validation_error"),
    ("fractional", {"amount": 1_000.5}, "validation_error"),
    ("float that looks whole", {"amount": 1_000.0}, "validation_error"),
    ("string", {"amount": "1000"}, "validation_error"),
    ("boolean", {"amount": True}, "validation_error"),
    ("oversized", {"amount": 100_000_001}, "validation_error"),
    ("wrong currency", {"currency": "USD"}, "validation_error"),
    ("parking without lot", {"source": "parking"}, "validation_error"),
    ("transit with a lot", {"lot_id": "lot-1"}, "validation_error"),
    ("unknown source", {"source": "taxi"}, "validation_error"),
    ("unknown field", {"amout": 1_000}, "validation_error"),
]


class TestBadInput:
    @pytest.mark.parametrize(
        ("change", "code"),
        [(c, code) for _, c, code in BAD_BODIES],
        ids=[n for n, _, _ in BAD_BODIES],
    )
    async def test_is_refused_with_422_and_nothing_posted(
        self,
        http: httpx.AsyncClient,
        settings: PaymentsSettings,
        ledger_db: Database,
        change: dict[str, Any],
        code: str,
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 20_000)
        postings_before = await postings_of(ledger_db, wallet["id"])
        body = {"account_id": wallet["id"], "amount": 1_000, "source": "transit", **change}

        response = await http.post("/v1/charges", json=body, headers={"Idempotency-Key": new_key()})

        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code
        assert await balance(http, wallet["id"]) == 20_000
        assert await postings_of(ledger_db, wallet["id"]) == postings_before

    async def test_unknown_account_is_422_unknown_account(self, http: httpx.AsyncClient) -> None:
        missing = str(uuid.uuid4())

        response = await charge(http, missing, 1_000)

        assert response.status_code == 422
        assert (response.json()["code"], response.json()["account_id"]) == (
            "unknown_account",
            missing,
        )

    async def test_an_account_that_is_no_wallet_cannot_be_charged(
        self, http: httpx.AsyncClient, settings: PaymentsSettings, ledger_db: Database
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 20_000)
        revenue_id = (await charge(http, wallet["id"], 5_000)).json()["revenue_account_id"]
        postings_before = await postings_of(ledger_db, revenue_id)

        response = await charge(http, revenue_id, 1_000)

        assert response.status_code == 422
        assert response.json()["code"] == "unknown_account"
        assert await postings_of(ledger_db, revenue_id) == postings_before


class TestIdempotency:
    async def test_replay_returns_the_identical_bytes(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 20_000)
        key = new_key()

        first = await charge(http, wallet["id"], 3_000, key=key)
        replay = await charge(http, wallet["id"], 3_000, key=key)

        assert (first.status_code, replay.status_code) == (201, 201)
        assert replay.content == first.content
        assert replay.headers["idempotent-replayed"] == "true"
        assert await balance(http, wallet["id"]) == 17_000

    async def test_same_key_with_another_body_is_422(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 20_000)
        key = new_key()
        await charge(http, wallet["id"], 3_000, key=key)

        reused = await charge(http, wallet["id"], 4_000, key=key)

        assert reused.status_code == 422
        assert reused.json()["code"] == "idempotency_key_reused"
        assert await balance(http, wallet["id"]) == 17_000

    async def test_missing_key_is_400(self, http: httpx.AsyncClient) -> None:
        wallet = await open_wallet(http)

        response = await http.post(
            "/v1/charges", json={"account_id": wallet["id"], "amount": 1_000, "source": "transit"}
        )

        assert response.status_code == 400
        assert response.json()["code"] == "idempotency_key_missing"

    async def test_concurrent_duplicates_charge_once(
        self, http: httpx.AsyncClient, settings: PaymentsSettings, ledger_db: Database
    ) -> None:
        wallet = await open_wallet(http)
        await fund_wallet(http, settings, wallet["id"], 50_000)
        postings_before = await postings_of(ledger_db, wallet["id"])
        key = new_key()

        responses = await asyncio.gather(
            *(charge(http, wallet["id"], 7_000, key=key) for _ in range(8))
        )

        originals = [
            r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
        ]
        assert len(originals) == 1
        for response in responses:
            assert response.status_code in (201, 409)
            if response.status_code == 201:
                assert response.content == originals[0].content
            else:
                assert response.json()["code"] == "idempotency_key_in_flight"
        assert await balance(http, wallet["id"]) == 43_000
        assert await postings_of(ledger_db, wallet["id"]) == postings_before + 1


class TestAuthentication:
    @pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic dXNlcjpwYXNz"])
    async def test_v1_needs_the_service_token(
        self, anonymous: httpx.AsyncClient, authorization: str | None
    ) -> None:
        headers = {"Authorization": authorization} if authorization else {}

        response = await anonymous.get(f"/v1/accounts/{uuid.uuid4()}", headers=headers)

        assert response.status_code == 401
        assert response.json()["code"] == "invalid_token"

    @pytest.mark.parametrize(
        "path",
        [
            "/v1/charges",
            "/v1/holds",
            "/v1/payment-requests",
            "/v1/holds/00000000-0000-7000-8000-000000000001/capture",
            "/v1/holds/00000000-0000-7000-8000-000000000001/void",
        ],
    )
    async def test_the_hot_money_paths_check_the_same_token(
        self, anonymous: httpx.AsyncClient, path: str
    ) -> None:
        """Served in front of FastAPI (shared.hot), through the one check in payments/auth.py."""
        headers = {"Authorization": "Bearer wrong-token", "Idempotency-Key": new_key()}

        response = await anonymous.post(path, json={}, headers=headers)

        assert response.status_code == 401
        assert response.json()["code"] == "invalid_token"

    def test_production_refuses_the_development_secrets(self) -> None:
        with pytest.raises(ValueError, match="placeholder"):
            PaymentsSettings(environment="production")

    @pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
    async def test_operations_endpoints_stay_open(
        self, anonymous: httpx.AsyncClient, path: str
    ) -> None:
        response = await anonymous.get(path)

        assert response.status_code == 200, response.text


class TestOpenApi:
    async def test_documents_problems_and_the_security_scheme(
        self, anonymous: httpx.AsyncClient
    ) -> None:
        spec = (await anonymous.get("/openapi.json")).json()

        create_charge = spec["paths"]["/v1/charges"]["post"]
        assert "application/problem+json" in create_charge["responses"]["402"]["content"]
        assert "HTTPBearer" in spec["components"]["securitySchemes"]
        webhook = spec["paths"]["/v1/bank/notifications"]["post"]
        assert "security" not in webhook
        assert "requestBody" in webhook
