"""Validation rules. No Redis commands here (see repository.py), no HTTP (see endpoints.py)."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from services.validation import repository
from services.validation.schemas import (
    BusRouteRead,
    Direction,
    GateRead,
    LineRead,
    StationRead,
)
from shared.errors import NotFound
from shared.network import BUS_ROUTES, LINES


def lines() -> list[LineRead]:
    return [
        LineRead(
            code=line.code,
            name=line.name,
            stations=[StationRead(code=s.code, name=s.name, km=s.km) for s in line.stations],
        )
        for line in LINES
    ]


def bus_routes() -> list[BusRouteRead]:
    return [
        BusRouteRead(code=r.code, name=r.name, length_km=r.length_km, fare_band=r.fare_band)
        for r in BUS_ROUTES
    ]


async def seed_gates(redis: Redis) -> int:
    """Two gates per metro station (entry and exit) and one validator per bus route."""
    gates = [
        GateRead(
            gate_id=f"{s.code}-{d.value[:2].upper()}",
            station=s.code,
            route=None,
            direction=d,
            enabled=True,
        )
        for line in LINES
        for s in line.stations
        for d in (Direction.entry, Direction.exit)
    ] + [
        GateRead(
            gate_id=f"BUS-{r.code}-01",
            station=None,
            route=r.code,
            direction=Direction.both,
            enabled=True,
        )
        for r in BUS_ROUTES
    ]
    for gate in gates:
        await repository.save_gate(redis, gate, secrets.token_urlsafe(32))
    return len(gates)


async def get_gate(redis: Redis, gate_id: str) -> GateRead:
    gate = await repository.get_gate(redis, gate_id)
    if gate is None:
        raise NotFound(f"No gate {gate_id}.", code="gate_not_found")
    return gate
