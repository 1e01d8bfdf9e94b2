"""Counting failures per subject in Redis, to refuse guessers before they cost anything.

A `FailureCounter` counts one kind of failed attempt (wrong passwords, unknown receipts…) per
subject (a user name, a client address) in a fixed window that the first attempt opens, as
ticketing's rider logins do in PostgreSQL: past `limit` failures the subject is refused until
the window closes. An attempt is counted *before* it is made (`count_attempt`) and given back
when it succeeds (`succeeded`), so that concurrent guesses cannot slip past the limit
together; a refused attempt costs one Redis round trip and nothing else.

    cp:{throttle:<name>:<subject>}:failures    str  attempts so far, TTL the rest of the window

Each key is its own hash tag: subjects spread over a Redis Cluster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from redis.asyncio import Redis

from shared.redis import key


@dataclass(frozen=True, slots=True)
class FailureCounter:
    name: str  # what is counted, per what: "operator-login-user"
    limit: int  # failures allowed within a window
    window: timedelta

    def key(self, subject: str) -> str:
        return key("failures", f"throttle:{self.name}:{subject}")


Counted = tuple[FailureCounter, str]  # a counter and the subject it counts for

# Uncount an attempt, unless its window has closed meanwhile (DECR would then leave a key with
# no expiry behind).
_GIVE_BACK = "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end"


async def count_attempt(redis: Redis, counted: Sequence[Counted]) -> int | None:
    """Count one attempt for each subject; None when it may go ahead, else the seconds until
    every subject that used up its failures may try again."""
    pipe = redis.pipeline(transaction=False)
    for counter, subject in counted:
        pipe.incr(counter.key(subject))
        pipe.expire(counter.key(subject), counter.window, nx=True)  # the first opens the window
        pipe.pttl(counter.key(subject))
    replies = await pipe.execute()
    waits = [
        math.ceil(max(int(ttl_ms), 1_000) / 1000)
        for (counter, _), attempts, ttl_ms in zip(
            counted, replies[0::3], replies[2::3], strict=True
        )
        if int(attempts) > counter.limit
    ]
    return max(waits) if waits else None


async def succeeded(
    redis: Redis, *, forget: Sequence[Counted] = (), give_back: Sequence[Counted] = ()
) -> None:
    """The attempt was right: `forget` drops the subjects' failures (a user name whose password
    was given), `give_back` uncounts this one attempt only (an address other guessers share)."""
    pipe = redis.pipeline(transaction=False)
    for counter, subject in forget:
        pipe.delete(counter.key(subject))
    for counter, subject in give_back:
        pipe.eval(_GIVE_BACK, 1, counter.key(subject))
    await pipe.execute()
