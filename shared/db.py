"""Async SQLAlchemy 2 on asyncpg. The request or consumer boundary owns the transaction.

Hot paths that send one prepared statement per request (a PL/pgSQL function that guards its
Idempotency-Key, does the work and stores the answer) use `Database.fetchrow` instead: a plain
asyncpg pool in autocommit, so the statement and its commit are one round trip, and no
SQLAlchemy statement is built per request (asyncpg caches the prepared statement).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs; kept to this module
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

CONNECT_TIMEOUT_S = 5
# The plain pool's "PostgreSQL is away" errors (SQLAlchemy's are DBAPIError).
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)


# PostgreSQL is away: down, restarting, refusing connections, or our connection to it died.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)
DRIVER_MODULES = ("asyncpg", "sqlalchemy", "shared.db")


def is_unavailable(error: BaseException) -> bool:
    """Did `error` come from PostgreSQL being away, rather than from a bug or a bad statement?
    Looks through the chain (`__cause__`, `__context__`, SQLAlchemy's `orig`); a bare OSError
    counts when the driver raised it (a refused or timed-out connection attempt)."""
    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UNAVAILABLE_ERRORS):
            return True
        if isinstance(current, asyncpg.InterfaceError) and "connection is closed" in str(current):
            return True
        # A statement cut off by the server shutting down leaves asyncpg's protocol mid-way;
        # the next one on that connection says so (seen under POST /v1/charges at a restart).
        if isinstance(current, asyncpg.InternalClientError) and "cannot switch to state" in str(
            current
        ):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, PoolTimeout | DisconnectionError):
            return True
        if isinstance(current, OSError) and _raised_by_driver(current):
            return True
        pending += [current.__cause__, current.__context__, getattr(current, "orig", None)]
    return False


def _raised_by_driver(error: BaseException) -> bool:
    trace = error.__traceback__
    while trace is not None:
        if str(trace.tb_frame.f_globals.get("__name__", "")).startswith(DRIVER_MODULES):
            return True
        trace = trace.tb_next
    return False


def _discard_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout: a connection that PostgreSQL closed while it sat in the pool (a server
    restart) is replaced before it is used. A local check, no round trip (unlike pre-ping)."""
    if dbapi_connection._connection.is_closed():
        raise DisconnectionError("closed while pooled")


class UniqueViolation(Exception):
    """A `fetchrow` statement broke a unique constraint (nothing of it was committed)."""

    def __init__(self, constraint: str | None) -> None:
        super().__init__(f"unique constraint {constraint} violated")
        self.constraint = constraint


async def _keep_session_state(_: Any) -> None:
    """Returned connections hold no session state to reset (no LISTEN, no session locks):
    asyncpg's default reset would cost a round trip per statement."""


class Database:
    """One engine per service process, with its schema first on the search path."""

    def __init__(self, url: str, schema: str, *, pool_size: int = 10) -> None:
        self.schema = schema
        self.url = url
        self.pool_size = pool_size
        self.server_settings = {"search_path": f"{schema},public", "application_name": schema}
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            # No pre-ping round trip per transaction: a connection PostgreSQL closed is
            # replaced at checkout (_discard_closed), and connections are recycled hourly.
            pool_recycle=3600,
            connect_args={"server_settings": self.server_settings, "timeout": CONNECT_TIMEOUT_S},
        )
        event.listen(self.engine.sync_engine, "checkout", _discard_closed)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._raw: Any = None  # asyncpg.Pool
        self._raw_opening: asyncio.Lock | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Commit on success, roll back on any exception; services never commit themselves."""
        async with self.sessions() as session, session.begin():
            yield session

    async def raw_pool(self) -> Any:
        """The plain asyncpg pool (autocommit), opened on first use."""
        if self._raw is not None:
            return self._raw
        if self._raw_opening is None:
            self._raw_opening = asyncio.Lock()
        async with self._raw_opening:
            if self._raw is None:
                url = make_url(self.url)
                self._raw = await asyncpg.create_pool(
                    host=url.host,
                    port=url.port,
                    user=url.username,
                    password=url.password,
                    database=url.database,
                    min_size=1,
                    max_size=2 * self.pool_size,
                    server_settings=self.server_settings,
                    timeout=CONNECT_TIMEOUT_S,
                    reset=_keep_session_state,
                )
        return self._raw

    async def fetchrow(self, query: str, *args: object) -> Mapping[str, Any] | None:
        """One statement in its own transaction: it commits when it succeeds."""
        pool = self._raw or await self.raw_pool()
        try:
            row: Mapping[str, Any] | None = await pool.fetchrow(query, *args)
        except asyncpg.UniqueViolationError as error:
            raise UniqueViolation(error.constraint_name) from error
        return row

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        if self._raw is not None:
            raw, self._raw = self._raw, None
            await raw.close()
        await self.engine.dispose()
