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
_Done = tuple["asyncio.Future[Any]", Any, BaseException | None]

BATCH = 64
"""Requests a thread takes at once when they have queued up."""


class StoreThreads:
    """``count`` threads that run a store's blocking calls, one call at a time each."""

    def __init__(self, count: int, name: str) -> None:
        self._count = count
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._limiter = anyio.CapacityLimiter(count)

    async def run(self, func: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """``func(*args)`` in one of the threads; ``TimeoutError`` after ``timeout`` seconds.

        Cancelling (or the timeout) abandons the call: it runs on in its thread, and its
        result is dropped.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            with anyio.fail_after(timeout):
                return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter,
                                                      abandon_on_cancel=True)
        if not self._threads:
            self._start()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((func, args, loop, future))
        if timeout is None:
            return await future
        # A timer on the future, not a cancel scope: this is every store request's path.
        timer = loop.call_at(loop.time() + timeout, _time_out, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _start(self) -> None:
        for index in range(self._count):
            thread = threading.Thread(target=self._work, name=f"{self._name}-{index}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            # Under load, requests queue up while one runs: take them all, and hand the
            # results back with one wake-up of each event loop instead of one each.
            batch, stop = [first], False
            while len(batch) < BATCH:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            done: dict[asyncio.AbstractEventLoop, list[_Done]] = {}
            for func, args, loop, future in batch:
                try:
                    outcome: _Done = (future, func(*args), None)
                except BaseException as exc:
                    outcome = (future, None, exc)
                done.setdefault(loop, []).append(outcome)
            for loop, outcomes in done.items():
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                    loop.call_soon_threadsafe(_settle_all, outcomes)
            if stop:
                return

    def stop(self) -> None:
        """Let the threads finish what they have, then end (blocks: call from a thread)."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join()


def _time_out(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _settle_all(outcomes: list[_Done]) -> None:
    for future, result, error in outcomes:
        if future.done():  # cancelled: the caller moved on
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
