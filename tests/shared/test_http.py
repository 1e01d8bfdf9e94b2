"""The kit's lean keep-alive HTTP/1.1 client, against a real uvicorn server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from citypass.servers import free_port
from shared.http import KeepAliveClient
from shared.logging import request_id_var
from tests.support import wait_until


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"].removeprefix("/base")
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/slow":
        await asyncio.sleep(2)
    answer = orjson.dumps(
        {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "body": body.decode(),
            "client_port": scope["client"][1],
        }
    )
    if path == "/chunked":  # no Content-Length: the answer is chunked
        await send({"type": "http.response.start", "status": 207, "headers": []})
        await send({"type": "http.response.body", "body": answer[:10], "more_body": True})
        await send({"type": "http.response.body", "body": answer[10:]})
        return
    headers = [(b"content-type", b"application/json")]
    if path == "/close":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(echo, port=port, log_config=None, lifespan="off", http="httptools")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, interval_s=0.01, what="the server to start")
    yield f"http://127.0.0.1:{port}/base"
    server.should_exit = True
    await task


async def test_requests_carry_fixed_headers_body_and_request_id(origin: str) -> None:
    client = KeepAliveClient(origin, headers={"Authorization": "Bearer t"})
    token = request_id_var.set("req-7")
    try:
        request = client.request("POST", "/things?a=1", b'{"x":1}', {"Idempotency-Key": "k1"})
        status, body = await client.exchange(request)
    finally:
        request_id_var.reset(token)
    seen = orjson.loads(body)
    assert status == 201
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/base/things", "a=1")
    assert seen["body"] == '{"x":1}'
    assert seen["headers"]["authorization"] == "Bearer t"
    assert seen["headers"]["idempotency-key"] == "k1"
    assert seen["headers"]["x-request-id"] == "req-7"
    assert seen["headers"]["content-type"] == "application/json"
    await client.close()


async def test_connections_are_reused_and_chunked_answers_read(origin: str) -> None:
    client = KeepAliveClient(origin)
    answers = [await client.exchange(client.request("GET", "/a")) for _ in range(5)]
    chunked = await client.exchange(client.request("GET", "/chunked"))
    ports = {orjson.loads(body)["client_port"] for _, body in answers}
    assert len(ports) == 1  # one connection, kept alive
    assert chunked[0] == 207
    assert orjson.loads(chunked[1])["path"] == "/base/chunked"
    concurrent = await asyncio.gather(
        *(client.exchange(client.request("GET", f"/c{i}")) for i in range(20))
    )
    assert [orjson.loads(body)["path"] for _, body in concurrent] == [
        f"/base/c{i}" for i in range(20)
    ]
    await client.close()


async def test_a_closed_connection_is_not_reused(origin: str) -> None:
    client = KeepAliveClient(origin)
    first = await client.exchange(client.request("GET", "/close"))
    second = await client.exchange(client.request("GET", "/a"))
    assert orjson.loads(first[1])["client_port"] != orjson.loads(second[1])["client_port"]
    await client.close()


async def test_a_slow_answer_times_out_and_header_injection_is_refused(origin: str) -> None:
    client = KeepAliveClient(origin, timeout_s=0.3)
    with pytest.raises(TimeoutError):
        await client.exchange(client.request("GET", "/slow"))
    assert (await client.exchange(client.request("GET", "/a")))[0] == 201
    with pytest.raises(ValueError, match="line break"):
        client.request("GET", "/a", headers={"Idempotency-Key": "k\r\nX-Admin: 1"})
    with pytest.raises(ValueError, match="http://host"):
        KeepAliveClient("https://payments.example")
    await client.close()
