"""Purchases: paid through the real payments service, never a ticket without a charge nor a
charge without a ticket, whatever fails in between."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from citypass.servers import LocalServers
from services.ticketing import repository
from services.ticketing.payments import Payments, PaymentsBusy
from services.ticketing.settings import TicketingSettings
from shared.db import Database
from shared.fares.feed import HANOI
from tests.fares.support import hanoi_copy
from tests.support import ServiceProcess, read_events, wait_until
from tests.ticketing.conftest import (
    OPERATOR,
    PAYMENTS_TOKEN,
    RiderAccount,
    approve_category,
    balance,
    buy,
    fund,
    new_key,
    publish,
    register_device,
    scalar,
    sign_up,
    with_product,
    zipped,
)


async def transfers_of(ledger_db: Database, purchase_id: str) -> list[tuple[str, int]]:
    """Every ledger transfer a purchase caused: its charge (id = purchase id) and refunds."""
    async with ledger_db.transaction() as session:
        rows = await session.execute(
            text(
                "SELECT kind, amount FROM transfers WHERE id = :id OR original_transfer_id = :id "
                "ORDER BY posted_at"
            ),
            {"id": uuid.UUID(purchase_id)},
        )
        return [(row.kind, int(row.amount)) for row in rows]


async def tickets_of(ticketing_db: Database, purchase_id: str) -> int:
    count: int = await scalar(
        ticketing_db, "SELECT count(*) FROM tickets WHERE purchase_id = :id", id=purchase_id
    )
    return count


async def purchase_status(http: httpx.AsyncClient, rider: RiderAccount, purchase_id: str) -> Any:
    response = await http.get(f"/v1/purchases/{purchase_id}", headers=rider.auth)
    assert response.status_code == 200, response.text
    return response.json()


class TestPurchase:
    async def test_purchase_charges_once_and_issues_the_ticket_with_its_event(
        self,
        http: httpx.AsyncClient,
        payments_http: httpx.AsyncClient,
        ledger_db: Database,
        migrated: LocalServers,
    ) -> None:
        rider = await sign_up(http)
        device = await register_device(http, rider)
        await fund(http, payments_http, rider, 100_000)
        response = await buy(http, rider, "METRO-DAY")
        assert response.status_code == 201, response.text
        purchase = response.json()
        ticket = purchase["ticket"]
        assert purchase["status"] == "completed"
        assert purchase["charge_id"] == purchase["id"]
        assert (ticket["product_code"], ticket["kind"], ticket["mode"]) == (
            "METRO-DAY",
            "pass",
            "metro",
        )
        valid = datetime.fromisoformat(ticket["valid_until"]) - datetime.fromisoformat(
            ticket["valid_from"]
        )
        assert valid == timedelta(days=1)
        assert await balance(http, rider) == 60_000
        assert await transfers_of(ledger_db, purchase["id"]) == [("charge", 40_000)]

        issued = await read_events(
            migrated.kafka_bootstrap,
            "transit.tickets",
            lambda e: (
                e.type == "citypass.transit.ticket.issued.v1"
                and e.data["ticket_id"] == ticket["id"]
            ),
            1,
        )
        event, key = issued[0]
        assert key == ticket["id"].encode()
        assert (
            event.data
            | {
                "rider_id": rider.id,
                "product_code": "METRO-DAY",
                "kind": "pass",
                "rides": None,
                "lines": [],
                "credential_lines": ["METRO"],
                "device_key_fingerprint": device["fingerprint"],
                "wallet_account_id": rider.wallet_account_id,
            }
            == event.data
        )
        assert event.data["valid_until_unix"] - event.data["valid_from_unix"] == 86_400

    async def test_insufficient_funds_is_402_and_no_ticket(
        self, http: httpx.AsyncClient, payments_http: httpx.AsyncClient, ledger_db: Database
    ) -> None:
        rider = await sign_up(http)
        await fund(http, payments_http, rider, 10_000)
        response = await buy(http, rider, "METRO-WEEK")
        assert response.status_code == 402
        problem = response.json()
        assert problem["code"] == "insufficient_funds"
        assert problem["shortfall"] == 150_000
        assert (await http.get("/v1/tickets", headers=rider.auth)).json() == []
        assert await balance(http, rider) == 10_000
        assert await transfers_of(ledger_db, problem["purchase_id"]) == []
        failed = await purchase_status(http, rider, problem["purchase_id"])
        assert (failed["status"], failed["ticket"]) == ("failed", None)

    async def test_same_key_gives_one_ticket_and_one_charge(
        self, http: httpx.AsyncClient, payments_http: httpx.AsyncClient, ledger_db: Database
    ) -> None:
        rider = await sign_up(http)
        await fund(http, payments_http, rider, 100_000)
        key = new_key()
        first = await buy(http, rider, "BUS-SINGLE-SHORT", key=key)
        again = await buy(http, rider, "BUS-SINGLE-SHORT", key=key)
        assert first.status_code == again.status_code == 201
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        racing = await asyncio.gather(
            *(buy(http, rider, "BUS-SINGLE-SHORT", key=key) for _ in range(3))
        )
        assert {r.status_code for r in racing} <= {201, 409}
        assert len((await http.get("/v1/tickets", headers=rider.auth)).json()) == 1
        assert await transfers_of(ledger_db, first.json()["id"]) == [("charge", 8_000)]
        assert await balance(http, rider) == 92_000

    async def test_same_key_with_another_body_is_refused(
        self, http: httpx.AsyncClient, payments_http: httpx.AsyncClient
    ) -> None:
        rider = await sign_up(http)
        await fund(http, payments_http, rider, 100_000)
        key = new_key()
        assert (await buy(http, rider, "BUS-SINGLE-SHORT", key=key)).status_code == 201
        other = await buy(http, rider, "METRO-DAY", key=key)
        assert other.status_code == 422
        assert other.json()["code"] == "idempotency_key_reused"
        assert await balance(http, rider) == 92_000

    async def test_keys_belong_to_their_rider(
        self, http: httpx.AsyncClient, payments_http: httpx.AsyncClient
    ) -> None:
        first, second = await sign_up(http), await sign_up(http)
        for rider in (first, second):
            await fund(http, payments_http, rider, 50_000)
        key = new_key()
        bought = [await buy(http, rider, "METRO-DAY", key=key) for rider in (first, second)]
        assert [b.status_code for b in bought] == [201, 201]
        assert bought[0].json()["id"] != bought[1].json()["id"]
        assert [await balance(http, r) for r in (first, second)] == [10_000, 10_000]

    async def test_refused_purchase_succeeds_on_retry_after_a_top_up(
        self, http: httpx.AsyncClient, payments_http: httpx.AsyncClient, ledger_db: Database
    ) -> None:
        rider = await sign_up(http)
        key = new_key()
        refused = await buy(http, rider, "METRO-DAY", key=key)
        assert refused.status_code == 402
        await fund(http, payments_http, rider, 50_000)
        retried = await buy(http, rider, "METRO-DAY", key=key)
        assert retried.status_code == 201, retried.text
        assert retried.json()["id"] == refused.json()["purchase_id"]
        assert await transfers_of(ledger_db, retried.json()["id"]) == [("charge", 40_000)]

    async def test_bad_input_is_a_problem_and_records_nothing(
        self,
        http: httpx.AsyncClient,
        payments_http: httpx.AsyncClient,
        ticketing_db: Database,
    ) -> None:
        rider = await sign_up(http)
        await fund(http, payments_http, rider, 500_000)
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"product_code": "METRO-YEAR"}, 422, "unknown_product"),
            ({"product_code": "METRO-MONTH-C"}, 403, "category_not_eligible"),
            ({"product_code": "FREE-PASS"}, 403, "category_not_eligible"),
            ({"product_code": "BUS-MONTH-ROUTE"}, 422, "invalid_line"),
            ({"product_code": "BUS-MONTH-ROUTE", "line": "999"}, 422, "invalid_line"),
            ({"product_code": "METRO-DAY", "line": "2A"}, 422, "invalid_line"),
            ({"product_code": "metro day"}, 422, "validation_error"),
            ({"product_code": "METRO-DAY", "price_vnd": 0}, 422, "validation_error"),
        ]
        for body, status, code in cases:
            response = await http.post(
                "/v1/purchases", json=body, headers={**rider.auth, "Idempotency-Key": new_key()}
            )
            assert (response.status_code, response.json()["code"]) == (status, code), body
        missing_key = await http.post(
            "/v1/purchases", json={"product_code": "METRO-DAY"}, headers=rider.auth
        )
        assert missing_key.status_code == 400
        assert missing_key.json()["code"] == "idempotency_key_missing"
        recorded = await scalar(
            ticketing_db, "SELECT count(*) FROM purchases WHERE rider_id = :id", id=rider.id
        )
        assert recorded == 0
        assert await balance(http, rider) == 500_000

    async def test_free_category_gets_a_free_pass_without_any_charge(
        self, http: httpx.AsyncClient, ledger_db: Database
    ) -> None:
        rider = await sign_up(http, category="elderly")
        await approve_category(http, rider)
        response = await buy(http, rider, "FREE-PASS")
        assert response.status_code == 201, response.text
        purchase = response.json()
        assert (purchase["price_vnd"], purchase["charge_id"]) == (0, None)
        assert purchase["ticket"]["rider_category"] == "elderly"
        assert await transfers_of(ledger_db, purchase["id"]) == []

    async def test_one_route_pass_is_valid_on_the_chosen_route(
        self, http: httpx.AsyncClient, payments_http: httpx.AsyncClient
    ) -> None:
        rider = await sign_up(http)
        await fund(http, payments_http, rider, 200_000)
        response = await buy(http, rider, "BUS-MONTH-ROUTE", line="32")
        assert response.status_code == 201, response.text
        assert response.json()["ticket"]["lines"] == ["32"]
        assert response.json()["line"] == "32"

    async def test_stored_value_charges_nothing_now(
        self, http: httpx.AsyncClient, payments_http: httpx.AsyncClient, migrated: LocalServers
    ) -> None:
        rider = await sign_up(http)
        await fund(http, payments_http, rider, 50_000)
        response = await buy(http, rider, "STORED-VALUE")
        assert response.status_code == 201, response.text
        assert await balance(http, rider) == 50_000
        issued = await read_events(
            migrated.kafka_bootstrap,
            "transit.tickets",
            lambda e: (
                e.type == "citypass.transit.ticket.issued.v1"
                and e.data["ticket_id"] == response.json()["ticket"]["id"]
            ),
            1,
        )
        assert issued[0][0].data["distance_priced"] is True
        assert issued[0][0].data["wallet_account_id"] == rider.wallet_account_id


class TestOwnership:
    async def test_a_rider_cannot_read_or_use_another_riders_purchase_or_ticket(
        self, http: httpx.AsyncClient, payments_http: httpx.AsyncClient
    ) -> None:
        owner, other = await sign_up(http), await sign_up(http)
        await register_device(http, other)
        await fund(http, payments_http, owner, 50_000)
        purchase = (await buy(http, owner, "METRO-DAY")).json()
        ticket_id = purchase["ticket"]["id"]
        for url, code in (
            (f"/v1/purchases/{purchase['id']}", "purchase_not_found"),
            (f"/v1/tickets/{ticket_id}", "ticket_not_found"),
            (f"/v1/tickets/{ticket_id}/credential", "ticket_not_found"),
        ):
            response = await http.get(url, headers=other.auth)
            assert (response.status_code, response.json()["code"]) == (404, code), url
        assert (await http.get("/v1/tickets", headers=other.auth)).json() == []
        assert (await http.get("/v1/purchases", headers=other.auth)).json() == []
        revoke = await http.post(
            f"/v1/admin/tickets/{ticket_id}/revoke", json={"reason": "mine now"}, headers=other.auth
        )
        assert (revoke.status_code, revoke.json()["code"]) == (401, "invalid_token")
        still = await http.get(f"/v1/tickets/{ticket_id}", headers=owner.auth)
        assert still.json()["status"] == "active"

    async def test_a_rider_cannot_read_another_riders_top_up(self, http: httpx.AsyncClient) -> None:
        owner, other = await sign_up(http), await sign_up(http)
        topup = await http.post(
            "/v1/wallet/topups",
            json={"amount": 50_000},
            headers={**owner.auth, "Idempotency-Key": new_key()},
        )
        assert topup.status_code == 201, topup.text
        url = f"/v1/wallet/topups/{topup.json()['id']}"
        assert (await http.get(url, headers=owner.auth)).status_code == 200
        theirs = await http.get(url, headers=other.auth)
        assert (theirs.status_code, theirs.json()["code"]) == (404, "topup_not_found")


class TestRevocation:
    async def test_operator_revokes_a_ticket(
        self, http: httpx.AsyncClient, migrated: LocalServers
    ) -> None:
        rider = await sign_up(http, category="disabled")
        await approve_category(http, rider)
        await register_device(http, rider)
        ticket = (await buy(http, rider, "FREE-PASS")).json()["ticket"]
        revoked = await http.post(
            f"/v1/admin/tickets/{ticket['id']}/revoke",
            json={"reason": "certificate withdrawn"},
            headers=OPERATOR,
        )
        assert revoked.status_code == 200
        assert revoked.json()["status"] == "revoked"
        credential = await http.get(f"/v1/tickets/{ticket['id']}/credential", headers=rider.auth)
        assert (credential.status_code, credential.json()["code"]) == (409, "ticket_revoked")
        events = await read_events(
            migrated.kafka_bootstrap,
            "transit.tickets",
            lambda e: (
                e.type == "citypass.transit.ticket.revoked.v1"
                and e.data["ticket_id"] == ticket["id"]
            ),
            1,
        )
        assert events[0][1] == ticket["id"].encode()
        assert events[0][0].data["reason"] == "certificate withdrawn"


async def pending_purchase(
    ticketing_db: Database,
    rider: RiderAccount,
    product: str,
    price: int,
    *,
    created_at: datetime | None = None,
    next_attempt_at: datetime | None = None,
) -> str:
    """The row a ticketing process leaves when it crashes right after recording a purchase."""
    now = datetime.now(UTC)
    purchase_id = uuid.uuid4()
    async with ticketing_db.transaction() as session:
        await repository.insert_purchase(
            session,
            id=purchase_id,
            rider_id=uuid.UUID(rider.id),
            idempotency_key=new_key(),
            fingerprint="0" * 64,
            product_code=product,
            price_vnd=price,
            rider_category="regular",
            wallet_account_id=uuid.UUID(str(rider.wallet_account_id)),
            status="pending",
            next_attempt_at=next_attempt_at or now,
            created_at=created_at or now,
        )
    return str(purchase_id)


async def charge_as_ticketing_did(
    payments_process: ServiceProcess, rider: RiderAccount, purchase_id: str, price: int
) -> None:
    """The very call ticketing makes for a purchase, whose answer then got lost."""
    client = Payments(payments_process.url, PAYMENTS_TOKEN, timeout_s=5)
    try:
        for _ in range(100):
            try:
                await client.charge(
                    account_id=uuid.UUID(str(rider.wallet_account_id)),
                    amount=price,
                    transfer_id=uuid.UUID(purchase_id),
                    key=f"ticketing:purchase:{purchase_id}",
                )
                return
            except PaymentsBusy:  # the recovery worker is making this very charge right now
                await asyncio.sleep(0.1)
        pytest.fail("payments kept the charge in flight for 10 s")
    finally:
        await client.close()


@pytest.mark.fault
class TestRecovery:
    async def test_payments_down_is_503_then_the_worker_completes_the_purchase(
        self,
        http: httpx.AsyncClient,
        payments_http: httpx.AsyncClient,
        payments_process: ServiceProcess,
        ticketing_db: Database,
        ledger_db: Database,
    ) -> None:
        rider = await sign_up(http)
        await fund(http, payments_http, rider, 100_000)
        key = new_key()
        payments_process.stop()
        try:
            response = await buy(http, rider, "METRO-DAY", key=key)
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["code"] == "payments_unavailable"
            purchase_id = problem["purchase_id"]
            pending = await purchase_status(http, rider, purchase_id)
            assert (pending["status"], pending["ticket"]) == ("pending", None)
            assert await tickets_of(ticketing_db, purchase_id) == 0
        finally:
            payments_process.start()

        async def completed() -> bool:
            return bool((await purchase_status(http, rider, purchase_id))["status"] == "completed")

        await wait_until(completed)
        assert await tickets_of(ticketing_db, purchase_id) == 1
        assert await transfers_of(ledger_db, purchase_id) == [("charge", 40_000)]
        assert await balance(http, rider) == 60_000
        retried = await buy(http, rider, "METRO-DAY", key=key)
        assert retried.status_code == 201
        assert retried.json()["id"] == purchase_id
        assert await transfers_of(ledger_db, purchase_id) == [("charge", 40_000)]

    async def test_a_charge_whose_answer_was_lost_is_found_not_repeated(
        self,
        http: httpx.AsyncClient,
        payments_http: httpx.AsyncClient,
        payments_process: ServiceProcess,
        ticketing_db: Database,
        ledger_db: Database,
    ) -> None:
        rider = await sign_up(http)
        await fund(http, payments_http, rider, 100_000)
        purchase_id = await pending_purchase(ticketing_db, rider, "METRO-DAY", 40_000)
        await charge_as_ticketing_did(payments_process, rider, purchase_id, 40_000)

        async def completed() -> bool:
            return bool((await purchase_status(http, rider, purchase_id))["status"] == "completed")

        await wait_until(completed)
        assert await tickets_of(ticketing_db, purchase_id) == 1
        assert await transfers_of(ledger_db, purchase_id) == [("charge", 40_000)]
        assert await balance(http, rider) == 60_000

    async def test_a_product_withdrawn_after_the_charge_is_refunded(
        self,
        http: httpx.AsyncClient,
        payments_http: httpx.AsyncClient,
        payments_process: ServiceProcess,
        ticketing_db: Database,
        ledger_db: Database,
        tmp_path: Path,
    ) -> None:
        """On sale in one network version, gone from the next one before the ticket is issued."""
        code = f"TEST-{uuid.uuid4().hex[:8].upper()}"
        on_sale = with_product(hanoi_copy(tmp_path / "on-sale"), code, 25_000)
        assert (await publish(http, zipped(on_sale))).status_code == 201
        rider = await sign_up(http)
        await fund(http, payments_http, rider, 100_000)
        # The worker must not resolve it (and issue the ticket) before the product is gone.
        later = datetime.now(UTC) + timedelta(seconds=3)
        purchase_id = await pending_purchase(
            ticketing_db, rider, code, 25_000, next_attempt_at=later
        )
        await charge_as_ticketing_did(payments_process, rider, purchase_id, 25_000)
        assert (await publish(http, zipped(HANOI))).status_code == 201

        async def cancelled() -> bool:
            return bool((await purchase_status(http, rider, purchase_id))["status"] == "cancelled")

        await wait_until(cancelled)
        purchase = await purchase_status(http, rider, purchase_id)
        assert purchase["failure_code"] == "product_withdrawn"
        assert purchase["refund_id"] is not None
        assert await tickets_of(ticketing_db, purchase_id) == 0
        assert await transfers_of(ledger_db, purchase_id) == [
            ("charge", 25_000),
            ("refund", 25_000),
        ]
        assert await balance(http, rider) == 100_000

    async def test_a_purchase_unresolved_for_too_long_is_cancelled_without_a_charge(
        self,
        http: httpx.AsyncClient,
        payments_http: httpx.AsyncClient,
        settings: TicketingSettings,
        ticketing_db: Database,
        ledger_db: Database,
    ) -> None:
        rider = await sign_up(http)
        await fund(http, payments_http, rider, 100_000)
        long_ago = datetime.now(UTC) - settings.purchase_abandon_after - timedelta(minutes=1)
        purchase_id = await pending_purchase(
            ticketing_db, rider, "METRO-DAY", 40_000, created_at=long_ago
        )

        async def cancelled() -> bool:
            return bool((await purchase_status(http, rider, purchase_id))["status"] == "cancelled")

        await wait_until(cancelled)
        purchase = await purchase_status(http, rider, purchase_id)
        assert (purchase["failure_code"], purchase["refund_id"]) == ("payment_unconfirmed", None)
        assert await tickets_of(ticketing_db, purchase_id) == 0
        assert await transfers_of(ledger_db, purchase_id) == []
        assert await balance(http, rider) == 100_000
