"""HTTP routes of the validation service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.validation import repository, service
from services.validation.schemas import BusRouteRead, GateRead, LineRead
from shared.app import RuntimeDep

router = APIRouter(prefix="/v1", tags=["network"])

GateId = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9-]+$")]


@router.get("/lines", response_model=list[LineRead])
async def list_lines() -> list[LineRead]:
    """Metro lines with their stations in order and distances (km) used for fares."""
    return service.lines()


@router.get("/bus-routes", response_model=list[BusRouteRead])
async def list_bus_routes() -> list[BusRouteRead]:
    """Bus routes with their length and fare band."""
    return service.bus_routes()


@router.get("/gates", response_model=list[GateRead])
async def list_gates(rt: RuntimeDep) -> list[GateRead]:
    """Every provisioned gate and bus validator (never their secrets)."""
    return await repository.list_gates(rt.kv)


@router.get("/gates/{gate_id}", response_model=GateRead)
async def get_gate(gate_id: GateId, rt: RuntimeDep) -> GateRead:
    """One gate: where it stands, its direction and whether it is enabled."""
    return await service.get_gate(rt.kv, gate_id)
