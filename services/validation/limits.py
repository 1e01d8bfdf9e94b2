"""Request bodies have a size limit: a gate's answer must not wait behind someone's upload."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import PayloadTooLarge, problem_response


class BodyLimit:
    """Pure ASGI: refuses a declared Content-Length over `limit` before reading anything, and
    stops a chunked body once it passes `limit` (the route answers the 413 problem)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = problem_response(
                413,
                "payload_too_large",
                "Payload too large",
                f"Bodies are limited to {self.limit} bytes.",
                scope["path"],
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(f"Bodies are limited to {self.limit} bytes.")
            return message

        await self.app(scope, limited, send)
