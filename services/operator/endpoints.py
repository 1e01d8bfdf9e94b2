"""HTTP routes of the operator service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.operator import service
from services.operator.schemas import LoginRequest, OperatorRead, SessionRead
from services.operator.settings import OperatorSettings
from shared.app import Runtime, RuntimeDep
from shared.errors import Unauthorized

router = APIRouter(prefix="/v1", tags=["operators"])
bearer = HTTPBearer(auto_error=False)


def _settings(rt: Runtime) -> OperatorSettings:
    assert isinstance(rt.settings, OperatorSettings)
    return rt.settings


async def current_operator(
    rt: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> OperatorRead:
    if credentials is None:
        raise Unauthorized("Sign in first.", code="missing_session")
    return service.authenticate(
        credentials.credentials, _settings(rt).session_secret.get_secret_value()
    )


CurrentOperator = Annotated[OperatorRead, Depends(current_operator)]


@router.post("/login", response_model=SessionRead)
async def login(body: LoginRequest, rt: RuntimeDep) -> SessionRead:
    """Sign in as an operator; the bearer token is valid for one shift."""
    settings = _settings(rt)
    return await service.login(
        rt.kv,
        body.username,
        body.password,
        settings.session_secret.get_secret_value(),
        settings.session_ttl,
    )


@router.get("/me", response_model=OperatorRead)
async def me(operator: CurrentOperator) -> OperatorRead:
    """Who is signed in, and with which role."""
    return operator
