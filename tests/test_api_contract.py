"""Schemathesis against every service's OpenAPI, served by real uvicorn processes.

All operations, with examples, coverage, fuzzing and stateful phases: no 5xx, and every
response matches its documented status, content type and schema.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from citypass.servers import LocalServers, ManagedProcess, free_port, spawn
from citypass.stack import SERVICES, ServiceSpec
from services.parking.settings import ParkingSettings
from services.payments.settings import PaymentsSettings
from services.validation.settings import ValidationSettings

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
)


@pytest.fixture(scope="module")
def live_services(migrated: LocalServers, service_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Each service as a real process on a free port; name → base URL."""
    ports = {spec.name: free_port() for spec in SERVICES}
    env = {**os.environ, **service_env}
    for spec in SERVICES:
        env[f"{spec.prefix}_PORT"] = str(ports[spec.name])
        env[f"{spec.prefix}_PAYMENTS_URL"] = f"http://127.0.0.1:{ports['payments']}"
    processes: list[ManagedProcess] = [
        spawn(
            spec.name,
            [sys.executable, "-m", f"services.{spec.name}"],
            migrated.log_dir / f"contract-{spec.name}.log",
            env=env,
            cwd=ROOT,
        )
        for spec in SERVICES
    ]
    try:
        deadline = time.monotonic() + 60
        for spec, managed in zip(SERVICES, processes, strict=True):
            url = f"http://127.0.0.1:{ports[spec.name]}/readyz"
            while httpx.get(url, timeout=2).status_code != 200 if _up(url) else True:
                assert managed.process.poll() is None, f"{spec.name} died: {managed.log_path}"
                assert time.monotonic() < deadline, f"{spec.name} not ready: {managed.log_path}"
                time.sleep(0.2)
        yield {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    finally:
        for managed in processes:
            managed.stop()


def _up(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


def auth_headers(spec: ServiceSpec, base_url: str) -> list[str]:
    """Credentials a legitimate caller has, so that protected operations are exercised too."""
    tokens = {
        "operator": lambda: operator_token(base_url),
        "ticketing": lambda: rider_token(base_url),
        "payments": lambda: PaymentsSettings().service_token.get_secret_value(),
        "validation": lambda: ValidationSettings().admin_token.get_secret_value(),
        "parking": lambda: ParkingSettings().admin_token.get_secret_value(),
    }
    return ["-H", f"Authorization: Bearer {tokens[spec.name]()}"]


def rider_token(base_url: str) -> str:
    """A rider who just signed up, as the rider app would be."""
    phone = f"098{random.randrange(10**7):07d}"
    response = httpx.post(
        f"{base_url}/v1/riders", json={"phone": phone, "password": "contract-test-password"}
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def operator_token(base_url: str) -> str:
    from services.operator.app import build_app  # noqa: F401  (same code the process runs)

    password = "contract-test-password"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import asyncio, os;"
            "from services.operator.seed import seed;"
            "from services.operator.settings import OperatorSettings;"
            f"asyncio.run(seed(OperatorSettings(), {password!r}))",
        ],
        check=True,
        env=os.environ,
        cwd=ROOT,
    )
    response = httpx.post(f"{base_url}/v1/login", json={"username": "admin", "password": password})
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


@pytest.mark.slow
@pytest.mark.parametrize("spec", SERVICES, ids=[spec.name for spec in SERVICES])
def test_openapi_contract(
    spec: ServiceSpec, live_services: dict[str, str], configured: None, artifacts: Path
) -> None:
    base_url = live_services[spec.name]
    report = artifacts / f"schemathesis-{spec.name}.txt"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{base_url}/openapi.json",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "30",
            "--workers",
            "1",
            "--seed",
            "20261122",
            *auth_headers(spec, base_url),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    report.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (
        f"schemathesis found problems in {spec.name}:\n{result.stdout[-6000:]}"
    )
