"""Validation as real processes (two of them, sharing Redis) and with no PostgreSQL anywhere."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
import pytest
from fastapi import FastAPI

from citypass.cli import main as citypass
from citypass.servers import LocalServers, ManagedProcess, free_port, spawn
from services.validation.app import build_app
from shared.fares.feed import HANOI
from shared.qrimage import render_png
from tests.conftest import AppClient
from tests.support import ROOT, wait_ready
from tests.validation.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    Gate,
    issuer_config,
    make_ticket,
    provision_gate,
    scan,
    validation_body,
    validation_settings,
)

TRIALS = 200


@pytest.fixture(scope="module")
def nowhere() -> str:
    """A PostgreSQL URL nothing listens on."""
    return f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nowhere"


@pytest.fixture(scope="module")
def processes(
    http: httpx.AsyncClient,  # the session app has learnt the PASSES products (in Redis)
    servers: LocalServers,
    service_env: dict[str, str],
    nowhere: str,
) -> Iterator[list[str]]:
    """Two validation processes on one Redis, with the database URL pointing nowhere."""
    started: list[tuple[ManagedProcess, str]] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            env = {
                **os.environ,
                **service_env,
                "VALIDATION_PORT": str(port),
                "VALIDATION_DATABASE_URL": nowhere,
                "VALIDATION_ADMIN_TOKEN": ADMIN_TOKEN,
                "VALIDATION_ISSUER_KEYS": orjson.dumps([issuer_config().model_dump()]).decode(),
                "VALIDATION_TICKETING_URL": "",
                "VALIDATION_NETWORK_FEED": str(HANOI),
                "VALIDATION_INSTANCE_ID": f"live-{name}-{uuid.uuid4().hex[:8]}",
            }
            process = spawn(
                f"validation-{name}",
                [sys.executable, "-m", "services.validation"],
                servers.log_dir / f"validation-live-{name}.log",
                env=env,
                cwd=ROOT,
            )
            started.append((process, f"http://127.0.0.1:{port}"))
        for process, url in started:
            wait_ready(process, url)
        yield [url for _, url in started]
    finally:
        for process, _ in started:
            process.stop()


@pytest.fixture(scope="module")
async def clients(processes: list[str]) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=processes[0], timeout=10) as a,
        httpx.AsyncClient(base_url=processes[1], timeout=10) as b,
    ):
        yield [a, b]


async def known_everywhere(clients: list[httpx.AsyncClient], gate: Gate) -> None:
    """Wait until every process has loaded the gate (they reload from Redis on change)."""
    for client in clients:
        for _ in range(100):
            headers = gate.signer.headers("GET", "/v1/gate-bundle")
            if (await client.get("/v1/gate-bundle", headers=headers)).status_code == 200:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"{client.base_url} never learnt gate {gate.gate_id}")


class TestTwoProcesses:
    async def test_same_qr_at_two_gates_at_once_is_accepted_exactly_once(
        self, clients: list[httpx.AsyncClient]
    ) -> None:
        north = await provision_gate(clients[0], station="2A-03", direction="entry")
        south = await provision_gate(clients[0], station="2A-03", direction="entry")
        await known_everywhere(clients, north)
        await known_everywhere(clients, south)
        outcomes: list[tuple[str, str]] = []

        for _ in range(TRIALS):
            qr = make_ticket().qr()
            requests = []
            for gate, client in ((north, clients[0]), (south, clients[1])):
                body = validation_body(gate, qr)
                headers = gate.headers("POST", "/v1/validations", body)
                requests.append(client.post("/v1/validations", content=body, headers=headers))
            answers = await asyncio.gather(*requests)
            assert [a.status_code for a in answers] == [200, 200]
            decided = sorted((a.json()["decision"], a.json()["reason"]) for a in answers)
            outcomes.append((decided[0][1], decided[1][1]))

        assert set(outcomes) == {("ok", "replayed")}, f"{len(outcomes)} trials: {set(outcomes)}"

    async def test_disabling_a_gate_reaches_the_other_process(
        self, clients: list[httpx.AsyncClient]
    ) -> None:
        gate = await provision_gate(clients[0], station="2A-04")
        await known_everywhere(clients, gate)

        await clients[0].patch(f"/v1/gates/{gate.gate_id}", json={"enabled": False}, headers=ADMIN)

        for _ in range(100):
            body = validation_body(gate, make_ticket().qr())
            response = await clients[1].post(
                "/v1/validations",
                content=body,
                headers=gate.headers("POST", "/v1/validations", body),
            )
            if response.status_code == 401:
                break
            await asyncio.sleep(0.05)
        assert response.json()["code"] == "device_disabled"


class TestGateCommand:
    async def test_a_reader_that_goes_away_gets_no_traceback(
        self, clients: list[httpx.AsyncClient], processes: list[str], tmp_path: Path
    ) -> None:
        """`citypass gate scan … | head -1`: the pipe closes before the CLI writes."""
        gate = await provision_gate(clients[0], station="3-05", direction="entry")
        await known_everywhere(clients, gate)
        image = tmp_path / "rider.png"
        image.write_bytes(render_png(make_ticket().qr()))
        secret_file = tmp_path / "gate.secret"
        secret_file.write_text(gate.signer.secret.decode())
        argv = ["gate", "scan", str(image), "--gate", gate.gate_id, "--url", processes[0]]
        reader, writer = os.pipe()
        scan = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "citypass.cli",
            *argv,
            "--secret-file",
            str(secret_file),
            stdout=writer,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        os.close(writer)
        os.close(reader)  # the reader is gone before anything is written
        assert scan.stderr is not None

        errors = (await scan.stderr.read()).decode()
        await asyncio.wait_for(scan.wait(), 60)

        assert "Traceback" not in errors, errors
        assert "BrokenPipeError" not in errors, errors
        assert scan.returncode == 0

    async def test_scan_decodes_the_image_signs_and_prints_decision_and_latency(
        self,
        clients: list[httpx.AsyncClient],
        processes: list[str],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        gate = await provision_gate(clients[0], station="3-04", direction="entry")
        await known_everywhere(clients, gate)
        image = tmp_path / "rider.png"
        image.write_bytes(render_png(make_ticket().qr()))
        secret_file = tmp_path / "gate.secret"
        secret_file.write_text(gate.signer.secret.decode())
        argv = ["gate", "scan", str(image), "--gate", gate.gate_id, "--url", processes[1]]

        first = await asyncio.to_thread(citypass, [*argv, "--secret-file", str(secret_file)])
        printed = capsys.readouterr().out
        again = await asyncio.to_thread(citypass, [*argv, "--secret-file", str(secret_file)])
        printed_again = capsys.readouterr().out

        assert first == 0, printed
        assert printed.startswith("ACCEPT ok (entry)  Mời qua / Welcome")
        assert "latency:" in printed
        assert again == 1
        assert printed_again.startswith("REJECT replayed")

    async def test_offline_fetch_scan_and_upload(
        self,
        clients: list[httpx.AsyncClient],
        processes: list[str],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        gate = await provision_gate(clients[0], station="3-05", direction="entry")
        await known_everywhere(clients, gate)
        image = tmp_path / "rider.png"
        image.write_bytes(render_png(make_ticket().qr()))
        common = ["--gate", gate.gate_id, "--secret", gate.signer.secret.decode()]
        common += ["--url", processes[0], "--state", str(tmp_path / "state")]

        fetched = await asyncio.to_thread(citypass, ["gate", "offline", "fetch", *common])
        scanned = await asyncio.to_thread(
            citypass, ["gate", "offline", "scan", str(image), *common]
        )
        replayed = await asyncio.to_thread(
            citypass, ["gate", "offline", "scan", str(image), *common]
        )
        uploaded = await asyncio.to_thread(citypass, ["gate", "offline", "upload", *common])
        printed = capsys.readouterr().out

        assert (fetched, scanned, replayed, uploaded) == (0, 0, 1, 0), printed
        assert "uploaded 2 decisions; 0 conflicts" in printed


class TestNoDatabase:
    async def test_request_path_opens_no_postgresql_connection(
        self,
        http: httpx.AsyncClient,
        app_client: AppClient,
        nowhere: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        attempts: list[Any] = []

        async def refuse(*args: Any, **kwargs: Any) -> None:
            attempts.append((args, kwargs))
            raise AssertionError("the validation service must not connect to PostgreSQL")

        monkeypatch.setattr(asyncpg, "connect", refuse)
        monkeypatch.setattr(asyncpg, "create_pool", refuse)
        app: FastAPI = build_app(validation_settings(tmp_path, database_url=nowhere))

        async with app_client(app) as isolated:
            ready = await isolated.get("/readyz")
            gate = await provision_gate(isolated, station="2A-12", direction="both")
            ticket = make_ticket()
            decisions = [await scan(isolated, gate, ticket.qr()) for _ in range(3)]
            bundle = await isolated.get(
                "/v1/gate-bundle", headers=gate.signer.headers("GET", "/v1/gate-bundle")
            )

        assert app.state.runtime.database is None
        assert ready.status_code == 200
        assert set(ready.json()["checks"]) == {"redis", "kafka"}
        assert [d["action"] for d in decisions] == ["entry", "exit", "entry"]
        assert bundle.status_code == 200
        assert attempts == []
