"""Live access to a running simulation: watch calls as they happen, and act as a person.

Scripts decide everything up front. A person at a terminal, or a test that reacts to what it
hears, needs three things instead, and this module gives them:

- `Simulator.subscribe()`: every call's transcript entries as they are written, so a speech
  line is seen when the simulator *starts* speaking it, and an event when each call is over.
- `LiveCaller`: presses keys, talks and hangs up on one party's line of a live call.
- `LivePhone`: a simulated number that rings until someone answers (or rejects) it from
  outside, e.g. the terminal phone of `callflow dev` that the app's outbound calls ring.

    with sim.subscribe() as events:
        call = await sim.place_inbound_call("+34600000001", "+34900000001")  # no script
        caller = LiveCaller(call.main)
        async for event in events:
            if event.entry is not None and "sales" in event.entry.text:
                await caller.press("1")

Under a virtual clock, time runs on whenever every simulator task is waiting, and code
outside the simulator (yours) does not count: it could be overtaken by a 30 s timeout that
passes in an instant. Act inside `with sim.clock.busy():` and virtual time only moves while
you await one of `LiveCaller`'s own methods (`press`, `wait_for`, `wait_listening`,
`wait_ended`, `pause`), which wait on the simulator's clock. Real and scaled clocks need none
of this.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._clock import Clock
from ._engine import Leg, SimCall
from ._errors import ConfigError
from ._network import Line, Outcome, Phone
from ._transcript import TranscriptEntry

if TYPE_CHECKING:
    from ._simulator import Simulator

__all__ = ("LiveCaller", "LiveEvent", "LivePhone", "Observer", "Ring", "subscribe")

Observer = Callable[[SimCall, "TranscriptEntry | None"], None]
"""Called synchronously by a call for each new transcript entry, and with None when it ends.

Runs inside the simulator's tasks: it must not block or raise."""

_KEYS = frozenset("0123456789*#")


@dataclass(frozen=True)
class LiveEvent:
    """Something that just happened on a call: a new transcript entry, or its end."""

    call: SimCall
    entry: TranscriptEntry | None
    """The new entry; None when the event is the end of the call."""

    @property
    def ended(self) -> bool:
        """True for the last event of a call: it is over and its notifications delivered."""
        return self.entry is None


@contextmanager
def subscribe(
    sim: Simulator, call: SimCall | None = None
) -> Iterator[MemoryObjectReceiveStream[LiveEvent]]:
    """Receive `LiveEvent`s of every call (or only `call`) while the block runs.

    Events are buffered without bound, in order, so a slow reader misses nothing; read them
    or leave the block. Also available as `sim.subscribe(call=None)`.
    """
    send: MemoryObjectSendStream[LiveEvent]
    receive: MemoryObjectReceiveStream[LiveEvent]
    send, receive = anyio.create_memory_object_stream[LiveEvent](math.inf)

    def observe(source: SimCall, entry: TranscriptEntry | None) -> None:
        if call is not None and source is not call:
            return
        # Once the reader has left, events are dropped until the block unsubscribes.
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            send.send_nowait(LiveEvent(source, entry))

    sim.observers.append(observe)
    try:
        with send, receive:
            yield receive
    finally:
        sim.observers.remove(observe)


