"""The rider web app in a real headless Chromium on a phone-sized screen (DevTools protocol, see
tests/cdp.py), against real ticketing, payments and validation services on the real servers.

A rider signs up in the page, whose Ed25519 device key is made by WebCrypto, non-extractable,
and kept in IndexedDB; tops up through the bank sandbox (`citypass bank`'s own functions pay the
VietQR read from a screenshot); buys a day pass, whose first answer is lost on the way so the
page retries with the same Idempotency-Key; and opens the ticket. The gate simulator
(`citypass gate scan`) reads the dynamic QR in the screenshot with zxing-cpp and sends it,
signed as the entry gate: accepted. Then the phone loses the network and ticketing stops
altogether: the page reloads from its service worker, keeps signing new codes, and a later one,
in a later screenshot, is accepted by the gate simulator at an exit gate (the rider is inside
since the entry, so an exit is the clean answer; a second entry would be anti-passback).
Screenshots: test-artifacts/rider-app-*.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from citypass import bank
from citypass.servers import LocalServers
from services.ticketing.app import build_app as build_ticketing_app
from services.ticketing.settings import TicketingSettings
from services.ticketing.webapp import DIST_DIR
from services.validation import repository as validation_repository
from services.validation.app import build_app as build_validation_app
from services.validation.service import Validator
from shared import qrimage, vietqr
from shared.db import Database
from shared.events import TICKETS_TOPIC
from shared.kafka import Publisher
from shared.ticketcodec import parse_dynamic_qr
from tests.cdp import INSTALL_HINT, Browser, chromium_path
from tests.operator.conftest import eventually, serve
from tests.ticketing.conftest import ROOT, WEBHOOK_SECRET, ServiceProcess, new_phone
from tests.validation.conftest import (
    Gate,
    make_ticket,
    provision_gate,
    ticket_issued,
    validation_settings,
)

# Not 0 (services' tests), 3 (operator), 4 (the dashboard test's validation): this validation
# service's issuer keys and trips live apart from theirs.
VALIDATION_REDIS_DB = 5
PHONE_WIDTH, PHONE_HEIGHT, PHONE_SCALE = 390, 844, 2
PASSWORD = "rider app 2026"
TOPUP_VND = 100_000
DAY_PASS, DAY_PASS_PRICE, DAY_PASS_CODE = "METRO-DAY", 40_000, "MD"
QR_PERIOD_S = 10
CITYPASS = Path(sys.executable).parent / "citypass"  # the CLI, from the same environment
# What Chromium logs by itself when a request fails: expected while the network is cut.
NETWORK_FAILURES = ("net::ERR_CONNECTION_RESET", "net::ERR_INTERNET_DISCONNECTED")

READ_DEVICE_KEY = """(async () => {
  const rider = JSON.parse(localStorage.getItem("citypass.session")).rider;
  const db = await new Promise((ok, ko) => {
    const r = indexedDB.open("citypass-rider"); r.onsuccess = () => ok(r.result); r.onerror = ko;
  });
  const record = await new Promise((ok, ko) => {
    const r = db.transaction("devices").objectStore("devices").get(rider.id);
    r.onsuccess = () => ok(r.result); r.onerror = ko;
  });
  db.close();
  const key = record.privateKey;
  const found = {
    isCryptoKey: key instanceof CryptoKey, type: key.type, algorithm: key.algorithm.name,
    extractable: key.extractable, usages: key.usages,
    publicKey: btoa(String.fromCharCode(
      ...new Uint8Array(await crypto.subtle.exportKey("raw", record.publicKey)))),
    exports: {},
  };
  for (const format of ["pkcs8", "jwk"]) {
    try {
      await crypto.subtle.exportKey(format, key);
      found.exports[format] = "exported";
    } catch (error) {
      found.exports[format] = error.name;
    }
  }
  return found;
})()"""

# Where the first dark pixel of the QR canvas is: the quiet zone is everything before it.
FIRST_DARK_PIXEL = """(() => {
  const canvas = document.querySelector("#ticket-qr");
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i] < 128) {
      const n = i / 4;
      return {x: n % canvas.width, y: Math.floor(n / canvas.width), side: canvas.width};
    }
  }
  return null;
})()"""


@pytest.fixture(scope="module")
def rider_app() -> Path:
    """The build `make app` makes (make rebuilds it only when a source changed)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("the rider app needs Node.js 18+ and npm to build (`make test` installs them)")
    done = subprocess.run(
        ["make", "--no-print-directory", "app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"make app failed:\n{done.stdout}\n{done.stderr}"
    assert (DIST_DIR / "index.html").is_file()
    return DIST_DIR


@pytest.fixture
async def browser(
    tmp_path: Path, artifacts: Path, one_browser_at_a_time: None
) -> AsyncIterator[Browser]:
    binary = chromium_path()
    if binary is None:
        pytest.fail(INSTALL_HINT)
    page = await Browser.launch(
        binary,
        tmp_path / "chromium-profile",
        artifacts / "chromium-rider-app.log",
        width=PHONE_WIDTH,
        height=PHONE_HEIGHT,
    )
    await page.send(
        "Emulation.setDeviceMetricsOverride",
        {
            "width": PHONE_WIDTH,
            "height": PHONE_HEIGHT,
            "deviceScaleFactor": PHONE_SCALE,
            "mobile": True,
        },
    )
    await page.send("Network.enable")
    try:
        yield page
    finally:
        await page.close()


@contextlib.contextmanager
def only_network_failures(page: Browser) -> Iterator[None]:
    """Chromium logs every failed request as an error; here they are the point."""
    before = len(page.problems)
    yield
    during = page.problems[before:]
    del page.problems[before:]
    assert all(any(f in p for f in NETWORK_FAILURES) for p in during), during


async def on_screen(page: Browser, name: str) -> None:
    await page.wait_for(f"document.body.dataset.screen === {name!r}", what=f"the {name} screen")


async def shown_qr(page: Browser, after: int = 0) -> int:
    """Waits for a dynamic QR signed with a counter above `after`; its counter."""
    counter = await page.wait_for(
        "Number(document.querySelector('#ticket-qr').dataset.counter || 0) > "
        f"{after} && document.querySelector('#ticket-qr').dataset.counter",
        timeout_s=QR_PERIOD_S + 5,
        what="a new dynamic QR",
    )
    return int(counter)


async def snap(page: Browser, artifacts: Path, name: str) -> bytes:
    """What the phone's screen shows (not the page below the fold), as test-artifacts/*.png."""
    return await page.screenshot(artifacts / f"rider-app-{name}.png", full_page=False)


def read_qr(png: bytes) -> str:
    """What a gate's QR scanner reads off the phone's screen."""
    found = qrimage.decode_png(png)
    assert len(found) == 1, f"expected one QR code on the screen, read {found}"
    return found[0]


async def gate_simulator(validation_url: str, gate: Gate, screenshot: Path) -> dict[str, Any]:
    """`citypass gate scan SCREENSHOT --gate G --json`: the gate simulator reads the QR in the
    image with zxing-cpp and asks validation, signed as the gate."""
    done = await asyncio.to_thread(
        subprocess.run,
        [str(CITYPASS), "gate", "scan", str(screenshot), "--gate", gate.gate_id, "--json"],
        env={
            **os.environ,
            "CITYPASS_VALIDATION_URL": validation_url,
            "CITYPASS_GATE_SECRET": gate.signer.secret.decode(),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1), f"the gate could not decide:\n{done.stdout}{done.stderr}"
    decided: dict[str, Any] = orjson.loads(done.stdout)
    return decided


def pay_with_the_bank(payments_url: str, text: str, amount: int) -> None:
    """`citypass bank pay "<VietQR>"`: the sandbox bank's signed notification."""
    notification = bank.bank_notification(vietqr.decode(text), amount)
    answer = bank.send_notification(notification, payments_url, WEBHOOK_SECRET)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "credited", answer.text


async def page_session(page: Browser) -> dict[str, Any]:
    session: dict[str, Any] = await page.evaluate(
        "JSON.parse(localStorage.getItem('citypass.session'))"
    )
    return session


async def as_rider(
    ticketing: str, page: Browser, method: str, path: str
) -> httpx.Response:  # the API seen with the page's own access token
    token = (await page_session(page))["access_token"]
    async with httpx.AsyncClient(base_url=ticketing, timeout=10) as http:
        return await http.request(method, path, headers={"Authorization": f"Bearer {token}"})


def validation_app(ticketing: str, servers: LocalServers, payments_url: str, tmp: Path) -> FastAPI:
    """The real validation service, learning ticketing's issuer keys from its /v1/keys."""
    settings = validation_settings(
        tmp,
        redis_url=f"redis://127.0.0.1:{servers.redis_port}/{VALIDATION_REDIS_DB}",
        kafka_bootstrap_servers=servers.kafka_bootstrap,
        issuer_keys=[],
        ticketing_url=ticketing,
        payments_url=payments_url,
        run_fare_worker=False,  # a day pass owes no fare; and the fare groups are shared
    )
    return build_validation_app(settings)


async def test_a_rider_buys_a_day_pass_and_passes_the_gates_online_then_offline(
    rider_app: Path,
    browser: Browser,
    settings: TicketingSettings,
    ticketing_db: Database,
    payments_process: ServiceProcess,
    servers: LocalServers,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    page = browser
    async with contextlib.AsyncExitStack() as ticketing_running:
        ticketing = await ticketing_running.enter_async_context(
            serve(build_ticketing_app(settings))
        )
        gates = validation_app(ticketing, servers, payments_process.url, tmp_path)
        validator: Validator = gates.state.validator
        async with (
            serve(gates) as gates_url,
            httpx.AsyncClient(base_url=gates_url, timeout=10) as validation,
        ):
            kid = (await get_json(ticketing, "/v1/keys"))["keys"][0]["kid"]

            async def knows_the_issuer_key() -> bool:
                return kid in validator.memory.usable_keys

            await eventually(knows_the_issuer_key, timeout_s=60)
            # Its new consumer group reads transit.tickets from the beginning: on a worker
            # where earlier tests published thousands of ticket events, wait until it has
            # caught up before the rider buys: a probe published now to every partition (they
            # are read independently) is applied.
            probes = []
            kafka = Publisher(servers.kafka_bootstrap, send_timeout_s=5)
            try:
                producer = await kafka.connect()
                for partition in sorted(await producer.partitions_for(TICKETS_TOPIC)):
                    probe = make_ticket()
                    issued = ticket_issued(probe)
                    await producer.send_and_wait(
                        TICKETS_TOPIC,
                        issued.value(),
                        key=probe.id.encode(),
                        headers=issued.headers(),
                        partition=partition,
                    )
                    probes.append(validation_repository.ticket_key(probe.id))
            finally:
                await kafka.close()

            async def caught_up() -> bool:
                return int(await validator.redis.exists(*probes)) == len(probes)

            await eventually(caught_up, timeout_s=120)
            entry = await provision_gate(validation, station="2A-01", direction="entry")
            exit_ = await provision_gate(validation, station="2A-08", direction="exit")

            # Sign up: Vietnamese first, the device key made and registered by the page.
            await page.navigate(f"{ticketing}/app/")
            await on_screen(page, "login")
            assert await page.evaluate("document.documentElement.lang") == "vi"
            await page.click("#mode-signup")
            await page.type_into("#phone", new_phone())
            await page.type_into("#password", PASSWORD)
            await snap(page, artifacts, "signup")
            await page.click("#login-submit")
            await on_screen(page, "wallet")
            await page.wait_for("document.querySelector('#balance').dataset.balance === '0'")
            await snap(page, artifacts, "wallet-empty")

            key = await page.evaluate(READ_DEVICE_KEY)
            assert key["isCryptoKey"], key
            assert (key["type"], key["algorithm"], key["extractable"]) == (
                "private",
                "Ed25519",
                False,
            )
            assert key["usages"] == ["sign"]
            assert key["exports"] == {"pkcs8": "InvalidAccessError", "jwk": "InvalidAccessError"}
            public_key = base64.b64decode(key["publicKey"])
            devices = (await as_rider(ticketing, page, "GET", "/v1/devices")).json()
            assert [(d["status"], d["public_key"]) for d in devices] == [
                ("active", base64.urlsafe_b64encode(public_key).rstrip(b"=").decode())
            ]

            # Top up: the VietQR on the screen, paid by the sandbox bank, seen arriving.
            await page.click("#go-topup")
            await on_screen(page, "topup")
            await page.click(f"[data-amount='{TOPUP_VND}']")
            await page.click("#topup-submit")
            text = await page.wait_for(
                "!document.querySelector('#topup-result').hidden"
                " && document.querySelector('#vietqr-text').value",
                what="the VietQR",
            )
            assert read_qr(await snap(page, artifacts, "topup")) == text
            await asyncio.to_thread(pay_with_the_bank, payments_process.url, text, TOPUP_VND)
            await page.wait_for(
                "document.querySelector('#topup-result').dataset.status === 'paid'",
                timeout_s=15,
                what="the top-up seen as paid",
            )
            await snap(page, artifacts, "topup-paid")
            await page.click("#nav a[data-nav='wallet']")
            await page.wait_for(
                f"document.querySelector('#balance').dataset.balance === '{TOPUP_VND}'"
            )

            # Buy a day pass; the first answer is lost, the retry carries the same key.
            await page.click("#nav a[data-nav='buy']")
            await page.wait_for(
                f"document.querySelector('[data-product=\"{DAY_PASS}\"] button') !== null"
            )
            await snap(page, artifacts, "buy")
            sent, paused = await buy_with_a_lost_answer(page, artifacts)
            assert len(sent) == 2
            assert sent[0]["Idempotency-Key"] == sent[1]["Idempotency-Key"]
            assert paused, "the first purchase answer was not intercepted"
            await on_screen(page, "ticket")
            ticket_id = (await page.evaluate("location.hash")).removeprefix("#/ticket/")
            tickets = (await as_rider(ticketing, page, "GET", "/v1/tickets")).json()
            assert [(t["id"], t["product_code"]) for t in tickets] == [(ticket_id, DAY_PASS)]
            wallet = (await as_rider(ticketing, page, "GET", "/v1/wallet")).json()
            assert wallet["balance"] == TOPUP_VND - DAY_PASS_PRICE  # charged once

            # The ticket screen: the gate reads the code off the screen and lets the rider in.
            async def gates_know_the_ticket() -> bool:
                return bool(
                    await validator.redis.exists(validation_repository.ticket_key(ticket_id))
                )

            await eventually(gates_know_the_ticket, timeout_s=60)
            counter = await shown_qr(page)
            assert await page.evaluate(
                "/^\\d{2}:\\d{2}:\\d{2}$/.test(document.querySelector('#ticket-clock').textContent)"
            )
            countdown = await page.evaluate(
                "document.querySelector('#ticket-countdown').textContent"
            )
            assert countdown.startswith("Mã mới sau"), countdown
            online_qr = read_qr(await snap(page, artifacts, "ticket"))
            code = parse_dynamic_qr(online_qr)
            assert str(code.credential.ticket_id) == ticket_id
            assert code.credential.product == DAY_PASS_CODE
            assert code.credential.device_public_key == public_key
            assert code.counter in (counter, counter + 1)  # it may have just been renewed
            assert qrimage.qr_version(online_qr) <= 11
            await assert_quiet_zone(page, qrimage.qr_version(online_qr))
            decided = await gate_simulator(gates_url, entry, artifacts / "rider-app-ticket.png")
            assert (decided["decision"], decided["action"]) == ("accept", "entry"), decided

            # English on demand.
            await page.click("#lang")
            assert await page.evaluate("document.documentElement.lang") == "en"
            await page.wait_for(
                "document.querySelector('#ticket-countdown').textContent.startsWith('New code in')"
            )
            await snap(page, artifacts, "ticket-en")
            await page.click("#lang")
            await page.wait_for(
                "document.querySelector('#ticket-countdown').textContent.startsWith('Mã mới sau')"
            )

            # The tickets list, and the ticket opened from it.
            await page.click("#nav a[data-nav='tickets']")
            await on_screen(page, "tickets")
            item = f"#tickets a[data-ticket='{ticket_id}']"
            await page.wait_for(
                f"document.querySelector({json.dumps(item)}) !== null", what="the ticket"
            )
            assert await page.evaluate("document.querySelectorAll('#tickets li').length") == 1
            badge = await page.evaluate(
                f"document.querySelector({json.dumps(item + ' .badge')}).textContent"
            )
            assert badge == "Còn hiệu lực"
            await snap(page, artifacts, "tickets")
            await page.click(item)
            await on_screen(page, "ticket")
            await shown_qr(page)

            # No network at all: the phone is offline and ticketing is gone.
            assert await page.evaluate("navigator.serviceWorker.controller !== null")
            with only_network_failures(page):
                await page.send(
                    "Network.emulateNetworkConditions",
                    {
                        "offline": True,
                        "latency": 0,
                        "downloadThroughput": -1,
                        "uploadThroughput": -1,
                    },
                )
                await ticketing_running.aclose()
                with pytest.raises(httpx.ConnectError):
                    await get_json(ticketing, "/v1/keys")
                await page.navigate(f"{ticketing}/app/?reloaded=offline#/ticket/{ticket_id}")
                await on_screen(page, "ticket")
                await shown_qr(page)
                await page.wait_for("!document.querySelector('#ticket-offline').hidden")
                offline_qr = read_qr(await snap(page, artifacts, "ticket-offline"))
                await shown_qr(page, after=parse_dynamic_qr(offline_qr).counter)
                later_qr = read_qr(await snap(page, artifacts, "ticket-later"))
            assert len({online_qr, offline_qr, later_qr}) == 3
            later = parse_dynamic_qr(later_qr)
            assert later.at > code.at
            assert later.counter > code.counter
            decided = await gate_simulator(
                gates_url, exit_, artifacts / "rider-app-ticket-later.png"
            )
            assert (decided["decision"], decided["action"]) == ("accept", "exit"), decided
            assert page.problems == []


async def get_json(base_url: str, path: str) -> Any:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        response = await http.get(path)
        response.raise_for_status()
        return response.json()


async def buy_with_a_lost_answer(
    page: Browser, artifacts: Path
) -> tuple[list[dict[str, str]], list[str]]:
    """Tap Buy then Pay; the purchase goes through but its answer never reaches the phone
    (connection reset). The page offers to try again; the retry must be answered with the
    same purchase. Answers the headers of both POSTs and the intercepted request ids."""
    sent: list[dict[str, str]] = []
    paused: list[str] = []

    def watch(method: str, params: dict[str, Any]) -> None:
        request = params.get("request", {})
        if (
            method == "Network.requestWillBeSent"
            and request.get("method") == "POST"
            and request.get("url", "").endswith("/v1/purchases")
        ):
            sent.append(request["headers"])
        elif method == "Fetch.requestPaused":
            paused.append(params["requestId"])

    stop = page.listen(watch)
    try:
        await page.click(f"[data-product={DAY_PASS!r}] button")
        await page.wait_for("document.querySelector('#confirm').open", what="the confirm dialog")
        with only_network_failures(page):
            await page.send(
                "Fetch.enable",
                {"patterns": [{"urlPattern": "*/v1/purchases", "requestStage": "Response"}]},
            )
            await page.click("#confirm-pay")

            async def intercepted() -> bool:
                return bool(paused)

            await eventually(intercepted, timeout_s=15)
            await page.send(
                "Fetch.failRequest", {"requestId": paused[0], "errorReason": "ConnectionReset"}
            )
            await page.send("Fetch.disable")
            await page.wait_for(
                "!document.querySelector('#confirm-error').hidden"
                " && document.querySelector('#confirm-pay').dataset.i18n === 'buy.retry'",
                what="the page offering to try again",
            )
        await snap(page, artifacts, "buy-retry")
        await page.click("#confirm-pay")
        await on_screen(page, "ticket")
    finally:
        stop()
    return sent, paused


async def assert_quiet_zone(page: Browser, version: int) -> None:
    first = await page.evaluate(FIRST_DARK_PIXEL)
    modules = 17 + 4 * version
    assert first["side"] % (modules + 8) == 0, first  # whole pixels per module, 4 + 4 around
    pixels_per_module = first["side"] // (modules + 8)
    assert first["x"] == first["y"] == 4 * pixels_per_module, first
