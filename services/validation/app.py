"""Builds the validation service: the gate decision hot path (Redis and Kafka, no database)."""

from __future__ import annotations

from fastapi import FastAPI

from services.validation import endpoints
from services.validation.settings import ValidationSettings
from shared.app import Runtime, create_app


def build_app(settings: ValidationSettings | None = None) -> FastAPI:
    settings = settings or ValidationSettings()
    runtime = Runtime("validation", settings, uses_redis=True)
    return create_app(
        runtime,
        [endpoints.router],
        title="CityPass validation",
        description="Metro gates and bus validators: network model, gates and QR decisions.",
    )
