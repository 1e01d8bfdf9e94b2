"""The one Alembic environment; `config.attributes["service"]` says whose schema to migrate."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.migrations import service_metadata

config = context.config
service: str = config.attributes["service"]
metadata = service_metadata(service)


def run_in(connection: Connection) -> None:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{service}"'))
    connection.execute(text(f'SET search_path TO "{service}", public'))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=service,
        include_schemas=False,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "")
    async with engine.begin() as connection:
        await connection.run_sync(run_in)
    await engine.dispose()


asyncio.run(run_online())
