"""Loop-stall warnings: a flow that blocks the event loop is named in the log, with its line.

Every call shares one event loop, so a flow that calls ``time.sleep(5)``, a blocking
client or a CPU-bound loop stalls every call, and nothing else would say so.  The watch
costs a heartbeat task that notes the time every quarter of the threshold, and a thread
that checks the note as often.  When the heartbeat is late by more than the threshold, the
thread reads the loop thread's stack (``sys._current_frames``), finds the session running
a flow on it, and logs one warning per stall, naming the call, the flow's file and line,
and where it is blocked; when the loop runs again, it logs for how long it was blocked.
Works under asyncio and trio: only anyio and the standard library are used.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import anyio

from ._session import Session

__all__ = ("LoopWatch", "describe_stack", "watching_the_loop")

logger = logging.getLogger("callflow")

_RUN_FLOW = Session._run.__code__
"""The session's coroutine that awaits the flow: below it on a stack is the flow itself."""


def _where(frame: FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def describe_stack(frame: FrameType | None) -> str:
    """What the stack from ``frame`` (innermost) outwards is doing, for a stall warning."""
    if frame is None:
        return "the event loop thread is gone"
    innermost = frame
    inner: FrameType | None = None
    while frame is not None:
        if frame.f_code is _RUN_FLOW and inner is not None:
            session = frame.f_locals.get("self")
            call = f"call {session.call.id}" if isinstance(session, Session) else "a call"
            blocked = "" if inner is innermost else f", blocked at {_where(innermost)}"
            return f"{call}: its flow at {_where(inner)}{blocked}"
        inner, frame = frame, frame.f_back
    return f"outside any flow, at {_where(innermost)}"


class LoopWatch:
    """Warns when the event loop it runs in is blocked for over ``threshold`` seconds."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.interval = max(0.01, threshold / 4)
        self.stalls = 0
        """How many stalls have been reported."""
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._scope = anyio.CancelScope()

    async def run(self) -> None:
        """The heartbeat: run it as a task until ``stop``; it starts the watching thread."""
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        stop = threading.Event()
        thread = threading.Thread(target=self._watch, args=(stop,),
                                  name="callflow-loop-watch", daemon=True)
        thread.start()
        try:
            with self._scope:
                while True:
                    self._beat = time.monotonic()
                    await anyio.sleep(self.interval)
        finally:
            stop.set()  # the thread sees it within one interval; joining would block the loop

    def stop(self) -> None:
        """End ``run`` (from the loop's thread), and with it the watching thread."""
        self._scope.cancel()

    def _watch(self, stop: threading.Event) -> None:
        reported: float | None = None  # the beat of the stall last reported
        while not stop.wait(self.interval):
            beat = self._beat
            late = time.monotonic() - beat - self.interval
            if reported is not None and beat != reported:
                logger.warning("the event loop ran again after %.1f s blocked",
                               beat - reported - self.interval)
                reported = None
            if late > self.threshold and reported is None:
                reported = beat
                self.stalls += 1
                frame = sys._current_frames().get(self._loop_thread)
                try:
                    where = describe_stack(frame)
                finally:
                    del frame
                logger.warning(
                    "the event loop has been blocked for %.1f s, and every call with it, by "
                    "%s (a flow must not block: await anyio.sleep, use async clients, or "
                    "anyio.to_thread.run_sync)", late, where)


@asynccontextmanager
async def watching_the_loop(threshold: float | None) -> AsyncIterator[LoopWatch | None]:
    """Watch the current event loop for stalls over ``threshold`` seconds (None or 0: no)."""
    if not threshold:
        yield None
        return
    watch = LoopWatch(threshold)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        try:
            yield watch
        finally:
            watch.stop()
