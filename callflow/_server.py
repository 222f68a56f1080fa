"""Run an ASGI app (a callflow ``App``) under hypercorn, on asyncio or trio.

    listener = Listener.bind("127.0.0.1", 0)       # bound and listening: the port is known
    app.configure(Settings(public_url=listener.url))
    async with serving(app, listener) as url:       # the app has started; url accepts requests
        ...
    serve_forever(app, port=8000)                   # blocks until SIGINT or SIGTERM

Readiness needs no sleeping and no polling. We bind and listen on the socket ourselves and
hand hypercorn a duplicate descriptor (``fd://``), so connections queue in the kernel's
backlog from the first moment; and ``serving`` yields only once the app's lifespan startup
has completed, which hypercorn awaits before it accepts anything.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import Any, TypeVar

import anyio
from hypercorn.config import Config

from ._asgi import DRAIN, Drain
from ._exceptions import ConfigurationError
from ._loopwatch import LoopWatch
from ._settings import Settings
from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = (
    "SHUTDOWN_SIGNALS",
    "Listener",
    "serve_forever",
    "serve_until_signal",
    "serving",
)

logger = logging.getLogger("callflow")

T = TypeVar("T")

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a server cleanly."""

GRACEFUL_TIMEOUT = 5.0
"""Seconds in-flight requests get to finish once shutdown starts."""


