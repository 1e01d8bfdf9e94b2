"""Schemathesis against every service's OpenAPI, served by real uvicorn processes.

All operations, with examples, coverage, fuzzing and stateful phases, once with a legitimate
caller's credentials and once without any: no 5xx, and every response matches its documented
status, content type and schema. CI runs 30 examples per operation; the hardening run uses 300
(`CITYPASS_CONTRACT_EXAMPLES=300`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citypass.servers import LocalServers, ManagedProcess, free_port, spawn
from citypass.stack import SERVICES, ServiceSpec
from services.parking.settings import ParkingSettings
from services.payments.settings import PaymentsSettings
from services.ticketing.seed import seed as seed_ticketing
from services.ticketing.settings import TicketingSettings
from services.validation.settings import ValidationSettings
from shared.devicesigning import DeviceSigner
from shared.fares.feed import HANOI

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("CITYPASS_CONTRACT_EXAMPLES", "30"))
logger = logging.getLogger(__name__)
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
)


@dataclass(frozen=True)
class LiveService:
    url: str
    pid: int

    def peak_rss_kib(self) -> int:
        """The process's peak resident memory so far (VmHWM)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM")))


@pytest.fixture(scope="module")
def live_services(
    migrated: LocalServers, service_env: dict[str, str]
) -> Iterator[dict[str, LiveService]]:
    """Each service as a real process on a free port, by name; ticketing with its first network
    version, as `make run` seeds it."""
    asyncio.run(seed_ticketing(TicketingSettings(database_url=migrated.database_url)))
    ports = {spec.name: free_port() for spec in SERVICES}
    env = {**os.environ, **service_env}
    for spec in SERVICES:
        env[f"{spec.prefix}_PORT"] = str(ports[spec.name])
        env[f"{spec.prefix}_PAYMENTS_URL"] = f"http://127.0.0.1:{ports['payments']}"
    for prefix in ("VALIDATION", "OPERATOR"):  # the network from Hanoi's feed, as a lab gate
        env[f"{prefix}_TICKETING_URL"], env[f"{prefix}_NETWORK_FEED"] = "", str(HANOI)
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
        yield {
            spec.name: LiveService(f"http://127.0.0.1:{ports[spec.name]}", managed.process.pid)
            for spec, managed in zip(SERVICES, processes, strict=True)
        }
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
@pytest.mark.parametrize("credentials", [True, False], ids=["credentials", "anonymous"])
@pytest.mark.parametrize("spec", SERVICES, ids=[spec.name for spec in SERVICES])
def test_openapi_contract(
    spec: ServiceSpec,
    credentials: bool,
    live_services: dict[str, LiveService],
    configured: None,
    artifacts: Path,
) -> None:
    base_url = live_services[spec.name].url
    caller = "credentials" if credentials else "anonymous"
    report = artifacts / f"schemathesis-{spec.name}-{caller}.txt"
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
            str(EXAMPLES),
            "--workers",
            "1",
            "--seed",
            "20261122",
            *(auth_headers(spec, base_url) if credentials else []),
        ],
        capture_output=True,
        text=True,
        timeout=max(600, 20 * EXAMPLES),
        cwd=ROOT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    report.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (
        f"schemathesis found problems in {spec.name}:\n{result.stdout[-6000:]}"
    )


# Request bodies: one limit per service, from the kit, before anything reads or parses -------------

MIB = 1024 * 1024
HUGE = 100 * MIB  # what the outside review sent: ticketing's memory went from 119 to 318 MiB
ANY_ID = "0190b1c2-0000-7000-8000-000000000000"
LIMITED = [  # unauthenticated callers, on FastAPI's routes and on hot routes
    ("ticketing", "/v1/riders", 64 * 1024),
    ("parking", f"/v1/receipts/{ANY_ID}/disputes?token={'t' * 24}", 64 * 1024),
    ("parking", "/v1/entries", 16 * 1024),  # the lane route's own, tighter limit
    ("operator", "/v1/login", 64 * 1024),
    ("payments", "/v1/bank/notifications", 64 * 1024),
    ("payments", "/v1/charges", 64 * 1024),
    ("validation", "/v1/gates", 4 * MIB),
    ("validation", "/v1/validations", 4 * MIB),
]


