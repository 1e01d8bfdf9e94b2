"""Validation fixtures: the app on the real servers, the real payments service, and factories
for issuer keys, tickets, dynamic QRs, gates and the ticket events ticketing will publish.
"""

from __future__ import annotations

import base64
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from starlette.responses import Response

from citypass.servers import LocalServers
from services.validation import repository
from services.validation.app import build_app
from services.validation.network import GateNetworks, GateVersion
from services.validation.rules import FareTable
from services.validation.service import Validator
from services.validation.settings import IssuerKeyConfig, ValidationSettings
from services.validation.tasks import Workers
from shared.devicesigning import DeviceSigner
from shared.events import Event
from shared.fares.feed import HANOI, feed_zip, read_feed
from shared.fares.lines import NetworkMap
from shared.fares.versions import feed_digest
from shared.kafka import Publisher
from shared.ticketcodec import Credential as CodecCredential
from shared.ticketcodec import (
    RiderCategory,
    SignedCredential,
    make_dynamic_qr,
    public_key_bytes,
    sign_credential,
)
from tests.conftest import AppClient
from tests.support import bank_credits, running_service, service_client, wait_until

ADMIN_TOKEN = "test-validation-admin-token"
PAYMENTS_TOKEN = "test-payments-service-token-for-validation"
WEBHOOK_SECRET = "test-bank-webhook-secret-for-validation"
ISSUER_KID = "t1"
ISSUER_KEY = Ed25519PrivateKey.generate()  # what ticketing would hold; here the tests issue
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DAY = 86_400
HANOI_FEED = read_feed(HANOI)
# Hanoi's fares as the gates hold them (the tests' version is in force since the epoch).
HANOI_FARES = FareTable.from_feed("hanoi", 0, HANOI_FEED, int(time.time()))
HANOI_NETWORKS = GateNetworks([GateVersion(HANOI_FARES, NetworkMap.of(HANOI_FEED))])


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def issuer_config(kid: str = ISSUER_KID, key: Ed25519PrivateKey = ISSUER_KEY) -> IssuerKeyConfig:
    return IssuerKeyConfig(kid=kid, public_key=b64(public_key_bytes(key)))


def validation_settings(tmp: Path, **overrides: Any) -> ValidationSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "admin_token": ADMIN_TOKEN,
        "issuer_keys": [issuer_config()],
        "ticketing_url": None,
        "network_feed": HANOI,
        "payments_token": PAYMENTS_TOKEN,
        "kafka_send_timeout_s": 2.0,
        "dependency_timeout_s": 2.0,
        "instance_id": f"test-{uuid.uuid4().hex[:12]}",
        **overrides,
    }
    return ValidationSettings(**values)


# Ticketing's network versions, as its `GET /v1/network/versions` and `.../{id}/feed` serve them


def hanoi_zip(directory: Path = HANOI) -> bytes:
    """A feed directory as the canonical zip ticketing stores and serves."""
    return feed_zip(read_feed(directory))


@dataclass
class PublishedVersions:
    """What a ticketing test double publishes: (id, effective_from, zip) per version."""

    versions: list[tuple[str, datetime, bytes]] = field(default_factory=list)

    def publish(self, effective_from: datetime, data: bytes) -> str:
        version_id = str(uuid.uuid4())
        self.versions.append((version_id, effective_from, data))
        return version_id

    def route(self, app: FastAPI) -> None:
        async def listing() -> dict[str, list[dict[str, str]]]:
            return {
                "versions": [
                    {"id": v, "effective_from": at.isoformat(), "sha256": feed_digest(data)}
                    for v, at, data in sorted(self.versions, key=lambda item: item[1])
                ]
            }

        async def feed(version_id: str) -> Response:
            data = next(d for v, _, d in self.versions if v == version_id)
            return Response(data, media_type="application/zip")

        app.add_api_route("/v1/network/versions", listing)
        app.add_api_route("/v1/network/versions/{version_id}/feed", feed)


# Tickets and dynamic QRs, made the way ticketing and the rider's phone make them ---------------


