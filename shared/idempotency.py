"""`Idempotency-Key` (IETF draft-ietf-httpapi-idempotency-key-header), stored in PostgreSQL.

- missing key on a required operation → 400 `idempotency_key_missing`
- same key, different request → 422 `idempotency_key_reused`
- same key while the first request is still running → 409 `idempotency_key_in_flight`
- a replay → the first response, byte for byte (status, body, content type)

The first request takes a transaction-scoped advisory lock on the key, and stores its
response in the same transaction as its effect: both commit or neither does, so a crash
leaves no half-done key and a retry simply runs again. Only successful (2xx) responses are
stored; an error rolls the whole transaction back, effect and key alike.

One protocol, in the database (shared/sql/, installed in a service's schema by
shared.migrations.install_idempotency_guard): `idempotency_claim` takes the lock and looks the
key up, `idempotency_store` stores the answer; both return an `idempotent_outcome`
{outcome, status_code, media_type, body, detail}, and `guarded_answer` is its one reader.
`Idempotency.call` runs claim and store around the caller's work in one transaction; a hot
operation's PL/pgSQL function calls them itself, does its work, renders its answer from a
`response_template`, and `Database.fetchrow` runs it in autocommit, so the effect and the key
commit together in one round trip.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final

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
    TextClause,
    delete,
    func,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.types import Scope

from shared.db import Database
from shared.errors import ProblemError

KEY_RETENTION = timedelta(hours=24)
PURGE_INTERVAL_S = 3600.0
MAX_KEY_LENGTH = 255
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


def hot_idempotency_key(scope: Scope, errors: list[dict[str, Any]]) -> str:
    """A hot route's Idempotency-Key (shared.hot), read as `IdempotencyDep` reads it: 400 when
    missing; a key too long is added to `errors`, the first of the route's one 422."""
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
    assert key is not None
    return key


def hot_idempotent_request(scope: Scope, key: str, template: str, body: bytes) -> IdempotentRequest:
    """What `IdempotencyDep` gives a route of path `template` (`{name}` segments as FastAPI's)."""
    authorization = header(scope, b"authorization") or ""
    return _identified(key, scope["method"], template, scope["path"], authorization, body)


IdempotencyDep = Annotated[IdempotentRequest, Depends(idempotent_request)]


class IdempotentCall:
    def __init__(self, session: AsyncSession, request: IdempotentRequest) -> None:
        self.session = session
        self.request = request
        self.replay: Response | None = None

    async def respond(self, status_code: int, payload: BaseModel | dict[str, Any]) -> Response:
        """Render the response once and store those exact bytes with the key
        (`idempotency_store`, in the transaction of the effect)."""
        if isinstance(payload, BaseModel):
            body = payload.model_dump_json().encode()
        else:
            body = orjson.dumps(payload)
        answer = await _guarded(
            self.session,
            _STORE,
            {
                "scope": self.request.scope,
                "key": self.request.key,
                "fingerprint": self.request.fingerprint,
                "status": status_code,
                "body": body,
            },
        )
        assert answer is not None
        return answer.response()


_CLAIM = text("SELECT * FROM idempotency_claim(:lock, :scope, :key, :fingerprint)")
_STORE = text("SELECT * FROM idempotency_store(:scope, :key, :fingerprint, :status, :body)")


async def _guarded(
    session: AsyncSession, statement: TextClause, parameters: dict[str, Any]
) -> StoredAnswer | None:
    """Run the guard's claim or store in the session's transaction and read its outcome."""
    return guarded_answer((await session.execute(statement, parameters)).one()._asdict())


class Idempotency:
    def __init__(self, database: Database, table: Table) -> None:
        self.database = database
        self.table = table

    @asynccontextmanager
    async def call(self, request: IdempotentRequest) -> AsyncIterator[IdempotentCall]:
        """Open the request's transaction, guarded by its key (`idempotency_claim`, read by
        `guarded_answer` as the one-round-trip functions are); `call.replay` is set on a
        replay."""
        async with self.database.transaction() as session:
            lock, scope, key, fingerprint = request.arguments()
            parameters = {"lock": lock, "scope": scope, "key": key, "fingerprint": fingerprint}
            answer = await _guarded(session, _CLAIM, parameters)
            call = IdempotentCall(session, request)
            if answer is not None:
                call.replay = answer.response()
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

# The guard's functions, installed in a service's schema by a migration through
# shared.migrations.install_idempotency_guard; their text is in shared/sql/.
GUARD_FUNCTIONS: Final = ("idempotency_claim", "idempotency_store", "json_time")

# What every guarded write returns, and `guarded_answer` reads.
OUTCOME_TYPE: Final = """
    CREATE TYPE idempotent_outcome AS (
        outcome text,  -- created | replay | in_flight | reused | the operation's refusal code
        status_code integer,
        media_type text,
        body bytea,
        detail jsonb  -- what a refusal needs to explain itself
    )
"""

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
