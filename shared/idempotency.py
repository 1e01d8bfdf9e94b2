"""`Idempotency-Key` (IETF draft-ietf-httpapi-idempotency-key-header), stored in PostgreSQL.

- missing key on a required operation → 400 `idempotency_key_missing`
- same key, different request → 422 `idempotency_key_reused`
- same key while the first request is still running → 409 `idempotency_key_in_flight`
- a replay → the first response, byte for byte (status, body, content type)

The first request takes a transaction-scoped advisory lock on the key, and stores its
response in the same transaction as its effect: both commit or neither does, so a crash
leaves no half-done key and a retry simply runs again. Only successful (2xx) responses are
stored; an error rolls the whole transaction back, effect and key alike.

Hot operations run the same protocol in one round trip: a PL/pgSQL function of the service
calls `idempotency_claim` (the lock and the lookup), does its work, renders its answer from a
`response_template` and calls `idempotency_store`; `Database.fetchrow` runs it in autocommit,
so the effect and the key commit together, and `guarded_answer` reads what it returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final, TypeVar

import orjson
from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
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
from starlette.types import Scope

from shared.db import Database
from shared.errors import ProblemError

M = TypeVar("M", bound=BaseModel)

KEY_RETENTION = timedelta(hours=24)
PURGE_INTERVAL_S = 3600.0
MAX_KEY_LENGTH = 255
JSON: Final = "application/json"
REPLAYED_HEADER: Final = {"Idempotent-Replayed": "true"}


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

    @property
    def lock_id(self) -> int:
        """The key's transaction-scoped advisory lock."""
        digest = hashlib.sha256(f"{self.scope}\0{self.key}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def arguments(self) -> tuple[int, str, str, str]:
        """The first four arguments of every one-round-trip function (`idempotency_claim`'s)."""
        return self.lock_id, self.scope, self.key, self.fingerprint


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
    route = request.scope.get("route")
    return _identified(
        idempotency_key,
        request.method,
        getattr(route, "path", request.url.path),
        request.url.path,
        request.headers.get("authorization", ""),
        await request.body(),
    )


def _identified(
    key: str, method: str, route_path: str, path: str, authorization: str, body: bytes
) -> IdempotentRequest:
    # Keys belong to their caller: the same key from another credential is another request.
    caller = hashlib.sha256(authorization.encode()).hexdigest()[:16]
    digest = hashlib.sha256(path.encode() + b"\0" + body)
    return IdempotentRequest(key, f"{method} {route_path} {caller}", digest.hexdigest())


def header(scope: Scope, name: bytes) -> str | None:
    """The first `name` header (lower case) of an ASGI request, as Starlette decodes it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def hot_idempotent_body(scope: Scope, body: bytes, model: type[M]) -> tuple[IdempotentRequest, M]:
    """For a hot route (shared.app.HotRoutes) of a fixed path: what FastAPI gives an endpoint
    taking `IdempotencyDep` and a `model` body, with the same errors in the same order
    (400 for a missing key; one 422 listing a key too long and every body error)."""
    key, _, parsed = hot_idempotent_path(scope, body, scope["path"], {}, model)
    assert parsed is not None
    return key, parsed


def hot_idempotent_path(
    scope: Scope,
    body: bytes,
    template: str,
    path_types: Mapping[str, TypeAdapter[Any]],
    model: type[M] | None = None,
) -> tuple[IdempotentRequest, dict[str, Any], M | None]:
    """The same for a route with path parameters (`template` as in `HotRoute.path`, each
    parameter's type in `path_types`) and an optional body: one 422 lists a key too long,
    then every path parameter error, then every body error."""
    key, path_values, errors = _hot_key_and_path(scope, path_types)
    parsed: M | None = None
    if model is not None:
        try:
            parsed = model.model_validate_json(body)
        except ValidationError as invalid:
            errors += [
                {**error, "loc": ("body", *error["loc"])}
                for error in invalid.errors(include_url=False, include_context=False)
            ]
    if errors:
        raise RequestValidationError(errors)
    path: str = scope["path"]
    authorization = header(scope, b"authorization") or ""
    request = _identified(key, scope["method"], template, path, authorization, body)
    return request, path_values, parsed


def _hot_key_and_path(
    scope: Scope, path_types: Mapping[str, TypeAdapter[Any]]
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    key = header(scope, b"idempotency-key")
    if key is not None and len(key) > MAX_KEY_LENGTH:
        errors.append(
            {
                "type": "string_too_long",
                "loc": ("header", "Idempotency-Key"),
                "msg": f"String should have at most {MAX_KEY_LENGTH} characters",
                "input": key,
            }
        )
    elif not key or not key.strip():
        raise IdempotencyKeyMissing("This operation requires an Idempotency-Key header.")
    path_values: dict[str, Any] = {}
    raw_values: dict[str, str] = scope.get("path_params", {})
    for name, adapter in path_types.items():
        try:
            path_values[name] = adapter.validate_python(raw_values[name])
        except ValidationError as invalid:
            errors += [
                {**error, "loc": ("path", name)}
                for error in invalid.errors(include_url=False, include_context=False)
            ]
    assert key is not None
    return key, path_values, errors


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
                media_type=JSON,
                body=body,
            )
        )
        return Response(body, status_code, media_type=JSON)


class Idempotency:
    def __init__(self, database: Database, table: Table) -> None:
        self.database = database
        self.table = table

    @asynccontextmanager
    async def call(self, request: IdempotentRequest) -> AsyncIterator[IdempotentCall]:
        """Open the request's transaction, guarded by its key; `call.replay` is set on a replay."""
        async with self.database.transaction() as session:
            locked = await session.scalar(
                text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": request.lock_id}
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
                    headers=REPLAYED_HEADER,
                )
            yield call

    async def purge_expired(self, retention: timedelta = KEY_RETENTION) -> int:
        async with self.database.transaction() as session:
            result = await session.execute(
                delete(self.table).where(self.table.c.created_at < func.now() - retention)
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def purge_forever(self) -> None:
        """The service's `idempotency-purge` worker: expired keys go once an hour."""
        while True:
            await self.purge_expired()
            await asyncio.sleep(PURGE_INTERVAL_S)


# One round trip ----------------------------------------------------------------------------------

# PL/pgSQL for a service's migration (run with its schema first on the search path). Changing it
# means a new migration that re-creates these functions.
GUARD_FUNCTIONS: Final = (
    """
    CREATE TYPE idempotent_outcome AS (
        outcome text,  -- created | replay | in_flight | reused | the operation's refusal code
        status_code integer,
        media_type text,
        body bytea,
        detail jsonb  -- what a refusal needs to explain itself
    )
    """,
    # The guard of `Idempotency.call`: NULL outcome when the key is free (and now locked).
    """
    CREATE FUNCTION idempotency_claim(
        p_lock bigint, p_scope text, p_key text, p_fingerprint text
    ) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        stored record;
        result idempotent_outcome;
    BEGIN
        IF NOT pg_try_advisory_xact_lock(p_lock) THEN
            result.outcome := 'in_flight';
            RETURN result;
        END IF;
        SELECT k.fingerprint, k.status_code, k.media_type, k.body INTO stored
          FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
        IF FOUND THEN
            IF stored.fingerprint <> p_fingerprint THEN
                result.outcome := 'reused';
            ELSE
                result := ROW('replay', stored.status_code, stored.media_type, stored.body,
                              NULL)::idempotent_outcome;
            END IF;
        END IF;
        RETURN result;
    END
    $$
    """,
    """
    CREATE FUNCTION idempotency_store(
        p_scope text, p_key text, p_fingerprint text, p_status integer, p_body bytea
    ) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, media_type, body)
        VALUES (p_scope, p_key, p_fingerprint, p_status, 'application/json', p_body);
        RETURN ROW('created', p_status, 'application/json', p_body, NULL)::idempotent_outcome;
    END
    $$
    """,
    # A timestamp as pydantic writes it in JSON, quoted: 2026-01-02T03:04:05.123456Z.
    """
    CREATE FUNCTION json_time(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
        SELECT CASE WHEN t IS NULL THEN 'null' ELSE
            '"' || to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
            || CASE WHEN to_char(t, 'US') = '000000' THEN '' ELSE to_char(t, '.US') END
            || 'Z"'
        END
    $$
    """,
)

_SLOT = f"slot-{secrets.token_hex(8)}-"  # never met in real data


def response_template(model: type[BaseModel], slots: tuple[str, ...], /, **values: Any) -> str:
    """The JSON of `model(**values)` for PostgreSQL's `format()`, with the fields named in
    `slots` left as `%1$s`, `%2$s`… for the database to fill in (a balance, a timestamp
    through `json_time`) in the statement that stores the answer."""
    for position, name in enumerate(slots, 1):
        values[name] = f"{_SLOT}{position}"
    # Slots hold text where the model wants a number or a time: skip the type warnings.
    rendered = model.model_construct(**values).model_dump_json(warnings=False)
    rendered = rendered.replace("%", "%%")
    for position in range(1, len(slots) + 1):
        rendered = rendered.replace(f'"{_SLOT}{position}"', f"%{position}$s")
    return rendered


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """The stored response of a key: the first answer, or its replay."""

    status_code: int
    media_type: str
    body: bytes
    replayed: bool

    def response(self) -> Response:
        headers = REPLAYED_HEADER if self.replayed else None
        return Response(self.body, self.status_code, headers, self.media_type)


def guarded_answer(outcome: Mapping[str, Any]) -> StoredAnswer | None:
    """Read an `idempotent_outcome`: the answer (first or replayed), a 409 or 422 for the key,
    or None when the operation refused by its own rules (`outcome["outcome"]` says which)."""
    match outcome["outcome"]:
        case "created" | "replay" as kind:
            return StoredAnswer(
                outcome["status_code"], outcome["media_type"], outcome["body"], kind == "replay"
            )
        case "in_flight":
            raise IdempotencyKeyInFlight(
                "A request with this Idempotency-Key is still being processed; retry later."
            )
        case "reused":
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used for a different request."
            )
    return None


async def claim(database: Database, request: IdempotentRequest) -> StoredAnswer | None:
    """Only the guard, for a request refused before it does anything: the stored answer of a
    replay, a 409 or 422, or None when the key is free (the refusal then goes out)."""
    outcome = await database.fetchrow(
        "SELECT * FROM idempotency_claim($1, $2, $3, $4)", *request.arguments()
    )
    assert outcome is not None
    return guarded_answer(outcome)


def refusal_detail(outcome: Mapping[str, Any]) -> dict[str, Any]:
    detail = outcome["detail"]
    return orjson.loads(detail) if detail else {}
