"""`citypass bank pay`: the sandbox bank pays a VietQR over real HTTP, signed like the bank."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from citypass.cli import main as citypass
from services.payments.app import build_app
from services.payments.settings import PaymentsSettings
from tests.payments.conftest import WEBHOOK_SECRET, balance, open_wallet, request_topup


@pytest.fixture(scope="module")
async def payments_url(settings: PaymentsSettings) -> AsyncIterator[str]:
    """The payments service on a real socket, as the sandbox bank reaches it."""
    listening = socket.create_server(("127.0.0.1", 0))  # connections wait in the backlog
    server = uvicorn.Server(uvicorn.Config(build_app(settings), log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[listening]))
    yield f"http://127.0.0.1:{listening.getsockname()[1]}"
    server.should_exit = True
    await task
    listening.close()


async def bank(*argv: str) -> int:
    return await asyncio.to_thread(citypass, ["bank", *argv])


class TestBankPay:
    async def test_paying_the_qr_credits_the_wallet_once(
        self, http: httpx.AsyncClient, payments_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        wallet = await open_wallet(http)
        topup = await request_topup(http, wallet["id"], 90_000)
        paying = ("pay", topup["qr"], "--payments-url", payments_url, "--secret", WEBHOOK_SECRET)

        first = await bank(*paying, "--transaction-id", f"FT{topup['reference']}")
        again = await bank(*paying, "--transaction-id", f"FT{topup['reference']}")

        output = capsys.readouterr().out
        assert (first, again) == (0, 0)
        assert "credited" in output
        assert "already received" in output
        assert await balance(http, wallet["id"]) == 90_000

    async def test_paying_another_amount_lands_in_suspense(
        self, http: httpx.AsyncClient, payments_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        wallet = await open_wallet(http)
        topup = await request_topup(http, wallet["id"], 90_000)

        exit_code = await bank(
            "pay",
            topup["qr"],
            "--amount",
            "9000",
            "--payments-url",
            payments_url,
            "--secret",
            WEBHOOK_SECRET,
        )

        assert exit_code == 0
        assert "amount_mismatch" in capsys.readouterr().out
        assert await balance(http, wallet["id"]) == 0

    async def test_a_wrong_secret_is_refused(
        self, http: httpx.AsyncClient, payments_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        wallet = await open_wallet(http)
        topup = await request_topup(http, wallet["id"], 10_000)

        exit_code = await bank(
            "pay", topup["qr"], "--payments-url", payments_url, "--secret", "not-the-secret"
        )

        assert exit_code == 1
        assert "invalid_signature" in capsys.readouterr().out

    async def test_a_corrupted_qr_is_refused_before_paying(
        self, http: httpx.AsyncClient, payments_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        wallet = await open_wallet(http)
        qr = (await request_topup(http, wallet["id"], 10_000))["qr"]
        corrupted = qr[:-4] + ("0000" if qr[-4:] != "0000" else "FFFF")

        exit_code = await bank("pay", corrupted, "--payments-url", payments_url)

        assert exit_code == 2
        assert "crc_mismatch" in capsys.readouterr().out
        assert await balance(http, wallet["id"]) == 0
