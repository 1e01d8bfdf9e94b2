"""Device request signing: the canonical request, every refusal, the httpx signer, nonces."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx
import pytest
from starlette.datastructures import Headers

from citypass.servers import LocalServers
from shared import redis as redis_kit
from shared.devicesigning import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    SIGNED_HEADERS,
    TIMESTAMP_HEADER,
    DeviceAuth,
    DeviceAuthError,
    DeviceKey,
    DeviceSigner,
    SignedRequest,
    canonical_request,
    claim_nonce,
    nonce_key,
    request_target,
    signing_headers,
    verify_request,
)

SECRET = "gate-secret-for-tests"
DEVICES = {
    "2A-01-EN": DeviceKey("2A-01-EN", SECRET.encode()),
    "2A-01-EX": DeviceKey("2A-01-EX", SECRET.encode(), enabled=False),
}
BODY = b'{"qr":"CP1:X","gate_id":"2A-01-EN"}'
NOW = 1_767_300_000


def verify(headers: dict[str, str], *, body: bytes = BODY, now: float = NOW) -> SignedRequest:
    return verify_request("POST", "/v1/validations", Headers(headers), body, DEVICES.get, now=now)


def signed(device: str = "2A-01-EN", **options: object) -> dict[str, str]:
    return DeviceSigner(device, SECRET).headers(
        "POST",
        "/v1/validations",
        BODY,
        timestamp=NOW,
        **options,  # type: ignore[arg-type]
    )


def refusal(headers: dict[str, str], **options: object) -> str:
    with pytest.raises(DeviceAuthError) as raised:
        verify(headers, **options)  # type: ignore[arg-type]
    assert raised.value.status == 401
    return raised.value.code


class TestCanonicalRequest:
    def test_matches_the_documented_layout(self) -> None:
        expected = (
            "CP-DEVICE-HMAC-SHA256\nPOST\n/v1/validations?x=1\n1767300000\nn0nce-n0nce-n0nce\n"
            + hashlib.sha256(BODY).hexdigest()
        ).encode()

        assert (
            canonical_request(
                "post", "/v1/validations?x=1", "1767300000", "n0nce-n0nce-n0nce", BODY
            )
            == expected
        )

    def test_signature_is_hex_hmac_sha256_of_it(self) -> None:
        headers = signed(nonce="n0nce-n0nce-n0nce")
        message = canonical_request("POST", "/v1/validations", str(NOW), "n0nce-n0nce-n0nce", BODY)

        assert (
            headers[SIGNATURE_HEADER]
            == hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()
        )

    def test_target_keeps_the_query_and_percent_encoding(self) -> None:
        assert request_target(b"/v1/gates/A%2FB", b"x=1&y=%20") == "/v1/gates/A%2FB?x=1&y=%20"
        assert request_target(b"/v1/gate-bundle", b"") == "/v1/gate-bundle"


class TestVerify:
    def test_properly_signed_request_passes(self) -> None:
        headers = signed()

        result = verify(headers)

        assert result == SignedRequest("2A-01-EN", NOW, headers[NONCE_HEADER])

    def test_each_nonce_is_fresh(self) -> None:
        assert signed()[NONCE_HEADER] != signed()[NONCE_HEADER]

    def test_missing_header_is_unsigned(self) -> None:
        headers = signed()
        del headers[SIGNATURE_HEADER]

        assert refusal(headers) == "unsigned_request"
        assert refusal({}) == "unsigned_request"

    @pytest.mark.parametrize(
        ("header", "value"),
        [
            (TIMESTAMP_HEADER, "yesterday"),
            (NONCE_HEADER, "short"),
            (NONCE_HEADER, "has spaces in it, not allowed"),
            (SIGNATURE_HEADER, "ZZ" * 32),
        ],
    )
    def test_malformed_header(self, header: str, value: str) -> None:
        assert refusal({**signed(), header: value}) == "malformed_device_headers"

    def test_unknown_device(self) -> None:
        assert refusal(DeviceSigner("9Z-99", SECRET).headers("POST", "/x", timestamp=NOW)) == (
            "unknown_device"
        )

    def test_wrong_secret_or_altered_request_is_a_bad_signature(self) -> None:
        forged = DeviceSigner("2A-01-EN", "another").headers(
            "POST", "/v1/validations", BODY, timestamp=NOW
        )

        assert refusal(forged) == "bad_signature"
        assert refusal(signed(), body=BODY + b" ") == "bad_signature"

    def test_disabled_device_is_refused_after_its_signature_checks(self) -> None:
        assert refusal(signed("2A-01-EX")) == "device_disabled"

    @pytest.mark.parametrize("offset", [-61, 61, -3600])
    def test_timestamp_outside_the_window_is_stale(self, offset: int) -> None:
        assert refusal(signed(), now=NOW + offset) == "stale_request"

    def test_timestamp_inside_the_window_passes(self) -> None:
        verify(signed(), now=NOW + 59)
        verify(signed(), now=NOW - 59)


class TestRotatedSecret:
    """After a rotation the replaced secret signs for a grace period, then never again."""

    NEW = b"the-secret-after-rotation"

    def rotated(self, *, until: float) -> DeviceKey:
        return DeviceKey(
            "2A-01-EN", self.NEW, previous_secret=SECRET.encode(), previous_until=until
        )

    def verify_with(self, device: DeviceKey, headers: dict[str, str], now: float) -> SignedRequest:
        return verify_request(
            "POST", "/v1/validations", Headers(headers), BODY, {"2A-01-EN": device}.get, now=now
        )

    def test_the_new_secret_signs(self) -> None:
        headers = DeviceSigner("2A-01-EN", self.NEW).headers(
            "POST", "/v1/validations", BODY, timestamp=NOW
        )
        assert self.verify_with(self.rotated(until=NOW - 1), headers, NOW).device_id == "2A-01-EN"

    def test_the_old_secret_signs_until_the_grace_period_ends(self) -> None:
        device = self.rotated(until=NOW + 30)
        assert self.verify_with(device, signed(), NOW).device_id == "2A-01-EN"
        assert self.verify_with(device, signed(), NOW + 30).device_id == "2A-01-EN"

    def test_the_old_secret_is_a_bad_signature_after_the_grace_period(self) -> None:
        with pytest.raises(DeviceAuthError) as raised:
            self.verify_with(self.rotated(until=NOW - 0.5), signed(), NOW)
        assert raised.value.code == "bad_signature"

    def test_a_third_secret_is_a_bad_signature_during_the_grace_period(self) -> None:
        headers = DeviceSigner("2A-01-EN", "neither").headers(
            "POST", "/v1/validations", BODY, timestamp=NOW
        )
        with pytest.raises(DeviceAuthError) as raised:
            self.verify_with(self.rotated(until=NOW + 30), headers, NOW)
        assert raised.value.code == "bad_signature"


class TestSigningHeaders:
    """What an ASGI hot route hands `verify_request` instead of Starlette's `Headers`."""

    @staticmethod
    def raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        return [(b"host", b"gate.example")] + [
            (name.lower().encode(), value.encode("latin-1")) for name, value in headers.items()
        ]

    def test_a_signed_request_verifies_through_them(self) -> None:
        headers = signed()
        found = signing_headers(self.raw(headers))
        assert found == headers
        assert verify_request("POST", "/v1/validations", found, BODY, DEVICES.get, now=NOW)

    def test_the_first_of_repeated_headers_counts_as_with_starlette(self) -> None:
        headers = signed()
        raw = [*self.raw(headers), (b"x-device-signature", b"0" * 64)]
        found, starlette = signing_headers(raw), Headers(raw=raw)
        assert found == {name: starlette[name] for name in SIGNED_HEADERS}
        assert found[SIGNATURE_HEADER] == headers[SIGNATURE_HEADER]

    def test_a_missing_header_is_still_unsigned(self) -> None:
        headers = signed()
        del headers[NONCE_HEADER]
        with pytest.raises(DeviceAuthError) as raised:
            verify_request(
                "POST", "/v1/validations", signing_headers(self.raw(headers)), BODY, DEVICES.get
            )
        assert raised.value.code == "unsigned_request"


