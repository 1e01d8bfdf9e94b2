"""Gate secrets: reading one never changes it; rotating is explicit, with a grace period during
which the replaced secret still signs on every gate route, and not after."""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from citypass import cli
from services.validation.app import build_app
from services.validation.service import Validator
from shared.devicesigning import DeviceSigner
from shared.qrimage import render_png
from tests.conftest import AppClient
from tests.operator.conftest import serve
from tests.support import wait_until
from tests.validation.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    Gate,
    make_ticket,
    provision_gate,
    validation_body,
    validation_settings,
)

README = Path(__file__).resolve().parents[2] / "README.md"
BRIEF_GRACE_S = 5


def secret_path(gate: Gate) -> str:
    return f"/v1/gates/{gate.gate_id}/secret"


def signer(gate: Gate, secret: str) -> Gate:
    return Gate(gate.gate_id, DeviceSigner(gate.gate_id, secret))


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    code: str = response.json()["code"]
    return code


async def decide(http: httpx.AsyncClient, gate: Gate) -> httpx.Response:
    body = validation_body(gate, make_ticket().qr())
    headers = gate.headers("POST", "/v1/validations", body)
    return await http.post("/v1/validations", content=body, headers=headers)


async def fetch_bundle(http: httpx.AsyncClient, gate: Gate) -> httpx.Response:
    return await http.get("/v1/gate-bundle", headers=gate.signer.headers("GET", "/v1/gate-bundle"))


async def works(http: httpx.AsyncClient, gate: Gate) -> bool:
    """The gate's online decision and its bundle fetch both go through with this secret."""
    decided, bundle = await decide(http, gate), await fetch_bundle(http, gate)
    if decided.status_code == 200 and bundle.status_code == 200:
        return bool(decided.json()["decision"] == "accept")
    return False


async def refused(http: httpx.AsyncClient, gate: Gate) -> list[tuple[int, str]]:
    answers = [await decide(http, gate), await fetch_bundle(http, gate)]
    return [(answer.status_code, problem_code(answer)) for answer in answers]


async def rotate(http: httpx.AsyncClient, gate: Gate) -> dict[str, Any]:
    response = await http.post(f"{secret_path(gate)}:rotate", headers=ADMIN)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.fixture(scope="module")
