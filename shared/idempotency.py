"""`Idempotency-Key` (IETF draft-ietf-httpapi-idempotency-key-header), stored in PostgreSQL.

- missing key on a required operation → 400 `idempotency_key_missing`
- same key, different request → 422 `idempotency_key_reused`
- same key while the first request is still running → 409 `idempotency_key_in_flight`
- a replay → the first response, byte for byte (status, body, content type)

The first request takes a transaction-scoped advisory lock on the key, and stores its
response in the same transaction as its effect: both commit or neither does, so a crash
leaves no half-done key and a retry simply runs again. Only successful (2xx) responses are
stored; an error rolls the whole transaction back, effect and key alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Request
from pydantic import BaseModel
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from shared.db import Database
from shared.errors import ProblemError

KEY_RETENTION = timedelta(hours=24)
MAX_KEY_LENGTH = 255


def idempotency_keys_table(metadata: MetaData) -> Table:
    return Table(
        "idempotency_keys",
        metadata,
        Column("scope", String(100), primary_key=True),
        Column("key", String(MAX_KEY_LENGTH), primary_key=True),
        Column("fingerprint", String(64), nullable=False),
        Column("status_code", Integer, nullable=False),
        Column("media_type", String(100), nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


class IdempotencyKeyMissing(ProblemError):
    status, code, title = 400, "idempotency_key_missing", "Idempotency-Key header required"


class IdempotencyKeyReused(ProblemError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency-Key reused"


class IdempotencyKeyInFlight(ProblemError):
    status, code, title = 409, "idempotency_key_in_flight", "Request with this key in progress"


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """What the dependency extracts: the key and a fingerprint of the exact request."""

    key: str
    scope: str
    fingerprint: str


async def idempotent_request(
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Unique per logical operation (e.g. a UUID); retries reuse it.",
            max_length=MAX_KEY_LENGTH,
        ),
    ] = None,
) -> IdempotentRequest:
    if not idempotency_key or not idempotency_key.strip():
        raise IdempotencyKeyMissing("This operation requires an Idempotency-Key header.")
    body = await request.body()
    route = request.scope.get("route")
    # Keys belong to their caller: the same key from another credential is another request.
    caller = hashlib.sha256(request.headers.get("authorization", "").encode()).hexdigest()[:16]
    scope = f"{request.method} {getattr(route, 'path', request.url.path)} {caller}"
    digest = hashlib.sha256()
    digest.update(request.url.path.encode() + b"\0" + body)
    return IdempotentRequest(idempotency_key, scope, digest.hexdigest())


IdempotencyDep = Annotated[IdempotentRequest, Depends(idempotent_request)]


class IdempotentCall:
    def __init__(self, session: AsyncSession, table: Table, request: IdempotentRequest) -> None:
        self.session = session
        self.table = table
        self.request = request
        self.replay: Response | None = None

    async def respond(self, status_code: int, payload: BaseModel | dict[str, Any]) -> Response:
        """Render the response once and store those exact bytes with the key."""
        if isinstance(payload, BaseModel):
            body = payload.model_dump_json().encode()
        else:
            body = orjson.dumps(payload)
        await self.session.execute(
            self.table.insert().values(
                scope=self.request.scope,
                key=self.request.key,
                fingerprint=self.request.fingerprint,
                status_code=status_code,
                media_type="application/json",
                body=body,
            )
        )
        return Response(body, status_code, media_type="application/json")


class Idempotency:
    def __init__(self, database: Database, table: Table) -> None:
        self.database = database
        self.table = table

    @asynccontextmanager
    async def call(self, request: IdempotentRequest) -> AsyncIterator[IdempotentCall]:
        """Open the request's transaction, guarded by its key; `call.replay` is set on a replay."""
        async with self.database.transaction() as session:
            lock_id = int.from_bytes(
                hashlib.sha256(f"{request.scope}\0{request.key}".encode()).digest()[:8],
                "big",
                signed=True,
            )
            locked = await session.scalar(
                text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": lock_id}
            )
            if not locked:
                raise IdempotencyKeyInFlight(
                    "A request with this Idempotency-Key is still being processed; retry later."
                )
            stored = (
                await session.execute(
                    select(self.table).where(
                        self.table.c.scope == request.scope, self.table.c.key == request.key
                    )
                )
            ).first()
            call = IdempotentCall(session, self.table, request)
            if stored is not None:
                if stored.fingerprint != request.fingerprint:
                    raise IdempotencyKeyReused(
                        "This Idempotency-Key was already used for a different request."
                    )
                call.replay = Response(
                    stored.body,
                    stored.status_code,
                    media_type=stored.media_type,
                    headers={"Idempotent-Replayed": "true"},
                )
            yield call

    async def purge_expired(self, retention: timedelta = KEY_RETENTION) -> int:
        async with self.database.transaction() as session:
            result = await session.execute(
                delete(self.table).where(self.table.c.created_at < func.now() - retention)
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
