"""A stored-value rider's capped day in the rider app, in a real headless Chromium (tests/cdp.py)
against real ticketing, validation and payments on the real servers.

The rider buys a stored-value ticket; validation's fare worker prices three metro trips of
today from the feed (16,000 + 16,000 + 13,000 VND: the third reaches the 40,000 daily cap and
5,000 of it is capped); ticketing relays the ticket's fare account to the page, which shows
each leg's fare, what the cap took off, "capped today" and the progress toward both caps.
`citypass rider fares` prints the same day. Screenshot: test-artifacts/rider-app-fares-capped.png.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from aiokafka import ConsumerRecord

from citypass.servers import LocalServers, free_port
from services.ticketing.app import build_app as build_ticketing_app
from services.ticketing.settings import TicketingSettings
from services.validation.app import build_app as build_validation_app
from services.validation.fare_worker import FareWorker
from shared.db import Database
from shared.fares.tariff import Leg
from tests.cdp import Browser
from tests.operator.conftest import serve
from tests.support import service_client
from tests.ticketing.conftest import PAYMENTS_TOKEN, ServiceProcess, buy, fund, sign_up
from tests.ticketing.test_cli import Terminal
from tests.ticketing.test_rider_app_browser import (  # noqa: F401  (fixtures)
    VALIDATION_REDIS_DB,
    browser,
    on_screen,
    rider_app,
    snap,
)
from tests.validation.conftest import validation_settings
from tests.validation.test_fare_capping import accepted

HOUR = 3600


async def test_the_app_shows_a_capped_day(
    rider_app: Path,  # noqa: F811
    browser: Browser,  # noqa: F811
    settings: TicketingSettings,
    ticketing_db: Database,
    payments_process: ServiceProcess,
    servers: LocalServers,
    artifacts: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = browser
    validation_port = free_port()
    validation_url = f"http://127.0.0.1:{validation_port}"
    ticketing_app = build_ticketing_app(
        settings.model_copy(update={"validation_url": validation_url})
    )
    async with contextlib.AsyncExitStack() as running:
        ticketing = await running.enter_async_context(serve(ticketing_app))
        gates = build_validation_app(
            validation_settings(
                tmp_path,
                redis_url=f"redis://127.0.0.1:{servers.redis_port}/{VALIDATION_REDIS_DB}",
                kafka_bootstrap_servers=servers.kafka_bootstrap,
                issuer_keys=[],
                ticketing_url=ticketing,
                payments_url=payments_process.url,
                payments_token=PAYMENTS_TOKEN,
                run_fare_worker=False,  # its legs are priced here, not from the shared groups
            )
        )
        await running.enter_async_context(serve(gates, validation_port))
        http = await running.enter_async_context(httpx.AsyncClient(base_url=ticketing, timeout=10))
        payments = await running.enter_async_context(
            service_client(payments_process.url, PAYMENTS_TOKEN)
        )
        rider = await sign_up(http, password="rider fares 2026")
        await fund(http, payments, rider, 100_000)
        bought = await buy(http, rider, "STORED-VALUE")
        assert bought.status_code == 201, bought.text
        ticket_id = bought.json()["ticket"]["id"]
        assert rider.wallet_account_id is not None

        fares: FareWorker = gates.state.fares
        tariff = fares.versions().current().feed.tariff
        today = tariff.fare_day(int(time.time()))
        day_start = today * 86_400 + tariff.day_start_s - 7 * HOUR  # 04:00 Hanoi in UTC
        trips = [
            ("2A-01", "2A-12", 2 * HOUR),  # 16,000
            ("2A-12", "2A-01", 4 * HOUR),  # 16,000
            ("2A-01", "2A-09", 6 * HOUR),  # 13,000: 5,000 capped
        ]
        for start, end, offset in trips:
            at = day_start + offset
            leg = Leg(str(uuid.uuid4()), "2A", at, at + 1500, start, end)
            event = accepted(ticket_id, rider.wallet_account_id, leg)
            await fares.on_validation_event(event, cast(ConsumerRecord, None))

        relayed = await http.get(f"/v1/me/tickets/{ticket_id}/fares", headers=rider.auth)
        assert relayed.status_code == 200, relayed.text
        account: dict[str, Any] = relayed.json()
        assert (account["day_total"], account["capped_today"]) == (40_000, True)
        assert [leg["capped"] for leg in account["legs"]] == [0, 0, 5_000]
        # The same day from the command line.
        terminal = Terminal(capsys, tmp_path / "rider-home", ticketing)
        monkeypatch.setenv("CITYPASS_RIDER_PASSWORD", rider.password)
        await terminal.rider("login", "--phone", rider.phone, "--no-device")
        lines = (await terminal.rider("fares")).splitlines()
        printed = lines[next(i for i, line in enumerate(lines) if line.startswith("Fares of ")) :]
        assert "metro 2A 2A-01 → 2A-09" in printed[3]
        assert printed[3].endswith("capped −5.000 VND"), printed
        assert printed[4:] == [
            "Today: 40.000 VND of the 40.000 VND cap (100 %)",
            "This week: 40.000 VND of the 160.000 VND cap (25 %)",
            "Capped today: your next rides today are free.",
        ]
        other = await sign_up(http)
        refused = await http.get(f"/v1/me/tickets/{ticket_id}/fares", headers=other.auth)
        assert (refused.status_code, refused.json()["code"]) == (404, "ticket_not_found")

        await page.navigate(f"{ticketing}/app/")
        await on_screen(page, "login")
        await page.click("#lang")
        await page.type_into("#phone", rider.phone)
        await page.type_into("#password", rider.password)
        await page.click("#login-submit")
        await on_screen(page, "wallet")
        await page.evaluate(f"location.hash = '#/ticket/{ticket_id}'")
        await page.wait_for(
            "!document.querySelector('#ticket-fares').hidden"
            " && document.querySelectorAll('#fares-legs li').length === 3",
            what="today's fares",
        )
        await page.evaluate("document.querySelector('#ticket-fares').scrollIntoView()")
        shown = await page.evaluate(
            "({legs: [...document.querySelectorAll('#fares-legs li')].map((li) => li.innerText),"
            " capped: !document.querySelector('#fares-capped').hidden,"
            " cappedText: document.querySelector('#fares-capped').innerText,"
            " day: document.querySelector('#fares-day').innerText,"
            " dayBar: document.querySelector('#fares-day-progress').getAttribute('aria-valuenow'),"
            " week: document.querySelector('#fares-week').innerText})"
        )
        await snap(page, artifacts, "fares-capped")
        assert shown["capped"], shown
        assert "Capped today" in shown["cappedText"]
        assert shown["legs"][2].splitlines() == [
            "Metro 2A: 2A-01 → 2A-09",
            "Fare ₫13,000",
            "capped −₫5,000",
            "Paid ₫8,000",
        ]
        assert shown["day"] == "Today: ₫40,000 of the ₫40,000 cap"
        assert shown["dayBar"] == "40000"
        assert shown["week"].endswith("of the ₫160,000 cap"), shown["week"]
