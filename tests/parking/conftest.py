"""Parking fixtures: the real payments service as a process, parking in-process, lane devices.

Payments runs as `python -m services.payments` (uvicorn) on the test servers; parking talks to
it over HTTP exactly as in production, and the bank is played by the `citypass bank pay`
sandbox (`citypass.bank.pay_command`), which sends payments the signed notification.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from citypass import bank
from citypass.servers import LocalServers
from services.parking.app import build_app
from services.parking.settings import ParkingSettings
from shared.devicesigning import DeviceAuth, DeviceSigner
from tests.conftest import AppClient
from tests.support import running_service, service_client

PAYMENTS_TOKEN = "test-payments-service-token"
WEBHOOK_SECRET = "test-bank-webhook-secret"
ADMIN_TOKEN = "test-parking-admin-token"
TOKEN_SECRET = "test-parking-token-secret"
PAYMENT_WAIT = timedelta(seconds=1)


@pytest.fixture(scope="session")
def payments_url(migrated: LocalServers, service_env: dict[str, str]) -> Iterator[str]:
    env = {
        **service_env,
        "PAYMENTS_SERVICE_TOKEN": PAYMENTS_TOKEN,
        "PAYMENTS_BANK_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PAYMENTS_LOG_LEVEL": "WARNING",
    }
    log_path = migrated.log_dir / "parking-tests-payments.log"
    with running_service("payments", env, log_path) as payments:
        yield payments.url


@pytest.fixture(scope="session")
def settings(configured: None, payments_url: str) -> ParkingSettings:
    return ParkingSettings(
        environment="test",
        payments_url=payments_url,
        payments_service_token=PAYMENTS_TOKEN,
        admin_token=ADMIN_TOKEN,
        token_secret=TOKEN_SECRET,
        payment_wait=PAYMENT_WAIT,
        debt_retry_interval=timedelta(seconds=1),
        log_level="WARNING",
    )


@pytest.fixture(scope="session")
def app(settings: ParkingSettings) -> FastAPI:
    return build_app(settings)


@pytest.fixture(scope="session")
async def http(app_client: AppClient, app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """One parking app for the session, workers included (relay, consumer, debt collector)."""
    async with app_client(app) as client:
        yield client


@pytest.fixture(scope="session")
async def payments(payments_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(payments_url, PAYMENTS_TOKEN) as client:
        yield client


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Device:
    device_id: str
    lot_id: str
    lane_id: str | None
    auth: DeviceAuth


@dataclass
class Lot:
    lot_id: str
    entry: Device
    exit: Device

    def event(self, lane: Device, at: datetime, **fields: Any) -> dict[str, Any]:
        assert lane.lane_id is not None
        return {
            "lot_id": self.lot_id,
            "lane_id": lane.lane_id,
            "occurred_at": at.isoformat(),
            **fields,
        }


def plate_read(plate: str, confidence: float = 0.97) -> dict[str, Any]:
    return {"plate": plate, "confidence": confidence, "image_ref": f"s3://cams/{uuid.uuid4()}.jpg"}


def random_plate(kind: str = "car") -> str:
    digits = f"{uuid.uuid4().int % 100000:05d}"
    if kind == "car":
        return f"30K-{digits[:3]}.{digits[3:]}"
    return f"29-B1 {digits[:3]}.{digits[3:]}"


async def provision_device(
    http: httpx.AsyncClient, lot_id: str, lane_id: str | None, kind: str = "lane_terminal"
) -> Device:
    device_id = f"t-{uuid.uuid4().hex[:12]}"
    response = await http.post(
        "/v1/devices",
        json={"device_id": device_id, "kind": kind, "lot_id": lot_id, "lane_id": lane_id},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    secret = response.json()["secret"]
    return Device(device_id, lot_id, lane_id, DeviceAuth(DeviceSigner(device_id, secret)))


async def create_lot(http: httpx.AsyncClient, *, motorbikes: int = 50, cars: int = 20) -> Lot:
    """A lot of its own (so its audit and occupancy are the test's), an entry and an exit lane,
    and a lane terminal on each."""
    lot_id = f"T{uuid.uuid4().hex[:8].upper()}"
    response = await http.put(
        f"/v1/lots/{lot_id}",
        json={
            "name": f"Test lot {lot_id}",
            "district": "Hoàn Kiếm",
            "address": "Phố Tràng Tiền",
            "motorbike_capacity": motorbikes,
            "car_capacity": cars,
        },
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    for lane, direction in ((f"{lot_id}-IN", "entry"), (f"{lot_id}-OUT", "exit")):
        response = await http.put(
            f"/v1/lots/{lot_id}/lanes/{lane}", json={"direction": direction}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
    return Lot(
        lot_id,
        await provision_device(http, lot_id, f"{lot_id}-IN"),
        await provision_device(http, lot_id, f"{lot_id}-OUT"),
    )


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def enter(http: httpx.AsyncClient, lot: Lot, at: datetime, **fields: Any) -> httpx.Response:
    return await http.post(
        "/v1/entries", json=lot.event(lot.entry, at, **fields), headers=key(), auth=lot.entry.auth
    )


async def leave(http: httpx.AsyncClient, lot: Lot, at: datetime, **fields: Any) -> httpx.Response:
    return await http.post(
        "/v1/exits", json=lot.event(lot.exit, at, **fields), headers=key(), auth=lot.exit.auth
    )


async def exit_status(http: httpx.AsyncClient, lot: Lot, session_id: str) -> httpx.Response:
    return await http.get(f"/v1/sessions/{session_id}/exit-status", auth=lot.exit.auth)


async def wait_for_open(
    http: httpx.AsyncClient, lot: Lot, session_id: str, timeout_s: float = 60
) -> dict[str, Any]:
    """Poll the exit status as a lane terminal does, until the barrier may open."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await exit_status(http, lot, session_id)
        assert response.status_code == 200, response.text
        decision: dict[str, Any] = response.json()
        if decision["decision"] == "open":
            return decision
        assert asyncio.get_running_loop().time() < deadline, f"still {decision}"
        await asyncio.sleep(0.2)


async def register_vehicle(
    http: httpx.AsyncClient, plate: str, vehicle_type: str = "car", **fields: Any
) -> dict[str, Any]:
    response = await http.post(
        "/v1/vehicles",
        json={
            "plate": plate,
            "vehicle_type": vehicle_type,
            "owner_id": f"owner-{uuid.uuid4().hex[:12]}",
            **fields,
        },
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    vehicle: dict[str, Any] = response.json()
    return vehicle


async def bank_pays(qr: str, payments_url: str) -> str:
    """The bank sandbox pays a VietQR: `citypass bank pay "<qr>"` (signed notification)."""
    args = argparse.Namespace(
        qr=qr, amount=None, payments_url=payments_url, secret=WEBHOOK_SECRET, transaction_id=None
    )
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = await asyncio.to_thread(bank.pay_command, args)
    assert code == 0, output.getvalue()
    return output.getvalue()


async def fund(
    payments: httpx.AsyncClient, payments_url: str, account_id: str, amount: int
) -> None:
    """Top the wallet up the real way: a VietQR top-up paid through the bank sandbox."""
    response = await payments.post(
        "/v1/topups",
        json={"account_id": account_id, "amount": amount},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 201, response.text
    output = await bank_pays(response.json()["qr"], payments_url)
    assert "credited" in output, output


async def balance(payments: httpx.AsyncClient, account_id: str) -> int:
    response = await payments.get(f"/v1/accounts/{account_id}")
    assert response.status_code == 200, response.text
    value: int = response.json()["balance"]
    return value
