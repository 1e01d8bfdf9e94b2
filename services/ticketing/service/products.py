"""Fare products: what the network version in force sells (its `citypass_products.txt`)."""

from __future__ import annotations

from datetime import datetime

from services.ticketing.schemas import Mode, ProductRead
from shared.errors import NotFound
from shared.fares.feed import Feed, ProductSpec
from shared.fares.lines import route_mode
from shared.fares.versions import NetworkVersions


def product_read(spec: ProductSpec) -> ProductRead:
    return ProductRead(
        code=spec.code,
        name_vi=spec.name_vi,
        name_en=spec.name_en,
        mode=Mode(spec.mode),
        kind=spec.kind,
        price_vnd=spec.price,
        categories=list(spec.categories),
        validity_days=spec.validity_days,
        rides=spec.rides,
        lines=list(spec.lines),
        distance_priced=spec.distance_priced,
        line_choice=spec.line_choice,
        credential_code=spec.credential_code,
    )


def catalogue(versions: NetworkVersions, at: datetime) -> list[ProductRead]:
    """Every product on sale at `at`, by code."""
    specs = versions.feed_at(at).products
    return sorted((product_read(spec) for spec in specs), key=lambda p: p.code)


def find_product(versions: NetworkVersions, code: str, at: datetime) -> ProductRead | None:
    spec = next((s for s in versions.feed_at(at).products if s.code == code), None)
    return None if spec is None else product_read(spec)


def get_product(versions: NetworkVersions, code: str, at: datetime) -> ProductRead:
    product = find_product(versions, code, at)
    if product is None:
        raise NotFound(f"No product {code}.", code="product_not_found")
    return product


def line_choices(feed: Feed, mode: Mode) -> set[str]:
    """The routes a one-line product of `mode` may be bought for."""
    return {
        row.get("route_id")
        for row in feed.tables["routes.txt"].rows
        if mode is Mode.any or route_mode(row.get("route_type")) == mode
    }
