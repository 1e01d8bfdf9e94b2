"""Builds every service the same way: logging, request ids, problem+json, metrics, health,
dependency checks at start-up, and the service's background workers (outbox relay, consumers).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import asyncpg  # type: ignore[import-untyped]
import uuid_utils
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import redis as redis_kit
from shared.db import Database, is_unavailable
from shared.errors import (
    PayloadTooLarge,
    ProblemError,
    database_unavailable,
    install_problem_handlers,
    install_problem_openapi,
    internal_error,
    invalid_request,
    problem_from,
)
from shared.health import (
    DEPENDENCY_ERRORS,
    Check,
    describe_failure,
    healthz,
    raise_if_cancelled,
    readyz_endpoint,
    run_checks,
)
from shared.hot import ServedRoute
from shared.kafka import Publisher
from shared.logging import REQUEST_ID_HEADER, configure_logging, request_id_var
from shared.metrics import MetricsMiddleware, RouteMetrics, metrics_endpoint
from shared.settings import ServiceSettings

logger = logging.getLogger("citypass.app")

Worker = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class Runtime:
    """The connections and workers of one service process."""

    name: str
    settings: ServiceSettings
    schema: str | None = None  # PostgreSQL schema, for services that own a database
    uses_redis: bool = False
    database: Database | None = None
    redis: Redis | None = None
    publisher: Publisher = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        settings = self.settings
        self.publisher = Publisher(
            settings.kafka_bootstrap_servers,
            send_timeout_s=settings.kafka_send_timeout_s,
            idempotent=settings.kafka_idempotent_producer,
        )
        if self.schema is not None:
            self.database = Database(settings.database_url, self.schema)
            self.checks["postgres"] = self.database.ping
        if self.uses_redis:
            self.redis = redis_kit.connect(settings.redis_url)
            redis = self.redis

            async def ping_redis() -> None:
                await redis.ping()

            self.checks["redis"] = ping_redis
        self.checks["kafka"] = self.publisher.check

    @property
    def db(self) -> Database:
        assert self.database is not None, f"{self.name} has no database"
        return self.database

    @property
    def kv(self) -> Redis:
        assert self.redis is not None, f"{self.name} has no Redis"
        return self.redis

    async def close(self) -> None:
        for stop in self.on_stop:
            await stop()
        await self.publisher.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.database is not None:
            await self.database.close()


async def current_runtime(request: Request) -> Runtime:  # async: a sync one costs a thread hop
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(current_runtime)]


def state(name: str) -> Any:
    """A dependency on what `build_app` keeps in `app.state`, typed where it is declared:
    `SettingsDep = Annotated[PaymentsSettings, state("settings")]`."""

    async def read(request: Request) -> Any:  # async: a sync one costs a thread hop
        return getattr(request.app.state, name)

    read.__name__ = f"state_{name}"
    return Depends(read)


def request_id(scope: Scope) -> str:
    """The caller's X-Request-ID when it is sane, else a new one."""
    incoming = next(
        (v for k, v in scope["headers"] if k == b"x-request-id" and 0 < len(v) <= 128), None
    )
    return incoming.decode("latin-1") if incoming else str(uuid_utils.uuid7())


