"""Starting one task per call, cheaply.

anyio's ``TaskGroup.start_soon`` gives every task a cancel scope, a finished
event and a wrapper coroutine: about 2.5 KB, which is most of a suspended call's
budget (6 KB).  Under asyncio, calls are therefore plain asyncio tasks that the
spawner tracks and cancels (then awaits) when the app stops, so no task
outlives the app; under other backends (trio) they go to the task group.
The session catches everything its flow raises, so no task fails silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from anyio.abc import TaskGroup

__all__ = ("Cancellable", "Spawner")


class Cancellable(Protocol):
    """A running task that can be cancelled."""

    def cancel(self) -> Any: ...


class Spawner:
    """Starts tasks that outlive the request that starts them, and stops them all."""

    __slots__ = ("_loop", "_tasks", "_tg")

    def __init__(self, tg: TaskGroup) -> None:
        self._tg = tg
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, func: Callable[[], Coroutine[Any, Any, None]]) -> Cancellable:
        if self._loop is None:
            return self._tg.start_soon(func)
        task = self._loop.create_task(func())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Cancel the tasks still running and wait until they have finished."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
