"""Hot routes, declared once: a latency-critical route served straight from the server, in
front of FastAPI (shared.app.HotRoutes), and described in the service's OpenAPI like any other.

From one declaration (`HotRouter.post`) come
- what the handler reads: the Idempotency-Key, path parameters and body, refused exactly as
  FastAPI refuses them (400 `idempotency_key_missing`, one 422 `validation_error` listing
  every field error, in FastAPI's order and with its locations);
- its OpenAPI operation: FastAPI describes it from an equivalent route (request body from the
  pydantic model, path parameters, the Idempotency-Key header, the security scheme, responses
  as problem+json, the handler's docstring), which never runs: the server answers first. It
  is in FastAPI's routing all the same, so that another method is a 405 and a trailing slash
  a redirect, as for every route.

A handler authenticates first (gates, lane devices and services each sign differently), then
asks its route for the parsed request: `route.command(body)` or `route.call(scope, body)`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Annotated, Any, Generic, NamedTuple, TypeVar

from fastapi import Body, Depends, Path, Security
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.responses import Response
from starlette.types import Scope

from shared.idempotency import (
    IdempotentRequest,
    hot_idempotency_key,
    hot_idempotent_request,
    idempotent_request,
)

B = TypeVar("B", bound=BaseModel | None)
C = TypeVar("C")
Responses = dict[int | str, dict[str, Any]]
# A FastAPI security scheme (HTTPBearer, APIKeyHeader…): documented, never run (handlers check).
Scheme = Callable[..., Awaitable[Any]]
# What the server calls: the request's scope and its whole body (within the route's limit).
Serve = Callable[[Scope, bytes], Awaitable[Response]]


class HotCall(NamedTuple, Generic[B]):
    """An idempotent request as FastAPI would hand it to an endpoint."""

    key: IdempotentRequest
    path: dict[str, Any]
    body: B


def body_errors(body: bytes, invalid: ValidationError) -> list[dict[str, Any]]:
    """`invalid` (the model's verdict on `body`) as FastAPI reports it: an empty body is a
    missing one, text that is not JSON a `json_invalid` at its position, and field errors
    under `body`."""
    if not body:
        return [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
    errors = invalid.errors(include_url=False, include_context=False)
    if any(error["type"] == "json_invalid" for error in errors):
        try:
            json.loads(body)
        except json.JSONDecodeError as not_json:
            return [
                {
                    "type": "json_invalid",
                    "loc": ("body", not_json.pos),
                    "msg": "JSON decode error",
                    "input": {},
                }
            ]
        except ValueError:  # not UTF-8: pydantic's own words, then
            pass
    return [{**error, "loc": ("body", *error["loc"])} for error in errors]


@dataclass(frozen=True, slots=True, eq=False)
class HotRoute(Generic[B]):
    """One hot operation: `handler(context, route, scope, body)` answers it (or raises a
    ProblemError, a RequestValidationError, or anything else: a logged 500). `path` may hold
    `{name}` segments, typed by `path_types`. `max_body_bytes` may set a tighter limit than
    the service's `max_body_bytes` setting. `openapi` holds the rest of the description, as
    FastAPI's route decorators take it (`response_model`, `status_code`, `responses`, `tags`)."""

    method: str
    path: str
    handler: Callable[[Any, HotRoute[B], Scope, bytes], Awaitable[Response]]
    body: type[B] | None = None
    path_types: Mapping[str, type] = field(default_factory=dict)
    idempotent: bool = False
    security: Scheme | None = None
    max_body_bytes: int | None = None
    openapi: Mapping[str, Any] = field(default_factory=dict)
    adapters: Mapping[str, TypeAdapter[Any]] = field(init=False)

    def __post_init__(self) -> None:
        adapters: dict[str, TypeAdapter[Any]] = {
            name: TypeAdapter(kind) for name, kind in self.path_types.items()
        }
        object.__setattr__(self, "adapters", adapters)

    def command(self, body: bytes) -> B:
        """The body as the declared model, or FastAPI's 422."""
        model: Any = self.body  # a model class; Any: mypy cannot see it from type[B]
        try:
            return model.model_validate_json(body)  # type: ignore[no-any-return]
        except ValidationError as invalid:
            raise RequestValidationError(body_errors(body, invalid)) from None

    def call(self, scope: Scope, body: bytes) -> HotCall[B]:
        """The Idempotency-Key (400 when missing), path parameters and body of an idempotent
        route; one 422 lists a key too long, then every path error, then every body error."""
        assert self.idempotent, f"{self.path} is not idempotent"
        errors: list[dict[str, Any]] = []
        key = hot_idempotency_key(scope, errors)
        values: dict[str, Any] = {}
        raw: dict[str, str] = scope.get("path_params", {})
        for name, adapter in self.adapters.items():
            try:
                values[name] = adapter.validate_python(raw[name])
            except ValidationError as invalid:
                errors += [
                    {**error, "loc": ("path", name)}
                    for error in invalid.errors(include_url=False, include_context=False)
                ]
        model: Any = self.body
        parsed: Any = None
        if model is not None:
            try:
                parsed = model.model_validate_json(body)
            except ValidationError as invalid:
                errors += body_errors(body, invalid)
        if errors:
            raise RequestValidationError(errors)
        return HotCall(hot_idempotent_request(scope, key, self.path, body), values, parsed)

    def documented(self) -> APIRoute:
        """The operation as FastAPI sees it: a route of this signature, whose endpoint never
        runs (shared.app.HotRoutes answers the request before FastAPI's routing sees it)."""
        parameters = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, Path()]
            )
            for name, kind in self.path_types.items()
        ]
        if self.body is not None:
            model: type = self.body
            annotation = Annotated[model, Body()]  # type: ignore[valid-type]
            parameters.append(
                inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=annotation)
            )

        async def operation() -> None:
            raise AssertionError(f"{self.method} {self.path} is served by shared.app.HotRoutes")

        operation.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        operation.__doc__ = self.handler.__doc__
        dependencies = [Security(self.security)] if self.security is not None else []
        if self.idempotent:
            dependencies.append(Depends(idempotent_request))
        return APIRoute(
            self.path,
            operation,
            methods=[self.method],
            name=self.handler.__name__,
            dependencies=dependencies,
            **self.openapi,
        )