class RequestIdMiddleware:
    """Takes X-Request-ID from the caller (or makes one) and echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        current = request_id(scope)
        token = request_id_var.set(current)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"].append((REQUEST_ID_HEADER_BYTES, current.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            request_id_var.reset(token)


REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.lower().encode()


class _Disconnected(Exception):
    pass


# Request bodies: one limit per service (`ServiceSettings.max_body_bytes`), checked by these two
# before anything parses the body, for FastAPI's routes (RequestGuard) and hot routes alike.


def refuse_declared_oversize(scope: Scope, limit: int) -> None:
    """A declared Content-Length over `limit` is refused before a byte of the body is read."""
    declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Bodies are limited to {limit} bytes.")


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body; a chunked one is refused as soon as it passes `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Bodies are limited to {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


NUL_IN_URL = b"%00"


def refuse_nul_in_url(scope: Scope) -> None:
    """The URL half of shared.fields.Text: a path or query carrying NUL (`%00`), which no text
    field accepts and PostgreSQL cannot store, is refused before any route sees it."""
    if NUL_IN_URL in scope.get("raw_path", b"") or NUL_IN_URL in scope.get("query_string", b""):
        raise RequestValidationError(
            [{"type": "string_nul", "loc": ("url",), "msg": "NUL (%00) is not accepted"}]
        )


class RequestGuard:
    """Pure ASGI, in front of FastAPI's routing: refuses an oversized body (413) before it is
    read or parsed, whether its length is declared or it comes chunked, and a NUL in the URL
    (422). Inside the request-id and metrics middlewares, so refusals carry both."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunked = any(k == b"transfer-encoding" for k, _ in scope["headers"])
        try:
            refuse_nul_in_url(scope)
            refuse_declared_oversize(scope, self.limit)
            body = await read_body(receive, self.limit) if chunked else None
        except ProblemError as exc:
            await problem_from(exc, scope["path"])(scope, receive, send)
            return
        except RequestValidationError as exc:
            await invalid_request(exc, scope["path"])(scope, receive, send)
            return
        except _Disconnected:
            return
        if body is None:  # the server holds a declared body to its Content-Length
            await self.app(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def failure_response(method: str, path: str, error: Exception) -> Response:
    """An exception no route handled: 503 `database_unavailable` when PostgreSQL is away
    (retry later, with the same Idempotency-Key), else a logged 500."""
    if is_unavailable(error):
        logger.warning("%s %s: the database is unavailable: %s", method, path, error)
        return database_unavailable(path)
    return internal_error(method, path)


async def on_failure(request: Request, error: Exception) -> Response:
    return failure_response(request.method, request.url.path, error)


# Handled inside the middleware chain (not by Starlette's outermost catch-all), so the answer
# carries its request id and is counted. Other exceptions go to the catch-all, same answer.
DRIVER_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class HotRoutes:
    """Serves the hot routes (shared.hot) straight from the server, in front of FastAPI.

    Routing, the middleware chain, exception middlewares and request handling cost a gate
    decision about as much CPU as the decision itself (docs/benchmarks.md); these routes get
    what the chain would give them (request id, metrics, body limit, problem answers) inline.
    Everything else stays with FastAPI, which also describes these routes and answers what
    they do not (another method: 405; a trailing slash: a redirect) (`HotRoute.documented`).
    """

    def __init__(
        self, app: ASGIApp, service: str, served: Sequence[ServedRoute], max_body_bytes: int
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.routes = {(s.route.method, s.route.path): s for s in served if "{" not in s.route.path}
        self.templated = [
            (s.route.method, re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", s.route.path)), s)
            for s in served
            if "{" in s.route.path
        ]
        self.metrics = RouteMetrics(service)

    def match(self, scope: Scope) -> ServedRoute | None:
        method, path = scope.get("method", ""), scope.get("path", "")
        served = self.routes.get((method, path))
        if served is None and self.templated:
            for route_method, pattern, candidate in self.templated:
                if route_method == method and (found := pattern.fullmatch(path)):
                    scope["path_params"] = found.groupdict()
                    return candidate
        return served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        served = self.match(scope)
        if served is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        current = request_id(scope)
        token = request_id_var.set(current)
        route = served.route
        limit = min(route.max_body_bytes or self.max_body_bytes, self.max_body_bytes)
        try:
            refuse_declared_oversize(scope, limit)
            response = await served.serve(scope, await read_body(receive, limit))
        except ProblemError as exc:
            response = problem_from(exc, scope["path"])
        except RequestValidationError as exc:
            response = invalid_request(exc, scope["path"])
        except _Disconnected:
            return
        except Exception as exc:
            response = failure_response(route.method, route.path, exc)
        finally:
            request_id_var.reset(token)
        response.raw_headers.append((REQUEST_ID_HEADER_BYTES, current.encode()))
        await response(scope, receive, send)
        self.metrics.observe(route.method, route.path, response.status_code, started)


class ServiceApp(FastAPI):
    """FastAPI with optional hot routes in front of its whole middleware stack."""

    hot_routes: Sequence[ServedRoute] = ()

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        runtime: Runtime = self.state.runtime
        if not self.hot_routes:
            return stack
        return HotRoutes(stack, runtime.name, self.hot_routes, runtime.settings.max_body_bytes)


def create_app(
    runtime: Runtime,
    routers: Sequence[APIRouter],
    *,
    title: str,
    description: str,
    on_start: Sequence[Callable[[], Awaitable[None]]] = (),
    hot_routes: Sequence[ServedRoute] = (),
) -> FastAPI:
    configure_logging(runtime.name, runtime.settings.log_level)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        results = await run_checks(runtime.checks, runtime.settings.dependency_timeout_s)
        for dependency, result in results.items():
            if result != "ok":
                logger.error(
                    "%s: %s is %s — /readyz will answer 503 until it recovers",
                    runtime.name,
                    dependency,
                    result,
                )
        for hook in on_start:
            try:
                await hook()
            except Exception as exc:
                logger.error("%s: start-up step failed: %s", runtime.name, describe_failure(exc))
        # What start-up allocated lives as long as the process: out of the cyclic collector's
        # sight, its full passes stop pausing requests (validation: ~90 ms, a lane decision
        # ~70 ms with ~130k start-up objects, measured before this moved into the kit).
        gc.freeze()
        tasks = [
            asyncio.create_task(worker(), name=worker.__qualname__) for worker in runtime.workers
        ]
        logger.info("%s started", runtime.name, extra={"port": runtime.settings.port})
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                stuck = (await asyncio.wait(tasks, timeout=5))[1]
                for task in stuck:  # it swallowed its cancellation: say which, or it leaks
                    logger.error("%s: worker %s did not stop", runtime.name, task.get_name())
            await runtime.close()

    app = ServiceApp(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        # Metrics are Prometheus and logs our own: FastAPI's OpenTelemetry would only cost CPU.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.runtime = runtime
    app.hot_routes = hot_routes
    install_problem_handlers(app)
    handled: tuple[type[Exception], ...] = (Exception, *DRIVER_ERRORS)
    for error in handled:
        app.add_exception_handler(error, on_failure)
    install_problem_openapi(app)
    app.router.routes += [served.route.documented() for served in hot_routes]
    for router in routers:
        app.include_router(router)
    app.add_route("/healthz", healthz, include_in_schema=False)
    app.add_route(
        "/readyz",
        readyz_endpoint(runtime.checks, runtime.settings.dependency_timeout_s),
        include_in_schema=False,
    )
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    app.add_middleware(RequestGuard, limit=runtime.settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, service=runtime.name)
    app.add_middleware(RequestIdMiddleware)
    return app


def supervised(name: str, worker: Worker) -> Worker:
    """Restart a background worker that died, so one bug does not silently stop a pipeline."""

    async def run() -> None:
        while True:
            try:
                await worker()
                return
            except asyncio.CancelledError:
                raise
            except DEPENDENCY_ERRORS as exc:
                raise_if_cancelled()
                logger.warning("worker %s waits for a dependency: %s", name, describe_failure(exc))
                await asyncio.sleep(1)
            except Exception:
                raise_if_cancelled()  # a library turned the cancellation into its own error
                logger.exception("worker %s crashed; restarting in 1 s", name)
                await asyncio.sleep(1)

    run.__qualname__ = name
    return run