async def brief_grace(
    http: httpx.AsyncClient,  # the session app has learnt the pass products (in Redis)
    app_client: AppClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    """A second validation app on the same Redis whose rotations keep the old secret 5 s."""
    settings = validation_settings(
        tmp_path_factory.mktemp("brief-grace"),
        gate_secret_grace=timedelta(seconds=BRIEF_GRACE_S),
        run_fare_worker=False,
    )
    async with app_client(build_app(settings)) as client:
        yield client


class TestReadingTheSecret:
    async def test_reading_gives_the_provisioned_secret_and_changes_nothing(
        self, http: httpx.AsyncClient
    ) -> None:
        gate = await provision_gate(http, station="2A-09")

        first = await http.get(secret_path(gate), headers=ADMIN)
        second = await http.get(secret_path(gate), headers=ADMIN)

        assert first.status_code == second.status_code == 200, first.text
        assert first.json() == second.json()
        assert first.json() == {
            "gate_id": gate.gate_id,
            "secret": gate.signer.secret.decode(),
            "previous_valid_until": None,
        }
        assert await works(http, gate)

    async def test_two_people_reading_it_both_end_with_a_working_gate(
        self, http: httpx.AsyncClient
    ) -> None:
        gate = await provision_gate(http, station="2A-10")
        people = []
        for _ in range(2):
            response = await http.get(secret_path(gate), headers=ADMIN)
            assert response.status_code == 200, response.text
            people.append(signer(gate, response.json()["secret"]))

        assert [await works(http, person) for person in people] == [True, True]

    async def test_reading_needs_the_admin_token(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="2A-10")

        response = await http.get(secret_path(gate))

        assert (response.status_code, problem_code(response)) == (401, "invalid_token")

    async def test_unknown_gate_has_no_secret(self, http: httpx.AsyncClient) -> None:
        response = await http.get("/v1/gates/NO-SUCH-GATE/secret", headers=ADMIN)

        assert (response.status_code, problem_code(response)) == (404, "gate_not_found")

    async def test_posting_to_the_secret_no_longer_rotates_it(
        self, http: httpx.AsyncClient
    ) -> None:
        gate = await provision_gate(http, station="2A-10")

        response = await http.post(secret_path(gate), headers=ADMIN)

        assert (response.status_code, problem_code(response)) == (405, "method_not_allowed")
        assert await works(http, gate)


class TestRotation:
    async def test_old_and_new_secret_both_work_during_the_grace_period(
        self, http: httpx.AsyncClient, validator: Validator
    ) -> None:
        gate = await provision_gate(http, station="2A-11")

        started = time.time()
        rotated = await rotate(http, gate)

        renewed = signer(gate, rotated["secret"])
        until = datetime.fromisoformat(rotated["previous_valid_until"]).timestamp()
        grace_s = validator.settings.gate_secret_grace.total_seconds()
        assert grace_s == 600  # the documented default
        assert started + grace_s - 1 <= until <= time.time() + grace_s
        assert rotated["secret"] != gate.signer.secret.decode()
        assert await works(http, gate)
        assert await works(http, renewed)
        read = (await http.get(secret_path(gate), headers=ADMIN)).json()
        assert read == rotated

    async def test_rotating_again_drops_the_oldest_secret_at_once(
        self, http: httpx.AsyncClient
    ) -> None:
        gate = await provision_gate(http, station="2A-12")
        second = signer(gate, (await rotate(http, gate))["secret"])

        third = signer(gate, (await rotate(http, gate))["secret"])

        assert await refused(http, gate) == [(401, "bad_signature")] * 2
        assert await works(http, second)
        assert await works(http, third)

    async def test_old_secret_is_refused_everywhere_after_the_grace_period(
        self, brief_grace: httpx.AsyncClient, http: httpx.AsyncClient, validator: Validator
    ) -> None:
        gate = await provision_gate(brief_grace, station="3-01")
        await wait_until(lambda: gate.gate_id in validator.memory.gates, what="the other app")

        rotated = await rotate(brief_grace, gate)

        renewed = signer(gate, rotated["secret"])
        until = datetime.fromisoformat(rotated["previous_valid_until"]).timestamp()
        assert until <= time.time() + BRIEF_GRACE_S
        assert await works(brief_grace, gate)
        # The other process (the session app) learns the rotation from Redis, grace included.
        await wait_until(lambda: works(http, renewed), what="the rotation seen by the other app")
        assert time.time() < until, "the machine was too slow to check within the grace"
        assert await works(http, gate)

        await asyncio.sleep(until - time.time() + 1.1)

        for app in (brief_grace, http):
            assert await refused(app, gate) == [(401, "bad_signature")] * 2
            assert await works(app, renewed)
        answer = (await brief_grace.get(secret_path(gate), headers=ADMIN)).json()
        assert answer == {**rotated, "previous_valid_until": None}

    async def test_no_grace_cuts_the_old_secret_off_at_once(
        self, http: httpx.AsyncClient, app_client: AppClient, tmp_path: Path
    ) -> None:
        settings = validation_settings(
            tmp_path, gate_secret_grace=timedelta(0), run_fare_worker=False
        )
        async with app_client(build_app(settings)) as no_grace:
            gate = await provision_gate(no_grace, station="3-03")

            rotated = await rotate(no_grace, gate)

            assert rotated["previous_valid_until"] is None
            assert await refused(no_grace, gate) == [(401, "bad_signature")] * 2
            assert await works(no_grace, signer(gate, rotated["secret"]))


def readme_gate_commands() -> list[list[str]]:
    """The `citypass gate …` lines of the README's "Using it" block, comments removed."""
    section = README.read_text().split("## Using it", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None
    lines = [line.split("  #", 1)[0] for line in block.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("citypass gate ")]


class TestReadme:
    async def test_two_people_following_the_readme_both_end_with_a_working_gate(
        self,
        http: httpx.AsyncClient,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        commands = readme_gate_commands()
        assert [command[:3] for command in commands] == [
            ["citypass", "gate", "secret"],
            ["citypass", "gate", "scan"],
        ]
        app = build_app(validation_settings(tmp_path / "served", run_fare_worker=False))
        served: Validator = app.state.validator
        async with serve(app) as url:
            gate = await provision_gate(http, station="3-02")
            await wait_until(lambda: gate.gate_id in served.memory.gates, what="the served app")
            outputs = []
            for person in ("first", "second"):
                home = tmp_path / person
                home.mkdir()
                monkeypatch.chdir(home)
                (home / "ticket.png").write_bytes(render_png(make_ticket().qr()))
                for command in commands:
                    argv = [gate.gate_id if arg == "2A-01-EN" else arg for arg in command[1:]]
                    argv += ["--url", url]
                    if argv[1] == "secret":
                        argv += ["--admin-token", ADMIN_TOKEN]
                    code = await asyncio.to_thread(cli.main, argv)
                    outputs.append(capsys.readouterr().out)
                    assert code == 0, outputs[-1]
            rotate_argv = ["gate", "secret", "--gate", gate.gate_id, "--rotate", "--url", url]
            code = await asyncio.to_thread(cli.main, [*rotate_argv, "--admin-token", ADMIN_TOKEN])
            rotated = capsys.readouterr()

        assert [output.split()[0] for output in outputs[1::2]] == ["ACCEPT", "ACCEPT"]
        assert (tmp_path / "first" / "gate.secret").read_text() == (
            tmp_path / "second" / "gate.secret"
        ).read_text()
        assert await works(http, gate)
        assert code == 0, rotated.out
        assert "the secret it replaced is accepted until" in rotated.err
        assert await works(http, signer(gate, rotated.out.strip()))
        assert await works(http, gate)  # within the grace period
