"""Errors as application/problem+json (RFC 9457) with stable codes; never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:citypass:problem:"

logger = logging.getLogger("citypass.errors")


class ProblemError(Exception):
    """A domain error that knows its HTTP status and stable code."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        title: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if title is not None:
            self.title = title
        self.extra = extra


class NotFound(ProblemError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(ProblemError):
    status, code, title = 409, "conflict", "Conflict"


class Unprocessable(ProblemError):
    status, code, title = 422, "unprocessable", "Unprocessable request"


class Unauthorized(ProblemError):
    status, code, title = 401, "unauthorized", "Unauthorized"


class Forbidden(ProblemError):
    status, code, title = 403, "forbidden", "Forbidden"


class ServiceUnavailable(ProblemError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


class PayloadTooLarge(ProblemError):
    status, code, title = 413, "payload_too_large", "Payload too large"


DATABASE_RETRY_AFTER_S = 2  # a PostgreSQL restart takes a few seconds


def database_unavailable(instance: str) -> Response:
    """PostgreSQL is away: a 503 to retry (with the same Idempotency-Key), not a failure."""
    return problem_response(
        503,
        "database_unavailable",
        "Database unavailable",
        "The database is unavailable; retry shortly.",
        instance,
        retry_after_s=DATABASE_RETRY_AFTER_S,
    )


def problem_response(
    status: int, code: str, title: str, detail: str, instance: str | None = None, **extra: Any
) -> Response:
    body: dict[str, Any] = {
        **extra,  # first, so that extra members can never replace the standard ones
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    headers = {"Retry-After": str(extra.pop("retry_after_s", 1))} if status in (429, 503) else None
    return Response(orjson.dumps(body), status, headers, media_type=PROBLEM_MEDIA_TYPE)


STATUS_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_error", "Invalid request"),
    429: ("too_many_requests", "Too many requests"),
}


def problem_from(exc: ProblemError, instance: str) -> Response:
    return problem_response(exc.status, exc.code, exc.title, exc.detail, instance, **exc.extra)


def invalid_request(exc: RequestValidationError, instance: str) -> Response:
    """FastAPI's 422 as a problem listing every field error."""
    errors = [
        {
            "loc": list(map(str, e.get("loc", ()))),
            "msg": e.get("msg", ""),
            "type": e.get("type"),
        }
        for e in exc.errors()
    ]
    return problem_response(
        422,
        "validation_error",
        "Invalid request",
        "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors),
        instance,
        errors=errors,
    )


def internal_error(method: str, path: str) -> Response:
    """Call inside `except`: logs the exception, answers without revealing it."""
    logger.exception("unhandled error on %s %s", method, path)
    return problem_response(
        500, "internal_error", "Internal error", "The server failed; it has been logged."
    )


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_from(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return invalid_request(exc, request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code, title = STATUS_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        return problem_response(exc.status_code, code, title, detail, request.url.path)

    async def on_unexpected(request: Request, _exc: Exception) -> Response:
        return internal_error(request.method, request.url.path)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; `code` is stable and meant for programs.",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string", "example": "urn:citypass:problem:not_found"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}
PROBLEM_CONTENT = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
Responses = dict[int | str, dict[str, Any]]


def problems(*described: tuple[int, str]) -> Responses:
    """A route's `responses=` for its problem+json answers: `problems((404, "`x_not_found`"))`."""
    return {status: {"description": text, "content": PROBLEM_CONTENT} for status, text in described}


def install_problem_openapi(app: FastAPI) -> None:
    """Document every error as problem+json, including FastAPI's own 422, and the
    Idempotency-Key header as required wherever a route takes it."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = PROBLEM_SCHEMA
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                for parameter in operation.get("parameters", ()):
                    # Optional in the signature so that its absence is a 400
                    # `idempotency_key_missing`, not a 422; required all the same.
                    if (parameter["in"], parameter["name"]) == ("header", "Idempotency-Key"):
                        parameter["required"] = True
                responses = operation.setdefault("responses", {})
                for status in list(responses):
                    if status.startswith(("4", "5")):
                        responses[status]["content"] = PROBLEM_CONTENT
                responses.setdefault(
                    "4XX",
                    {"description": "A problem with a stable `code`", "content": PROBLEM_CONTENT},
                )
                responses.setdefault(
                    "5XX",
                    {"description": "Server or dependency failure", "content": PROBLEM_CONTENT},
                )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
