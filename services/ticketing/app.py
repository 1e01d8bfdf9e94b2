"""Builds the ticketing service: riders, devices, fare products, purchases, credentials."""

from __future__ import annotations

from fastapi import FastAPI

from services.ticketing import endpoints, repository
from services.ticketing.settings import TicketingSettings
from shared.app import Runtime, create_app, supervised
from shared.outbox import OutboxRelay


def build_app(settings: TicketingSettings | None = None) -> FastAPI:
    settings = settings or TicketingSettings()
    runtime = Runtime("ticketing", settings, schema="ticketing")
    relay = OutboxRelay("ticketing", runtime.db, repository.outbox, runtime.publisher)
    runtime.workers.append(supervised("outbox-relay", relay.run))
    return create_app(
        runtime,
        [endpoints.router],
        title="CityPass ticketing",
        description="Fare products, riders, devices, purchases and signed dynamic-QR credentials.",
    )
