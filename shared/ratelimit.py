"""Rate limits in Redis, shared by every replica: at most `limit` hits per `period` per subject.

A subject's window opens at its first hit and closes `period` later (one key that expires);
past the limit the caller gets 429 problem+json with `Retry-After`, the seconds until its
window closes. The count and the expiry are set in one script, so concurrent hits on many
replicas count exactly. Subjects are hashed into the key: Redis holds no address or name.

When Redis cannot be reached the limit refuses (503 `rate_limit_unavailable`): what it guards
is worth more than the few requests refused while Redis is away.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import timedelta

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection

from shared.errors import ProblemError, ServiceUnavailable
from shared.redis import key

_HIT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class TooManyRequests(ProblemError):
    status, code, title = 429, "too_many_requests", "Too many requests"


def client_address(connection: HTTPConnection) -> str:
    """The caller's address as the server sees it: behind a proxy, the one uvicorn takes from
    `X-Forwarded-For` when the proxy is trusted (`FORWARDED_ALLOW_IPS`, default
    `127.0.0.1,::1`)."""
    return connection.client.host if connection.client and connection.client.host else "unknown"


@dataclass(frozen=True, slots=True)
class RateLimit:
    name: str  # one budget per name: `receipt-lookup`…
    limit: int
    period: timedelta

    def _key(self, subject: str) -> str:
        digest = hashlib.blake2b(subject.encode(), digest_size=12).hexdigest()
        return key("ratelimit", digest, self.name)

    async def hit(self, redis: Redis, subject: str) -> None:
        """Count one hit of `subject`; TooManyRequests once it is past the limit."""
        period_ms = max(int(self.period.total_seconds() * 1000), 1)
        try:
            count, ttl_ms = await redis.eval(_HIT, 1, self._key(subject), period_ms)
        except RedisError as exc:
            raise ServiceUnavailable(
                "The rate limit cannot be checked right now; retry shortly.",
                code="rate_limit_unavailable",
            ) from exc
        if int(count) > self.limit:
            retry_after_s = max(math.ceil(int(ttl_ms) / 1000), 1)
            raise TooManyRequests(
                f"At most {self.limit} of these per {_spoken(self.period)}; retry in"
                f" {retry_after_s} s.",
                retry_after_s=retry_after_s,
            )


def _spoken(period: timedelta) -> str:
    seconds = int(period.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
