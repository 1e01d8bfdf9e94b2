"""Demo data for validation: gates at every station and bus route of the network in force."""

from __future__ import annotations

import asyncio

from services.validation import network, service
from services.validation.settings import ValidationSettings
from shared import redis as redis_kit
from shared.fares.feed import HANOI


async def seed(settings: ValidationSettings) -> str:
    networks = network.Networks()
    await network.load_once(
        networks, settings.ticketing_url, settings.network_feed, settings.currency
    )
    if not networks.held.versions:  # `make run` seeds before ticketing runs: the feed it seeds
        await asyncio.to_thread(networks.local, settings.network_feed or HANOI, settings.currency)
    redis = redis_kit.connect(settings.redis_url)
    try:
        count = await service.seed_gates(redis, networks.held)
    finally:
        await redis.aclose()
    return f"{count} gates"
