"""Redis (or Valkey) client and hash-tagged keys, so multi-key scripts work on Redis Cluster."""

from __future__ import annotations

from redis.asyncio import Redis


def connect(url: str) -> Redis:
    return Redis.from_url(
        url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=30
    )


def key(namespace: str, tag: str, *parts: str) -> str:
    """`cp:{tag}:namespace:part…` — keys sharing a tag land in the same cluster slot."""
    suffix = ":".join(parts)
    return f"cp:{{{tag}}}:{namespace}" + (f":{suffix}" if suffix else "")
