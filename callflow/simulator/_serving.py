"""Serve any ASGI app with hypercorn on a port the OS picks, as an async context manager.

The socket is bound and listening before hypercorn starts, so the yielded URL accepts
connections at once: no fixed ports and no sleeping until the server is "probably" up.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from hypercorn.config import Config

from ._asgi import ASGIApp

__all__ = ("serve_asgi",)


def _backend() -> str:
    # Asking trio directly keeps this module free of an asyncio import.
    trio: Any = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    return "asyncio"


@asynccontextmanager
async def serve_asgi(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, graceful_timeout: float = 1.0
) -> AsyncIterator[str]:
    """Serve `app` on `host:port` (0 = any free port) and yield its base URL, e.g.
    `http://127.0.0.1:54321`. Runs under asyncio or trio; stops when the block exits."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        bound_port = sock.getsockname()[1]
        config = Config()
        # hypercorn takes ownership of the descriptor it is given, so give it a duplicate.
        config.bind = [f"fd://{os.dup(sock.fileno())}"]
        config.graceful_timeout = graceful_timeout
        config.accesslog = None
        config.errorlog = None
        config.loglevel = "WARNING"
        stop = anyio.Event()

        async def shutdown_trigger() -> None:
            await stop.wait()

        if _backend() == "trio":
            from hypercorn.trio import serve as trio_serve

            serve: Any = trio_serve
        else:
            from hypercorn.asyncio import serve as asyncio_serve

            serve = asyncio_serve
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        started = anyio.Event()

        async def watched(scope: Any, receive: Any, send: Any) -> None:
            # Yield only once the app's lifespan startup is over, so a caller can
            # use the app (not just the socket) as soon as it has the URL.
            if scope["type"] != "lifespan":
                await app(scope, receive, send)
                return

            async def send_watched(message: Any) -> None:
                if message["type"] in ("lifespan.startup.complete", "lifespan.startup.failed"):
                    started.set()
                await send(message)

            try:
                await app(scope, receive, send_watched)
            finally:
                started.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve(watched, config, shutdown_trigger=shutdown_trigger))
            await started.wait()
            try:
                yield f"http://{shown}:{bound_port}"
            finally:
                stop.set()
    finally:
        sock.close()
