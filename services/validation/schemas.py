from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Direction(StrEnum):
    entry = "entry"
    exit = "exit"
    both = "both"


class StationRead(BaseModel):
    code: str
    name: str
    km: float = Field(description="Distance from the first station of the line")


class LineRead(BaseModel):
    code: str
    name: str
    stations: list[StationRead]


class BusRouteRead(BaseModel):
    code: str
    name: str
    length_km: float
    fare_band: str


class GateRead(BaseModel):
    gate_id: str
    station: str | None = Field(description="Metro station code, for metro gates")
    route: str | None = Field(description="Bus route code, for bus validators")
    direction: Direction
    enabled: bool
