"""`python -m services.<name>`: serve one service with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import uvicorn

from shared.settings import ServiceSettings


def serve(service: str, settings: ServiceSettings) -> None:
    uvicorn.run(
        f"services.{service}.app:build_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
