"""Who may call payments: CityPass services, with one shared bearer token. The bank's webhook
is signed instead (bank_signature.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.payments.settings import PaymentsSettings
from shared.app import state
from shared.auth import check_token
from shared.idempotency import Idempotency

SettingsDep = Annotated[PaymentsSettings, state("settings")]
IdempotencyStoreDep = Annotated[Idempotency, state("idempotency")]

bearer = HTTPBearer(auto_error=False, description="The payments service token (from settings)")


def check_caller(settings: PaymentsSettings, token: str | None) -> None:
    """Callers are CityPass services: one shared bearer token, compared in constant time."""
    check_token(token, settings.service_token, "payments service token")


async def service_caller(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    check_caller(settings, credentials.credentials if credentials else None)
