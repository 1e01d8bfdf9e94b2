"""Builds the operator service: live operations dashboard, alerts and pipeline health."""

from __future__ import annotations

from fastapi import FastAPI

from services.operator import endpoints
from services.operator.settings import OperatorSettings
from shared.app import Runtime, create_app


def build_app(settings: OperatorSettings | None = None) -> FastAPI:
    settings = settings or OperatorSettings()
    runtime = Runtime("operator", settings, uses_redis=True)
    return create_app(
        runtime,
        [endpoints.router],
        title="CityPass operator console",
        description="Operator sign-in, live event streams, alerts and pipeline health.",
    )
