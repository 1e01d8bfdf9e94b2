"""HTTP client for service-to-service commands; carries the request id along."""

from __future__ import annotations

import httpx

from shared.logging import REQUEST_ID_HEADER, request_id_var


async def _add_request_id(request: httpx.Request) -> None:
    request_id = request_id_var.get()
    if request_id and REQUEST_ID_HEADER not in request.headers:
        request.headers[REQUEST_ID_HEADER] = request_id


def service_client(base_url: str, *, timeout_s: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
        event_hooks={"request": [_add_request_id]},
        # Below uvicorn's 5 s keep-alive, so we never reuse a connection the server is closing.
        limits=httpx.Limits(
            max_connections=100, max_keepalive_connections=50, keepalive_expiry=4.0
        ),
    )
