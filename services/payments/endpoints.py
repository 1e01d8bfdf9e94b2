"""HTTP routes of the payments service: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from services.payments import service
from services.payments.schemas import AccountCreate, AccountRead
from shared.app import Runtime

router = APIRouter(prefix="/v1", tags=["accounts"])


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


@router.post("/accounts", response_model=AccountRead, status_code=201)
async def open_wallet(body: AccountCreate, rt: RuntimeDep) -> AccountRead:
    """Open a rider or vehicle-owner wallet; opening it again returns the same wallet."""
    async with rt.db.transaction() as session:
        return await service.open_wallet(session, body)


@router.get("/accounts/{account_id}", response_model=AccountRead)
async def get_account(account_id: uuid.UUID, rt: RuntimeDep) -> AccountRead:
    """An account and its available balance in VND."""
    async with rt.db.transaction() as session:
        return await service.get_account(session, account_id)
