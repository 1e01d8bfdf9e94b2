"""Rate limits in Redis, shared by every replica: at most `limit` hits per `period` per subject.

The kit's one mechanism for refusing guessers (receipt lookups, console logins…). A subject's
window opens at its first hit and closes `period` later (one key that expires); past the limit
the caller is told the seconds until its window closes (`hit` raises 429 problem+json with
`Retry-After`). The count and the expiry are set in one script, so concurrent hits on many
replicas count exactly. Subjects are hashed into the key: Redis holds no address or name.

To count failures only (wrong passwords), count every attempt *before* making it
(`count_attempt`, several limits in one round trip) and give it back when it succeeded
(`succeeded`): concurrent guesses cannot slip past the limit together, and a refused attempt
costs one round trip and nothing else.

When Redis cannot be reached `hit` refuses (503 `rate_limit_unavailable`): what it guards
is worth more than the few requests refused while Redis is away.

    cp:{<blake2b of subject>}:ratelimit:<name>   str  hits so far, TTL the rest of the window
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
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
# Uncount an attempt, unless its window has closed meanwhile (DECR would then leave a key with
# no expiry behind).
_GIVE_BACK = "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end"


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

    def key(self, subject: str) -> str:
        digest = hashlib.blake2b(subject.encode(), digest_size=12).hexdigest()
        return key("ratelimit", digest, self.name)

    @property
    def period_ms(self) -> int:
        return max(int(self.period.total_seconds() * 1000), 1)

    def wait_s(self, count: int, ttl_ms: int) -> int | None:
        """None while within the limit, else the seconds until the window closes."""
        return max(math.ceil(int(ttl_ms) / 1000), 1) if int(count) > self.limit else None

    async def hit(self, redis: Redis, subject: str) -> None:
        """Count one hit of `subject`; TooManyRequests once it is past the limit."""
        try:
            count, ttl_ms = await redis.eval(_HIT, 1, self.key(subject), self.period_ms)
        except RedisError as exc:
            raise ServiceUnavailable(
                "The rate limit cannot be checked right now; retry shortly.",
                code="rate_limit_unavailable",
            ) from exc
        retry_after_s = self.wait_s(count, ttl_ms)
        if retry_after_s is not None:
            raise TooManyRequests(
                f"At most {self.limit} of these per {_spoken(self.period)}; retry in"
                f" {retry_after_s} s.",
                retry_after_s=retry_after_s,
            )


Counted = tuple[RateLimit, str]  # a limit and the subject it counts for


async def count_attempt(redis: Redis, counted: Sequence[Counted]) -> int | None:
    """Count one attempt for each subject, in one round trip; None when it may go ahead, else
    the seconds until every subject past its limit may try again."""
    pipe = redis.pipeline(transaction=False)
    for limit, subject in counted:
        pipe.eval(_HIT, 1, limit.key(subject), limit.period_ms)
    replies = await pipe.execute()
    waits = [
        wait
        for (limit, _), (count, ttl_ms) in zip(counted, replies, strict=True)
        if (wait := limit.wait_s(count, ttl_ms)) is not None
    ]
    return max(waits) if waits else None


async def succeeded(
    redis: Redis, *, forget: Sequence[Counted] = (), give_back: Sequence[Counted] = ()
) -> None:
    """The attempt was right: `forget` drops the subjects' count (a user name whose password
    was given), `give_back` uncounts this one attempt only (an address other guessers share)."""
    pipe = redis.pipeline(transaction=False)
    for limit, subject in forget:
        pipe.delete(limit.key(subject))
    for limit, subject in give_back:
        pipe.eval(_GIVE_BACK, 1, limit.key(subject))
    await pipe.execute()


def _spoken(period: timedelta) -> str:
    seconds = int(period.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
