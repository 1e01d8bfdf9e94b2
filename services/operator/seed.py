"""Demo data for the operator console: the admin login."""

from __future__ import annotations

from services.operator import service
from services.operator.schemas import Role
from services.operator.settings import OperatorSettings
from shared import redis as redis_kit


async def seed(settings: OperatorSettings, admin_password: str) -> str:
    redis = redis_kit.connect(settings.redis_url)
    try:
        await service.create_operator(redis, "admin", admin_password, Role.admin)
    finally:
        await redis.aclose()
    return "operator login 'admin'"
