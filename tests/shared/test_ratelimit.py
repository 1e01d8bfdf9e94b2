"""The kit's rate limit on the real Redis (Valkey) the test servers run."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from citypass.servers import LocalServers, free_port
from shared import redis as redis_kit
from shared.errors import ServiceUnavailable
from shared.ratelimit import RateLimit, TooManyRequests


def subject() -> str:
    return f"203.0.113.{uuid.uuid4().int % 250 + 1}/{uuid.uuid4().hex[:8]}"


class TestRateLimit:
    async def test_past_the_limit_a_subject_is_told_when_its_window_closes(
        self, servers: LocalServers
    ) -> None:
        limit = RateLimit(f"test-{uuid.uuid4().hex[:8]}", 3, timedelta(seconds=30))
        redis = redis_kit.connect(servers.redis_url)
        first, second = subject(), subject()
        try:
            for _ in range(3):
                await limit.hit(redis, first)
            with pytest.raises(TooManyRequests) as refused:
                await limit.hit(redis, first)
            await limit.hit(redis, second)  # a budget per subject
        finally:
            await redis.aclose()
        assert refused.value.status == 429
        assert refused.value.code == "too_many_requests"
        assert 1 <= refused.value.extra["retry_after_s"] <= 30

    async def test_the_window_closes_and_the_budget_comes_back(self, servers: LocalServers) -> None:
        limit = RateLimit(f"test-{uuid.uuid4().hex[:8]}", 1, timedelta(milliseconds=300))
        redis = redis_kit.connect(servers.redis_url)
        caller = subject()
        try:
            await limit.hit(redis, caller)
            with pytest.raises(TooManyRequests):
                await limit.hit(redis, caller)
            await asyncio.sleep(0.4)
            await limit.hit(redis, caller)
        finally:
            await redis.aclose()

    async def test_concurrent_hits_are_counted_exactly(self, servers: LocalServers) -> None:
        limit = RateLimit(f"test-{uuid.uuid4().hex[:8]}", 10, timedelta(seconds=30))
        redis = redis_kit.connect(servers.redis_url)
        caller = subject()
        try:
            outcomes = await asyncio.gather(
                *(limit.hit(redis, caller) for _ in range(25)), return_exceptions=True
            )
        finally:
            await redis.aclose()
        assert sum(outcome is None for outcome in outcomes) == 10
        assert sum(isinstance(outcome, TooManyRequests) for outcome in outcomes) == 15

    async def test_without_redis_it_refuses(self) -> None:
        limit = RateLimit("test-unreachable", 10, timedelta(seconds=30))
        redis = redis_kit.connect(f"redis://127.0.0.1:{free_port()}/0")
        try:
            with pytest.raises(ServiceUnavailable) as refused:
                await limit.hit(redis, subject())
        finally:
            await redis.aclose()
        assert refused.value.code == "rate_limit_unavailable"
