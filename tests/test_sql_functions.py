"""The database functions of every service are the text of its `sql/*.sql` files.

For each service with a `services/<service>/sql/` directory, each file (and each of the kit's
`shared/sql/` files, where the service installs the kit's guard) is installed in a scratch
schema and read back with `pg_get_functiondef`, beside the function the migrations installed:
signature, language, volatility and body must be the same to the byte, and every function of
the service's schema must have its file. Changing a function means changing its file and adding
a migration that installs it again (shared.migrations); this test fails until both agree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from citypass.servers import LocalServers
from shared.db import Database
from shared.idempotency import GUARD_FUNCTIONS
from shared.migrations import KIT, SERVICES_WITH_DATABASE, function_directory

SERVICES = [name for name in SERVICES_WITH_DATABASE if function_directory(name).is_dir()]
KIT_FILES = sorted(function_directory(KIT).glob("*.sql"))
SCRATCH = "sql_files_check"

_DEFINITIONS = """
SELECT p.proname, pg_get_functiondef(p.oid) AS definition
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = $1
 ORDER BY p.proname
"""


async def _definitions(connection: Any, schema: str) -> dict[str, str]:
    return {
        row["proname"]: row["definition"] for row in await connection.fetch(_DEFINITIONS, schema)
    }


def files_of(service: str, installed: dict[str, str]) -> list[Path]:
    """The service's files, and the kit's when the migrations installed its guard."""
    own = sorted(function_directory(service).glob("*.sql"))
    return own + (KIT_FILES if GUARD_FUNCTIONS[0] in installed else [])


@pytest.fixture(scope="module")
async def database(migrated: LocalServers) -> AsyncIterator[Database]:
    database = Database(migrated.database_url, "public", pool_size=1)
    yield database
    await database.close()


async def definitions(database: Database, service: str) -> tuple[dict[str, str], dict[str, str]]:
    """The migrated functions, and the files' functions as the same server renders them."""
    pool = await database.raw_pool()
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute(f"CREATE SCHEMA {SCRATCH}")
            await connection.execute(f"SET LOCAL search_path = {SCRATCH}, {service}, public")
            installed = await _definitions(connection, service)
            for path in files_of(service, installed):
                await connection.execute(path.read_text())
            filed = await _definitions(connection, SCRATCH)
        finally:
            await transaction.rollback()
    return installed, {
        name: definition.replace(f"FUNCTION {SCRATCH}.", f"FUNCTION {service}.", 1)
        for name, definition in filed.items()
    }


@pytest.mark.parametrize("service", SERVICES)
class TestFunctionFiles:
    async def test_every_function_has_its_file(self, database: Database, service: str) -> None:
        installed, filed = await definitions(database, service)
        files = files_of(service, installed)
        assert sorted(filed) == sorted(path.stem for path in files), "one function per file"
        assert sorted(installed) == sorted(filed)

    async def test_the_latest_migration_installs_each_file(
        self, database: Database, service: str
    ) -> None:
        installed, filed = await definitions(database, service)
        differing = [name for name in filed if installed.get(name) != filed[name]]
        assert not differing, (
            f"{differing} differ from what the migrations install: add a migration that"
            " installs the files' text (shared.migrations.install_functions)"
        )
