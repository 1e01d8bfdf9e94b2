"""`/healthz` (the process is alive) and `/readyz` (each dependency answers, with reasons)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import Response

from shared.errors import problem_response

Check = Callable[[], Awaitable[None]]
# A store or broker that is down is an operational state, not a bug: one line, no traceback.
DEPENDENCY_ERRORS = (OSError, TimeoutError, KafkaError, DBAPIError, RedisError)


def raise_if_cancelled() -> None:
    """For loops that catch library errors: some libraries turn a cancellation into their own
    error (or swallow it), which would keep a stopped service's background loop running."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer before the timeout"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


async def run_checks(checks: Mapping[str, Check], timeout_s: float) -> dict[str, str]:
    async def one(check: Check) -> str:
        try:
            await asyncio.wait_for(check(), timeout_s)
        except Exception as exc:
            return f"failing: {describe_failure(exc)}"
        return "ok"

    results = await asyncio.gather(*(one(check) for check in checks.values()))
    return dict(zip(checks, results, strict=True))


async def healthz(_: Request) -> Response:
    return Response(b'{"status":"alive"}', media_type="application/json")


def readyz_endpoint(
    checks: Mapping[str, Check], timeout_s: float
) -> Callable[[Request], Awaitable[Response]]:
    async def readyz(_: Request) -> Response:
        results = await run_checks(checks, timeout_s)
        failing = {name: r for name, r in results.items() if r != "ok"}
        if failing:
            detail = "; ".join(f"{name} {reason}" for name, reason in failing.items())
            return problem_response(503, "not_ready", "Not ready", detail, checks=results)
        return Response(
            orjson.dumps({"status": "ready", "checks": results}), media_type="application/json"
        )

    return readyz
