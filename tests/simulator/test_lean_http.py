"""`LeanTransport`, the load generator's HTTP/1.1 client, against real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from callflow.simulator import serve_asgi
from callflow.simulator._lean_http import LeanTransport

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/json: a JSON body; /chunked: a streamed body (hypercorn chunks it); /empty: 204;
    /close: asks to close the connection. Echoes the client port in `x-port`."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    port = str(scope["client"][1]).encode()
    headers = [(b"x-port", port), (b"x-got", str(len(body)).encode())]
    if path == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    status = 204 if path == "/empty" else 200
    payload = b"" if status == 204 else b'{"commands": []}'
    if path == "/close":
        headers.append((b"connection", b"close"))
    headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def test_json_chunked_and_empty_bodies_over_kept_alive_connections() -> None:
    async with serve_asgi(asgi_app) as url, httpx.AsyncClient(
        transport=LeanTransport()
    ) as client:
        first = await client.post(f"{url}/json", json={"eventName": "CalledNumber"})
        assert first.status_code == 200 and first.json() == {"commands": []}
        assert int(first.headers["x-got"]) == len(b'{"eventName":"CalledNumber"}')
        chunked = await client.get(f"{url}/chunked")
        assert chunked.text == "one two three"
        empty = await client.post(f"{url}/empty", content=b"x" * 100_000)
        assert empty.status_code == 204 and empty.content == b""
        assert empty.headers["x-got"] == "100000"
        head = await client.head(f"{url}/json")
        assert head.status_code == 200 and head.content == b""
        ports = {r.headers["x-port"] for r in (first, chunked, empty, head)}
        assert len(ports) == 1  # one connection, kept alive throughout


async def test_concurrent_requests_each_get_a_connection_then_reuse_them() -> None:
    async with serve_asgi(asgi_app) as url, httpx.AsyncClient(
        transport=LeanTransport()
    ) as client:
        ports: list[str] = []

        async def post() -> None:
            ports.append((await client.post(f"{url}/json", json={})).headers["x-port"])

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(post)
        for _ in range(5):
            await post()
    assert len(ports) == 10
    assert set(ports[5:]) <= set(ports[:5])


async def test_connection_close_is_honoured() -> None:
    async with serve_asgi(asgi_app) as url, httpx.AsyncClient(
        transport=LeanTransport()
    ) as client:
        a = await client.post(f"{url}/close", json={})
        b = await client.post(f"{url}/close", json={})
    assert a.headers["x-port"] != b.headers["x-port"]


@asynccontextmanager
async def raw_server(
    respond: Callable[[SocketStream, int], Awaitable[bool]],
) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server: `respond(stream, n)` answers the n-th request of a connection and says
    whether to keep the connection. Yields the URL and the requests seen per connection."""
    counts: list[int] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: SocketStream) -> None:
        counts.append(0)
        index = len(counts) - 1
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            try:
                while True:
                    head = await reader.receive_until(b"\r\n\r\n", 65536)
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length")), 0)
                    await reader.receive_exactly(length)
                    counts[index] += 1
                    if not await respond(stream, counts[index]):
                        return
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{port}", counts
        tg.cancel_scope.cancel()


async def test_a_kept_alive_connection_the_server_closed_is_replaced() -> None:
    async def once(stream: SocketStream, n: int) -> bool:
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        return False  # closes without saying so

    async with raw_server(once) as (url, counts), httpx.AsyncClient(
        transport=LeanTransport()
    ) as client:
        for _ in range(3):
            assert (await client.post(url, json={})).text == "ok"
    assert counts == [1, 1, 1]


async def test_interim_1xx_and_http_1_0_body_until_close() -> None:
    async def old(stream: SocketStream, n: int) -> bool:
        await stream.send(b"HTTP/1.1 100 Continue\r\n\r\n"
                          b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        return False

    async with raw_server(old) as (url, _), httpx.AsyncClient(
        transport=LeanTransport()
    ) as client:
        response = await client.post(url, json={})
    assert response.status_code == 200 and response.text == "until the end"


async def test_garbage_and_refused_connections_are_httpx_errors() -> None:
    async def garbage(stream: SocketStream, n: int) -> bool:
        await stream.send(b"SPDY/9 banana\r\n\r\n")
        return False

    async with raw_server(garbage) as (url, _), httpx.AsyncClient(
        transport=LeanTransport()
    ) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(url, json={})
    with anyio.fail_after(5):
        async with httpx.AsyncClient(transport=LeanTransport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(url, json={})  # the server is gone
