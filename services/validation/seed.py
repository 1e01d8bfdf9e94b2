"""Demo data for validation: gates at every metro station and on a few bus routes."""

from __future__ import annotations

from services.validation import service
from services.validation.settings import ValidationSettings
from shared import redis as redis_kit


async def seed(settings: ValidationSettings) -> str:
    redis = redis_kit.connect(settings.redis_url)
    try:
        count = await service.seed_gates(redis)
    finally:
        await redis.aclose()
    return f"{count} gates"
