from __future__ import annotations

from pydantic import BaseModel, Field


class LotRead(BaseModel):
    lot_id: str
    name: str
    district: str
    address: str
    motorbike_capacity: int = Field(ge=0)
    car_capacity: int = Field(ge=0)
    entry_lanes: int = Field(ge=1)
    exit_lanes: int = Field(ge=1)
