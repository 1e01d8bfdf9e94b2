"""The kit's payments client against the real payments service: an answer, a refusal with
payments' code, or `PaymentsUnavailable` (the same call may work later)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from citypass.servers import LocalServers, free_port
from shared.payments_client import PaymentsClient, PaymentsRefused, PaymentsUnavailable
from tests.support import running_service

TOKEN = "test-payments-token-for-the-kit-client"


@pytest.fixture(scope="module")
def payments_url(migrated: LocalServers, service_env: dict[str, str]) -> Iterator[str]:
    env = {
        **service_env,
        "PAYMENTS_SERVICE_TOKEN": TOKEN,
        "PAYMENTS_BANK_WEBHOOK_SECRET": "test-webhook-secret-for-the-kit-client",
    }
    with running_service("payments", env, migrated.log_dir / "kit-client-payments.log") as process:
        yield process.url


@pytest.fixture
async def client(payments_url: str) -> AsyncIterator[PaymentsClient]:
    client = PaymentsClient(payments_url, TOKEN, timeout_s=5, caller="tests")
    yield client
    await client.close()


async def open_wallet(client: PaymentsClient) -> str:
    body = {"kind": "rider_wallet", "owner_id": f"rider:{uuid.uuid4()}"}
    account_id: str = (await client.call("POST", "/v1/accounts", body))["id"]
    return account_id


class TestPaymentsClient:
    async def test_an_answer_is_payments_json(self, client: PaymentsClient) -> None:
        account_id = await open_wallet(client)
        account = await client.call("GET", f"/v1/accounts/{account_id}")
        assert (account["id"], account["balance"]) == (account_id, 0)

    async def test_a_refusal_carries_payments_status_code_and_body(
        self, client: PaymentsClient
    ) -> None:
        account_id = await open_wallet(client)
        charge = {"account_id": account_id, "amount": 7000, "source": "transit"}
        with pytest.raises(PaymentsRefused) as refused:
            await client.call("POST", "/v1/charges", charge, key=str(uuid.uuid4()))
        assert (refused.value.status, refused.value.code) == (402, "insufficient_funds")
        assert refused.value.body["shortfall"] == 7000

    async def test_a_refused_token_is_unavailable_not_refused(self, payments_url: str) -> None:
        """A token that payments does not know is a settings mistake: retry once it is fixed,
        never a verdict on the payment itself."""
        wrong = PaymentsClient(payments_url, "not-the-token", timeout_s=5, caller="tests")
        try:
            with pytest.raises(PaymentsUnavailable) as unavailable:
                await wrong.call("GET", f"/v1/accounts/{uuid.uuid4()}")
        finally:
            await wrong.close()
        assert (unavailable.value.status, unavailable.value.code) == (503, "payments_unavailable")

    async def test_no_server_is_unavailable(self) -> None:
        nobody = PaymentsClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout_s=1, caller="t")
        try:
            with pytest.raises(PaymentsUnavailable):
                await nobody.call("GET", f"/v1/accounts/{uuid.uuid4()}")
        finally:
            await nobody.close()
