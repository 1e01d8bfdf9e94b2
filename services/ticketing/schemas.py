from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class RiderCategory(StrEnum):
    regular = "regular"
    student = "student"
    worker = "worker"
    elderly = "elderly"  # 60 and over
    child = "child"  # under 6
    merit = "merit"  # people with merit
    disabled = "disabled"
    poor_household = "poor_household"


class ProductKind(StrEnum):
    single = "single"
    pass_ = "pass"
    stored_value = "stored_value"


class Mode(StrEnum):
    bus = "bus"
    metro = "metro"
    any = "any"


class ProductRead(BaseModel):
    code: str
    name_vi: str
    name_en: str
    mode: Mode
    kind: ProductKind
    price_vnd: int = Field(description="0 for free categories; metro singles priced by distance")
    categories: list[RiderCategory] = Field(description="Rider categories allowed to buy it")
    validity_days: int | None = Field(description="Days of validity from activation (passes)")
    rides: int | None = Field(description="Rides included; null means unlimited within validity")
    lines: list[str] = Field(description="Lines or routes it is valid on; empty means all")
    distance_priced: bool = Field(description="Fare computed at tap-out from the distance")