class TestHttpxAuth:
    def test_signs_path_query_and_body_as_sent(self) -> None:
        captured: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            captured.append(request)
            return httpx.Response(204)

        signer = DeviceSigner("2A-01-EN", SECRET)
        with httpx.Client(
            transport=httpx.MockTransport(handler), auth=DeviceAuth(signer)
        ) as client:
            client.post("http://gate.test/v1/validations?dry=1", content=BODY)

        [request] = captured
        result = verify_request(
            "POST",
            "/v1/validations?dry=1",
            Headers(dict(request.headers)),
            request.content,
            DEVICES.get,
            now=time.time(),
        )
        assert result.device_id == "2A-01-EN"


class TestNonces:
    async def test_second_use_of_a_nonce_is_replayed(self, servers: LocalServers) -> None:
        redis = redis_kit.connect(servers.redis_url)
        request = SignedRequest("2A-01-EN", NOW, f"nonce-{time.time_ns()}")
        try:
            await claim_nonce(redis, request, ttl_s=30)
            with pytest.raises(DeviceAuthError) as raised:
                await claim_nonce(redis, request, ttl_s=30)
            ttl = await redis.ttl(nonce_key(request.device_id, request.nonce))
        finally:
            await redis.aclose()

        assert raised.value.code == "replayed_request"
        assert 0 < ttl <= 30

    def test_nonce_key_can_share_another_keys_cluster_slot(self) -> None:
        assert nonce_key("G1", "abc") == "cp:{G1}:device-nonce:G1:abc"
        assert nonce_key("G1", "abc", tag="ticket-9") == "cp:{ticket-9}:device-nonce:G1:abc"
