"""Only provisioned, enabled gates may ask for decisions; only operators may provision them."""

from __future__ import annotations

import time

import httpx
import pytest

from services.validation.service import Validator
from shared.devicesigning import DeviceSigner
from tests.validation.conftest import (
    ADMIN,
    Gate,
    make_ticket,
    provision_gate,
    scan,
    validation_body,
)


async def post(http: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await http.post(
        "/v1/validations", content=body, headers={"Content-Type": "application/json", **headers}
    )


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    code: str = response.json()["code"]
    return code


class TestGateSignature:
    async def test_unsigned_request_is_refused(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="2A-01")

        response = await post(http, validation_body(gate, make_ticket().qr()), {})

        assert response.status_code == 401
        assert problem_code(response) == "unsigned_request"

    async def test_unknown_gate_is_refused(self, http: httpx.AsyncClient) -> None:
        stranger = Gate("NO-SUCH-GATE", DeviceSigner("NO-SUCH-GATE", "whatever-secret"))
        body = validation_body(stranger, make_ticket().qr())

        response = await post(http, body, stranger.headers("POST", "/v1/validations", body))

        assert (response.status_code, problem_code(response)) == (401, "unknown_device")

    async def test_wrong_secret_is_refused(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="2A-01")
        impostor = Gate(gate.gate_id, DeviceSigner(gate.gate_id, "not-the-secret"))
        body = validation_body(gate, make_ticket().qr())

        response = await post(http, body, impostor.headers("POST", "/v1/validations", body))

        assert (response.status_code, problem_code(response)) == (401, "bad_signature")

    async def test_body_changed_after_signing_is_refused(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="2A-01")
        signed = validation_body(gate, make_ticket().qr())
        headers = gate.headers("POST", "/v1/validations", signed)

        response = await post(http, validation_body(gate, make_ticket().qr()), headers)

        assert problem_code(response) == "bad_signature"

    async def test_disabled_gate_is_refused_until_enabled(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="2A-02")
        disabled = await http.patch(
            f"/v1/gates/{gate.gate_id}", json={"enabled": False}, headers=ADMIN
        )
        assert disabled.status_code == 200
        assert disabled.json()["enabled"] is False
        body = validation_body(gate, make_ticket().qr())

        response = await post(http, body, gate.headers("POST", "/v1/validations", body))
        assert (response.status_code, problem_code(response)) == (401, "device_disabled")

        await http.patch(f"/v1/gates/{gate.gate_id}", json={"enabled": True}, headers=ADMIN)
        assert (await scan(http, gate, make_ticket().qr()))["decision"] == "accept"

    async def test_stale_timestamp_is_refused(
        self, http: httpx.AsyncClient, validator: Validator
    ) -> None:
        gate = await provision_gate(http, station="2A-03")
        body = validation_body(gate, make_ticket().qr())
        old = int(time.time()) - validator.tolerances.request_window_s - 5
        headers = gate.signer.headers("POST", "/v1/validations", body, timestamp=old)

        response = await post(http, body, headers)

        assert (response.status_code, problem_code(response)) == (401, "stale_request")

    @pytest.mark.parametrize("qr", ["CP1:good", "not a code at all"], ids=["parsed", "malformed"])
    async def test_replayed_request_is_refused(self, http: httpx.AsyncClient, qr: str) -> None:
        gate = await provision_gate(http, station="2A-04")
        text = make_ticket().qr() if qr == "CP1:good" else qr
        body = validation_body(gate, text)
        headers = gate.headers("POST", "/v1/validations", body)

        first = await post(http, body, headers)
        again = await post(http, body, headers)

        assert first.status_code == 200
        assert (again.status_code, problem_code(again)) == (401, "replayed_request")

    async def test_request_naming_another_gate_is_forbidden(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="2A-05")
        other = await provision_gate(http, station="2A-06")
        body = validation_body(other, make_ticket().qr())

        response = await post(http, body, gate.headers("POST", "/v1/validations", body))

        assert (response.status_code, problem_code(response)) == (403, "gate_mismatch")


class TestLimits:
    async def test_body_over_the_limit_is_refused_before_it_is_read(
        self, http: httpx.AsyncClient, validator: Validator
    ) -> None:
        gate = await provision_gate(http, station="2A-08")
        body = validation_body(gate, "CP1:" + "A" * (validator.settings.max_body_bytes + 1))

        response = await post(http, body, gate.headers("POST", "/v1/validations", body))

        assert (response.status_code, problem_code(response)) == (413, "payload_too_large")


class TestOperators:
    async def test_provisioning_needs_the_admin_token(self, http: httpx.AsyncClient) -> None:
        body = {"gate_id": "X-1", "station": "2A-01", "direction": "entry"}

        missing = await http.post("/v1/gates", json=body)
        wrong = await http.post("/v1/gates", json=body, headers={"Authorization": "Bearer nope"})

        assert (missing.status_code, problem_code(missing)) == (401, "invalid_token")
        assert (wrong.status_code, problem_code(wrong)) == (401, "invalid_token")

    async def test_gate_needs_a_known_station_or_route(self, http: httpx.AsyncClient) -> None:
        for body in (
            {"gate_id": "X-2", "station": "9Z-99"},
            {"gate_id": "X-3", "route": "999"},
            {"gate_id": "X-4", "station": "2A-01", "route": "09"},
            {"gate_id": "X-5", "route": "09", "direction": "entry"},
        ):
            response = await http.post("/v1/gates", json=body, headers=ADMIN)
            assert (response.status_code, problem_code(response)) == (422, "validation_error")

    async def test_provisioned_gate_is_listed_without_its_secret(
        self, http: httpx.AsyncClient
    ) -> None:
        gate = await provision_gate(http, route="32")

        listed = await http.get(f"/v1/gates/{gate.gate_id}")
        again = await http.post(
            "/v1/gates", json={"gate_id": gate.gate_id, "route": "32"}, headers=ADMIN
        )

        assert listed.json() == {
            "gate_id": gate.gate_id,
            "station": None,
            "route": "32",
            "direction": "both",
            "enabled": True,
            "products": [],
        }
        assert (again.status_code, problem_code(again)) == (409, "gate_exists")
