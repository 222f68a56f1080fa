"""Slow clients over real sockets: a body that trickles in cannot hold a connection for long.

A request whose body arrives a byte a second (or stops arriving) gets ``408`` once
``Settings.body_timeout`` has passed, and its connection is closed; an app shutting down
with many such requests in flight stops in time and logs no tracebacks.  hypercorn serves
the app on 127.0.0.1, on a port the OS chose.
"""

from __future__ import annotations

import logging
import time

import anyio
import pytest
from anyio.abc import SocketStream

from callflow import App, Call
from callflow._server import Listener, serving

from ._platforms import PLATFORMS, incoming, platform_app

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

BODY_TIMEOUT = 0.5
STALLED = 200


def head(url: str, length: int, headers: dict[str, str]) -> bytes:
    path = url.split("://", 1)[1].partition("/")[2]
    lines = [f"POST /{path} HTTP/1.1", "Host: app.example", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_all(stream: SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    try:
        while True:
            received += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
        return received


def slow_app(platform: str, body_timeout: float = BODY_TIMEOUT) -> App:
    app = platform_app(platform, body_timeout=body_timeout)

    @app.flow
    async def waits(call: Call) -> None:
        await call.gather(prompt="Press a key.", num_digits=1, timeout=60)

    return app


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_body_sent_a_byte_at_a_time_gets_a_408_and_the_connection_closed(
    platform: str,
) -> None:
    app = slow_app(platform)
    listener = Listener.bind("127.0.0.1", 0)
    async with serving(app, listener, graceful_timeout=1.0) as base:
        url, body, headers = incoming(platform, "call-1")
        async with await anyio.connect_tcp("127.0.0.1", listener.port) as stream:
            await stream.send(head(url, len(body), headers) + body[:1])
            began = time.monotonic()
            with anyio.fail_after(BODY_TIMEOUT + 5):
                async with anyio.create_task_group() as tg:

                    async def trickle() -> None:
                        for byte in body[1:-1]:
                            await anyio.sleep(0.2)
                            await stream.send(bytes([byte]))

                    tg.start_soon(trickle)
                    answer = await read_all(stream)
                    tg.cancel_scope.cancel()
            waited = time.monotonic() - began
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b'"code":"timeout"' in answer
        assert BODY_TIMEOUT * 0.8 <= waited < BODY_TIMEOUT + 3
        assert app.sessions == {}
        assert base


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_shutdown_with_many_stalled_bodies_is_quick_and_quiet(
    platform: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Bodies still expected for 30 s: shutdown ends their reads at once, with no traceback
    (hypercorn would otherwise wait its graceful timeout, then cancel each connection and log
    a traceback for it)."""
    caplog.set_level(logging.WARNING)
    app = slow_app(platform, body_timeout=30.0)
    listener = Listener.bind("127.0.0.1", 0, backlog=512)
    streams: list[SocketStream] = []
    url, body, headers = incoming(platform, "call-1")
    try:
        with anyio.fail_after(20):
            async with serving(app, listener, graceful_timeout=5.0):
                for _ in range(STALLED):
                    stream = await anyio.connect_tcp("127.0.0.1", listener.port)
                    streams.append(stream)
                    await stream.send(head(url, len(body), headers) + body[:1])
                began = time.monotonic()
            stopped = time.monotonic() - began
        answers = [await read_all(stream) for stream in streams]
    finally:
        for stream in streams:
            await stream.aclose()
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert problems == [], (len(problems), [r.getMessage() for r in problems[:2]])
    assert stopped < 3.0
    assert app.sessions == {}
    # Every request that reached the app was answered (one still in the kernel's backlog
    # when the server stopped listening is closed unanswered).
    assert all(a.startswith(b"HTTP/1.1 408 ") or a == b"" for a in answers), answers[:3]
