"""Serve any ASGI app with hypercorn on a port the OS picks, as an async context manager.

A thin face of `callflow._server.serving` (one serving helper for the whole project): the
socket is bound and listening before hypercorn starts, and the URL is yielded only once the
app's lifespan startup has completed, so it accepts requests at once, under asyncio or trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .._server import Listener, serving
from ._asgi import ASGIApp

__all__ = ("serve_asgi",)


@asynccontextmanager
async def serve_asgi(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, graceful_timeout: float = 1.0
) -> AsyncIterator[str]:
    """Serve `app` on `host:port` (0 = any free port) and yield its base URL, e.g.
    `http://127.0.0.1:54321`, once the app has started. Runs under asyncio or trio; stops
    when the block exits. An app whose startup fails raises `callflow.ConfigurationError`."""
    async with serving(app, Listener.bind(host, port), graceful_timeout=graceful_timeout) as url:
        yield url