class Listener:
    """A bound, listening TCP socket: its port is known before anything is served.

    ``serving`` takes ownership and closes it when it stops.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        address = sock.getsockname()
        self.host: str = str(address[0])
        self.port: int = int(address[1])
        """The bound port (the real one, also when 0 was asked for)."""

    @classmethod
    def bind(cls, host: str = "127.0.0.1", port: int = 0, *, backlog: int = 128) -> Listener:
        """Bind ``host:port`` and listen; port 0 lets the OS pick a free port."""
        try:
            family, _, _, _, address = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.create_server(address, family=family, backlog=backlog)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            hint = "; choose another port (0 picks a free one)" if port else ""
            raise ConfigurationError(
                f"cannot listen on {_join(host, port)}: {reason}{hint}"
            ) from exc
        return cls(sock)

    @property
    def url(self) -> str:
        """The base URL that reaches this socket from this machine.

        A wildcard address (``0.0.0.0``, ``::``) is shown as the loopback address, which
        accepts connections where the wildcard itself does not.
        """
        host = self.host
        if host == "0.0.0.0":
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"http://{_join(host, self.port)}"

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _StartupWatch:
    """Wraps an ASGI app to learn when its lifespan startup has finished, and how."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.finished = anyio.Event()
        self.completed = False
        self.failure: str | None = None
        self.drain = Drain()
        """Started when the server starts to shut down: see ``callflow._asgi.Drain``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            if scope["type"] == "http":
                scope = {**scope, "extensions": {**(scope.get("extensions") or {}),
                                                 DRAIN: self.drain}}
            await self.app(scope, receive, send)
            return

        received: set[str] = set()
        sent: set[str] = set()

        async def watched_receive() -> Message:
            message = await receive()
            received.add(str(message.get("type")))
            return message

        async def watched_send(message: Message) -> None:
            kind = str(message.get("type"))
            sent.add(kind)
            if kind == "lifespan.startup.failed":
                self.failure = str(message.get("message") or "lifespan startup failed")
                self.finished.set()
            await send(message)
            if kind == "lifespan.startup.complete":
                self.completed = True
                self.finished.set()

        try:
            # An app that raises here has no lifespan support, and hypercorn serves it anyway.
            await self.app(scope, watched_receive, watched_send)
            # One that returns without answering would leave hypercorn (under trio) sending
            # into a closed channel: answer for it.
            for phase in ("startup", "shutdown"):
                if not sent & {f"lifespan.{phase}.complete", f"lifespan.{phase}.failed"}:
                    if f"lifespan.{phase}" not in received:
                        await watched_receive()
                    await watched_send({"type": f"lifespan.{phase}.complete"})
        finally:
            self.finished.set()


def _hypercorn_serve() -> Callable[..., Awaitable[None]]:
    """``hypercorn.trio.serve`` under trio, else ``hypercorn.asyncio.serve``."""
    if _running_trio():
        from hypercorn.trio import serve as trio_serve

        return trio_serve
    from hypercorn.asyncio import serve as asyncio_serve

    return asyncio_serve


def _running_trio() -> bool:
    # Asking trio itself keeps asyncio out of this module, and trio optional.
    trio: Any = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _config(fd: int, graceful_timeout: float) -> Config:
    config = Config()
    config.bind = [f"fd://{fd}"]
    config.graceful_timeout = graceful_timeout
    config.shutdown_timeout = graceful_timeout + 10.0
    config.accesslog = None
    # A Logger object rather than "-": hypercorn then adds no handler of its own, and its
    # warnings go wherever the application's logging sends them.
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


@asynccontextmanager
async def serving(
    app: ASGIApp, listener: Listener, *, graceful_timeout: float = GRACEFUL_TIMEOUT
) -> AsyncIterator[str]:
    """Serve ``app`` on ``listener`` and yield its base URL once the app has started.

    Leaving the block shuts down gracefully: no new connections, in-flight requests get
    ``graceful_timeout`` seconds, then the app's lifespan shutdown runs. If the app fails
    to start, raises ``ConfigurationError``; if the server dies while the block runs, the
    block is cancelled and the error raised. A callflow ``App`` is also watched for event
    loop stalls (``Settings.loop_stall_warning``).
    """
    settings = getattr(app, "settings", None)
    threshold = settings.loop_stall_warning if isinstance(settings, Settings) else 0.0
    loop_watch = LoopWatch(threshold) if threshold else None
    watch = _StartupWatch(app)
    serve = _hypercorn_serve()
    stop = anyio.Event()
    crash: list[Exception] = []
    body_error: Exception | None = None
    with listener:
        # hypercorn owns (and closes) the descriptor it is given: give it a duplicate.
        fd = os.dup(listener.fileno())

        async def run_server(scope: anyio.CancelScope) -> None:
            try:
                await serve(watch, _config(fd, graceful_timeout), shutdown_trigger=stop.wait)
            except Exception as exc:
                crash.append(exc)
            finally:
                if not watch.completed:
                    # hypercorn adopts the descriptor only after startup completes.
                    with suppress(OSError):
                        os.close(fd)
                watch.finished.set()
                if not stop.is_set():
                    scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_server, tg.cancel_scope)
            if loop_watch is not None:
                tg.start_soon(loop_watch.run)
            await watch.finished.wait()
            if watch.failure is None and not crash:
                try:
                    yield listener.url
                except Exception as exc:
                    # Raised below, outside the task group, so it is not wrapped in a group.
                    body_error = exc
                finally:
                    stop.set()
                    watch.drain.start()
                    if loop_watch is not None:
                        loop_watch.stop()
            else:
                stop.set()
                if loop_watch is not None:
                    loop_watch.stop()
    if body_error is not None:
        raise body_error
    if watch.failure is not None:
        raise ConfigurationError(f"the app failed to start: {watch.failure}")
    if crash:
        raise ConfigurationError(f"the server stopped: {_describe(crash[0])}") from crash[0]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _describe(exc.exceptions[0])
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


async def serve_until_signal(
    app: ASGIApp,
    listener: Listener,
    main: Callable[[str], Awaitable[T]] | None = None,
    *,
    graceful_timeout: float = GRACEFUL_TIMEOUT,
) -> T | None:
    """Serve ``app`` until SIGINT or SIGTERM, or until ``main`` returns.

    ``main(url)`` runs once the app is serving (print a banner, configure the platform,
    place a call...); its result is returned. A signal cancels it and returns None. Without
    ``main``, serves until a signal. Must run in the main thread.
    """
    result: T | None = None
    error: Exception | None = None
    # Open before serving starts, so a signal sent as soon as the URL is known is caught.
    with anyio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
        async with serving(app, listener, graceful_timeout=graceful_timeout) as url:
            async with anyio.create_task_group() as tg:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        # Not "%s: ...": a callflow line that starts with an argument is
                        # about the call it names (callflow._logformat).
                        logger.info(signal.Signals(signum).name + ": shutting down")
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(stop_on_signal)
                try:
                    if main is None:
                        await anyio.sleep_forever()
                    else:
                        result = await main(url)
                except Exception as exc:
                    error = exc
                tg.cancel_scope.cancel()
            if error is not None:
                raise error
    return result


def serve_forever(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    backend: str = "asyncio",
    on_ready: Callable[[str], Awaitable[None]] | None = None,
    graceful_timeout: float = GRACEFUL_TIMEOUT,
) -> None:
    """Serve ``app`` on ``host:port`` until SIGINT or SIGTERM, then stop cleanly.

    ``on_ready(url)`` is awaited once the app is serving. Blocks; runs its own event loop.
    """
    listener = Listener.bind(host, port)

    async def main(url: str) -> None:
        if on_ready is not None:
            await on_ready(url)
        await anyio.sleep_forever()

    async def run() -> None:
        await serve_until_signal(app, listener, main, graceful_timeout=graceful_timeout)

    try:
        anyio.run(run, backend=backend)
    finally:
        listener.close()
