"""The kit's pipelined Redis client, against a real Valkey."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from citypass.servers import LocalServers, free_port
from shared.redis import PipelinedRedis, connect

ECHO = "return KEYS[1] .. '=' .. ARGV[1]"


def url(servers: LocalServers, db: int = 0) -> str:
    return servers.redis_url.rsplit("/", 1)[0] + f"/{db}"


async def test_concurrent_commands_get_their_own_replies(servers: LocalServers) -> None:
    redis = PipelinedRedis(url(servers))
    sha = await redis.execute("SCRIPT", "LOAD", ECHO)
    assert sha.decode() == hashlib.sha1(ECHO.encode()).hexdigest()
    replies = await asyncio.gather(
        *(redis.evalsha(sha.decode(), [f"k{i}"], [str(i) * (i % 7000)]) for i in range(2_000))
    )
    assert replies == [f"k{i}={str(i) * (i % 7000)}".encode() for i in range(2_000)]
    await redis.close()


async def test_reply_types(servers: LocalServers) -> None:
    redis = PipelinedRedis(url(servers))
    name = f"test:{uuid.uuid4().hex}"
    assert await redis.execute("GET", name) is None
    assert await redis.execute("SET", name, "é") == b"OK"
    assert await redis.execute("GET", name) == "é".encode()
    assert await redis.execute("INCR", f"{name}:n") == 1
    assert await redis.execute("RPUSH", f"{name}:l", "a", "", "c") == 3
    assert await redis.execute("LRANGE", f"{name}:l", 0, -1) == [b"a", b"", b"c"]
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await redis.execute("INCR", f"{name}:l")
    with pytest.raises(NoScriptError):
        await redis.evalsha("0" * 40, [name], [])
    assert await redis.execute("GET", name) == "é".encode()  # still in step after errors
    await redis.close()


async def test_selects_the_database_of_its_url(servers: LocalServers) -> None:
    name = f"test:{uuid.uuid4().hex}"
    redis = PipelinedRedis(url(servers, db=7))
    await asyncio.gather(*(redis.execute("SET", f"{name}:{i}", i) for i in range(50)))
    seven, zero = connect(url(servers, db=7)), connect(url(servers, db=0))
    assert await seven.get(f"{name}:49") == b"49"
    assert await zero.get(f"{name}:0") is None
    await redis.close()
    await seven.aclose()
    await zero.aclose()


async def test_a_timeout_fails_the_waiting_commands_and_the_next_one_reconnects(
    servers: LocalServers,
) -> None:
    redis = PipelinedRedis(url(servers), timeout_s=0.3)
    await redis.execute("PING")
    blocked = asyncio.gather(
        redis.execute("BLPOP", f"test:{uuid.uuid4().hex}", 2),
        redis.execute("PING"),
        return_exceptions=True,
    )
    assert [type(e) for e in await blocked] == [RedisTimeoutError, RedisTimeoutError]
    assert await redis.execute("PING") == b"PONG"
    await redis.close()


async def test_a_killed_connection_fails_its_commands_and_the_next_one_reconnects(
    servers: LocalServers,
) -> None:
    redis = PipelinedRedis(url(servers))
    name = f"lane-{uuid.uuid4().hex[:8]}"
    await redis.execute("CLIENT", "SETNAME", name)
    admin = connect(url(servers))
    waiting = asyncio.ensure_future(redis.execute("BLPOP", f"test:{name}", 5))
    await asyncio.sleep(0.1)
    clients = await admin.client_list()
    [victim] = [c for c in clients if c["name"] == name]
    await admin.client_kill_filter(_id=victim["id"])
    with pytest.raises(RedisConnectionError):
        await waiting
    assert await redis.execute("PING") == b"PONG"
    await redis.close()
    await admin.aclose()


async def test_an_unreachable_server_is_a_connection_error() -> None:
    redis = PipelinedRedis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=1)
    with pytest.raises(RedisConnectionError):
        await redis.execute("PING")
