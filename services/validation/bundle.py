"""Offline gate bundles: what a gate needs to decide without the network, signed by the service.

The payload is JSON (format `citypass-gate-bundle/1`): the gate itself, usable issuer public
keys, the deny list, product rules, the fare tables (rules.FareTable) of the network version
in force and of every one starting before the bundle expires, each with its `effective_from`,
and the QR/trip settings, `issued_at` and `valid_until` (unix seconds). The signature is
Ed25519 over the exact payload bytes; gates check it against the key published at
`GET /v1/gate-bundle/key` and refuse an expired bundle.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.validation.memory import Memory, b64url
from services.validation.network import GateNetworks
from services.validation.schemas import BundleKeyRead, GateBundleRead, GateRead
from services.validation.settings import ValidationSettings

FORMAT = "citypass-gate-bundle/1"


class BundleError(ValueError):
    """A bundle that must not be used: bad signature, wrong format, expired."""


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class BundleSigner:
    private_key: Ed25519PrivateKey

    @classmethod
    def from_raw(cls, raw: bytes) -> BundleSigner:
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes_raw()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def published(self) -> BundleKeyRead:
        return BundleKeyRead(key_id=self.key_id, public_key=b64url(self.public_key))

    def sign(self, payload: dict[str, Any]) -> GateBundleRead:
        encoded = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        return GateBundleRead(
            key_id=self.key_id,
            payload=b64url(encoded),
            signature=b64url(self.private_key.sign(encoded)),
            valid_until=datetime.fromtimestamp(payload["valid_until"], UTC),
        )


def build(
    memory: Memory,
    networks: GateNetworks,
    gate: GateRead,
    settings: ValidationSettings,
    now: int,
) -> dict[str, Any]:
    valid_until = now + int(settings.bundle_ttl.total_seconds())
    return {
        "format": FORMAT,
        "gate": gate.model_dump(mode="json"),
        "issued_at": now,
        "valid_until": valid_until,
        "issuer_keys": [
            {"kid": k.kid, "public_key": b64url(k.public_key), "not_after": k.not_after}
            for k in sorted(memory.issuer_keys.values(), key=lambda k: k.kid)
            if k.usable(now)
        ],
        "deny": {
            "tickets": {t: [e.reason.value, e.until] for t, e in memory.deny_tickets.items()},
            "devices": {d: [e.reason.value, e.until] for d, e in memory.deny_devices.items()},
        },
        "products": {
            code: {"kind": rule.kind.value, "rides": rule.rides}
            for code, rule in memory.products.items()
        },
        "fares": [fares.bundled() for fares in networks.spanning(now, valid_until)],
        "rules": {
            "qr_window_s": int(settings.qr_window.total_seconds()),
            "qr_skew_s": int(settings.qr_skew.total_seconds()),
            "max_trip_s": int(settings.max_trip.total_seconds()),
            "bus_passback_s": int(settings.bus_passback.total_seconds()),
        },
    }


def open_bundle(
    bundle: GateBundleRead | dict[str, Any], public_key: bytes, now: int
) -> dict[str, Any]:
    """Verify and decode a bundle; raises BundleError. Used by offline gates."""
    signed = bundle if isinstance(bundle, GateBundleRead) else GateBundleRead(**bundle)
    if signed.key_id != key_id(public_key):
        raise BundleError(f"bundle signed by key {signed.key_id}, not by the published key")
    try:
        payload = _unb64url(signed.payload)
        Ed25519PublicKey.from_public_bytes(public_key).verify(_unb64url(signed.signature), payload)
    except (InvalidSignature, ValueError) as exc:
        raise BundleError("bundle signature does not verify") from exc
    content: dict[str, Any] = orjson.loads(payload)
    if content.get("format") != FORMAT:
        raise BundleError(f"unknown bundle format {content.get('format')!r}")
    if now > int(content["valid_until"]):
        raise BundleError("bundle expired; fetch a new one from GET /v1/gate-bundle")
    return content
