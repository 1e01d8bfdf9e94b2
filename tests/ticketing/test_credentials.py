"""Credentials: issuer-signed, bound to the device key, verified the way a gate does, with
issuer keys published at /v1/keys and rotated with overlap."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import datetime, timedelta
from typing import Any

import base45
import cbor2
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.ticketing.app import build_app
from services.ticketing.credentials import KeyWrap, from_b64url
from services.ticketing.settings import TicketingSettings
from shared.db import Database
from shared.ticketcodec import (
    QR_PREFIX,
    Credential,
    RiderCategory,
    SignedCredential,
    TicketCodecError,
    decode_and_verify,
    encode_credential,
    generate_device_key,
    load_public_key,
    make_dynamic_qr,
    parse_dynamic_qr,
    public_key_bytes,
    sign_credential,
)
from tests.conftest import AppClient
from tests.ticketing.conftest import (
    OPERATOR,
    RiderAccount,
    approve_category,
    buy,
    register_device,
    scalar,
    sign_up,
    ticketing_settings,
)


async def gate_keys(http: httpx.AsyncClient) -> dict[str, Ed25519PublicKey]:
    """What a gate trusts: every published key that is not retired."""
    response = await http.get("/v1/keys")
    assert response.status_code == 200
    return {
        key["kid"]: load_public_key(from_b64url(key["public_key"]))
        for key in response.json()["keys"]
        if key["status"] != "retired"
    }


def signed(credential: dict[str, Any]) -> SignedCredential:
    return SignedCredential(
        from_b64url(credential["credential"]),
        from_b64url(credential["issuer_signature"]),
        credential["kid"],
    )


def qr_for(credential: dict[str, Any], device_key: Ed25519PrivateKey, counter: int = 1) -> str:
    return make_dynamic_qr(signed(credential), device_key, at=int(time.time()), counter=counter)


async def rider_with_ticket(
    http: httpx.AsyncClient, category: str = "merit", product: str = "FREE-PASS"
) -> tuple[RiderAccount, dict[str, Any]]:
    rider = await sign_up(http, category=category)
    await approve_category(http, rider)
    await register_device(http, rider)
    response = await buy(http, rider, product)
    assert response.status_code == 201, response.text
    ticket: dict[str, Any] = response.json()["ticket"]
    return rider, ticket


async def credential_of(
    http: httpx.AsyncClient, rider: RiderAccount, ticket: dict[str, Any]
) -> dict[str, Any]:
    response = await http.get(f"/v1/tickets/{ticket['id']}/credential", headers=rider.auth)
    assert response.status_code == 200, response.text
    credential: dict[str, Any] = response.json()
    return credential


def envelope_of(text: str) -> list[Any]:
    envelope: list[Any] = cbor2.loads(base45.b45decode(text[len(QR_PREFIX) :]))
    return envelope


def text_of(envelope: list[Any]) -> str:
    encoded: bytes = base45.b45encode(cbor2.dumps(envelope))
    return QR_PREFIX + encoded.decode()


def rejected(text: str, keys: dict[str, Ed25519PublicKey]) -> str:
    with pytest.raises(TicketCodecError) as refused:
        decode_and_verify(text, keys)
    code: str = refused.value.code
    return code


class TestCredential:
    async def test_credential_is_issuer_signed_and_bound_to_the_device(
        self, http: httpx.AsyncClient
    ) -> None:
        rider, ticket = await rider_with_ticket(http)
        credential = await credential_of(http, rider, ticket)
        assert rider.device_key is not None
        qr = decode_and_verify(qr_for(credential, rider.device_key), await gate_keys(http))
        assert qr.credential.ticket_id.hex == ticket["id"].replace("-", "")
        assert qr.credential.product == "FP"
        assert qr.credential.rider_category is RiderCategory.MERIT
        assert qr.credential.lines == ("*",)
        assert qr.credential.device_public_key == public_key_bytes(rider.device_key)
        valid_from = datetime.fromisoformat(ticket["valid_from"].replace("Z", "+00:00"))
        assert qr.credential.valid_from == int(valid_from.timestamp())
        assert qr.credential.valid_until - int(time.time()) <= 3 * 86_400
        again = await credential_of(http, rider, ticket)
        assert again["credential"] == credential["credential"]  # stable until refresh_at

    async def test_a_flipped_byte_anywhere_is_rejected(self, http: httpx.AsyncClient) -> None:
        rider, ticket = await rider_with_ticket(http)
        assert rider.device_key is not None
        keys = await gate_keys(http)
        text = qr_for(await credential_of(http, rider, ticket), rider.device_key)
        payload = base45.b45decode(text[len(QR_PREFIX) :])
        for index in range(len(payload)):
            for mask in (0x01, 0x80):
                tampered = bytearray(payload)
                tampered[index] ^= mask
                rejected(QR_PREFIX + base45.b45encode(bytes(tampered)).decode(), keys)
        for index in range(len(text)):
            swapped = "1" if text[index] != "1" else "2"
            rejected(text[:index] + swapped + text[index + 1 :], keys)

    async def test_a_stripped_device_signature_is_rejected(self, http: httpx.AsyncClient) -> None:
        rider, ticket = await rider_with_ticket(http)
        assert rider.device_key is not None
        keys = await gate_keys(http)
        envelope = envelope_of(qr_for(await credential_of(http, rider, ticket), rider.device_key))
        assert rejected(text_of(envelope[:4]), keys) == "missing_device_signature"
        assert rejected(text_of([*envelope[:4], b""]), keys) == "missing_device_signature"
        assert rejected(text_of([*envelope[:4], None]), keys) == "missing_device_signature"

    async def test_a_credential_rebound_to_another_device_key_is_rejected(
        self, http: httpx.AsyncClient
    ) -> None:
        rider, ticket = await rider_with_ticket(http)
        keys = await gate_keys(http)
        assert rider.device_key is not None
        credential = signed(await credential_of(http, rider, ticket))
        thief = generate_device_key()
        original = parse_dynamic_qr(
            qr_for(await credential_of(http, rider, ticket), rider.device_key)
        )
        rebound = encode_credential(
            dataclasses.replace(original.credential, device_public_key=public_key_bytes(thief))
        )
        stolen = SignedCredential(rebound, credential.issuer_signature, credential.kid)
        text = make_dynamic_qr(stolen, thief, at=int(time.time()), counter=1)
        assert rejected(text, keys) == "bad_issuer_signature"

    async def test_a_qr_signed_by_another_device_is_rejected(self, http: httpx.AsyncClient) -> None:
        rider, ticket = await rider_with_ticket(http)
        assert rider.device_key is not None
        keys = await gate_keys(http)
        envelope = envelope_of(qr_for(await credential_of(http, rider, ticket), rider.device_key))
        thief = generate_device_key()
        forged = [*envelope[:4], thief.sign(b"anything")]
        assert rejected(text_of(forged), keys) == "bad_device_signature"

    async def test_an_unknown_kid_is_rejected(self, http: httpx.AsyncClient) -> None:
        rider, ticket = await rider_with_ticket(http)
        assert rider.device_key is not None
        keys = await gate_keys(http)
        text = qr_for(await credential_of(http, rider, ticket), rider.device_key)
        kid = parse_dynamic_qr(text).credential.kid
        assert rejected(text, {k: v for k, v in keys.items() if k != kid}) == "unknown_key"
        # A credential an attacker signs with a key of their own under an unpublished kid.
        impostor = Credential(
            kid="k999",
            ticket_id=parse_dynamic_qr(text).credential.ticket_id,
            product="FP",
            rider_category=RiderCategory.MERIT,
            valid_from=0,
            valid_until=2**32 - 1,
            lines=("*",),
            device_public_key=public_key_bytes(rider.device_key),
        )
        forged = sign_credential(impostor, Ed25519PrivateKey.generate())
        fake = make_dynamic_qr(forged, rider.device_key, at=int(time.time()), counter=1)
        assert rejected(fake, keys) == "unknown_key"

    async def test_a_new_device_gets_a_new_credential(self, http: httpx.AsyncClient) -> None:
        rider, ticket = await rider_with_ticket(http, category="poor_household")
        first = await credential_of(http, rider, ticket)
        old_key = rider.device_key
        assert old_key is not None
        await register_device(http, rider)
        second = await credential_of(http, rider, ticket)
        assert second["credential"] != first["credential"]
        assert rider.device_key is not None
        decode_and_verify(qr_for(second, rider.device_key), await gate_keys(http))
        with pytest.raises(TicketCodecError):
            qr_for(second, old_key)  # the old phone cannot show the new credential

    async def test_no_credential_without_a_device(self, http: httpx.AsyncClient) -> None:
        rider = await sign_up(http, category="merit")
        await approve_category(http, rider)
        ticket = (await buy(http, rider, "FREE-PASS")).json()["ticket"]
        response = await http.get(f"/v1/tickets/{ticket['id']}/credential", headers=rider.auth)
        assert (response.status_code, response.json()["code"]) == (409, "no_active_device")

    async def test_issuer_private_keys_are_encrypted_at_rest(
        self, http: httpx.AsyncClient, ticketing_db: Database, settings: TicketingSettings
    ) -> None:
        published = (await http.get("/v1/keys")).json()["keys"]
        assert all(set(key) >= {"kid", "public_key", "status", "not_after"} for key in published)
        assert not any("private" in name for key in published for name in key)
        kid = next(key["kid"] for key in published if key["status"] == "active")
        wrapped: bytes = await scalar(
            ticketing_db, "SELECT private_key_wrapped FROM issuer_keys WHERE kid = :kid", kid=kid
        )
        private = KeyWrap(settings.issuer_key_encryption_key.get_secret_value()).unwrap(
            kid, wrapped
        )
        assert private.private_bytes_raw() not in wrapped
        with pytest.raises(RuntimeError, match="does not unwrap"):
            KeyWrap("some other key-encryption key").unwrap(kid, wrapped)


class TestKeyRotation:
    async def test_rotation_drill(
        self,
        http: httpx.AsyncClient,
        app_client: AppClient,
        settings: TicketingSettings,
    ) -> None:
        """Credentials signed before and after a rotation both verify; once the old key's
        credentials have expired it is retired and what it signed is refused."""
        short = ticketing_settings(
            settings.payments_url,
            credential_ttl=timedelta(seconds=3),
            credential_refresh_margin=timedelta(seconds=1),
        )
        async with app_client(build_app(short)) as phone_facing:
            # A key that only this drill signs with, so that its last credential is ours.
            start = await http.post("/v1/admin/issuer-keys/rotate", headers=OPERATOR)
            assert start.status_code == 200
            rider, ticket = await rider_with_ticket(http)
            assert rider.device_key is not None
            before = await credential_of(phone_facing, rider, ticket)
            rotated = await http.post("/v1/admin/issuer-keys/rotate", headers=OPERATOR)
            assert rotated.status_code == 200
            after = await credential_of(phone_facing, rider, ticket)
            assert before["kid"] != after["kid"]
            statuses = {k["kid"]: k for k in rotated.json()["keys"]}
            assert statuses[after["kid"]]["status"] == "active"
            assert statuses[before["kid"]]["status"] == "retiring"
            assert statuses[before["kid"]]["not_after"] == before["valid_until"]

            keys = await gate_keys(http)
            old_qr = qr_for(before, rider.device_key, counter=1)
            new_qr = qr_for(after, rider.device_key, counter=2)
            decode_and_verify(old_qr, keys)
            decode_and_verify(new_qr, keys)

            async def retired() -> bool:
                listed = (await http.get("/v1/keys")).json()["keys"]
                return any(k["kid"] == before["kid"] and k["status"] == "retired" for k in listed)

            deadline = asyncio.get_running_loop().time() + 15
            while not await retired():
                assert asyncio.get_running_loop().time() < deadline, "old key never retired"
                await asyncio.sleep(0.2)
            keys = await gate_keys(http)
            assert rejected(old_qr, keys) == "unknown_key"
            decode_and_verify(new_qr, keys)

    async def test_only_operators_rotate_keys(self, http: httpx.AsyncClient) -> None:
        rider = await sign_up(http)
        assert (await http.post("/v1/admin/issuer-keys/rotate")).status_code == 401
        as_rider = await http.post("/v1/admin/issuer-keys/rotate", headers=rider.auth)
        assert (as_rider.status_code, as_rider.json()["code"]) == (401, "invalid_token")
