"""HTTP routes of the ticketing service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.ticketing import service
from services.ticketing.schemas import ProductRead
from shared.app import RuntimeDep

router = APIRouter(prefix="/v1", tags=["products"])

ProductCode = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Z0-9-]+$")]


@router.get("/products", response_model=list[ProductRead])
async def list_products(rt: RuntimeDep) -> list[ProductRead]:
    """Every fare product on sale, with prices in VND and who may buy it."""
    async with rt.db.transaction() as session:
        return await service.list_products(session)


@router.get("/products/{code}", response_model=ProductRead)
async def get_product(code: ProductCode, rt: RuntimeDep) -> ProductRead:
    """One fare product."""
    async with rt.db.transaction() as session:
        return await service.get_product(session, code)
