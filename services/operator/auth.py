"""Who may call: signed-in operators (bearer JWT), admins for changes, stream-ticket holders."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.operator import service
from services.operator.schemas import OperatorRead, Role
from services.operator.service import Session
from services.operator.settings import OperatorSettings
from shared.app import Runtime, RuntimeDep
from shared.errors import Forbidden, Unauthorized

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="operatorSession",
    description="The `access_token` from `POST /v1/login`.",
)


def operator_settings(rt: RuntimeDep) -> OperatorSettings:
    assert isinstance(rt.settings, OperatorSettings)
    return rt.settings


SettingsDep = Annotated[OperatorSettings, Depends(operator_settings)]


def _secret(rt: Runtime) -> str:
    return operator_settings(rt).session_secret.get_secret_value()


async def current_session(
    rt: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Session:
    if credentials is None:
        raise Unauthorized("Sign in first.", code="missing_session")
    return service.authenticate(credentials.credentials, _secret(rt))


CurrentSession = Annotated[Session, Depends(current_session)]


async def current_operator(session: CurrentSession) -> OperatorRead:
    return session.operator


CurrentOperator = Annotated[OperatorRead, Depends(current_operator)]


async def admin_operator(operator: CurrentOperator) -> OperatorRead:
    if operator.role is not Role.admin:
        raise Forbidden("Only an admin may do this.", code="admin_required")
    return operator


AdminOperator = Annotated[OperatorRead, Depends(admin_operator)]


async def stream_session(
    rt: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ticket: Annotated[str | None, Query(min_length=16, max_length=128)] = None,
) -> Session:
    """A browser's EventSource cannot send headers: it shows a one-time stream ticket
    (`POST /v1/stream-tickets`, valid 30 s). Other clients may send the bearer token."""
    if ticket is not None:
        return await service.redeem_stream_ticket(rt.kv, ticket)
    if credentials is None:
        raise Unauthorized("Send a stream ticket or a bearer token.", code="missing_session")
    return service.authenticate(credentials.credentials, _secret(rt))


StreamSession = Annotated[Session, Depends(stream_session)]
