"""Builds the parking service: lots, tariffs, sessions, occupancy, receipts, audit."""

from __future__ import annotations

from fastapi import FastAPI

from services.parking import endpoints, repository
from services.parking.settings import ParkingSettings
from shared.app import Runtime, create_app, supervised
from shared.outbox import OutboxRelay


def build_app(settings: ParkingSettings | None = None) -> FastAPI:
    settings = settings or ParkingSettings()
    runtime = Runtime("parking", settings, schema="parking", uses_redis=True)
    relay = OutboxRelay("parking", runtime.db, repository.outbox, runtime.publisher)
    runtime.workers.append(supervised("outbox-relay", relay.run))
    return create_app(
        runtime,
        [endpoints.router],
        title="CityPass parking",
        description="Cashless parking: lots, dated tariffs, entry and exit, receipts, audit.",
    )
