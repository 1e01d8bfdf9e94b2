"""Counting attempts before making them, in the real Valkey: the limit, the window, forgetting
and giving back (shared.ratelimit.count_attempt / succeeded)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from citypass.servers import LocalServers
from shared import redis as redis_kit
from shared.ratelimit import RateLimit, count_attempt, succeeded


@pytest.fixture
async def redis(servers: LocalServers) -> AsyncIterator[Redis]:
    client = redis_kit.connect(servers.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def counter(limit: int = 3, window: timedelta = timedelta(minutes=15)) -> RateLimit:
    return RateLimit(f"test-{uuid.uuid4().hex[:8]}", limit, window)


class TestCountAttempt:
    async def test_the_attempt_past_the_limit_waits_for_the_window(self, redis: Redis) -> None:
        user = counter(limit=3)
        allowed = [await count_attempt(redis, [(user, "an")]) for _ in range(3)]
        refused = await count_attempt(redis, [(user, "an")])
        other = await count_attempt(redis, [(user, "binh")])
        assert allowed == [None, None, None]
        assert refused is not None
        assert 14 * 60 < refused <= 15 * 60
        assert other is None

    async def test_any_subject_at_its_limit_refuses(self, redis: Redis) -> None:
        user, client = counter(limit=5), counter(limit=2)
        results = [
            await count_attempt(redis, [(user, f"u{n}"), (client, "10.0.0.1")]) for n in range(3)
        ]
        assert results[:2] == [None, None]
        assert results[2] is not None

    async def test_the_window_opened_by_the_first_attempt_closes(self, redis: Redis) -> None:
        user = counter(limit=1, window=timedelta(seconds=1))
        assert await count_attempt(redis, [(user, "an")]) is None
        assert await count_attempt(redis, [(user, "an")]) == 1
        await asyncio.sleep(1.1)
        assert await count_attempt(redis, [(user, "an")]) is None


class TestSucceeded:
    async def test_forget_clears_and_give_back_uncounts_one(self, redis: Redis) -> None:
        user, client = counter(limit=2), counter(limit=2)
        both = [(user, "an"), (client, "10.0.0.2")]
        for _ in range(2):
            assert await count_attempt(redis, both) is None
        await succeeded(redis, forget=[(user, "an")], give_back=[(client, "10.0.0.2")])
        assert await redis.exists(user.key("an")) == 0
        assert await redis.get(client.key("10.0.0.2")) == b"1"

    async def test_giving_back_after_the_window_leaves_nothing_behind(self, redis: Redis) -> None:
        client = counter(limit=2)
        await succeeded(redis, give_back=[(client, "10.0.0.3")])
        assert await redis.exists(client.key("10.0.0.3")) == 0
