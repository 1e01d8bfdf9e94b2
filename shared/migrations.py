"""Alembic per service schema: one environment here, each service keeps its own versions."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData

ROOT = Path(__file__).resolve().parent.parent
SERVICES_WITH_DATABASE = ("payments", "ticketing", "parking")


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
