"""Simulation time: real, scaled, or virtual.

Every wait inside the simulator goes through a `Clock`, so the same code runs at wall-clock
speed for a person on a terminal, faster for demos, or with no real waiting at all in tests.

Virtual time jumps straight to the next timer, but only when the simulation is quiescent:
no simulator task is runnable and no HTTP exchange with an application is in flight. The
clock knows this by counting "active" units: simulator tasks started with `Clock.spawn`,
and `Clock.busy()` sections (REST handlers). A tracked task stops counting while it is parked
on a clock primitive (`sleep`, `Signal.wait`), and whoever wakes it counts for it until it
runs again, so there is no window in which a woken task looks idle. Tracked tasks must
therefore block only on clock primitives or on I/O (which keeps them counted).
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import anyio
from anyio.abc import TaskGroup

__all__ = ("Clock", "ClockMode", "Signal")

ClockMode = Literal["real", "scaled", "virtual"]

# How many scheduler passes with nothing happening count as "nobody is runnable". A task
# woken by cancellation is not credited by its waker, so it needs a pass or two to resume.
_SETTLE_PASSES = 5


class _Waiter:
    __slots__ = ("cancelled", "credited", "event", "tracked")

    def __init__(self, tracked: bool) -> None:
        self.event = anyio.Event()
        self.credited = False
        self.cancelled = False
        self.tracked = tracked


class Clock:
    """The simulator's time source.

    Use `Clock.real()`, `Clock.scaled(speed)` or `Clock.virtual()`. `now()` is seconds of
    simulated time since the clock started.
    """

    def __init__(self, mode: ClockMode = "virtual", *, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.mode: ClockMode = mode
        self.speed = 1.0 if mode == "real" else speed
        self._now = 0.0
        self._start: float | None = None
        self._timers: list[tuple[float, int, _Waiter]] = []
        self._seq = itertools.count()
        self._active = 0
        self._generation = 0
        self._kick: anyio.Event | None = None
        self._tracked: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"callflow-clock-{id(self)}", default=False
        )
        self.advances = 0

    @classmethod
    def real(cls) -> Clock:
        """Wall-clock time, for interactive use."""
        return cls("real")

    @classmethod
    def scaled(cls, speed: float) -> Clock:
        """Real waiting, `speed` times faster than wall-clock time."""
        return cls("scaled", speed=speed)

    @classmethod
    def virtual(cls) -> Clock:
        """No real waiting: time jumps to the next timer whenever the simulation is idle."""
        return cls("virtual")

    # -- reading time -------------------------------------------------------------------

    def now(self) -> float:
        """Seconds of simulated time since the clock started."""
        if self.mode == "virtual" or self._start is None:
            return self._now
        return (time.monotonic() - self._start) * self.speed

    # -- waiting --------------------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of simulated time."""
        waiter = self._new_waiter()
        self._schedule(waiter, max(0.0, seconds))
        await self._park(waiter)

    def signal(self) -> Signal:
        """A new pulse-style condition tracked by this clock."""
        return Signal(self)

    # -- task accounting ------------------------------------------------------------------

    def spawn(
        self, tg: TaskGroup, func: Callable[..., Awaitable[object]], *args: object
    ) -> None:
        """Start a simulator task whose activity keeps virtual time from advancing."""
        self._active += 1
        self._bump()

        async def runner() -> None:
            self._tracked.set(True)
            try:
                await func(*args)
            finally:
                self._active -= 1
                self._bump()

        tg.start_soon(runner)

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Hold virtual time still while this block runs (e.g. a REST request)."""
        self._active += 1
        self._bump()
        token = self._tracked.set(True)
        try:
            yield
        finally:
            self._tracked.reset(token)
            self._active -= 1
            self._bump()

    # -- driver ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Drive the timers; runs until cancelled (the simulator starts it)."""
        self._start = time.monotonic() - self._now / self.speed
        if self.mode == "virtual":
            await self._drive_virtual()
        else:
            await self._drive_real()

    async def _drive_virtual(self) -> None:
        while True:
            await self._wait_quiescent()
            self._purge()
            if not self._timers:
                await self._wait_change()
                continue
            deadline = self._timers[0][0]
            if deadline > self._now:
                self._now = deadline
                self.advances += 1
            self._fire_due()

    async def _drive_real(self) -> None:
        while True:
            self._purge()
            if not self._timers:
                await self._wait_change()
                continue
            delay = (self._timers[0][0] - self.now()) / self.speed
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._wait_change()
                continue
            self._fire_due()
            await anyio.lowlevel.checkpoint()

    async def _wait_quiescent(self) -> None:
        while True:
            if self._active > 0:
                await self._wait_change()
                continue
            generation = self._generation
            for _ in range(_SETTLE_PASSES):
                await anyio.lowlevel.checkpoint()
                if self._generation != generation or self._active:
                    break
            else:
                return

    async def _wait_change(self) -> None:
        self._kick = kick = anyio.Event()
        await kick.wait()

    def _bump(self) -> None:
        self._generation += 1
        if self._kick is not None:
            self._kick.set()
            self._kick = None

    def _purge(self) -> None:
        while self._timers and (
            self._timers[0][2].cancelled or self._timers[0][2].event.is_set()
        ):
            heapq.heappop(self._timers)

    def _fire_due(self) -> None:
        now = self.now()
        while self._timers and self._timers[0][0] <= now:
            _, _, waiter = heapq.heappop(self._timers)
            if not waiter.cancelled:
                self._wake(waiter)

    # -- waiters --------------------------------------------------------------------------

    def _new_waiter(self) -> _Waiter:
        return _Waiter(self._tracked.get())

    def _schedule(self, waiter: _Waiter, seconds: float) -> None:
        heapq.heappush(self._timers, (self.now() + seconds, next(self._seq), waiter))
        self._bump()

    def _wake(self, waiter: _Waiter) -> None:
        if waiter.event.is_set() or waiter.cancelled:
            return
        if waiter.tracked:
            waiter.credited = True
            self._active += 1
        waiter.event.set()
        self._bump()

    async def _park(self, waiter: _Waiter) -> None:
        if waiter.tracked:
            self._active -= 1
            self._bump()
        try:
            await waiter.event.wait()
        finally:
            waiter.cancelled = True
            if waiter.tracked and not waiter.credited:
                self._active += 1
                self._bump()


class Signal:
    """A pulse that wakes every task waiting on it, with optional simulated timeouts."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._waiters: list[_Waiter] = []

    def notify(self) -> None:
        """Wake every current waiter."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._clock._wake(waiter)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for the next `notify()`; False if `timeout` simulated seconds passed first."""
        waiter = self._clock._new_waiter()
        self._waiters.append(waiter)
        if timeout is not None:
            self._clock._schedule(waiter, max(0.0, timeout))
        notified = True
        try:
            await self._clock._park(waiter)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                notified = False
        return notified

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until `predicate()` is true (checked at each notify); False on timeout."""
        deadline = None if timeout is None else self._clock.now() + timeout
        while not predicate():
            remaining = None if deadline is None else deadline - self._clock.now()
            if remaining is not None and remaining <= 0:
                return False
            await self.wait(remaining)
        return True
