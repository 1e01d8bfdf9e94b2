"""Tokens parking hands out, as HMACs of ids (pure): nothing to store, nothing to leak.

A receipt is reached with the session id and a token of one of two scopes:
- `exit`, the receipt token: shown (as a QR) and printed only at the exit lane, to the driver
  at the barrier. It reads the receipt, lists its disputes and opens one: it is the driver's
  proof of having been there. 128 bits, so it cannot be guessed.
- `read`, the read token: what a lookup by plate and receipt code hands out. It reads that
  one receipt and nothing else; 128 bits as well.
- Receipt code: ten characters (50 bits) of Crockford's base32, printed on the receipt and
  shown at the exit (`K7QMD-3XRW9`), short enough to type. With the plate it finds the
  receipt again (`GET /v1/receipts?plate=&code=`, limited per client address), and gives a
  read token only. At 10 lookups per 10 minutes per address, a thousand addresses guessing
  for a year against a plate with 180 receipts would hit one with odds of about 1 in 12,000.
- Account QR: ``CPPK1:<vehicle id hex>:<mac>``, shown by the owner's app at an entry lane
  instead of (or with) a plate read. Alphanumeric QR mode, so it scans from any screen.

Each purpose uses its own key derived from the one `token_secret`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import uuid
from enum import StrEnum

ACCOUNT_QR_PREFIX = "CPPK1"
_ACCOUNT_QR = re.compile(rf"{ACCOUNT_QR_PREFIX}:([0-9A-F]{{32}}):([0-9A-F]{{20}})")
# Crockford's base32: no I, L, O or U; a typed I or L reads as 1 and an O as 0.
RECEIPT_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RECEIPT_CODE_LENGTH = 10
_TYPED_CODE = str.maketrans("ILO", "110", " -")


@functools.lru_cache(maxsize=16)
def _key(secret: str, purpose: bytes) -> bytes:
    return hmac.new(secret.encode(), b"citypass-parking:" + purpose, hashlib.sha256).digest()


def _mac(secret: str, purpose: bytes, message: bytes) -> bytes:
    return hmac.new(_key(secret, purpose), message, hashlib.sha256).digest()


class ReceiptScope(StrEnum):
    read = "read"  # the receipt only
    exit = "exit"  # the receipt and its disputes: shown at the exit lane only


# The exit scope keeps the purpose receipt tokens had before scopes: printed ones stay valid.
_SCOPE_PURPOSE = {ReceiptScope.exit: b"receipt", ReceiptScope.read: b"receipt-read"}


def receipt_token(secret: str, session_id: uuid.UUID, scope: ReceiptScope) -> str:
    digest = _mac(secret, _SCOPE_PURPOSE[scope], session_id.bytes)[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def receipt_token_scope(secret: str, session_id: uuid.UUID, token: str) -> ReceiptScope | None:
    """What `token` grants on the session's receipt, or None when it is not one of ours."""
    for scope in ReceiptScope:
        if hmac.compare_digest(receipt_token(secret, session_id, scope).encode(), token.encode()):
            return scope
    return None


def receipt_code(secret: str, session_id: uuid.UUID) -> str:
    """Ten characters in two groups of five (`K7QMD-3XRW9`): 50 bits of the session's HMAC in
    Crockford's base32, printed on the receipt and shown at the exit lane."""
    bits = int.from_bytes(_mac(secret, b"receipt-code", session_id.bytes)[:8]) >> 14
    characters = "".join(RECEIPT_CODE_ALPHABET[(bits >> shift) & 31] for shift in range(45, -1, -5))
    return f"{characters[:5]}-{characters[5:]}"


def typed_receipt_code(text: str) -> str | None:
    """A code as a driver types it (any case, spaces or dashes, I/L for 1, O for 0), in its
    printed form; None when it cannot be one."""
    characters = text.upper().translate(_TYPED_CODE)
    if len(characters) != RECEIPT_CODE_LENGTH or not all(
        character in RECEIPT_CODE_ALPHABET for character in characters
    ):
        return None
    return f"{characters[:5]}-{characters[5:]}"


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
