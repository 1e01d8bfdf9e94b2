"""What a validation process keeps in memory so the gate path needs no lookup: gates and their
secrets, issuer keys with a cache of verified credentials, learned product rules, the deny list.

All of it is rebuilt from Redis whenever `cp:{network}:state-version` moves (see tasks.py) and
patched in place by the consumers as events arrive, so every process converges within a second.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import Buffer

from services.validation.repository import NetworkState
from services.validation.rules import (
    DEFAULT_PRODUCT,
    DenyEntry,
    GatePlace,
    ProductRule,
    Reason,
    TicketKind,
)
from services.validation.schemas import GateRead, IssuerKeyStatus
from shared.devicesigning import DeviceKey
from shared.ticketcodec import verify_ed25519


def decode_public_key(text: str) -> bytes:
    """32 raw key bytes from base64 or base64url, padded or not; ValueError otherwise."""
    padded = text.strip() + "=" * (-len(text.strip()) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error as exc:
        raise ValueError("public key is not base64") from exc
    if len(raw) != 32:
        raise ValueError("an Ed25519 key is 32 bytes")
    return raw


def decode_private_key(text: str) -> bytes:
    """A raw 32-byte Ed25519 private key from base64 or base64url (the bundle signing key)."""
    return decode_public_key(text)


def device_key(gate: GateRead, state: NetworkState, now: int) -> DeviceKey:
    """The gate's secret, and the one its last rotation replaced while that is still accepted."""
    previous = state.previous_secrets.get(gate.gate_id)
    if previous is None or previous.until < now:
        return DeviceKey(gate.gate_id, state.secrets[gate.gate_id], gate.enabled)
    return DeviceKey(
        gate.gate_id,
        state.secrets[gate.gate_id],
        gate.enabled,
        previous_secret=previous.secret,
        previous_until=previous.until,
    )


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class VerifiedSignatures:
    """LRU of (issuer key, credential bytes, signature) digests already verified."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def seen(self, digest: bytes) -> bool:
        if digest in self._seen:
            self._seen.move_to_end(digest)
            return True
        return False

    def add(self, digest: bytes) -> None:
        self._seen[digest] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)


class CachedIssuerKey(Ed25519PublicKey):
    """An issuer key that verifies each distinct credential once.

    A rider's phone shows a new QR every few seconds, but the issuer-signed credential inside
    stays the same for the ticket's life: only the device signature needs checking each time.
    """

    def __init__(self, key: Ed25519PublicKey, verified: VerifiedSignatures) -> None:
        self._key = key
        self._raw = key.public_bytes_raw()
        self._verified = verified

    def verify(self, signature: Buffer, data: Buffer) -> None:
        digest = hashlib.sha256(self._raw + bytes(signature) + bytes(data)).digest()
        if self._verified.seen(digest):
            return
        # libsodium: a credential seen for the first time costs ~85 µs here, OpenSSL ~200 µs.
        if not verify_ed25519(self._raw, bytes(signature), bytes(data)):
            raise InvalidSignature
        self._verified.add(digest)

    def public_bytes(self, encoding: Encoding, format: PublicFormat) -> bytes:
        return self._key.public_bytes(encoding, format)

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ed25519PublicKey) and other.public_bytes_raw() == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __copy__(self) -> CachedIssuerKey:
        return self

    def __deepcopy__(self, memo: dict[Any, Any]) -> CachedIssuerKey:
        return self


@dataclass(frozen=True, slots=True)
class IssuerKey:
    kid: str
    public_key: bytes
    status: IssuerKeyStatus
    not_after: int | None
    source: str

    def usable(self, now: int) -> bool:
        return self.status in (IssuerKeyStatus.active, IssuerKeyStatus.retiring) and (
            self.not_after is None or now <= self.not_after
        )

    def record(self) -> dict[str, Any]:
        return {
            "public_key": b64url(self.public_key),
            "status": self.status.value,
            "not_after": self.not_after,
            "source": self.source,
        }

    @classmethod
    def from_record(cls, kid: str, record: dict[str, Any]) -> IssuerKey:
        return cls(
            kid=kid,
            public_key=decode_public_key(record["public_key"]),
            status=IssuerKeyStatus(record.get("status", "active")),
            not_after=record.get("not_after"),
            source=record.get("source", "operator"),
        )


@dataclass
class Memory:
    """The process's view of the network; replaced wholesale on reload, patched by events."""

    verified: VerifiedSignatures
    version: int = -1
    gates: dict[str, GateRead] = field(default_factory=dict)
    places: dict[str, GatePlace] = field(default_factory=dict)
    device_keys: dict[str, DeviceKey] = field(default_factory=dict)
    issuer_keys: dict[str, IssuerKey] = field(default_factory=dict)
    # This process's own configuration (VALIDATION_ISSUER_KEYS): kept here, not in the shared
    # Redis, so that replicas configured differently cannot remove each other's keys.
    configured_keys: dict[str, IssuerKey] = field(default_factory=dict)
    usable_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    products: dict[str, ProductRule] = field(default_factory=dict)
    deny_tickets: dict[str, DenyEntry] = field(default_factory=dict)
    deny_devices: dict[str, DenyEntry] = field(default_factory=dict)

    def device_key(self, device_id: str) -> DeviceKey | None:
        return self.device_keys.get(device_id)

    def product(self, code: str) -> ProductRule:
        return self.products.get(code, DEFAULT_PRODUCT)

    def apply(self, state: NetworkState, now: int) -> None:
        self.version = state.version
        self.gates = {gate.gate_id: gate for gate in state.gates}
        self.places = {gate.gate_id: place_of(gate) for gate in state.gates}
        self.device_keys = {
            gate.gate_id: device_key(gate, state, now)
            for gate in state.gates
            if gate.gate_id in state.secrets
        }
        keys: dict[str, IssuerKey] = {}
        for kid, record in state.issuer_keys.items():
            try:
                keys[kid] = IssuerKey.from_record(kid, record)
            except (ValueError, KeyError):
                continue
        # What operators and ticketing put in Redis wins: an operator can retire a configured key.
        self.issuer_keys = {**self.configured_keys, **keys}
        self.refresh_usable_keys(now)
        self.products = {}
        for code, record in state.products.items():
            self.learn_product(code, record)
        self.deny_tickets, self.deny_devices = {}, {}
        for entry, record in state.deny.items():
            self.deny_entry(entry, record)

    def refresh_usable_keys(self, now: int) -> None:
        cached = {kid: k for kid, k in self.usable_keys.items() if isinstance(k, CachedIssuerKey)}
        usable: dict[str, Ed25519PublicKey] = {}
        for kid, key in self.issuer_keys.items():
            if not key.usable(now):
                continue
            previous = cached.get(kid)
            if previous is not None and previous.public_bytes_raw() == key.public_key:
                usable[kid] = previous
            else:
                raw = Ed25519PublicKey.from_public_bytes(key.public_key)
                usable[kid] = CachedIssuerKey(raw, self.verified)
        self.usable_keys = usable

    def learn_product(self, code: str, record: dict[str, Any]) -> None:
        try:
            kind = TicketKind(record["kind"])
        except (KeyError, ValueError):
            return
        rides = record.get("rides")
        self.products[code] = ProductRule(kind, rides if isinstance(rides, int) else None)

    def deny_entry(self, entry: str, record: dict[str, Any]) -> None:
        scope, _, subject = entry.partition(":")
        try:
            deny = DenyEntry(Reason(record["reason"]), record.get("until"))
        except (KeyError, ValueError):
            return
        if scope == "ticket":
            self.deny_tickets[subject] = deny
        elif scope == "device":
            self.deny_devices[subject] = deny

    def lift_entry(self, entry: str, reason: Reason) -> None:
        scope, _, subject = entry.partition(":")
        table = self.deny_tickets if scope == "ticket" else self.deny_devices
        if (current := table.get(subject)) is not None and current.reason is reason:
            del table[subject]


def place_of(gate: GateRead) -> GatePlace:
    return GatePlace(
        gate_id=gate.gate_id,
        station=gate.station,
        route=gate.route,
        direction=gate.direction,
        products=tuple(gate.products),
    )
