"""A stored-value ticket's fare account for one fare day, as the API shows it: validation's
`GET /v1/tickets/{id}/fares` and ticketing's relay to the rider (`GET /v1/me/tickets/{id}/fares`)
answer the same model."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, Field


class FareLegRead(BaseModel):
    leg_id: str = Field(description="The entry's validation id (metro) or the tap's (bus)")
    route_id: str = Field(description="The metro line or bus route, as the feed names it")
    from_stop: str | None = Field(description="Entry station (metro); null for a bus")
    to_stop: str | None = Field(description="Exit station (metro); null for a bus")
    open_trip_entry: str | None = Field(
        default=None,
        description="A trip left open at this station, priced as the line's longest trip",
    )
    departed_at: datetime
    arrived_at: datetime
    fare: int = Field(description="The leg's own fare (minor units of `currency`)")
    transfer_discount: int = Field(description="Taken off the fare by a transfer rule")
    charged: int = Field(description="What the leg cost after transfer and caps")
    capped: int = Field(description="Not charged because the day's or week's cap was reached")


class FareAccountRead(BaseModel):
    ticket_id: uuid.UUID
    fare_day: date = Field(description="Hanoi fare day: 04:00 to 04:00 local time")
    currency: str
    rider_category: str
    legs: list[FareLegRead] = Field(description="The day's legs in order of departure")
    day_total: int
    day_cap: int | None = Field(description="null: no daily cap for this rider category")
    week_total: int = Field(description="The fare week (from Monday 04:00) so far")
    week_cap: int | None
    capped_today: bool = Field(description="The day's or the week's cap is reached")
