"""The payments service as the other services call it: keep-alive HTTP/1.1 with the service
token, an `Idempotency-Key` on every money-moving call, and two outcomes besides an answer.

- `PaymentsUnavailable` (503 `payments_unavailable`): no answer, a timeout, a 5xx, an answer
  that is not JSON, 429, a 409 that says payments is still busy with this key
  (`in_progress`), or our token refused (a settings mistake, logged as an error). The same call
  may work later; every call here is safe to repeat.
- `PaymentsRefused`: any other 4xx; `status`, `code` (payments' stable code) and `body` say
  why. It will not work as asked.

Each service keeps the calls it makes (its own `services/<name>/payments.py`, or the worker
that charges fares) and builds them on `PaymentsClient.call`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from shared.errors import ProblemError, ServiceUnavailable
from shared.http import KeepAliveClient

logger = logging.getLogger("citypass.payments_client")

# The 409 that means "not yet" rather than "no": the first request with this key still runs.
IN_FLIGHT = "idempotency_key_in_flight"


class PaymentsUnavailable(ServiceUnavailable):
    """Payments did not answer in time, failed, or is busy with this key; retry later."""

    code, title = "payments_unavailable", "Payments unavailable"

    def __init__(self, detail: str, *, in_progress: bool = False, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.in_progress = in_progress


class PaymentsRefused(ProblemError):
    """Payments answered with a problem: `code` is its stable code, `body` the whole answer."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(detail, status=status, code=code, title="Payment refused")
        self.body = body

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"


class PaymentsClient:
    """One keep-alive connection pool to payments (shared.http.KeepAliveClient: a lane
    decision makes one call, and httpx spent more CPU per call, ~1 ms, than the rest of the
    decision's Python). The token and the other fixed headers are written once."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float, caller: str) -> None:
        self.caller = caller
        self.http = KeepAliveClient(
            base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"citypass-{caller}",
                "Accept": "application/json",
            },
            timeout_s=timeout_s,
        )

    async def close(self) -> None:
        await self.http.close()

    async def call(
        self,
        method: str,
        path: str,
        json: dict[str, Any] | None = None,
        *,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Payments' JSON answer to one call; `PaymentsUnavailable` or `PaymentsRefused`."""
        body = orjson.dumps(json) if json is not None else None
        request = self.http.request(
            method, path, body, {"Idempotency-Key": key} if key is not None else None
        )
        try:
            status, content = await self.http.exchange(request)
        except (OSError, TimeoutError) as error:  # ConnectionError is an OSError
            raise PaymentsUnavailable(
                f"The payments service did not answer ({method} {path}: {error!r}); retry later."
            ) from error
        try:
            answer = orjson.loads(content)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or status >= 500 or status == 429:
            raise PaymentsUnavailable(
                f"The payments service answered {status} to {method} {path}; retry later."
            )
        if status < 400:
            return answer
        code = str(answer.get("code", "unknown"))
        if status in (401, 403):
            logger.error(
                "payments refuses %s's service token (%s): check settings", self.caller, code
            )
            raise PaymentsUnavailable(f"The payments service refused us ({status}); retry later.")
        if status == 409 and code == IN_FLIGHT:
            raise PaymentsUnavailable(
                "Payments is still processing this payment; retry shortly.", in_progress=True
            )
        raise PaymentsRefused(status, code, str(answer.get("detail", "")), answer)