@dataclass
class Ticket:
    ticket_id: uuid.UUID
    device: Ed25519PrivateKey
    signed: SignedCredential
    credential: CodecCredential
    counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def qr(self, at: int | None = None) -> str:
        moment = int(time.time()) if at is None else at
        return make_dynamic_qr(self.signed, self.device, at=moment, counter=next(self.counter))

    @property
    def id(self) -> str:
        return str(self.ticket_id)


def make_ticket(
    *,
    product: str = "METRO-MONTH",
    lines: tuple[str, ...] = ("*",),
    valid_from: int | None = None,
    valid_until: int | None = None,
    kid: str = ISSUER_KID,
    issuer: Ed25519PrivateKey = ISSUER_KEY,
    category: RiderCategory = RiderCategory.REGULAR,
) -> Ticket:
    now = int(time.time())
    device = Ed25519PrivateKey.generate()
    credential = CodecCredential(
        kid=kid,
        ticket_id=uuid.uuid4(),
        product=product,
        rider_category=category,
        valid_from=now - DAY if valid_from is None else valid_from,
        valid_until=now + 30 * DAY if valid_until is None else valid_until,
        lines=lines,
        device_public_key=public_key_bytes(device),
    )
    return Ticket(credential.ticket_id, device, sign_credential(credential, issuer), credential)


# Gates ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    gate_id: str
    signer: DeviceSigner

    def headers(self, method: str, target: str, body: bytes = b"") -> dict[str, str]:
        return {**self.signer.headers(method, target, body), "Content-Type": "application/json"}


