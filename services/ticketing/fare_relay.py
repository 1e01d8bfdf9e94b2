"""The rider's stored-value fares: validation keeps each ticket's fare account (its legs,
transfers and caps); ticketing checks the ticket is the rider's and relays the account."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

import httpx
from fastapi import APIRouter, Query

from services.ticketing.auth import CurrentRider, SettingsDep
from services.ticketing.schemas import ProductKind
from services.ticketing.service import tickets
from shared.app import RuntimeDep
from shared.errors import Conflict, ServiceUnavailable, problems
from shared.fares.statement import FareAccountRead
from shared.http import service_client

router = APIRouter(prefix="/v1", tags=["fares"])


class FaresUnavailable(ServiceUnavailable):
    code, title = "fares_unavailable", "Fares unavailable"


class NotStoredValue(Conflict):
    code, title = "not_stored_value", "Not a stored-value ticket"


@router.get(
    "/me/tickets/{ticket_id}/fares",
    response_model=FareAccountRead,
    responses=problems(
        (401, "No, expired or invalid access token"),
        (404, "`ticket_not_found` (or not yours)"),
        (409, "`not_stored_value`: passes and single rides have no fares per leg"),
        (503, "`fares_unavailable`: validation did not answer"),
    ),
)
async def my_ticket_fares(
    ticket_id: uuid.UUID,
    rider: CurrentRider,
    rt: RuntimeDep,
    settings: SettingsDep,
    day: Annotated[date | None, Query(description="Fare day (Hanoi); default today")] = None,
) -> FareAccountRead:
    """Your stored-value ticket's fares of one day: each leg's fare, the transfer discount,
    what the day's or week's cap took off, and how close you are to the caps."""
    async with rt.db.transaction() as session:
        ticket = await tickets.get_ticket(session, rider.id, ticket_id)
    if ticket.kind != ProductKind.stored_value:
        raise NotStoredValue("Only a stored-value ticket pays per leg.")
    token = settings.validation_service_token.get_secret_value()
    params = {"day": day.isoformat()} if day is not None else {}
    try:
        async with service_client(settings.validation_url) as http:
            response = await http.get(
                f"/v1/tickets/{ticket_id}/fares",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            )
        response.raise_for_status()
        return FareAccountRead.model_validate_json(response.content)
    except (httpx.HTTPError, ValueError) as failed:
        raise FaresUnavailable(f"Validation did not give the fares: {failed}") from failed
