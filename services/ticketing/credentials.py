"""Issuer keys and ticket credentials (pure: no I/O).

The credential format and both signatures belong to `shared.ticketcodec`; this module decides
what goes into a credential (scope, validity window, category), names and wraps issuer keys.

Issuer private keys never leave this process unencrypted: they are stored AES-256-GCM-wrapped
under a key derived (HKDF-SHA256) from `TICKETING_ISSUER_KEY_ENCRYPTION_KEY`, with the kid as
associated data, so a wrapped key copied onto another kid's row does not unwrap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import uuid
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.ticketing.schemas import Mode, RiderCategory
from shared import ticketcodec

# Scope tokens for products valid on every line of a mode (the credential needs at least one),
# as gates read them: `METRO` every metro line, `BUS` every bus route, `*` everything.
ALL_METRO = "METRO"
ALL_BUS = "BUS"
EVERYWHERE = "*"
_MODE_SCOPE = {Mode.metro: ALL_METRO, Mode.bus: ALL_BUS, Mode.any: EVERYWHERE}

_NONCE_LENGTH = 12
_KEK_INFO = b"citypass ticketing issuer-key wrapping v1"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def from_b64url(text: str) -> bytes:
    """Strict base64url (padding optional); ValueError on anything else."""
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not base64url") from None
    if b64url(raw) != text.rstrip("="):
        raise ValueError("not canonical base64url")
    return raw


def device_public_key(text: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key sent as base64url; ValueError otherwise."""
    raw = from_b64url(text)
    try:
        ticketcodec.load_public_key(raw)
    except (ticketcodec.TicketCodecError, ValueError):
        raise ValueError("not an Ed25519 public key (32 raw bytes)") from None
    return raw


def fingerprint(public_key: bytes) -> str:
    """How events and deny lists name a device key: hex SHA-256 of the 32 raw bytes."""
    return hashlib.sha256(public_key).hexdigest()


def kid_for(sequence: int) -> str:
    """Issuer key ids stay short: every byte of the credential counts (see ticketcodec)."""
    return f"k{sequence}"


def codec_category(category: RiderCategory) -> ticketcodec.RiderCategory:
    return ticketcodec.RiderCategory[category.name.upper()]


def scope(mode: Mode, lines: list[str]) -> tuple[str, ...]:
    """The line/route codes a credential names: the ticket's own, or the mode's wildcard."""
    return tuple(lines) if lines else (_MODE_SCOPE[mode],)


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def from_unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def window(
    ticket_from: datetime, ticket_until: datetime, now: datetime, ttl: timedelta
) -> tuple[int, int]:
    """Validity of a credential signed `now`: the ticket's, cut to `ttl` from now (or start)."""
    start = unix(ticket_from)
    end = min(unix(ticket_until), unix(max(now, ticket_from) + ttl))
    return start, max(start, end)


def build(
    *,
    kid: str,
    ticket_id: uuid.UUID,
    credential_code: str,
    category: RiderCategory,
    valid_from: int,
    valid_until: int,
    lines: tuple[str, ...],
    device_key: bytes,
) -> ticketcodec.Credential:
    return ticketcodec.Credential(
        kid=kid,
        ticket_id=ticket_id,
        product=credential_code,
        rider_category=codec_category(category),
        valid_from=valid_from,
        valid_until=valid_until,
        lines=lines,
        device_public_key=device_key,
    )


class KeyWrap:
    """Wraps issuer private keys for storage and keeps the unwrapped ones for signing."""

    def __init__(self, key_encryption_key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEK_INFO).derive(
            key_encryption_key.encode()
        )
        self._aead = AESGCM(derived)
        self._unwrapped: dict[str, Ed25519PrivateKey] = {}

    def wrap(self, kid: str, private_key: Ed25519PrivateKey) -> bytes:
        nonce = os.urandom(_NONCE_LENGTH)
        return nonce + self._aead.encrypt(nonce, private_key.private_bytes_raw(), kid.encode())

    def unwrap(self, kid: str, wrapped: bytes) -> Ed25519PrivateKey:
        cached = self._unwrapped.get(kid)
        if cached is not None:
            return cached
        nonce, sealed = wrapped[:_NONCE_LENGTH], wrapped[_NONCE_LENGTH:]
        try:
            raw = self._aead.decrypt(nonce, sealed, kid.encode())
        except InvalidTag:
            raise RuntimeError(
                f"issuer key {kid} does not unwrap: wrong TICKETING_ISSUER_KEY_ENCRYPTION_KEY?"
            ) from None
        key = Ed25519PrivateKey.from_private_bytes(raw)
        self._unwrapped[kid] = key
        return key
