"""Stored-value fare accounts, for CityPass services (ticketing relays them to the rider)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.validation.fare_worker import FareWorker
from services.validation.settings import ValidationSettings
from shared.app import state
from shared.auth import INVALID_TOKEN, check_token
from shared.errors import problems
from shared.fares.statement import FareAccountRead

service_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="serviceToken",
    description="A CityPass service's token, `VALIDATION_SERVICE_TOKEN`.",
)


async def service(
    settings: Annotated[ValidationSettings, state("settings")],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(service_bearer)],
) -> None:
    token = credentials.credentials if credentials is not None else None
    check_token(token, settings.service_token, "validation service token")


router = APIRouter(prefix="/v1", tags=["fares"], dependencies=[Depends(service)])


@router.get(
    "/tickets/{ticket_id}/fares",
    response_model=FareAccountRead,
    responses=problems(INVALID_TOKEN, (503, "`network_not_loaded`: no network version")),
)
async def ticket_fares(
    ticket_id: uuid.UUID,
    fares: Annotated[FareWorker, state("fares")],
    day: Annotated[date | None, Query(description="Fare day (Hanoi); default today")] = None,
) -> FareAccountRead:
    """A stored-value ticket's legs of one fare day: each leg's fare, transfer discount and
    what the caps took off, the day's and week's totals and caps. A ticket without legs has
    an empty day."""
    statement = await fares.accounts.statement(str(ticket_id), day)
    return FareAccountRead.model_validate(statement)
