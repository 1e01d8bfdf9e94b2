"""What is provisioned: the gates validation knows and the lots parking knows.

Events name only the gates and lots that had traffic: a gate that never validated, or a lot
nobody parked in, never appears on a topic, and a console counting from events alone shows
"5/5 gates online" with 44 provisioned. The owners list everything on public read APIs
(validation `GET /v1/gates`, parking `GET /v1/lots`); the inventory watch reads both every
`inventory_poll_interval` and keeps the last list that answered, with when it was read and why
the latest read failed. A list rather than events: provisioning publishes no event, and a list
is the whole truth at once, including what was provisioned before the console started.
"""

from __future__ import annotations

import time
from enum import StrEnum

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from shared.health import describe_failure


class Kind(StrEnum):
    gates = "gates"
    lots = "lots"


class ListedGate(BaseModel):
    """A gate as validation lists it (the fields the console uses)."""

    model_config = ConfigDict(extra="ignore")

    gate_id: str
    station: str | None = None
    route: str | None = None
    enabled: bool = True


class ListedLot(BaseModel):
    """A lot as parking lists it: its places per vehicle type."""

    model_config = ConfigDict(extra="ignore")

    lot_id: str
    name: str | None = None
    motorbike_capacity: int = 0
    car_capacity: int = 0

    @property
    def capacities(self) -> dict[str, int]:
        return {"motorbike": self.motorbike_capacity, "car": self.car_capacity}


class Listing(BaseModel):
    """The last list that answered, when, and why the latest read failed (None: it answered)."""

    gates: list[ListedGate] = []
    lots: list[ListedLot] = []
    read_at: float | None = None  # None: never read
    error: str | None = None


_GATES = TypeAdapter(list[ListedGate])
_LOTS = TypeAdapter(list[ListedLot])


async def read(client: httpx.AsyncClient, kind: Kind, url: str, previous: Listing) -> Listing:
    """The owner's current list, or the previous one with the reason it could not be read."""
    try:
        response = await client.get(url)
        response.raise_for_status()
        if kind is Kind.gates:
            return Listing(gates=_GATES.validate_json(response.content), read_at=time.time())
        return Listing(lots=_LOTS.validate_json(response.content), read_at=time.time())
    except (httpx.HTTPError, ValidationError) as exc:
        return previous.model_copy(update={"error": f"{url}: {describe_failure(exc)}"})
