"""Tokens parking hands out, as HMACs of ids (pure): nothing to store, nothing to leak.

- Receipt token: with the session id it opens the receipt and lets the driver dispute it.
  Printed (or shown as a QR) at the exit lane; 128 bits, so it cannot be guessed.
- Account QR: ``CPPK1:<vehicle id hex>:<mac>``, shown by the owner's app at an entry lane
  instead of (or with) a plate read. Alphanumeric QR mode, so it scans from any screen.

Each purpose uses its own key derived from the one `token_secret`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid

ACCOUNT_QR_PREFIX = "CPPK1"
_ACCOUNT_QR = re.compile(rf"{ACCOUNT_QR_PREFIX}:([0-9A-F]{{32}}):([0-9A-F]{{20}})")


def _key(secret: str, purpose: bytes) -> bytes:
    return hmac.new(secret.encode(), b"citypass-parking:" + purpose, hashlib.sha256).digest()


def _mac(secret: str, purpose: bytes, message: bytes) -> bytes:
    return hmac.new(_key(secret, purpose), message, hashlib.sha256).digest()


def receipt_token(secret: str, session_id: uuid.UUID) -> str:
    digest = _mac(secret, b"receipt", session_id.bytes)[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def receipt_token_matches(secret: str, session_id: uuid.UUID, token: str) -> bool:
    return hmac.compare_digest(receipt_token(secret, session_id).encode(), token.encode())


def account_qr(secret: str, vehicle_id: uuid.UUID) -> str:
    mac = _mac(secret, b"account-qr", vehicle_id.bytes)[:10].hex().upper()
    return f"{ACCOUNT_QR_PREFIX}:{vehicle_id.hex.upper()}:{mac}"


def vehicle_of_account_qr(secret: str, text: str) -> uuid.UUID | None:
    """The vehicle an account QR names, or None when it is not one of ours."""
    parsed = _ACCOUNT_QR.fullmatch(text.strip().upper())
    if parsed is None:
        return None
    vehicle_id = uuid.UUID(hex=parsed[1])
    if not hmac.compare_digest(
        account_qr(secret, vehicle_id).encode(), text.strip().upper().encode()
    ):
        return None
    return vehicle_id
