"""The database functions of payments are the text of `services/payments/sql/*.sql`.

Each file is installed in a scratch schema and read back with `pg_get_functiondef`, beside the
function the migrations installed: signature, language, volatility and body must be the same
to the byte. Changing a function means changing its file and adding a migration that installs
the new text; this test fails until both agree.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shared.db import Database
from shared.idempotency import GUARD_FUNCTIONS

SQL = Path(__file__).resolve().parents[2] / "services" / "payments" / "sql"
SCHEMA = "payments"
SCRATCH = "payments_sql_check"
FILES = sorted(SQL.glob("*.sql"))
# The kit's idempotency guard (shared/idempotency.py) is installed by payments_0002; its text
# lives in the kit, not here.
KIT_FUNCTIONS = frozenset(re.findall(r"CREATE FUNCTION (\w+)", "".join(GUARD_FUNCTIONS)))

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


@pytest.fixture(scope="module")
async def definitions(ledger_db: Database) -> tuple[dict[str, str], dict[str, str]]:
    """The migrated functions, and the files' functions as the same server renders them."""
    pool = await ledger_db.raw_pool()
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute(f"CREATE SCHEMA {SCRATCH}")
            await connection.execute(f"SET LOCAL search_path = {SCRATCH}, {SCHEMA}, public")
            for path in FILES:
                await connection.execute(path.read_text())
            installed = await _definitions(connection, SCHEMA)
            filed = await _definitions(connection, SCRATCH)
        finally:
            await transaction.rollback()
    return installed, {
        name: definition.replace(f"FUNCTION {SCRATCH}.", f"FUNCTION {SCHEMA}.", 1)
        for name, definition in filed.items()
    }


class TestFunctionFiles:
    def test_every_function_of_payments_has_its_file(
        self, definitions: tuple[dict[str, str], dict[str, str]]
    ) -> None:
        installed, filed = definitions
        assert sorted(filed) == sorted(path.stem for path in FILES), "one function per file"
        assert sorted(set(installed) - KIT_FUNCTIONS) == sorted(filed)

    @pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
    def test_the_latest_migration_installs_the_file(
        self, definitions: tuple[dict[str, str], dict[str, str]], path: Path
    ) -> None:
        installed, filed = definitions
        assert installed[path.stem] == filed[path.stem], (
            f"{path.name} differs from what the migrations install: add a migration that"
            " installs the file's text"
        )
