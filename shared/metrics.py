"""Prometheus metrics: HTTP by route template (never by ticket id or plate), events, outbox."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Fine buckets below 25 ms: the gate decision budget lives there.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

HTTP_REQUESTS = Counter(
    "citypass_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "citypass_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=LATENCY_BUCKETS,
)
CONSUMER_EVENTS = Counter(
    "citypass_consumer_events_total", "Events processed by consumers", ["group", "topic"]
)
CONSUMER_DEAD_LETTERS = Counter(
    "citypass_consumer_dead_letters_total",
    "Records parked on the dead-letter topic",
    ["group", "topic", "reason"],
)
OUTBOX_PUBLISHED = Counter(
    "citypass_outbox_published_total", "Outbox events relayed to Kafka", ["service"]
)
OUTBOX_BACKLOG = Gauge(
    "citypass_outbox_backlog_events", "Events waiting in the outbox", ["service"]
)
OUTBOX_OLDEST = Gauge(
    "citypass_outbox_oldest_age_seconds", "Age of the oldest unrelayed event", ["service"]
)


def route_template(scope: Scope) -> str:
    """For a request answered before routing (a 404, or refused by shared.app.RequestGuard).
    FastAPI keeps included routers as entries without a `path`: those are not looked into."""
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in getattr(router, "routes", ()):
        path = getattr(route, "path", None)
        if path is not None and route.matches(scope)[0] is Match.FULL:
            return str(path)
    return "<unmatched>"


class RouteMetrics:
    """Request count and latency per route template; keeps the labelled children, since
    `labels()` costs more than the observation."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, template: str, status: int, started: float) -> None:
        children = self._children.get((method, template, status))
        if children is None:
            children = self._children[(method, template, status)] = (
                HTTP_REQUESTS.labels(self.service, method, template, str(status)),
                HTTP_LATENCY.labels(self.service, method, template),
            )
        requests, latency = children
        requests.inc()
        latency.observe(time.perf_counter() - started)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware) so the hot path pays microseconds, not a task."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.metrics = RouteMetrics(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or route_template(scope)
            self.metrics.observe(scope["method"], template, status, started)


async def metrics_endpoint(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
