"""Devices: one active device key per rider, rate-limited switches, revocations as events."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from citypass.servers import LocalServers
from services.ticketing.credentials import b64url, from_b64url
from shared.db import Database
from shared.ticketcodec import generate_device_key, public_key_bytes
from tests.support import read_events
from tests.ticketing.conftest import (
    approve_category,
    buy,
    register_device,
    scalar,
    sign_up,
)


class TestRegistration:
    async def test_registering_the_active_key_again_changes_nothing(
        self, http: httpx.AsyncClient
    ) -> None:
        rider = await sign_up(http)
        device = await register_device(http, rider)
        assert rider.device_key is not None
        again = await http.post(
            "/v1/devices",
            json={"public_key": b64url(public_key_bytes(rider.device_key))},
            headers=rider.auth,
        )
        assert again.status_code == 200
        assert again.json()["id"] == device["id"]
        assert again.json()["status"] == "active"

    @pytest.mark.parametrize(
        "public_key",
        [
            b64url(bytes(33)),  # 33 bytes
            "!" * 43,
            "A" * 42 + "B",  # non-canonical: stray bits after the 32nd byte
        ],
    )
    async def test_malformed_public_key_is_refused_and_records_nothing(
        self, http: httpx.AsyncClient, ticketing_db: Database, public_key: str
    ) -> None:
        rider = await sign_up(http)
        response = await http.post(
            "/v1/devices", json={"public_key": public_key}, headers=rider.auth
        )
        assert response.status_code == 422, response.text
        count = await scalar(
            ticketing_db, "SELECT count(*) FROM devices WHERE rider_id = :id", id=rider.id
        )
        assert count == 0

    async def test_a_key_cannot_be_registered_twice(self, http: httpx.AsyncClient) -> None:
        first, second = await sign_up(http), await sign_up(http)
        key = generate_device_key()
        await register_device(http, first, key)
        response = await http.post(
            "/v1/devices", json={"public_key": b64url(public_key_bytes(key))}, headers=second.auth
        )
        assert response.status_code == 409
        assert response.json()["code"] == "device_key_reused"


class TestSwitching:
    async def test_switch_revokes_the_old_device_and_publishes_it(
        self, http: httpx.AsyncClient, migrated: LocalServers
    ) -> None:
        rider = await sign_up(http, category="elderly")
        await approve_category(http, rider)
        old = await register_device(http, rider)
        ticket = (await buy(http, rider, "FREE-PASS")).json()["ticket"]
        new = await register_device(http, rider)

        devices = (await http.get("/v1/devices", headers=rider.auth)).json()
        assert [(d["id"], d["status"]) for d in devices] == [
            (new["id"], "active"),
            (old["id"], "revoked"),
        ]
        credential = await http.get(f"/v1/tickets/{ticket['id']}/credential", headers=rider.auth)
        assert credential.json()["device_fingerprint"] == new["fingerprint"]

        revoked = await read_events(
            migrated.kafka_bootstrap,
            "transit.tickets",
            lambda e: (
                e.type == "citypass.transit.device.revoked.v1"
                and e.data.get("device_id") == old["id"]
            ),
            1,
        )
        event, key = revoked[0]
        assert key == rider.id.encode()
        assert event.data["device_key_fingerprint"] == old["fingerprint"]
        assert (
            event.data["device_key_fingerprint"]
            == hashlib.sha256(from_b64url(old["public_key"])).hexdigest()
        )
        assert event.data["replaced_by_device_key_fingerprint"] == new["fingerprint"]
        assert event.data["ticket_ids"] == [ticket["id"]]

    async def test_switching_is_limited_to_three_per_thirty_days(
        self, http: httpx.AsyncClient
    ) -> None:
        rider = await sign_up(http)
        for _ in range(4):  # the first device, then three switches
            await register_device(http, rider)
        refused = await http.post(
            "/v1/devices",
            json={"public_key": b64url(public_key_bytes(generate_device_key()))},
            headers=rider.auth,
        )
        assert refused.status_code == 429
        assert refused.json()["code"] == "device_switch_limit"
        assert "retry_at" in refused.json()
        active = [
            d
            for d in (await http.get("/v1/devices", headers=rider.auth)).json()
            if d["status"] == "active"
        ]
        assert len(active) == 1

    async def test_a_revoked_key_cannot_come_back(self, http: httpx.AsyncClient) -> None:
        rider = await sign_up(http)
        first_key = generate_device_key()
        await register_device(http, rider, first_key)
        await register_device(http, rider)
        back = await http.post(
            "/v1/devices",
            json={"public_key": b64url(public_key_bytes(first_key))},
            headers=rider.auth,
        )
        assert back.status_code == 409


class TestOwnership:
    async def test_a_rider_cannot_read_or_revoke_another_riders_device(
        self, http: httpx.AsyncClient
    ) -> None:
        owner, other = await sign_up(http), await sign_up(http)
        device = await register_device(http, owner)
        url = f"/v1/devices/{device['id']}"
        for response in (
            await http.get(url, headers=other.auth),
            await http.delete(url, headers=other.auth),
        ):
            assert response.status_code == 404
            assert response.json()["code"] == "device_not_found"
        assert (await http.get("/v1/devices", headers=other.auth)).json() == []
        mine = await http.get(url, headers=owner.auth)
        assert mine.status_code == 200
        assert mine.json()["status"] == "active"

    async def test_a_rider_revokes_a_lost_phone(self, http: httpx.AsyncClient) -> None:
        rider = await sign_up(http, category="child")
        await approve_category(http, rider)
        device = await register_device(http, rider)
        ticket = (await buy(http, rider, "FREE-PASS")).json()["ticket"]
        revoked = await http.delete(f"/v1/devices/{device['id']}", headers=rider.auth)
        assert revoked.status_code == 200
        assert revoked.json()["status"] == "revoked"
        credential = await http.get(f"/v1/tickets/{ticket['id']}/credential", headers=rider.auth)
        assert credential.status_code == 409
        assert credential.json()["code"] == "no_active_device"
