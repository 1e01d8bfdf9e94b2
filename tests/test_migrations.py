"""Every service's migrations go down step by step to the first revision and up again, on a
database of their own: what a downgrade rebuilds (a table an earlier revision created, the
functions an earlier revision installed from their files) must come back whole."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from citypass.servers import LocalServers
from shared.migrations import SERVICES_WITH_DATABASE, alembic_config

_FUNCTIONS_AND_TABLES = """
SELECT (SELECT array_agg(p.proname ORDER BY p.proname) FROM pg_proc p
         WHERE p.pronamespace = $1::regnamespace) AS functions,
       (SELECT array_agg(c.relname ORDER BY c.relname) FROM pg_class c
         WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r') AS tables
"""


def _database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="module")
def scratch(servers: LocalServers) -> Iterator[str]:
    async def run(statement: str) -> None:
        connection = await asyncpg.connect(servers.database_url.replace("+asyncpg", ""))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run("DROP DATABASE IF EXISTS migrations_round_trip"))
    asyncio.run(run("CREATE DATABASE migrations_round_trip"))
    yield _database(servers.database_url, "migrations_round_trip")
    asyncio.run(run("DROP DATABASE migrations_round_trip WITH (FORCE)"))


async def _shape(url: str, schema: str) -> tuple[list[str], list[str]]:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        row = await connection.fetchrow(_FUNCTIONS_AND_TABLES, schema)
    finally:
        await connection.close()
    assert row is not None
    return list(row["functions"] or []), list(row["tables"] or [])


@pytest.mark.parametrize("service", SERVICES_WITH_DATABASE)
async def test_down_to_the_first_revision_and_up_again(scratch: str, service: str) -> None:
    config = alembic_config(service, scratch)
    revisions = [r.revision for r in ScriptDirectory.from_config(config).walk_revisions()]
    await asyncio.to_thread(command.upgrade, config, "head")
    at_head = await _shape(scratch, service)
    for revision in revisions[1:]:  # newest first: down one step at a time
        await asyncio.to_thread(command.downgrade, config, revision)
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await _shape(scratch, service) == at_head
