"""VietQR top-ups and parking payment requests, paid through the signed bank webhook."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable

import httpx
import orjson
import pytest

from citypass.bank import signed_headers
from citypass.servers import LocalServers
from services.payments.repository.balances import system_account_id
from services.payments.settings import PaymentsSettings
from shared.events import ALERTS_TOPIC, LEDGER_TOPIC, Event
from shared.qrimage import decode_png
from shared.vietqr import decode
from tests.payments.conftest import (
    WEBHOOK_SECRET,
    balance,
    new_key,
    notification_body,
    notify,
    open_wallet,
    request_topup,
)
from tests.support import read_events


class TestTopupQr:
    async def test_the_vietqr_parses_back_with_the_shared_codec(
        self, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)

        topup = await request_topup(http, wallet["id"], 150_000)

        qr = decode(topup["qr"])
        assert (qr.bank_bin, qr.account, qr.amount, qr.dynamic) == (
            settings.bank_bin,
            settings.collection_account,
            150_000,
            True,
        )
        assert qr.reference == topup["reference"]
        assert (topup["status"], topup["account_id"]) == ("pending", wallet["id"])

    async def test_the_png_decodes_to_the_same_string(self, http: httpx.AsyncClient) -> None:
        wallet = await open_wallet(http)
        topup = await request_topup(http, wallet["id"], 20_000)

        png = await http.get(topup["qr_png_url"])

        assert png.headers["content-type"] == "image/png"
        assert decode_png(png.content) == [topup["qr"]]
        assert decode_png(base64.b64decode(topup["qr_png_base64"])) == [topup["qr"]]

    async def test_references_are_unique(self, http: httpx.AsyncClient) -> None:
        wallet = await open_wallet(http)

        topups = [await request_topup(http, wallet["id"], 10_000) for _ in range(5)]

        assert len({t["reference"] for t in topups}) == 5

    async def test_unknown_wallet_is_422(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            "/v1/topups",
            json={"account_id": str(uuid.uuid4()), "amount": 10_000},
            headers={"Idempotency-Key": new_key()},
        )

        assert (response.status_code, response.json()["code"]) == (422, "unknown_account")


class TestBankWebhookAuthentication:
    async def test_a_wrong_signature_is_401(
        self, anonymous: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        body = notification_body(settings, amount=10_000, reference=None)

        response = await anonymous.post(
            "/v1/bank/notifications", content=body, headers=signed_headers("nope", body)
        )

        assert (response.status_code, response.json()["code"]) == (401, "invalid_signature")

    async def test_a_tampered_body_is_401(
        self, anonymous: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        body = notification_body(settings, amount=10_000, reference=None)
        headers = signed_headers(WEBHOOK_SECRET, body)

        response = await anonymous.post(
            "/v1/bank/notifications", content=body.replace(b"10000", b"99000"), headers=headers
        )

        assert response.status_code == 401

    async def test_an_unsigned_notification_is_401(
        self, anonymous: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        response = await anonymous.post(
            "/v1/bank/notifications",
            content=notification_body(settings, amount=10_000, reference=None),
            headers={"Content-Type": "application/json"},
        )

        assert response.status_code == 401

    @pytest.mark.parametrize("skew_s", [-301, 301, -3600])
    async def test_a_timestamp_outside_the_window_is_401(
        self, anonymous: httpx.AsyncClient, settings: PaymentsSettings, skew_s: int
    ) -> None:
        body = notification_body(settings, amount=10_000, reference=None)

        response = await anonymous.post(
            "/v1/bank/notifications",
            content=body,
            headers=signed_headers(WEBHOOK_SECRET, body, int(time.time()) + skew_s),
        )

        assert response.status_code == 401
        assert "window" in response.json()["detail"]

    async def test_a_signed_but_malformed_notification_is_422(
        self, anonymous: httpx.AsyncClient
    ) -> None:
        body = orjson.dumps({"transaction_id": "FT1", "amount": "10000"})

        response = await anonymous.post(
            "/v1/bank/notifications", content=body, headers=signed_headers(WEBHOOK_SECRET, body)
        )

        assert (response.status_code, response.json()["code"]) == (422, "validation_error")


class TestBankWebhookCredits:
    async def test_a_matching_payment_credits_the_wallet(
        self, anonymous: httpx.AsyncClient, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        topup = await request_topup(http, wallet["id"], 75_000)

        response = await notify(
            anonymous, notification_body(settings, amount=75_000, reference=topup["reference"])
        )

        assert response.status_code == 200, response.text
        assert (response.json()["outcome"], response.json()["duplicate"]) == ("credited", False)
        assert await balance(http, wallet["id"]) == 75_000
        paid = (await http.get(f"/v1/topups/{topup['id']}")).json()
        assert (paid["status"], paid["paid_transfer_id"]) == (
            "paid",
            response.json()["transfer_id"],
        )

    async def test_the_reference_is_found_in_the_transfer_description(
        self, anonymous: httpx.AsyncClient, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        topup = await request_topup(http, wallet["id"], 30_000)
        body = notification_body(
            settings,
            amount=30_000,
            reference=None,
            description=f"MBVCB.123 {topup['reference'].lower()} chuyen tien",
        )

        response = await notify(anonymous, body)

        assert response.json()["outcome"] == "credited"
        assert await balance(http, wallet["id"]) == 30_000

    async def test_a_replayed_notification_credits_once(
        self, anonymous: httpx.AsyncClient, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        topup = await request_topup(http, wallet["id"], 40_000)
        body = notification_body(settings, amount=40_000, reference=topup["reference"])

        first = await notify(anonymous, body)
        replays = [await notify(anonymous, body) for _ in range(3)]

        assert first.json()["duplicate"] is False
        for replay in replays:
            assert replay.status_code == 200
            assert replay.json()["duplicate"] is True
            assert replay.json()["transfer_id"] == first.json()["transfer_id"]
        assert await balance(http, wallet["id"]) == 40_000

    async def test_an_amount_mismatch_goes_to_suspense_and_raises_an_alert(
        self,
        anonymous: httpx.AsyncClient,
        http: httpx.AsyncClient,
        settings: PaymentsSettings,
        servers: LocalServers,
    ) -> None:
        wallet = await open_wallet(http)
        topup = await request_topup(http, wallet["id"], 50_000)
        body = notification_body(settings, amount=45_000, reference=topup["reference"])
        transaction_id = orjson.loads(body)["transaction_id"]
        suspense_before = await _suspense_balance(http)

        response = await notify(anonymous, body)

        assert response.status_code == 200
        assert (response.json()["outcome"], response.json()["cause"]) == (
            "suspense",
            "amount_mismatch",
        )
        assert await balance(http, wallet["id"]) == 0
        assert (await http.get(f"/v1/topups/{topup['id']}")).json()["status"] == "pending"
        assert await _suspense_balance(http) == suspense_before + 45_000
        alerts = await read_events(
            servers.kafka_bootstrap, ALERTS_TOPIC, _alert_about(transaction_id), count=1
        )
        assert len(alerts) == 1
        alert, key = alerts[0]
        assert key == transaction_id.encode()
        assert alert.type == "citypass.payments.bank_notification.unmatched.v1"
        assert (alert.data["code"], alert.data["amount"], alert.data["expected_amount"]) == (
            "amount_mismatch",
            45_000,
            50_000,
        )

    async def test_an_unknown_reference_goes_to_suspense_and_raises_an_alert(
        self,
        anonymous: httpx.AsyncClient,
        http: httpx.AsyncClient,
        settings: PaymentsSettings,
        servers: LocalServers,
    ) -> None:
        body = notification_body(settings, amount=12_000, reference="CP0000000000")
        transaction_id = orjson.loads(body)["transaction_id"]

        response = await notify(anonymous, body)

        assert (response.json()["outcome"], response.json()["cause"]) == (
            "suspense",
            "unknown_reference",
        )
        alerts = await read_events(
            servers.kafka_bootstrap, ALERTS_TOPIC, _alert_about(transaction_id), count=1
        )
        assert [alert.data["code"] for alert, _ in alerts] == ["unknown_reference"]

    async def test_paying_a_request_twice_parks_the_second_payment(
        self, anonymous: httpx.AsyncClient, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        topup = await request_topup(http, wallet["id"], 20_000)
        await notify(
            anonymous, notification_body(settings, amount=20_000, reference=topup["reference"])
        )

        second = await notify(
            anonymous, notification_body(settings, amount=20_000, reference=topup["reference"])
        )

        assert (second.json()["outcome"], second.json()["cause"]) == ("suspense", "already_paid")
        assert await balance(http, wallet["id"]) == 20_000

    async def test_money_for_another_account_goes_to_suspense(
        self, anonymous: httpx.AsyncClient, http: httpx.AsyncClient, settings: PaymentsSettings
    ) -> None:
        wallet = await open_wallet(http)
        topup = await request_topup(http, wallet["id"], 20_000)

        response = await notify(
            anonymous,
            notification_body(
                settings, amount=20_000, reference=topup["reference"], account="999999999"
            ),
        )

        assert (response.json()["outcome"], response.json()["cause"]) == (
            "suspense",
            "foreign_account",
        )
        assert await balance(http, wallet["id"]) == 0


class TestParkingPaymentRequest:
    async def test_a_paid_fee_credits_the_lot_and_is_announced(
        self,
        anonymous: httpx.AsyncClient,
        http: httpx.AsyncClient,
        settings: PaymentsSettings,
        servers: LocalServers,
    ) -> None:
        lot_id, session_id = f"lot-{uuid.uuid4().hex[:8]}", f"ps-{uuid.uuid4().hex[:12]}"
        created = await http.post(
            "/v1/payment-requests",
            json={"lot_id": lot_id, "parking_session_id": session_id, "amount": 25_000},
            headers={"Idempotency-Key": new_key()},
        )
        assert created.status_code == 201, created.text
        request = created.json()
        assert decode(request["qr"]).amount == 25_000
        assert request["qr_png_base64"] is None  # the lane renders it; a barrier does not wait
        png = await http.get(request["qr_png_url"])
        assert decode_png(png.content) == [request["qr"]]

        paid = await notify(
            anonymous, notification_body(settings, amount=25_000, reference=request["reference"])
        )

        assert paid.json()["outcome"] == "credited"
        transfer = paid.json()["transfer_id"]
        announced = await read_events(
            servers.kafka_bootstrap,
            LEDGER_TOPIC,
            lambda event: (
                event.type.endswith("payment_request.paid.v1")
                and event.data["payment_request_id"] == request["id"]
            ),
            count=1,
        )
        assert len(announced) == 1
        event, _ = announced[0]
        assert (event.data["parking_session_id"], event.data["lot_id"], event.data["amount"]) == (
            session_id,
            lot_id,
            25_000,
        )
        assert event.data["transfer_id"] == transfer


async def _suspense_balance(http: httpx.AsyncClient) -> int:
    account = await http.get(f"/v1/accounts/{system_account_id('suspense')}")
    value: int = account.json()["balance"]
    return value


def _alert_about(transaction_id: str) -> Callable[[Event], bool]:
    def wanted(event: Event) -> bool:
        return event.data.get("bank_transaction_id") == transaction_id

    return wanted
