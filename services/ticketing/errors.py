"""Domain errors of the ticketing service (problem+json, each with its stable code)."""

from __future__ import annotations

import uuid

from shared.errors import ProblemError, Unauthorized


class DeviceSwitchLimit(ProblemError):
    status, code, title = 429, "device_switch_limit", "Too many device switches"


class TooManyLoginFailures(ProblemError):
    status, code, title = 429, "too_many_login_failures", "Too many wrong passwords"


class RefreshTokenReused(Unauthorized):
    """A used refresh token came back: the endpoint revokes `family_id` in a transaction of
    its own, since raising rolls the current one back."""

    code = "refresh_token_reused"

    def __init__(self, family_id: uuid.UUID) -> None:
        super().__init__("This refresh token was already used: log in again.")
        self.family_id = family_id
