"""Worker threads for a store's blocking calls, cheaper than a general thread pool.

Every notification that changes a durable call makes two store requests, so their
cost is on the path users care about.  ``anyio.to_thread.run_sync`` costs about
120 µs a call on asyncio (a worker per call from a pool, a capacity limiter, a
cancel scope); a thread of the store's own taking work from a ``SimpleQueue`` and
handing the result back with ``call_soon_threadsafe`` costs a fraction of that.
Under trio (or with no running asyncio loop) calls go through
``anyio.to_thread.run_sync`` as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

__all__ = ("StoreThreads",)

T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class StoreThreads:
    """``count`` threads that run a store's blocking calls, one call at a time each."""

    def __init__(self, count: int, name: str) -> None:
        self._count = count
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._limiter = anyio.CapacityLimiter(count)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` in one of the threads; cancelling abandons it (it runs on)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter,
                                                  abandon_on_cancel=True)
        if not self._threads:
            self._start()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((func, args, loop, future))
        return await future

    def _start(self) -> None:
        for index in range(self._count):
            thread = threading.Thread(target=self._work, name=f"{self._name}-{index}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            func, args, loop, future = job
            try:
                result = func(*args)
            except BaseException as exc:
                _hand_back(loop, future, None, exc)
            else:
                _hand_back(loop, future, result, None)

    def stop(self) -> None:
        """Let the threads finish what they have, then end (blocks: call from a thread)."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join()


def _hand_back(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
               error: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled: the caller moved on
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
