"""How the bank signs its notifications: pure functions shared by the webhook and the sandbox.

The bank sends `X-Bank-Timestamp: <unix seconds>` and
`X-Bank-Signature: <hex HMAC-SHA256 of "<timestamp>.<raw body>">` with the shared secret.
Signing the timestamp with the body is what makes an old, captured request useless.
"""

from __future__ import annotations

import hashlib
import hmac
import re

TIMESTAMP_HEADER = "X-Bank-Timestamp"
SIGNATURE_HEADER = "X-Bank-Signature"

_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


class SignatureRejected(ValueError):
    """The notification is not provably from the bank, or not fresh; the message says why."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    *,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    window_s: float,
) -> None:
    """Raise SignatureRejected unless `signature` signs `body` at a time within the window."""
    if not timestamp or not signature:
        raise SignatureRejected(f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required")
    if not _UNIX_SECONDS.fullmatch(timestamp):
        raise SignatureRejected(f"{TIMESTAMP_HEADER} must be whole unix seconds")
    skew = abs(now - int(timestamp))
    if skew > window_s:
        raise SignatureRejected(
            f"{TIMESTAMP_HEADER} is {skew:.0f} s away from now; the window is {window_s:.0f} s"
        )
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise SignatureRejected(f"{SIGNATURE_HEADER} does not match the body")
