"""Alembic per service schema: one environment here, each service keeps its own versions.

Database functions are not written in migrations. The current text of each one is a file,
`services/<service>/sql/<name>.sql` (the kit's own in `shared/sql/`), and a migration installs
it by name with `install_functions`, repeatable-migration style: whatever revision calls it,
the file's text of today is what gets installed. So:

- To change a function, edit its file and add a migration that calls
  `install_functions(service, name)` again (tests/test_sql_functions.py fails until the
  latest migration installs the file's text). A new signature replaces the old one (the old
  overload is dropped); a new return type needs a `DROP FUNCTION` before.
- To add one, add its file and install it in the new migration; to remove one, delete its
  file, take its name out of the migrations that install it, and drop it (`drop_functions`)
  in the new migration.
- A downgrade drops what its upgrade created; a migration that only reinstalls functions has
  nothing to undo (the text of an older revision is not kept): only head is the text of the
  files, and intermediate revisions are not meant to be run against.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, text

ROOT = Path(__file__).resolve().parent.parent
SERVICES_WITH_DATABASE = ("payments", "ticketing", "parking")
KIT = "shared"  # the home of the kit's functions, for `install_functions`


def alembic_config(service: str, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "shared" / "alembic"))
    config.set_main_option("path_separator", "os")
    config.set_main_option(
        "version_locations", str(ROOT / "services" / service / "migrations" / "versions")
    )
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["service"] = service
    return config


def migration(service: str, name: str) -> ModuleType:
    """Another migration of `service` as a module (Alembic loads them by path, not as a
    package): for a downgrade that must rebuild what an earlier revision created."""
    path = ROOT / "services" / service / "migrations" / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{service}_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def service_metadata(service: str) -> MetaData:
    metadata = importlib.import_module(f"services.{service}.repository").metadata
    assert isinstance(metadata, MetaData)
    return metadata


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, database_url), revision)


def upgrade_all(database_url: str) -> None:
    for service in SERVICES_WITH_DATABASE:
        upgrade(service, database_url)


async def upgrade_all_async(database_url: str) -> None:
    await asyncio.to_thread(upgrade_all, database_url)


def create_kit_tables() -> None:
    """Outbox, idempotency keys and processed events: the first migration of every service."""
    from alembic import op

    from shared.idempotency import idempotency_keys_table
    from shared.inbox import processed_events_table
    from shared.outbox import outbox_table

    metadata = MetaData()
    for table in (
        outbox_table(metadata),
        idempotency_keys_table(metadata),
        processed_events_table(metadata),
    ):
        table.create(op.get_bind())


def function_directory(home: str) -> Path:
    """Where the functions of `home` (a service, or KIT) have their files."""
    return ROOT / "shared" / "sql" if home == KIT else ROOT / "services" / home / "sql"


_OVERLOADS = text(
    "SELECT p.oid::regprocedure::text FROM pg_proc p"
    " WHERE p.proname = :name AND p.pronamespace = current_schema()::regnamespace"
)


def install_functions(home: str, *names: str) -> None:
    """Create or replace each function `name` of `home` with the text of its file; when the file
    gives it a new signature, the old overloads are dropped."""
    from alembic import op

    bind = op.get_bind()
    for name in names:
        before = set(bind.execute(_OVERLOADS, {"name": name}).scalars())
        op.execute((function_directory(home) / f"{name}.sql").read_text())
        if set(bind.execute(_OVERLOADS, {"name": name}).scalars()) - before:
            for stale in sorted(before):
                op.execute(f"DROP FUNCTION {stale}")


def drop_functions(*names: str) -> None:
    """Drop the functions `names` (every overload's name must be unique), if they exist."""
    from alembic import op

    for name in names:
        op.execute(f"DROP FUNCTION IF EXISTS {name}")


def install_idempotency_guard() -> None:
    """The kit's one-round-trip guard (shared.idempotency): its outcome type and functions."""
    from alembic import op

    from shared.idempotency import GUARD_FUNCTIONS, OUTCOME_TYPE

    op.execute(OUTCOME_TYPE)
    install_functions(KIT, *GUARD_FUNCTIONS)


def drop_idempotency_guard() -> None:
    from alembic import op

    from shared.idempotency import GUARD_FUNCTIONS

    drop_functions(*GUARD_FUNCTIONS)
    op.execute("DROP TYPE IF EXISTS idempotent_outcome")
