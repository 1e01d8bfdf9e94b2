"""Lane decisions: capacity, identification, bad input, device signatures, idempotency, events."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import datetime, time, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from citypass.servers import LocalServers
from services.parking.context import DecisionLimit
from services.parking.tariffs import DEFAULT_TARIFFS, HANOI_TZ
from shared.devicesigning import DeviceSigner
from tests.parking.conftest import (
    ADMIN,
    Lot,
    create_lot,
    enter,
    key,
    leave,
    now,
    plate_read,
    provision_device,
    random_plate,
    register_vehicle,
)
from tests.support import read_events


async def occupied(http: httpx.AsyncClient, lot: Lot, vehicle_type: str = "car") -> int:
    response = await http.get(f"/v1/lots/{lot.lot_id}/occupancy")
    assert response.status_code == 200, response.text
    counts: dict[str, int] = {
        row["vehicle_type"]: row["occupied"] for row in response.json()["vehicles"]
    }
    return counts[vehicle_type]


async def sessions_of(http: httpx.AsyncClient, lot: Lot) -> list[dict[str, Any]]:
    response = await http.get("/v1/sessions", params={"lot_id": lot.lot_id}, headers=ADMIN)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


class TestCapacity:
    async def test_a_full_lot_refuses_the_next_vehicle_until_one_leaves(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http, cars=2)
        at = now() - timedelta(minutes=5)
        plates = [random_plate() for _ in range(3)]
        for plate in plates[:2]:
            assert (await enter(http, lot, at, plate_read=plate_read(plate))).json()[
                "decision"
            ] == "open"

        refused = await enter(http, lot, at, plate_read=plate_read(plates[2]))
        assert refused.status_code == 200
        assert refused.json()["decision"] == "full"
        assert refused.json()["reason"] == "lot_full"
        assert refused.json()["session_id"] is None
        assert refused.json()["occupancy"] == {"capacity": 2, "occupied": 2, "free": 0}

        left = await leave(http, lot, now(), plate_read=plate_read(plates[0]))
        assert left.json()["reason"] == "free"  # within the 15-minute grace period
        admitted = await enter(http, lot, now(), plate_read=plate_read(plates[2]))
        assert admitted.json()["decision"] == "open"
        assert await occupied(http, lot) == 2

    async def test_simultaneous_entries_never_exceed_capacity(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http, cars=3)
        at = now() - timedelta(minutes=1)
        answers = await asyncio.gather(
            *(enter(http, lot, at, plate_read=plate_read(random_plate())) for _ in range(12))
        )
        decisions = [answer.json()["decision"] for answer in answers]
        assert decisions.count("open") == 3
        assert decisions.count("full") == 9
        assert await occupied(http, lot) == 3

    async def test_a_type_without_places_is_full(self, http: httpx.AsyncClient) -> None:
        lot = await create_lot(http, motorbikes=5, cars=0)
        refused = await enter(http, lot, now(), plate_read=plate_read(random_plate("car")))
        assert refused.json()["decision"] == "full"


class TestExitErrors:
    async def test_exit_without_entry_is_no_open_session(self, http: httpx.AsyncClient) -> None:
        lot = await create_lot(http)
        response = await leave(http, lot, now(), plate_read=plate_read(random_plate()))
        assert response.status_code == 409
        assert response.json()["code"] == "no_open_session"

    async def test_a_second_exit_is_already_exited(self, http: httpx.AsyncClient) -> None:
        lot = await create_lot(http)
        plate = random_plate()
        await enter(http, lot, now() - timedelta(minutes=3), plate_read=plate_read(plate))
        first = await leave(http, lot, now(), plate_read=plate_read(plate))
        assert first.json()["decision"] == "open"

        second = await leave(http, lot, now(), plate_read=plate_read(plate))
        assert second.status_code == 409
        assert second.json()["code"] == "already_exited"
        assert second.json()["session_id"] == first.json()["session_id"]

    async def test_an_exit_before_the_entry_is_refused(self, http: httpx.AsyncClient) -> None:
        lot = await create_lot(http)
        plate = random_plate()
        await enter(http, lot, now() - timedelta(minutes=3), plate_read=plate_read(plate))
        response = await leave(
            http, lot, now() - timedelta(minutes=10), plate_read=plate_read(plate)
        )
        assert response.status_code == 422
        assert response.json()["code"] == "exit_before_entry"


class TestBadInput:
    async def test_malformed_unknown_or_future_input_is_refused_and_nothing_recorded(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http)
        good = lot.event(lot.entry, now(), plate_read=plate_read(random_plate()))
        cases = {
            "invalid_plate": {**good, "plate_read": plate_read("29O-12")},
            "unknown_lot": {**good, "lot_id": "ZZ-99"},
            "unknown_lane": {**good, "lane_id": "ZZ-99-IN9"},
            "wrong_lane_direction": {**good, "lane_id": f"{lot.lot_id}-OUT"},
            "timestamp_in_future": {
                **good,
                "occurred_at": (now() + timedelta(minutes=2)).isoformat(),
            },
            "validation_error": {**good, "occurred_at": "2026-01-01T08:00:00"},  # no offset
        }
        for code, body in cases.items():
            response = await http.post("/v1/entries", json=body, headers=key(), auth=lot.entry.auth)
            assert response.status_code == 422, (code, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == code
        assert await sessions_of(http, lot) == []
        assert await occupied(http, lot) == 0

    async def test_quote_of_a_stay_over_a_month_is_refused(self, http: httpx.AsyncClient) -> None:
        lot = await create_lot(http)
        response = await http.get(
            f"/v1/lots/{lot.lot_id}/quote",
            params={
                "vehicle_type": "car",
                "entry_at": "2026-01-01T08:00:00+07:00",
                "exit_at": "2026-03-01T08:00:00+07:00",
            },
        )
        assert response.status_code == 422
        assert response.json()["code"] == "stay_too_long"


class TestDeviceSignatures:
    async def test_an_unsigned_request_is_refused(self, http: httpx.AsyncClient) -> None:
        lot = await create_lot(http)
        body = lot.event(lot.entry, now(), plate_read=plate_read(random_plate()))
        response = await http.post("/v1/entries", json=body, headers=key())
        assert response.status_code == 401
        assert response.json()["code"] == "unsigned_request"

    async def test_a_replayed_request_is_refused(self, http: httpx.AsyncClient) -> None:
        lot = await create_lot(http)
        body = lot.event(lot.entry, now(), plate_read=plate_read(random_plate()))
        content = httpx.Request("POST", "http://x", json=body).content
        signer = lot.entry.auth.signer
        headers = {
            **key(),
            "Content-Type": "application/json",
            **signer.headers("POST", "/v1/entries", content),
        }
        first = await http.post("/v1/entries", content=content, headers=headers)
        assert first.status_code == 200, first.text
        replay = await http.post("/v1/entries", content=content, headers=headers)
        assert replay.status_code == 401
        assert replay.json()["code"] == "replayed_request"

    async def test_a_device_acts_only_for_its_lot_and_lane(self, http: httpx.AsyncClient) -> None:
        lot, other = await create_lot(http), await create_lot(http)
        body = lot.event(lot.entry, now(), plate_read=plate_read(random_plate()))
        foreign = await http.post("/v1/entries", json=body, headers=key(), auth=other.entry.auth)
        assert foreign.status_code == 403
        assert foreign.json()["code"] == "device_not_in_lot"
        exit_terminal = await http.post("/v1/entries", json=body, headers=key(), auth=lot.exit.auth)
        assert exit_terminal.status_code == 403
        assert exit_terminal.json()["code"] == "device_not_on_lane"

    async def test_a_revoked_device_is_refused(self, http: httpx.AsyncClient) -> None:
        lot = await create_lot(http)
        device = await provision_device(http, lot.lot_id, None, kind="camera")
        revoked = await http.post(f"/v1/devices/{device.device_id}/revoke", headers=ADMIN)
        assert revoked.status_code == 200
        body = lot.event(lot.entry, now(), plate_read=plate_read(random_plate()))
        response = await http.post("/v1/entries", json=body, headers=key(), auth=device.auth)
        assert response.status_code == 401
        assert response.json()["code"] == "device_disabled"

    async def test_a_wrong_secret_is_refused(self, http: httpx.AsyncClient) -> None:
        lot = await create_lot(http)
        forged = DeviceSigner(lot.entry.device_id, "not-the-secret")
        body = lot.event(lot.entry, now(), plate_read=plate_read(random_plate()))
        content = httpx.Request("POST", "http://x", json=body).content
        response = await http.post(
            "/v1/entries",
            content=content,
            headers={
                **key(),
                "Content-Type": "application/json",
                **forged.headers("POST", "/v1/entries", content),
            },
        )
        assert response.status_code == 401
        assert response.json()["code"] == "bad_signature"


class TestAdminToken:
    async def test_a_missing_or_wrong_admin_token_is_401_invalid_token(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http)
        wrong = {"Authorization": "Bearer not-the-admin-token"}
        refused = [
            await http.get("/v1/sessions", params={"lot_id": lot.lot_id}),
            await http.get("/v1/sessions", params={"lot_id": lot.lot_id}, headers=wrong),
            await http.get(f"/v1/sessions/{uuid.uuid4()}", headers=wrong),  # device or admin
        ]
        for response in refused:
            assert (response.status_code, response.json()["code"]) == (401, "invalid_token")


class TestIdempotency:
    async def test_a_retried_entry_returns_the_first_decision_and_counts_once(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http)
        body = lot.event(lot.entry, now(), plate_read=plate_read(random_plate()))
        headers = key()
        first = await http.post("/v1/entries", json=body, headers=headers, auth=lot.entry.auth)
        retry = await http.post("/v1/entries", json=body, headers=headers, auth=lot.entry.auth)
        assert retry.content == first.content
        assert retry.headers.get("Idempotent-Replayed") == "true"
        assert await occupied(http, lot) == 1

    async def test_a_second_read_of_a_vehicle_inside_is_already_inside(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http)
        plate = random_plate()
        first = await enter(http, lot, now(), plate_read=plate_read(plate))
        again = await enter(http, lot, now(), plate_read=plate_read(plate.lower()))
        assert again.json()["reason"] == "already_inside"
        assert again.json()["session_id"] == first.json()["session_id"]
        assert await occupied(http, lot) == 1

    async def test_a_key_reused_for_another_event_is_refused(self, http: httpx.AsyncClient) -> None:
        lot = await create_lot(http)
        headers = key()
        for plate in (random_plate(), random_plate()):
            body = lot.event(lot.entry, now(), plate_read=plate_read(plate))
            response = await http.post(
                "/v1/entries", json=body, headers=headers, auth=lot.entry.auth
            )
        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_key_reused"

    async def test_a_key_in_flight_is_answered_409_and_decided_once_free(
        self, http: httpx.AsyncClient, app: FastAPI
    ) -> None:
        lot = await create_lot(http)
        body = lot.event(lot.entry, now(), plate_read=plate_read(random_plate()))
        headers = key()
        # The first request with this key holds its lock (lanes sign without Authorization).
        caller = hashlib.sha256(b"").hexdigest()[:16]
        digest = hashlib.sha256(
            f"POST /v1/entries {caller}\0{headers['Idempotency-Key']}".encode()
        ).digest()
        lock = int.from_bytes(digest[:8], signed=True)
        pool = await app.state.parking.db.raw_pool()
        async with pool.acquire() as first:
            await first.execute("SELECT pg_advisory_lock($1)", lock)
            try:
                busy = await http.post(
                    "/v1/entries", json=body, headers=headers, auth=lot.entry.auth
                )
            finally:
                await first.execute("SELECT pg_advisory_unlock_all()")
        assert busy.status_code == 409
        assert busy.json()["code"] == "idempotency_key_in_flight"
        assert await occupied(http, lot) == 0
        decided = await http.post("/v1/entries", json=body, headers=headers, auth=lot.entry.auth)
        assert decided.status_code == 200, decided.text
        assert await occupied(http, lot) == 1


class TestOverload:
    async def test_past_the_limit_a_lane_is_told_at_once_to_retry_and_nothing_is_recorded(
        self, http: httpx.AsyncClient, app: FastAPI
    ) -> None:
        limit: DecisionLimit = app.state.parking.decisions
        lot = await create_lot(http)
        body = lot.event(lot.entry, now(), plate_read=plate_read(random_plate()))
        headers = key()
        saved, limit.limit = limit.limit, limit.in_progress  # every slot taken

        try:
            refused = await http.post(
                "/v1/entries", json=body, headers=headers, auth=lot.entry.auth
            )
        finally:
            limit.limit = saved

        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "overloaded"
        assert refused.headers["retry-after"] == "1"
        assert await occupied(http, lot) == 0
        # The refusal was not stored as the key's answer: the lane's retry is decided.
        retried = await http.post("/v1/entries", json=body, headers=headers, auth=lot.entry.auth)
        assert retried.status_code == 200, retried.text
        assert retried.json()["decision"] == "open"
        assert await occupied(http, lot) == 1


class TestIdentification:
    async def test_a_low_confidence_read_is_flagged_and_never_touches_a_wallet(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http)
        plate = random_plate()
        await register_vehicle(http, plate)
        entry = (await enter(http, lot, now(), plate_read=plate_read(plate, confidence=0.4))).json()
        assert entry["decision"] == "open"
        assert entry["needs_review"] is True
        assert entry["review_reasons"] == ["low_confidence"]
        assert entry["registered"] is False
        assert entry["hold_status"] is None
        flagged = await http.get(
            "/v1/sessions",
            params={"lot_id": lot.lot_id, "needs_review": "true"},
            headers=ADMIN,
        )
        assert [row["session_id"] for row in flagged.json()] == [entry["session_id"]]

    async def test_account_qr_and_rfid_identify_a_registered_vehicle(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http)
        by_qr = await register_vehicle(http, random_plate())
        tag = uuid.uuid4().hex[:24].upper()
        by_tag = await register_vehicle(http, random_plate(), rfid_tag=tag)
        qr_entry = (await enter(http, lot, now(), account_qr=by_qr["account_qr"])).json()
        tag_entry = (await enter(http, lot, now(), rfid_tag=tag.lower())).json()
        assert (qr_entry["plate"], qr_entry["registered"]) == (by_qr["plate"], True)
        assert (tag_entry["plate"], tag_entry["registered"]) == (by_tag["plate"], True)
        # No money in these wallets: the entry opens all the same, the exit will ask to pay.
        assert qr_entry["hold_status"] == tag_entry["hold_status"] == "insufficient_funds"

    async def test_a_forged_account_qr_is_refused(self, http: httpx.AsyncClient) -> None:
        lot = await create_lot(http)
        vehicle = await register_vehicle(http, random_plate())
        forged = vehicle["account_qr"][:-1] + ("0" if vehicle["account_qr"][-1] != "0" else "1")
        response = await enter(http, lot, now(), account_qr=forged)
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_account_qr"

    async def test_a_plate_read_that_contradicts_the_qr_is_flagged(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http)
        vehicle = await register_vehicle(http, random_plate())
        entry = await enter(
            http,
            lot,
            now(),
            account_qr=vehicle["account_qr"],
            plate_read=plate_read(random_plate()),
        )
        assert "plate_mismatch" in entry.json()["review_reasons"]


class TestTariffs:
    async def test_the_city_tariffs_are_dated_data(self, http: httpx.AsyncClient) -> None:
        response = await http.get("/v1/tariffs", params={"lot_id": "HK-01"})
        city = {row["tariff_id"]: row for row in response.json() if row["lot_id"] is None}
        for tariff in DEFAULT_TARIFFS:
            row = city[tariff.id]
            assert row["first_block_price"] == tariff.first_block_price
            assert row["per_hour_price"] == tariff.per_hour_price
            assert row["night_turn_price"] == tariff.night_turn_price
            assert row["daily_cap"] == tariff.daily_cap

    async def test_a_lot_tariff_from_a_future_date_prices_the_part_after_it(
        self, http: httpx.AsyncClient
    ) -> None:
        lot = await create_lot(http)
        tomorrow = (now().astimezone(HANOI_TZ) + timedelta(days=1)).date()
        change = datetime.combine(tomorrow, time(9), HANOI_TZ)
        tariff_id = f"t-{uuid.uuid4().hex[:10]}"
        created = await http.post(
            "/v1/tariffs",
            json={
                "tariff_id": tariff_id,
                "vehicle_type": "car",
                "lot_id": lot.lot_id,
                "effective_from": change.isoformat(),
                "first_block_minutes": 60,
                "first_block_price": 40_000,
                "per_hour_price": 30_000,
                "night_turn_price": 150_000,
            },
            headers=ADMIN,
        )
        assert created.status_code == 201, created.text
        quote = await http.get(
            f"/v1/lots/{lot.lot_id}/quote",
            params={
                "vehicle_type": "car",
                "entry_at": (change - timedelta(hours=1)).isoformat(),
                "exit_at": (change + timedelta(hours=4)).isoformat(),
            },
        )
        assert quote.status_code == 200, quote.text
        lines = [
            (line["tariff_id"], line["kind"], line["amount"]) for line in quote.json()["lines"]
        ]
        # 08:00-10:00 is the city's first block; the hours from 10:00 start under the new rules.
        assert lines == [("hn-2024-car", "first_block", 25_000), (tariff_id, "hourly", 90_000)]
        assert quote.json()["total"] == 115_000

    async def test_a_tariff_cannot_rewrite_the_past(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            "/v1/tariffs",
            json={
                "tariff_id": f"t-{uuid.uuid4().hex[:10]}",
                "vehicle_type": "car",
                "effective_from": "2025-01-01T00:00:00+07:00",
                "first_block_minutes": 60,
                "first_block_price": 1,
                "per_hour_price": 1,
                "night_turn_price": 1,
            },
            headers=ADMIN,
        )
        assert response.status_code == 422
        assert response.json()["code"] == "tariff_in_past"


class TestEvents:
    async def test_sessions_and_occupancy_are_published_through_the_outbox(
        self, http: httpx.AsyncClient, servers: LocalServers
    ) -> None:
        lot = await create_lot(http)
        plate = random_plate()
        entry = (
            await enter(http, lot, now() - timedelta(minutes=2), plate_read=plate_read(plate))
        ).json()
        await leave(http, lot, now(), plate_read=plate_read(plate))
        session_id = entry["session_id"]

        lifecycle = await read_events(
            servers.kafka_bootstrap,
            "parking.sessions",
            lambda event: event.data.get("session_id") == session_id,
            2,
        )
        assert [event.type for event, _ in lifecycle] == [
            "citypass.parking.session.opened.v1",
            "citypass.parking.session.closed.v1",
        ]
        assert {record_key for _, record_key in lifecycle} == {session_id.encode()}
        assert all("*" in event.data["plate"] for event, _ in lifecycle)

        changes = await read_events(
            servers.kafka_bootstrap,
            "parking.occupancy",
            lambda event: event.data.get("lot_id") == lot.lot_id,
            2,
        )
        assert [(event.data["change"], event.data["occupied"]) for event, _ in changes] == [
            (1, 1),
            (-1, 0),
        ]
        assert {record_key for _, record_key in changes} == {lot.lot_id.encode()}
        assert changes[0][0].data["sequence"] < changes[1][0].data["sequence"]
