"""Fare products: the catalogue of `fares.py` in the database, read by riders."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.ticketing import fares, repository
from services.ticketing.schemas import ProductRead
from shared.errors import NotFound


async def seed_products(session: AsyncSession) -> int:
    catalogue = fares.catalogue()
    await repository.upsert_products(session, [p.model_dump(mode="json") for p in catalogue])
    return len(catalogue)


async def list_products(session: AsyncSession) -> list[ProductRead]:
    return [ProductRead.model_validate(dict(r)) for r in await repository.list_products(session)]


async def get_product(session: AsyncSession, code: str) -> ProductRead:
    row = await repository.get_product(session, code)
    if row is None:
        raise NotFound(f"No product {code}.", code="product_not_found")
    return ProductRead.model_validate(dict(row))
