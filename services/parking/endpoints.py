"""HTTP routes of the parking service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.parking import service
from services.parking.schemas import LotRead
from shared.app import RuntimeDep

router = APIRouter(prefix="/v1", tags=["lots"])

LotId = Annotated[str, Path(min_length=1, max_length=20, pattern=r"^[A-Z0-9-]+$")]


@router.get("/lots", response_model=list[LotRead])
async def list_lots(rt: RuntimeDep) -> list[LotRead]:
    """Every parking lot with its capacity per vehicle type and its lanes."""
    async with rt.db.transaction() as session:
        return await service.list_lots(session)


@router.get("/lots/{lot_id}", response_model=LotRead)
async def get_lot(lot_id: LotId, rt: RuntimeDep) -> LotRead:
    """One parking lot."""
    async with rt.db.transaction() as session:
        return await service.get_lot(session, lot_id)
