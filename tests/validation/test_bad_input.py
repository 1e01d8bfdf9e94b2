"""Whatever a gate scans, it gets a decision with a precise reason, never an error or a crash."""

from __future__ import annotations

import random
import string
import time

import base45
import cbor2
import httpx
import pytest

from tests.validation.conftest import Gate, make_ticket, provision_gate, scan, validation_body


def b45(payload: bytes) -> str:
    encoded: bytes = base45.b45encode(payload)
    return "CP1:" + encoded.decode()


def envelope_of(text: str) -> list[object]:
    decoded: list[object] = cbor2.loads(base45.b45decode(text[4:]))
    return decoded


@pytest.fixture
async def gate(http: httpx.AsyncClient) -> Gate:
    return await provision_gate(http, station="3-01")


class TestMalformedCodes:
    @pytest.mark.parametrize(
        ("name", "detail"),
        [
            ("empty", "malformed_prefix"),
            ("one_megabyte", "oversize"),
            ("not_base45", "malformed_base45"),
            ("lowercase", "malformed_base45"),
            ("control_characters", "malformed_base45"),
            ("truncated", "malformed_cbor"),
            ("trailing_bytes", "trailing_bytes"),
            ("nested_arrays", "malformed_cbor"),
            ("map_instead_of_array", "wrong_type"),
            ("text_instead_of_credential", "wrong_type"),
            ("negative_time", "wrong_type"),
            ("short_signature", "wrong_type"),
            ("extra_items", "unknown_field"),
            ("not_canonical", "malformed_cbor"),
        ],
    )
    async def test_is_rejected_as_malformed_with_the_precise_detail(
        self, http: httpx.AsyncClient, gate: Gate, name: str, detail: str
    ) -> None:
        good = make_ticket().qr()
        envelope = envelope_of(good)
        inputs = {
            "empty": "",
            "one_megabyte": "CP1:" + "A" * 1_048_576,
            "not_base45": "CP1:this is {not} base45!",
            "lowercase": good.lower().replace("cp1:", "CP1:"),
            "control_characters": "CP1:\x00\x1b[2J",
            "truncated": good[:-3],
            "trailing_bytes": b45(base45.b45decode(good[4:]) + b"\x00"),
            "nested_arrays": b45(cbor2.dumps([[[[[[1]]]]]])),
            "map_instead_of_array": b45(cbor2.dumps({1: 2})),
            "text_instead_of_credential": b45(cbor2.dumps(["x", *envelope[1:]])),
            "negative_time": b45(cbor2.dumps([*envelope[:2], -5, *envelope[3:]])),
            "short_signature": b45(cbor2.dumps([envelope[0], b"\x01" * 10, *envelope[2:]])),
            "extra_items": b45(cbor2.dumps([*envelope, 1])),
            # The credential's length in two bytes where one suffices.
            "not_canonical": b45(
                bytes([0x85, 0x59, 0, len(envelope[0])])  # type: ignore[arg-type]
                + envelope[0]  # type: ignore[operator]
                + cbor2.dumps(envelope[1])
                + cbor2.dumps(envelope[2])
                + cbor2.dumps(envelope[3])
                + cbor2.dumps(envelope[4])
            ),
        }

        decided = await scan(http, gate, inputs[name])

        assert (decided["decision"], decided["reason"]) == ("reject", "malformed")
        assert decided["reason_detail"] == detail
        assert decided["ticket_id"] is None

    async def test_code_with_its_device_signature_stripped(
        self, http: httpx.AsyncClient, gate: Gate
    ) -> None:
        stripped = b45(cbor2.dumps(envelope_of(make_ticket().qr())[:4]))

        decided = await scan(http, gate, stripped)

        assert decided["reason"] == "bad_device_signature"
        assert decided["reason_detail"] == "missing_device_signature"

    async def test_random_text_always_gets_a_decision(
        self, http: httpx.AsyncClient, gate: Gate
    ) -> None:
        chance = random.Random(20261122)
        alphabet = string.printable + "ĐđƯươ€😀"
        for _ in range(60):
            length = chance.choice((0, 1, 4, 50, 366, 367, 2000))
            text = "CP1:" * chance.randint(0, 1) + "".join(
                chance.choice(alphabet) for _ in range(length)
            )
            decided = await scan(http, gate, text)
            assert decided["decision"] == "reject"
            assert decided["reason"] in {"malformed", "bad_device_signature"}


class TestMalformedRequests:
    @pytest.mark.parametrize(
        "body",
        [
            b"{not json",
            b"[]",
            b'{"qr": 12, "gate_id": "G", "scanned_at": "2026-01-01T00:00:00Z"}',
            b'{"qr": {"nested": ["x"]}, "gate_id": "G", "scanned_at": "2026-01-01T00:00:00Z"}',
            b'{"qr": "CP1:", "scanned_at": "yesterday"}',
        ],
        ids=["truncated_json", "array", "number_qr", "object_qr", "missing_and_wrong_fields"],
    )
    async def test_is_a_422_problem(self, http: httpx.AsyncClient, gate: Gate, body: bytes) -> None:
        response = await http.post(
            "/v1/validations",
            content=body,
            headers=gate.headers("POST", "/v1/validations", body),
        )

        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "validation_error"

    @pytest.mark.parametrize(
        ("body", "error"),
        [
            (
                b"{not json",
                {"loc": ["body", "1"], "msg": "JSON decode error", "type": "json_invalid"},
            ),
            (b"", {"loc": ["body"], "msg": "Field required", "type": "missing"}),
        ],
        ids=["not_json", "empty"],
    )
    async def test_an_unreadable_body_is_refused_as_on_every_other_route(
        self, http: httpx.AsyncClient, gate: Gate, body: bytes, error: dict[str, object]
    ) -> None:
        response = await http.post(
            "/v1/validations",
            content=body,
            headers=gate.headers("POST", "/v1/validations", body),
        )

        assert response.status_code == 422
        assert response.json()["errors"] == [error]

    async def test_scan_time_far_from_now_is_replaced_by_the_server_clock(
        self, http: httpx.AsyncClient, gate: Gate
    ) -> None:
        from datetime import UTC, datetime

        body = validation_body(gate, make_ticket().qr(), datetime.fromtimestamp(0, UTC))
        response = await http.post(
            "/v1/validations", content=body, headers=gate.headers("POST", "/v1/validations", body)
        )

        assert response.status_code == 200
        assert response.json()["decision"] == "accept"
        assert time.time() - 60 < datetime.fromisoformat(response.json()["decided_at"]).timestamp()
