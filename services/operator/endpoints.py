"""HTTP routes of the operator service: the console page, its API and its live stream."""

from __future__ import annotations

import time
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import FileResponse, StreamingResponse

from services.operator import repository, service
from services.operator.auth import (
    AdminOperator,
    CurrentOperator,
    CurrentSession,
    SettingsDep,
    StreamSession,
)
from services.operator.live import Broadcaster
from services.operator.network import OperatorNetwork
from services.operator.schemas import (
    AlertRead,
    AlertStatus,
    DashboardRead,
    LoginRequest,
    OperatorRead,
    PipelineRead,
    SessionRead,
    StreamTicketRead,
    TailEntryRead,
)
from services.operator.service import TailFilter
from shared.app import RuntimeDep
from shared.errors import NotFound, problems

STATIC_DIR = FilePath(__file__).resolve().parent / "static"
STREAM_ID = r"^[0-9]{1,20}-[0-9]{1,20}$"
# The page loads nothing from elsewhere and runs no inline script (no CDN, no eval).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
UNAUTHORIZED = problems((401, "`missing_session` or `invalid_session`: sign in"))

api = APIRouter(prefix="/v1", tags=["operators"])
console = APIRouter(tags=["console"])
routers = (api, console)


@console.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The operator console (sign-in screen first; the data needs a session)."""
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


@console.get("/static/{name}", include_in_schema=False)
async def asset(name: Annotated[str, Path(pattern=r"^[a-z0-9-]+\.(js|css)$")]) -> FileResponse:
    path = STATIC_DIR / name
    if not path.is_file():
        raise NotFound(f"No asset {name}.", code="asset_not_found")
    return FileResponse(path, headers=PAGE_HEADERS)


@api.post(
    "/login",
    response_model=SessionRead,
    responses=problems(
        (401, "`invalid_credentials`: wrong user name or password"),
        (
            429,
            "`too_many_login_failures`: too many wrong passwords for this user name or from "
            "this client address lately; `Retry-After` says when to try again",
        ),
    ),
)
async def login(
    body: LoginRequest, request: Request, rt: RuntimeDep, settings: SettingsDep
) -> SessionRead:
    """Sign in as an operator; the bearer token is valid for one shift.

    After `OPERATOR_LOGIN_FAILURE_LIMIT` (5) wrong passwords for one user name, or
    `OPERATOR_LOGIN_CLIENT_FAILURE_LIMIT` (20) from one client address, within
    `OPERATOR_LOGIN_FAILURE_WINDOW` (15 min, from the first), that name or address is refused
    (429, before any password is checked) until the window ends. The client address is the
    connection's peer, or `X-Forwarded-For` when the peer is a proxy uvicorn trusts
    (`FORWARDED_ALLOW_IPS`).
    """
    passwords: service.Passwords = request.app.state.passwords
    client = request.client.host if request.client else "unknown"
    return await service.login(rt.kv, passwords, settings, body.username, body.password, client)


@api.get("/me", response_model=OperatorRead, responses=UNAUTHORIZED)
async def me(operator: CurrentOperator) -> OperatorRead:
    """Who is signed in, and with which role."""
    return operator


@api.post(
    "/stream-tickets", response_model=StreamTicketRead, status_code=201, responses=UNAUTHORIZED
)
async def stream_ticket(
    session: CurrentSession, rt: RuntimeDep, settings: SettingsDep
) -> StreamTicketRead:
    """A one-time ticket for the live stream, valid 30 s.

    Browsers' `EventSource` cannot send an `Authorization` header, so the page trades its
    token for a ticket and opens `GET /v1/stream?ticket=…` (server-sent events). The ticket
    opens one stream only; the stream ends when the session expires (`event: expired`).
    Events: `tail` (one event, `id` = its position; reconnects resume from `Last-Event-ID`)
    and `summary` (the dashboard, as `GET /v1/dashboard`, at most twice a second).
    """
    return await service.issue_stream_ticket(rt.kv, session, settings.stream_ticket_ttl)


@api.get("/stream", include_in_schema=False)
async def stream(
    session: StreamSession,
    request: Request,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
    resume: Annotated[str | None, Query(pattern=STREAM_ID, alias="last_event_id")] = None,
) -> StreamingResponse:
    """Server-sent events; see `POST /v1/stream-tickets`."""
    broadcaster: Broadcaster = request.app.state.broadcaster
    after = last_event_id or resume
    if after is not None and not repository.valid_stream_id(after):
        after = None  # not a position of ours: start from now
    subscription = broadcaster.subscribe()
    return StreamingResponse(
        broadcaster.stream(subscription, after, min(session.expires_at, time.time() + 86_400)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@api.get("/dashboard", response_model=DashboardRead, responses=UNAUTHORIZED)
async def dashboard(
    _: CurrentOperator, request: Request, rt: RuntimeDep, settings: SettingsDep
) -> DashboardRead:
    """Validations per minute per station, rejection reasons, gates, lots, today's revenue.

    Per-minute counts cover the last 30 minutes, rejection reasons the last 3 hours in
    10-minute buckets; "today" is the Hanoi calendar day (UTC+7).
    """
    network: OperatorNetwork = request.app.state.network
    return await service.dashboard(rt.kv, settings, network, time.time())


@api.get("/events", response_model=list[TailEntryRead], responses=UNAUTHORIZED)
async def events(
    _: CurrentOperator,
    rt: RuntimeDep,
    settings: SettingsDep,
    ticket: Annotated[
        str | None, Query(max_length=64, description="Ticket id, or its beginning")
    ] = None,
    gate: Annotated[str | None, Query(max_length=40, description="Gate id, exactly")] = None,
    plate: Annotated[
        str | None, Query(max_length=20, description="Part of a (masked) plate")
    ] = None,
    event_type: Annotated[
        str | None,
        Query(
            alias="type",
            max_length=100,
            pattern=r"^[a-z0-9._]+$",
            description="An event type, or a category: validation, trip, ticket, payment, "
            "parking, occupancy, alert",
        ),
    ] = None,
    before: Annotated[
        str | None, Query(pattern=STREAM_ID, description="Page: entries older than this")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[TailEntryRead]:
    """The live tail, newest first, filtered (recent events only: the tail keeps 10,000)."""
    wanted = TailFilter(ticket=ticket, gate=gate, plate=plate, type=event_type)
    return await service.search_events(
        rt.kv, wanted, limit=limit, before=before, scan_limit=settings.tail_scan_limit
    )


@api.get("/alerts", response_model=list[AlertRead], responses=UNAUTHORIZED)
async def alerts(
    _: CurrentOperator,
    rt: RuntimeDep,
    status: AlertStatus = AlertStatus.all,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AlertRead]:
    """Recent alerts, newest first."""
    return await service.list_alerts(rt.kv, status, limit)


@api.post(
    "/alerts/{alert_id}/ack",
    response_model=AlertRead,
    responses={
        **UNAUTHORIZED,
        **problems((403, "`admin_required`"), (404, "`alert_not_found`")),
    },
)
async def acknowledge(
    alert_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")],
    operator: AdminOperator,
    rt: RuntimeDep,
    settings: SettingsDep,
) -> AlertRead:
    """Acknowledge an alert (admins only). The first acknowledgement stands; repeating it
    answers the alert as it is. Published as `citypass.ops.alert.acknowledged.v1`."""
    return await service.acknowledge(rt.kv, rt.publisher, settings, alert_id, operator)


@api.get("/pipeline", response_model=PipelineRead, responses=UNAUTHORIZED)
async def pipeline_health(_: CurrentOperator, rt: RuntimeDep) -> PipelineRead:
    """Consumer lag per group and partition (records and seconds), outbox backlogs per service
    (validation's: its Redis streams), dead letters; refreshed every few seconds."""
    return await service.pipeline(rt.kv)
