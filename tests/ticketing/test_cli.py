"""`citypass rider` against real ticketing and payments processes, as a rider would use it."""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citypass import cli
from citypass.servers import LocalServers, free_port
from services.ticketing.credentials import from_b64url
from shared.qrimage import decode_png, qr_version
from shared.ticketcodec import decode_and_verify, load_public_key, public_key_bytes
from tests.support import ServiceProcess
from tests.ticketing.conftest import (
    OPERATOR_TOKEN,
    PAYMENTS_TOKEN,
    WEBHOOK_SECRET,
    new_phone,
)


@pytest.fixture(scope="module")
def ticketing_process(
    migrated: LocalServers,
    service_env: dict[str, str],
    payments_process: ServiceProcess,
    ticketing_db: object,
) -> Iterator[ServiceProcess]:
    port = free_port()
    env = {
        **os.environ,
        **service_env,
        "TICKETING_PORT": str(port),
        "TICKETING_PAYMENTS_URL": payments_process.url,
        "TICKETING_PAYMENTS_SERVICE_TOKEN": PAYMENTS_TOKEN,
        "TICKETING_OPERATOR_TOKEN": OPERATOR_TOKEN,
    }  # production Argon2 cost here: this is the process riders would talk to
    process = ServiceProcess(
        "services.ticketing", port, env, migrated.log_dir / "ticketing-tests-ticketing.log"
    )
    process.start()
    yield process
    process.stop()


class Terminal:
    """Runs `citypass …` in-process (in a thread: the CLI runs its own event loop)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], home: Path, url: str) -> None:
        self.capsys = capsys
        self.home = home
        self.url = url

    async def rider(self, *argv: str, url: str | None = None) -> str:
        args = ["rider", "--home", str(self.home), "--url", url or self.url, *argv]
        return await self.run(*args)

    async def run(self, *argv: str) -> str:
        self.capsys.readouterr()
        code = await asyncio.to_thread(cli.main, list(argv))
        output = self.capsys.readouterr().out
        assert code == 0, output
        return output


def private_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestRiderCommandLine:
    async def test_sign_up_top_up_buy_and_show_a_scannable_qr(
        self,
        ticketing_process: ServiceProcess,
        payments_process: ServiceProcess,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        home = tmp_path / "rider-home"
        terminal = Terminal(capsys, home, ticketing_process.url)
        monkeypatch.setenv("CITYPASS_RIDER_PASSWORD", "correct horse 42")

        signed_up = await terminal.rider("signup", "--phone", new_phone())
        assert "is your active device" in signed_up
        assert private_mode(home / "device.key") == 0o600
        assert private_mode(home / "session.json") == 0o600

        topup = await terminal.rider("topup", "100000")
        vietqr = re.search(r'citypass bank pay "([^"]+)"', topup)
        assert vietqr is not None, topup
        paid = await terminal.run(
            "bank",
            "pay",
            vietqr.group(1),
            "--payments-url",
            payments_process.url,
            "--secret",
            WEBHOOK_SECRET,
        )
        assert "credited" in paid
        assert "100.000 VND" in await terminal.rider("balance")

        bought = await terminal.rider("buy", "METRO-DAY")
        assert "Bought METRO-DAY for 40.000 VND" in bought
        assert "METRO-DAY" in await terminal.rider("tickets")
        assert "valid until" in await terminal.rider("refresh")

        png = tmp_path / "qr.png"
        shown = await terminal.rider("qr", "--png", str(png))
        text = re.search(r"QR text: (.+)", shown)
        assert text is not None, shown
        assert decode_png(png.read_bytes()) == [text.group(1)]
        assert qr_version(text.group(1)) <= 11

        async with httpx.AsyncClient(base_url=ticketing_process.url) as http:
            keys = (await http.get("/v1/keys")).json()["keys"]
        qr = decode_and_verify(
            text.group(1),
            {
                k["kid"]: load_public_key(from_b64url(k["public_key"]))
                for k in keys
                if k["status"] != "retired"
            },
        )
        device_key = serialization.load_pem_private_key(
            (home / "device.key").read_bytes(), password=None
        )
        assert isinstance(device_key, Ed25519PrivateKey)
        assert qr.credential.device_public_key == public_key_bytes(device_key)

    async def test_the_qr_is_made_offline_from_the_stored_credential(
        self,
        ticketing_process: ServiceProcess,
        payments_process: ServiceProcess,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        home = tmp_path / "rider-home"
        terminal = Terminal(capsys, home, ticketing_process.url)
        monkeypatch.setenv("CITYPASS_RIDER_PASSWORD", "correct horse 42")
        await terminal.rider("signup", "--phone", new_phone())
        await terminal.rider("buy", "STORED-VALUE")  # no charge now: fares at tap-out

        offline = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        png = tmp_path / "offline.png"
        shown = await terminal.rider("qr", "--png", str(png), "--quiet", url=offline)
        text = re.search(r"QR text: (.+)", shown)
        assert text is not None, shown
        assert decode_png(png.read_bytes()) == [text.group(1)]
        again = await terminal.rider("qr", url=offline)  # drawn in the terminal too
        assert "QR text: CP1:" in again
