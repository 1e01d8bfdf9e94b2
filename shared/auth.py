"""Fixed bearer tokens from settings (admin, operator, service-to-service): one check, one
refusal, the same in every service."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from shared.errors import Unauthorized

INVALID_TOKEN = (401, "`invalid_token`: the bearer token is missing or wrong")


def token_matches(given: str | None, expected: SecretStr) -> bool:
    """Compared in constant time: the answer's timing says nothing about the token."""
    return given is not None and hmac.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    )


def check_token(given: str | None, expected: SecretStr, name: str) -> None:
    """401 `invalid_token` unless `given` is the token; `name` says which one to send."""
    if not token_matches(given, expected):
        raise Unauthorized(f"Send `Authorization: Bearer <{name}>`.", code="invalid_token")
