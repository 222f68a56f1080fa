"""A one-shot wake-up, as light as the running event loop allows.

Every suspended call waits on one of these, so its size is most of what a
suspended call costs.  ``anyio.Event`` on asyncio wraps an ``asyncio.Event``
(a dict and a deque, about 760 bytes); a bare future is a fifth of that.  So
under asyncio this waits on a future, and under any other backend (trio) on an
``anyio.Event``, which is already small there.  Cancellation works either way:
anyio cancels an asyncio task by cancelling what it awaits.
"""

from __future__ import annotations

import asyncio
import math

import anyio

__all__ = ("Waiter",)


class Waiter:
    """Set once; ``wait()`` returns once it is set (at once if it already is)."""

    __slots__ = ("_parked", "_set")

    def __init__(self) -> None:
        self._set = False
        self._parked: asyncio.Future[None] | anyio.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        parked = self._parked
        if parked is None:
            return
        if isinstance(parked, anyio.Event):
            parked.set()
        elif not parked.done():
            parked.set_result(None)

    async def wait(self, timeout: float | None = None) -> None:
        """Return once set, or once ``timeout`` seconds have passed (then unset).

        The timeout is a timer on the future rather than a cancel scope: anyio's
        ``move_on_after`` costs more than the rest of a notification's session work,
        and every notification that resumes a flow waits with one.
        """
        if self._set:
            await anyio.lowlevel.checkpoint()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            event = self._parked = anyio.Event()
            with anyio.move_on_after(math.inf if timeout is None else timeout):
                await event.wait()
            return
        future = self._parked = loop.create_future()
        if timeout is None:
            await future
            return
        timer = loop.call_at(loop.time() + timeout, _expire, future)  # call_later, inlined
        try:
            await future
        finally:
            timer.cancel()


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