def raw_post(base_url: str, target: str, head: bytes, chunks: Iterable[bytes]) -> RawAnswer:
    """POST over a socket: the request head, then `chunks` until the server answers (or closes).
    Returns the answer and how many body bytes were sent. A thread reads while we send: the
    server closes with our unread bytes in its buffer, and the reset it sends would otherwise
    discard an answer still waiting in our socket."""
    url = urlsplit(base_url)
    assert url.hostname is not None
    assert url.port is not None
    answer = bytearray()
    answered = threading.Event()
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:

        def read() -> None:
            with contextlib.suppress(OSError):
                while data := sock.recv(65536):
                    answer.extend(data)
                    answered.set()
            answered.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        sock.sendall(
            f"POST {target} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + head
            + b"\r\n"
        )
        sent = 0
        for chunk in chunks:
            if answered.is_set():
                break
            try:
                sock.sendall(chunk)
            except OSError:  # reset or closed by the server
                break
            sent += len(chunk)
        reader.join(30)
    start, _, body = bytes(answer).partition(b"\r\n\r\n")
    lines = start.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return RawAnswer(int(lines[0].split()[1]), headers, orjson.loads(body), sent)


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    problem: dict[str, Any]
    sent: int


def chunked(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """`total` bytes of a JSON-looking body in HTTP/1.1 chunked framing."""
    piece = b"%x\r\n%s\r\n" % (size, b" " * size)
    yield b"%x\r\n{\r\n" % 1
    for _ in range(total // size):
        yield piece
    yield b"0\r\n\r\n"


class TestBodyLimits:
    @pytest.mark.parametrize(("service", "target", "limit"), LIMITED)
    def test_a_declared_oversized_body_is_refused_before_it_is_sent(
        self, live_services: dict[str, LiveService], service: str, target: str, limit: int
    ) -> None:
        answer = raw_post(
            live_services[service].url, target, f"Content-Length: {HUGE}\r\n".encode(), []
        )
        assert answer.status == 413
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.problem["code"] == "payload_too_large"
        assert str(limit) in answer.problem["detail"]

    @pytest.mark.parametrize(("service", "target", "limit"), LIMITED)
    def test_a_chunked_oversized_body_is_refused_once_past_the_limit(
        self, live_services: dict[str, LiveService], service: str, target: str, limit: int
    ) -> None:
        live = live_services[service]
        peak_before = live.peak_rss_kib()

        answer = raw_post(live.url, target, b"Transfer-Encoding: chunked\r\n", chunked(HUGE))

        assert answer.status == 413
        assert answer.problem["code"] == "payload_too_large"
        assert answer.headers["x-request-id"]
        # What the socket buffers took before the server's answer arrived; never the 100 MiB.
        grown_kib = live.peak_rss_kib() - peak_before
        logger.info("%s %s: %d B sent, peak RSS +%d KiB", service, target, answer.sent, grown_kib)
        assert answer.sent < limit + 24 * MIB
        assert grown_kib < 32 * 1024


# Text: what PostgreSQL cannot store is bad input (shared.fields) ----------------------------------


def problem_locations(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "validation_error"
    return [error["loc"] for error in response.json()["errors"]]


def new_public_key() -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TestUnstorableText:
    def test_nul_in_a_device_label_is_422(self, live_services: dict[str, LiveService]) -> None:
        url = live_services["ticketing"].url
        response = httpx.post(
            f"{url}/v1/devices",
            json={"public_key": new_public_key(), "label": "Pixel\x008"},
            headers={"Authorization": f"Bearer {rider_token(url)}"},
        )
        assert problem_locations(response) == [["body", "label"]]

    def test_a_lone_surrogate_in_a_device_label_is_422(
        self, live_services: dict[str, LiveService]
    ) -> None:
        url = live_services["ticketing"].url
        body = b'{"public_key": "%s", "label": "Pixel \\ud800"}' % new_public_key().encode()
        response = httpx.post(
            f"{url}/v1/devices",
            content=body,
            headers={
                "Authorization": f"Bearer {rider_token(url)}",
                "Content-Type": "application/json",
            },
        )
        assert problem_locations(response) == [["body", "label"]]

    def test_nul_in_a_ticket_revocation_reason_is_422(
        self, live_services: dict[str, LiveService], configured: None
    ) -> None:
        token = TicketingSettings().operator_token.get_secret_value()
        response = httpx.post(
            f"{live_services['ticketing'].url}/v1/admin/tickets/{ANY_ID}/revoke",
            json={"reason": "fraud\x00"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert problem_locations(response) == [["body", "reason"]]

    def test_nul_in_a_dispute_detail_is_422(self, live_services: dict[str, LiveService]) -> None:
        response = httpx.post(
            f"{live_services['parking'].url}/v1/receipts/{ANY_ID}/disputes",
            params={"token": "t" * 24},
            json={"reason": "other", "detail": "not my car\x00"},
        )
        assert ["body", "detail"] in problem_locations(response)

    @pytest.mark.parametrize(
        ("service", "target"),
        [
            ("parking", "/v1/receipts?plate=29A%0012345&entered_at=2026-12-01T08:00:00Z"),
            ("operator", "/v1/events?plate=29A%00"),
            ("payments", "/v1/reconciliation/2026-12-01%00"),
        ],
    )
    def test_nul_in_a_url_is_422(
        self, live_services: dict[str, LiveService], service: str, target: str
    ) -> None:
        response = httpx.get(live_services[service].url + target)
        assert problem_locations(response) == [["url"]]


class TestIdempotencyKey:
    def test_it_is_required_in_the_description_where_the_server_requires_it(
        self, live_services: dict[str, LiveService], configured: None
    ) -> None:
        required: dict[str, list[str]] = {}
        for name, live in live_services.items():
            spec = httpx.get(f"{live.url}/openapi.json").json()
            for path, item in spec["paths"].items():
                for method, operation in item.items():
                    for parameter in operation.get("parameters", ()):
                        if parameter["name"] == "Idempotency-Key":
                            assert parameter["required"] is True, (name, method, path)
                            required.setdefault(name, []).append(f"{method.upper()} {path}")
        assert "POST /v1/charges" in required["payments"]
        assert "POST /v1/purchases" in required["ticketing"]
        assert "POST /v1/entries" in required["parking"]
        token = PaymentsSettings().service_token.get_secret_value()
        missing = httpx.post(
            f"{live_services['payments'].url}/v1/charges",
            json={"account_id": ANY_ID, "amount": 1000, "source": "transit"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert (missing.status_code, missing.json()["code"]) == (400, "idempotency_key_missing")


class TestImpossibleInstants:
    """Instants outside the service range (shared.fields.Moment) are refused, not computed with."""

    @pytest.fixture
    def gate(self, live_services: dict[str, LiveService], configured: None) -> DeviceSigner:
        token = ValidationSettings().admin_token.get_secret_value()
        gate_id = f"T-{uuid.uuid4().hex[:12].upper()}"
        response = httpx.post(
            f"{live_services['validation'].url}/v1/gates",
            json={"gate_id": gate_id, "station": "2A-05", "direction": "both"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201, response.text
        return DeviceSigner(gate_id, response.json()["secret"])

    @pytest.mark.parametrize("when", ["0001-01-01T00:00:00+07:00", "9999-12-31T23:59:59-07:00"])
    def test_a_gate_scan_time_out_of_range_is_422(
        self, live_services: dict[str, LiveService], gate: DeviceSigner, when: str
    ) -> None:
        decision = {"qr": "CP1:ABC", "gate_id": gate.device_id, "scanned_at": when}
        offline = {
            "validation_id": str(uuid.uuid4()),
            "qr": "CP1:ABC",
            "scanned_at": when,
            "decision": "accept",
            "reason": "ok",
            "action": "entry",
        }
        for target, document, where in (
            ("/v1/validations", decision, ["body", "scanned_at"]),
            (
                "/v1/validations/batch",
                {"gate_id": gate.device_id, "decisions": [offline]},
                ["body", "decisions", "0", "scanned_at"],
            ),
        ):
            body = orjson.dumps(document)
            response = httpx.post(
                live_services["validation"].url + target,
                content=body,
                headers={
                    **gate.headers("POST", target, body),
                    "Content-Type": "application/json",
                },
            )
            assert where in problem_locations(response), target