@dataclass(frozen=True, slots=True)
class ServedRoute:
    """A hot route bound to its service's context: what shared.app.HotRoutes serves."""

    route: HotRoute[Any]
    serve: Serve


class HotRouter(Generic[C]):
    """The hot routes of a service, whose handlers take the same `context` (bound at start-up,
    `bind`), with what they share: tags, responses, security scheme, body limit."""

    def __init__(
        self,
        *,
        tags: Sequence[str | Enum] = (),
        responses: Responses | None = None,
        security: Scheme | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        self.tags = list(tags)
        self.responses = responses or {}
        self.security = security
        self.max_body_bytes = max_body_bytes
        self.routes: list[HotRoute[Any]] = []

    def post(
        self,
        path: str,
        *,
        body: type[B] | None = None,
        path_types: Mapping[str, type] | None = None,
        idempotent: bool = False,
        response_model: type[BaseModel],
        status_code: int = 200,
        responses: Responses | None = None,
        tags: Sequence[str | Enum] = (),
    ) -> Callable[[Callable[[C, HotRoute[B], Scope, bytes], Awaitable[Response]]], HotRoute[B]]:
        """Declare `POST path`: the decorated handler answers it."""

        def declare(
            handler: Callable[[C, HotRoute[B], Scope, bytes], Awaitable[Response]],
        ) -> HotRoute[B]:
            route = HotRoute(
                "POST",
                path,
                handler,
                body,
                path_types or {},
                idempotent,
                self.security,
                self.max_body_bytes,
                {
                    "response_model": response_model,
                    "status_code": status_code,
                    "responses": {**self.responses, **(responses or {})},
                    "tags": [*self.tags, *tags],
                },
            )
            self.routes.append(route)
            return route

        return declare

    def bind(self, context: C) -> list[ServedRoute]:
        """The routes to serve, each handler given `context` and its route."""
        return [ServedRoute(route, partial(route.handler, context, route)) for route in self.routes]