async def provision_gate(
    http: httpx.AsyncClient,
    *,
    station: str | None = None,
    route: str | None = None,
    direction: str = "both",
    products: list[str] | None = None,
) -> Gate:
    gate_id = f"T-{uuid.uuid4().hex[:12].upper()}"
    body: dict[str, Any] = {"gate_id": gate_id, "direction": direction}
    if station is not None:
        body["station"] = station
    else:
        body["route"] = route or "09"
    if products:
        body["products"] = products
    response = await http.post("/v1/gates", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return Gate(gate_id, DeviceSigner(gate_id, response.json()["secret"]))


def validation_body(gate: Gate, qr: str, scanned_at: datetime | None = None) -> bytes:
    moment = scanned_at or datetime.now(UTC)
    return orjson.dumps({"qr": qr, "gate_id": gate.gate_id, "scanned_at": moment.isoformat()})


async def scan(
    http: httpx.AsyncClient, gate: Gate, qr: str, scanned_at: datetime | None = None
) -> dict[str, Any]:
    """One validation as a gate sends it; asserts the HTTP exchange itself succeeded."""
    body = validation_body(gate, qr, scanned_at)
    response = await http.post(
        "/v1/validations", content=body, headers=gate.headers("POST", "/v1/validations", body)
    )
    assert response.status_code == 200, response.text
    decided: dict[str, Any] = response.json()
    return decided


# Ticketing's events, published for real ---------------------------------------------------------


def ticket_issued(
    ticket: Ticket,
    *,
    kind: str = "pass",
    rides: int | None = None,
    wallet_account_id: str | None = None,
) -> Event:
    credential = ticket.credential
    return Event(
        type="citypass.transit.ticket.issued.v1",
        source="/citypass/ticketing",
        subject=ticket.id,
        data={
            "ticket_id": ticket.id,
            "rider_id": str(uuid.uuid4()),
            "product_code": credential.product,
            "credential_product": credential.product,
            "kind": kind,
            "rides": rides,
            "lines": list(credential.lines),
            "valid_from": datetime.fromtimestamp(credential.valid_from, UTC).isoformat(),
            "valid_until": datetime.fromtimestamp(credential.valid_until, UTC).isoformat(),
            "valid_until_unix": credential.valid_until,
            "device_key_fingerprint": device_fingerprint(ticket),
            "wallet_account_id": wallet_account_id,
        },
    )


def device_fingerprint(ticket: Ticket) -> str:
    import hashlib

    return hashlib.sha256(public_key_bytes(ticket.device)).hexdigest()


# Fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def publisher(servers: LocalServers) -> AsyncIterator[Publisher]:
    """Publishes what ticketing and payments would publish."""
    kafka = Publisher(servers.kafka_bootstrap, send_timeout_s=5)
    yield kafka
    await kafka.close()


@pytest.fixture(scope="session")
def payments_url(migrated: LocalServers, service_env: dict[str, str]) -> Iterator[str]:
    """The real payments service, as its own process (it owns PostgreSQL; validation does not)."""
    env = {
        **service_env,
        "PAYMENTS_SERVICE_TOKEN": PAYMENTS_TOKEN,
        "PAYMENTS_BANK_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    log_path = migrated.log_dir / "validation-tests-payments.log"
    with running_service("payments", env, log_path) as payments:
        yield payments.url


@pytest.fixture(scope="session")
def settings(
    configured: None, payments_url: str, tmp_path_factory: pytest.TempPathFactory
) -> ValidationSettings:
    return validation_settings(tmp_path_factory.mktemp("validation"), payments_url=payments_url)


@pytest.fixture(scope="session")
def app(settings: ValidationSettings) -> FastAPI:
    return build_app(settings)


PASSES = ("METRO-MONTH", "METRO-DAY", "BUS-MONTH-ALL")


@pytest.fixture(scope="session")
async def http(
    app_client: AppClient, app: FastAPI, publisher: Publisher
) -> AsyncIterator[httpx.AsyncClient]:
    """One validation app for the session, its workers running (consumers, fares, relay).

    Ticketing has sold one pass of each product in PASSES, so the app knows those products.
    """
    async with app_client(app) as client:
        validator: Validator = app.state.validator
        for product in PASSES:
            ticket = make_ticket(product=product)
            await publisher.publish("transit.tickets", ticket.id, ticket_issued(ticket))
        await wait_until(
            lambda: all(p in validator.memory.products for p in PASSES), what="pass products"
        )
        yield client


@pytest.fixture(scope="session")
def validator(app: FastAPI) -> Validator:
    validator: Validator = app.state.validator
    return validator


@pytest.fixture(scope="session")
async def payments(payments_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(payments_url, PAYMENTS_TOKEN) as client:
        yield client


@pytest.fixture(scope="session")
async def ledger_db(migrated: LocalServers) -> AsyncIterator[asyncpg.Connection]:
    """Payments' database, to read what riders paid from its ledger table."""
    connection = await asyncpg.connect(
        f"postgresql://postgres@127.0.0.1:{migrated.postgres_port}/{migrated.database}"
    )
    yield connection
    await connection.close()


async def open_wallet(payments: httpx.AsyncClient) -> str:
    response = await payments.post(
        "/v1/accounts", json={"kind": "rider_wallet", "owner_id": f"rider-{uuid.uuid4().hex[:12]}"}
    )
    assert response.status_code == 201, response.text
    wallet: str = response.json()["id"]
    return wallet


async def top_up(payments: httpx.AsyncClient, wallet: str, amount: int) -> None:
    """The real path: a VietQR payment request, then the bank's signed notification."""
    response = await payments.post(
        "/v1/topups",
        json={"account_id": wallet, "amount": amount},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 201, response.text
    await bank_credits(
        payments, WEBHOOK_SECRET, amount=amount, reference=response.json()["reference"]
    )


async def balance(payments: httpx.AsyncClient, wallet: str) -> int:
    response = await payments.get(f"/v1/accounts/{wallet}")
    assert response.status_code == 200, response.text
    value: int = response.json()["balance"]
    return value


@pytest.fixture(scope="session")
def workers(app: FastAPI) -> Workers:
    workers: Workers = app.state.workers
    return workers


async def stored_value_ticket(publisher: Publisher, validator: Validator, wallet: str) -> Ticket:
    """A STORED-VALUE ticket ticketing sold and announced on `transit.tickets`."""
    ticket = make_ticket(product="STORED-VALUE", lines=("METRO",))
    issued = ticket_issued(ticket, kind="stored_value", wallet_account_id=wallet)
    await publisher.publish("transit.tickets", ticket.id, issued)
    await wait_until(
        lambda: validator.redis.exists(repository.ticket_key(ticket.id)), what="ticket registry"
    )
    return ticket


async def balance_is(payments: httpx.AsyncClient, wallet: str, expected: int) -> bool:
    return await balance(payments, wallet) == expected