class LiveCaller:
    """A person on one party's line of a live call, acting from outside any script.

    Wrap the caller of an inbound call (`LiveCaller(call.main)`), the callee of an outbound
    call, or a dialled party answered through a `LivePhone` (`ring.answer()`). Actions on a
    line that is down do nothing.
    """

    def __init__(self, leg: Leg) -> None:
        self.leg = leg
        self.call = leg.call
        self._cursor = 0
        self._lock: anyio.Lock | None = None

    @property
    def number(self) -> str:
        """This party's number."""
        return self.leg.party

    @property
    def live(self) -> bool:
        """True while this party is on the call."""
        return self.leg.live

    @property
    def listening(self) -> bool:
        """True while the platform collects keys from this line (a `getDigits`, a `record`)."""
        return self.leg.listening

    @property
    def heard(self) -> list[str]:
        """Every prompt heard in full so far (speech text, or a played URL)."""
        return self.leg.heard

    async def press(self, keys: str, *, now: bool = False, gap: float = 0.2) -> bool:
        """Press `keys` (0-9, *, #), `gap` simulated seconds apart.

        Unless `now`, each key first waits until the platform listens, the way people type
        after the menu rather than into the void (a script's `press:`); with `now` it is
        pressed at once and dropped if nobody listens. Concurrent presses keep their order.
        Returns False if the line went down before every key was pressed.
        """
        if not keys or set(keys) - _KEYS:
            raise ConfigError(f"{keys!r} is not a string of keys 0-9 * #")
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            for index, key in enumerate(keys):
                if not now:
                    await self.wait_listening()
                if not self.live:
                    return False
                self.leg.press(key)
                if index + 1 < len(keys):
                    await self.pause(gap)
        return True

    async def say(self, text: str, *, now: bool = False) -> bool:
        """Say `text` out loud: a gather listening for speech recognises it.

        Unless `now`, first wait until the platform listens for speech (a gather with
        speech input), the way `press` waits for a gather; with `now` it is said at once
        and nobody may be listening.  Returns False if the line went down first.
        """
        if not text.strip():
            raise ConfigError("say() needs words to say")
        if not now:
            await self.call.changed.wait_for(lambda: self.leg.hearing or not self.live)
        if not self.live:
            return False
        self.leg.say(text)
        return True

    def talk(self, seconds: float) -> None:
        """Speak for `seconds` (a recording hears it), starting now."""
        if self.live:
            self.leg.talk(seconds)

    def hang_up(self) -> None:
        """Hang up this party's line (for the caller of a call: the whole call)."""
        if self.live:
            self.leg.hang_up()

    async def pause(self, seconds: float) -> None:
        """Wait `seconds` of simulated time."""
        await self.call.clock.sleep(seconds)

    async def wait_listening(self, timeout: float | None = None) -> bool:
        """Wait until the platform listens for keys; False on timeout or when the line is
        down."""
        await self.leg.changed.wait_for(lambda: self.listening or not self.live, timeout)
        return self.listening and self.live

    async def wait_for(self, text: str, timeout: float | None = None) -> bool:
        """Wait until a prompt containing `text` (any case) has been heard in full, after
        the last one this method found; False on timeout or when the line is down."""
        needle = text.lower()
        seen = [False]

        def found() -> bool:
            heard = self.leg.heard
            for index in range(self._cursor, len(heard)):
                if needle in heard[index].lower():
                    self._cursor = index + 1
                    seen[0] = True
                    return True
            return not self.live

        await self.leg.changed.wait_for(found, timeout)
        return seen[0]

    async def wait_ended(self, timeout: float | None = None) -> bool:
        """Wait until this party is off the call; False on timeout. (For the transcript with
        every notification delivered, await `caller.call.wait_ended()` afterwards.)"""
        return await self.leg.changed.wait_for(lambda: not self.live, timeout)


@dataclass(eq=False)
class Ring:
    """A `LivePhone` ringing for one call: answer it or reject it."""

    phone: LivePhone
    leg: Leg
    decision: Outcome | None = None

    @property
    def caller(self) -> str:
        """Who is calling (the caller id shown on the phone)."""
        return self.leg.caller

    @property
    def call(self) -> SimCall:
        return self.leg.call

    @property
    def ringing(self) -> bool:
        """True until it is answered, rejected, or the caller gives up."""
        return self.decision is None and self in self.phone.rings

    def answer(self) -> LiveCaller:
        """Pick up: the call connects, and the returned `LiveCaller` acts on this line."""
        self._decide("answer")
        return LiveCaller(self.leg)

    def reject(self, outcome: Literal["busy", "no-answer"] = "busy") -> None:
        """Decline the call: the network reports the line busy (or, if asked, not answered)."""
        self._decide(outcome)

    def _decide(self, outcome: Outcome) -> None:
        if not self.ringing:
            raise ConfigError(f"the call from {self.caller} is no longer ringing")
        self.decision = outcome
        self.phone.rings.remove(self)
        self.leg.changed.notify()


@dataclass(frozen=True, eq=False)
class LivePhone(Phone):
    """A simulated number answered by someone outside the simulation (a person, a test).

    It rings until a `Ring` in `rings` is answered or rejected, or the caller gives up (the
    dial's `timeout`, or the simulator's `outbound_ring_timeout`). `on_ring` is called as
    each ring starts.

        phone = LivePhone()
        sim.add_phone("+34600000001", phone)
        ...
        caller = phone.rings[0].answer()
    """

    rings: list[Ring] = field(default_factory=list, compare=False)
    on_ring: Callable[[Ring], None] | None = field(default=None, compare=False)

    async def ring(self, clock: Clock, line: Line, timeout: float) -> Outcome:
        if not isinstance(line, Leg):  # the engine's lines are legs
            raise TypeError("a LivePhone rings on a simulator leg")
        ring = Ring(self, line)
        self.rings.append(ring)
        line.changed.notify()  # so `call.changed.wait_for(lambda: phone.rings)` works
        try:
            if self.on_ring is not None:
                self.on_ring(ring)
            if not await line.changed.wait_for(lambda: ring.decision is not None, timeout):
                return "no-answer"
            assert ring.decision is not None
            return ring.decision
        finally:
            if ring in self.rings:
                self.rings.remove(ring)
