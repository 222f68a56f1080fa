"""The session runtime: one suspended flow per live call.

Contract (borrowed from temporalio's workflow activations): one notification
in, one batch of commands out, and never raise into the transport.

A session owns the flow's task, the commands the flow queued since its last
blocking verb (the *outbox*) and that verb's pending answer.  A notification
that answers the pending verb resumes the flow; whatever the flow queues until
it blocks again is that notification's response.  When the flow is slow (it
awaits its own I/O past the response budget) the response carries what is
queued plus a ``Resume`` marker, and the rest travels on the marker's callback;
with nothing queued the response is empty and the rest goes out through the
platform's REST API when the flow is ready (``SessionHost.push``).  A platform
that hangs up a call with nothing left to do (Twilio) sets ``keepalive``: then
the empty response is a short ``Pause`` and a marker instead, a hold loop that
lasts until the flow has something to say.

Per-call state is a handful of slots, the step counter and the outbox.  In
durable mode a session also keeps a ``Journal`` (``callflow._journal``): every
answered verb, step outcome and batch of commands is appended to the call's
history, and a session rebuilt on another worker replays its flow against that
history up to the point where it was suspended.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ._awaited import check_awaited
from ._commands import (
    BlockingCommand,
    Command,
    Conference,
    Dequeue,
    Dial,
    Enqueue,
    Gather,
    Hangup,
    Pause,
    Record,
    Resume,
    Say,
)
from ._events import LEG_FAILURES, Event
from ._exceptions import CallEnded, FlowError, PlatformError
from ._journal import (
    Journal,
    NonDeterminismError,
    decode_exception,
    decode_result,
    encode_command,
    encode_event,
    encode_exception,
    encode_result,
)
from ._logformat import CURRENT
from ._recording import Recording
from ._results import (
    DialResult,
    DialStatus,
    GatherResult,
    QueueResult,
    QueueStatus,
    RecordResult,
)
from ._spawner import Cancellable
from ._waiter import Waiter

if TYPE_CHECKING:
    from ._call import Call

__all__ = ("Session", "SessionHost")

logger = logging.getLogger("callflow")

Flow = Callable[["Call"], Awaitable[None]]

MAX_OUTBOX = 500
"""A flow that queues more commands than this without blocking is stuck in a loop."""

EventKey = tuple[str, int | None, str, str | None]


def event_key(event: Event) -> EventKey:
    """What makes two deliveries of a notification the same notification."""
    return (event.kind, event.step, event.leg_id, event.digits)


def same_notification(key: EventKey | None, other: EventKey | list[Any] | None) -> bool:
    """Whether ``key`` is a delivery of the notification ``other`` (a key, or one from JSON).

    A platform's fallback request carries the body of the notification that failed but
    not its action URL's step (BlueVia): a key without a step matches one with.
    """
    if key is None or other is None:
        return False
    kind, step, leg, digits = key
    return (kind == other[0] and leg == other[2] and digits == other[3]
            and (step is None or step == other[1]))


class SessionHost(Protocol):
    """What a session needs from whoever runs it (the app, or ``FakeCall``)."""

    @property
    def response_budget(self) -> float | None:
        """Seconds a notification waits for the flow to block (None: no limit)."""

    @property
    def hangup_grace(self) -> float:
        """Seconds a flow busy in its own I/O may run on after the call ended."""

    @property
    def apology(self) -> str | None:
        """What the caller hears when the flow raises."""

    @property
    def stall_timeout(self) -> float | None:
        """Seconds a flow may stay busy after missing the response budget (None: forever)."""

    @property
    def recording_grace(self) -> float:
        """Seconds a ``record()`` the caller hung up on waits for its recording to arrive.

        Twilio may report the hang-up before the ``<Record>`` action that carries the
        recording; without the wait, the caller's message would be lost.
        """

    @property
    def keepalive(self) -> float | None:
        """Seconds of each hold pause while a slow flow has nothing to say.

        None when the platform keeps a call with nothing to do up by itself
        (BlueVia), so a slow flow's response may simply be empty.
        """

    def check(self, command: Command) -> None:
        """Raise ``UnsupportedFeature`` when the platform cannot carry ``command``."""

    def spawn(self, func: Callable[[], Coroutine[Any, Any, None]]) -> Cancellable:
        """Run ``func`` in a task that outlives the current request."""

    async def push(self, session: Session, commands: list[Command]) -> None:
        """Deliver commands while no notification is waiting (REST API); raise PlatformError."""

    def finished(self, session: Session) -> None:
        """The session is over and may be forgotten."""


class _Pending:
    """The blocking verb a flow is suspended on, and what its answer collected so far."""

    __slots__ = ("answered_at", "command", "done", "ended", "failures", "hung_up_at", "leg",
                 "legs", "number", "recording", "result", "talked")

    def __init__(self, command: BlockingCommand) -> None:
        self.command = command
        self.done = Waiter()
        self.ended = False
        self.result: Any = None
        self.recording: tuple[str | None, float] | None = None
        self.leg: str | None = None
        self.legs: set[str] | None = None
        self.number: str | None = None
        self.answered_at: float | None = None
        self.hung_up_at: float | None = None
        self.talked: float | None = None
        self.failures: list[tuple[str, str | None]] = []

    def feed(self, event: Event, caller_leg: str, spent: set[str] | None = None) -> bool:
        """Take one event; true when it answers the verb (``result`` is then set).

        ``spent`` are the legs of earlier dials: their late or re-delivered events
        must not answer (or fail) this one.
        """
        command = self.command
        if isinstance(command, Gather):
            if event.kind == "digits" and event.step in (command.step, None):
                self.result = _gather_result(event, command.finish_on_key)
                return True
            if event.kind == "resumed" and event.step == command.step:
                self.result = GatherResult(timed_out=True)
                return True
            return False
        if event.kind == "resumed" and event.step == command.step:
            if isinstance(command, Enqueue):
                self.result = _queue_result(event)
            else:
                self.result = self._final_result()
            return True
        if isinstance(command, Record) and event.kind == "recording_stopped":
            self.recording = (event.recording_url, event.duration or 0.0)
        elif (isinstance(command, Dial | Dequeue) and event.leg_id
              and event.leg_id != caller_leg
              and (spent is None or event.leg_id not in spent)):
            self._feed_leg(event)
        return False

    def _feed_leg(self, event: Event) -> None:
        if self.legs is None:
            self.legs = set()
        self.legs.add(event.leg_id)
        if event.kind == "answered" and self.leg is None:
            self.leg = event.leg_id
            self.number = event.callee or None
            self.answered_at = _seconds(event.timestamp)
        elif event.kind == "hangup" and event.leg_id == self.leg:
            self.hung_up_at = _seconds(event.timestamp)
            # A platform that reports the leg's talk time (Twilio's DialCallDuration)
            # knows better than two webhook timestamps.
            self.talked = event.duration
        elif event.kind in LEG_FAILURES:
            self.failures.append((event.kind, event.reason))

    def _final_result(self) -> Any:
        command = self.command
        if isinstance(command, Record):
            url, duration = self.recording or (None, 0.0)
            return RecordResult(url=url, duration=duration)
        if isinstance(command, Dial | Dequeue):
            if self.leg is not None:
                duration = 0.0
                if self.talked is not None:
                    duration = self.talked
                elif self.answered_at is not None and self.hung_up_at is not None:
                    duration = max(0.0, self.hung_up_at - self.answered_at)
                return DialResult("answered", number=self.number, duration=duration)
            kinds = [kind for kind, _ in self.failures]
            status: DialStatus = "failed"
            if "busy" in kinds:
                status = "busy"
            elif "no_answer" in kinds:
                status = "no_answer"
            reason = next((r for _, r in self.failures if r), None)
            return DialResult(status, reason=reason)
        return None  # Conference: the caller left the room


_QUEUE_STATUS: dict[str, QueueStatus] = {"bridged": "bridged", "leave": "left"}


def _queue_result(event: Event) -> QueueResult:
    """An ``enqueue``'s answer: how the wait ended (``reason``), how long it was."""
    status = _QUEUE_STATUS.get(event.reason or "", "failed")
    return QueueResult(status, waited=event.duration or 0.0,
                       reason=None if status != "failed" else event.reason)


def _gather_result(event: Event, finish_on_key: str) -> GatherResult:
    if event.speech is not None:
        return GatherResult(transcript=event.speech, confidence=event.confidence)
    digits = event.digits or ""
    if finish_on_key and digits.endswith(finish_on_key):
        return GatherResult(digits=digits[: -len(finish_on_key)], finish_key=finish_on_key)
    return GatherResult(digits=digits)


def _seconds(timestamp: str) -> float | None:
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Evicted(BaseException):
    """Raised from a verb of a flow whose session was dropped from the cache.

    A ``BaseException``: a flow's ``except Exception`` must not take it for a failure
    of its own.  The call goes on elsewhere (or after a replay here).
    """


def _is_call_ended(exc: BaseException) -> bool:
    if isinstance(exc, CallEnded):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_call_ended(inner) for inner in exc.exceptions)
    return False


class _Answering:
    """Set once a notification is answered: what duplicates of it in flight wait for.

    Every notification that resumes a flow makes one, and a duplicate in flight is
    rare: the ``anyio.Event`` (under asyncio an ``asyncio.Event``, a deque and more)
    is only made for one that waits.
    """

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
            if self._set:
                self._event.set()
        await self._event.wait()


ANSWERING_KINDS = frozenset({"digits", "resumed", "incoming"})
"""Notifications whose answer is what the call does next (they resume or start the flow)."""
_COLLECTED = frozenset({"answered", "hangup", "recording_stopped", *LEG_FAILURES})


class _Over:
    """What a ``Call`` holds instead of its session once the session is over.

    A session and its ``Call`` point at each other: without this the pair (and the
    flow's frames) would wait for the cyclic garbage collector.  Every verb raises
    ``CallEnded``, as it would on the finished session.
    """

    __slots__ = ("ended_by", "id")

    ended = True
    evicted = False
    observers = None

    def __init__(self, call_id: str, ended_by: str | None) -> None:
        self.id, self.ended_by = call_id, ended_by or "caller"

    def check_alive(self) -> None:
        raise CallEnded(self.id, self.ended_by)

    def queue(self, command: Command) -> None:
        self.check_alive()

    async def block(self, make: Callable[[int], BlockingCommand]) -> Any:
        self.check_alive()

    async def hangup(self, reason: Any) -> None:
        self.check_alive()

    async def leave(self, last: Command) -> None:
        self.check_alive()

    async def run_step(self, func: Callable[..., Any], args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
        self.check_alive()

    def value(self, kind: str, make: Callable[[], Any]) -> Any:
        return make()


class Session:
    """One call's flow, suspended between notifications."""

    __slots__ = (
        "_grace",
        "_held",
        "_inflight",
        "_last_key",
        "_last_response",
        "_late",
        "_late_timer",
        "_marker",
        "_request",
        "_spent_legs",
        "_stall",
        "_start_key",
        "_task",
        "born_at",
        "call",
        "caller_leg",
        "done",
        "ended",
        "ended_by",
        "error",
        "evicted",
        "failed",
        "first_batch",
        "flow",
        "host",
        "journal",
        "news_at",
        "observers",
        "outbox",
        "pending",
        "saved_recordings",
        "started",
        "step",
    )

    def __init__(self, host: SessionHost, call: Call, flow: Flow) -> None:
        self.host = host
        self.call = call
        self.flow = flow
        self.outbox: list[Command] = []
        self.pending: _Pending | None = None
        self.step = 0
        self.caller_leg = ""
        self.ended = False
        self.ended_by: str | None = None
        self.error: Exception | None = None  # what the flow raised (a call record says it)
        self.failed = False
        """The flow raised (or stalled): the caller got the apology."""
        self.done = False
        self.started = False
        self.first_batch = False
        self._start_key: EventKey | None = None
        self.observers: list[MemoryObjectSendStream[Event]] | None = None
        self._request: Waiter | None = None
        self._marker: int | None = None
        self._held = False
        self._task: Cancellable | None = None
        self._grace: Cancellable | None = None
        self._stall: Cancellable | None = None
        self._last_key: EventKey | None = None
        self._last_response: list[Command] | None = None
        # Legs of the dials already over (created by the first one): see _Pending.feed.
        self._spent_legs: set[str] | None = None
        # Not a Waiter: every duplicate of the notification in flight waits on it, and
        # a Waiter wakes only its last waiter.  It lives only while a request is
        # answered, so it costs a suspended call nothing.
        self._inflight: _Answering | None = None
        self.journal: Journal | None = None
        self.evicted = False
        # A record() the caller hung up on, still waiting for its recording (and its timer).
        self._late: _Pending | None = None
        self._late_timer: Cancellable | None = None
        # When the call began, and when its last notification came (the host's clock:
        # ``anyio.current_time``), for the memory mode's expiry (``callflow._expiry``).
        self.born_at = self.news_at = 0.0
        # Background recordings saved before a replay reached their start_recording().
        self.saved_recordings: dict[int, RecordResult] | None = None
        call._session = self

    # -- the transport side ---------------------------------------------------

    async def handle(self, event: Event) -> list[Command] | None:
        """Answer one notification: the commands to respond with, or None to leave the queue be.

        ``first_batch`` tells, right after this returns, whether the commands are
        the call's first batch (a platform may need to prefix those).
        """
        if self.observers is not None:
            self._observe(event)
        self.first_batch = False
        if event.kind == "recording_saved":
            self._recording_saved(event)
            return None
        key: EventKey | None = None
        if event.kind in ANSWERING_KINDS or (
            event.kind == "answered" and (not self.started or event.leg_id == self.caller_leg)
        ):
            key = event_key(event)
            if same_notification(key, self._last_key):  # a duplicate: answer it the same way
                if self._inflight is not None:
                    await self._inflight.wait()
                self.first_batch = key == self._start_key
                return self._last_response
        if not self.started:
            if event.kind in ("incoming", "answered"):
                self.caller_leg = event.leg_id
                self._start_key = key
                commands = await self._respond(key, start=True)
                self.first_batch = True
                return commands
            return None
        if event.kind == "hangup" and (not event.leg_id or event.leg_id == self.caller_leg):
            self.end(by=event.by or "caller")
            # Nothing held back for the platform can be delivered any more.
            self._marker, self._held = None, False
            self.outbox.clear()
            if self.done and self._request is None:
                self.host.finished(self)
            return None
        if self._marker is not None and event.kind == "resumed" and event.step == self._marker:
            self._marker = None
            return await self._respond(key)
        if self._late is not None:
            self._take_late_recording(event)
        if self.ended:
            return None
        pending = self.pending
        if pending is not None and pending.feed(event, self.caller_leg, self._spent_legs):
            if pending.legs:
                self._spend(pending.legs)
            if self.journal is not None:
                self.journal.add({
                    "t": "verb", "step": pending.command.step,
                    "cmd": encode_command(pending.command),
                    "result": encode_result(pending.result),
                    "key": list(key) if key is not None else None,
                    "legs": sorted(pending.legs) if pending.legs else [],
                })
            return await self._respond(key, answered=pending)
        if self.journal is not None and self._collecting(event):
            # What a waiting dial or record collected: a replay feeds it again.
            self.journal.add({"t": "event", "event": encode_event(event)})
        return None

    def _recording_saved(self, event: Event) -> None:
        """A background recording is saved: it becomes its ``Recording``'s result."""
        if event.step is None:
            return
        result = RecordResult(url=event.recording_url, duration=event.duration or 0.0)
        if self.journal is not None:
            self.journal.add({"t": "recording", "id": event.step, "url": result.url,
                              "duration": result.duration})
        if not Recording.take(self.call.recordings, event.step, result):
            if self.saved_recordings is None:
                self.saved_recordings = {}
            self.saved_recordings[event.step] = result

    def only_collects(self, event: Event) -> bool:
        """Whether ``event`` is one the waiting ``dial`` or ``record`` only collects.

        A leg of the dial answering, failing or hanging up, a recording that stopped: the
        verb takes note, and the flow does not run (its own answer comes later).
        """
        pending = self.pending
        if pending is None or self.ended:
            return False
        command = pending.command
        if isinstance(command, Dial | Dequeue):
            return (event.kind in _COLLECTED and event.kind != "recording_stopped"
                    and bool(event.leg_id) and event.leg_id != self.caller_leg)
        return isinstance(command, Record) and event.kind == "recording_stopped"

    def is_interested(self, event: Event) -> bool:
        """Whether ``handle(event)`` could change the call (False: answer it from memory)."""
        if event.kind in ANSWERING_KINDS or event.kind in ("hangup", "recording_saved"):
            return True
        if event.kind == "answered" and (not self.started or event.leg_id == self.caller_leg):
            return True
        return self._collecting(event)

    def _collecting(self, event: Event) -> bool:
        """Whether a waiting dial or record may collect ``event`` (see ``_Pending.feed``)."""
        pending = self.pending
        return (pending is not None and isinstance(pending.command, Dial | Record | Dequeue)
                and event.kind in _COLLECTED)

    def waits_on_platform(self) -> bool:
        """Whether the call's next move is the platform's: an answer to a verb, or the
        callback of a Resume marker.  Not during a dial or a conference, whose parties may
        talk for long with no news."""
        pending = self.pending
        if pending is not None and not self.ended:
            return not isinstance(pending.command, Dial | Conference | Enqueue | Dequeue)
        return self._marker is not None or self._held

    def last_answer(self) -> tuple[EventKey | None, list[Command] | None, bool]:
        """The last answered notification's key, its answer, and whether it was the first batch."""
        key = self._last_key
        return key, self._last_response, key is not None and key == self._start_key

    async def resume_answer(self, key: EventKey | None) -> list[Command]:
        """Replay the flow, answering the notification ``key`` whose answer was lost."""
        return await self._respond(key, resume=True)

    async def _respond(
        self, key: EventKey | None, *, start: bool = False, answered: _Pending | None = None,
        resume: bool = False,
    ) -> list[Command]:
        done = _Answering()
        self._last_key, self._last_response, self._inflight = key, None, done
        ready = self._request = Waiter()
        try:
            if start:
                self.started = True
                self._task = self.host.spawn(self._run)
            elif resume:
                self._task = self.host.spawn(self._run)
            elif answered is not None:
                self.pending = None
                answered.done.set()
            if self._held or self.done:
                self._held = False
                ready.set()
            if not ready.is_set():
                budget = self.host.response_budget
                await ready.wait(budget)
            slow = not ready.is_set()
            commands = self._take_outbox(slow=slow)
            self._last_response = commands
            if self.journal is not None:
                self._note_batch("answer", commands, key=key, first=start)
            # Watch that the flow reaches a verb that waits before the platform gives up.
            # The watch counts from the first slow response since the flow last reached a
            # verb that waits (block() ends it): a platform that keeps the caller on hold
            # meanwhile (Twilio's hold loop, a new step each time) must not restart it.
            if (slow and not self.done and self.host.stall_timeout is not None
                    and self._stall is None):
                self._stall = self.host.spawn(self._watch_stall)
            return commands
        finally:
            self._request = None
            self._inflight = None
            done.set()
            if self.done and not self._held and self._marker is None:
                self.host.finished(self)

    def _note_batch(self, kind: str, commands: list[Command], *, key: EventKey | None = None,
                    first: bool = False) -> None:
        assert self.journal is not None
        block = next((c for c in commands if isinstance(
            c, Gather | Record | Dial | Conference | Enqueue | Dequeue)), None)
        entry: dict[str, Any] = {
            "t": kind, "cmds": [encode_command(c) for c in commands], "counter": self.step,
            "block": encode_command(block) if block is not None else None,
            "marker": self._marker,
        }
        if kind == "answer":
            entry["key"] = list(key) if key is not None else None
            entry["first"] = first
        self.journal.add(entry)

    def take_outbox(self) -> list[Command]:
        """What the flow queued and nobody has taken (a replay that ended the call)."""
        commands, self.outbox = self.outbox, []
        return commands

    def _take_outbox(self, *, slow: bool = False) -> list[Command]:
        commands, self.outbox = self.outbox, []
        if slow and not self.done:
            keepalive = self.host.keepalive
            if commands:
                # The flow missed the budget: let the caller hear what is queued, and
                # have the platform call back when it is done with it.
                self._marker = self.next_step()
                commands.append(Resume(self._marker))
            elif keepalive is not None:
                # Nothing to say, on a platform that would hang up an empty response:
                # hold the line and have it call back, until the flow is ready.
                self._marker = self.next_step()
                commands = [Pause(keepalive), Resume(self._marker)]
        return commands

    def end(self, *, by: str, discard: bool = True) -> None:
        """The call is over: wake the flow with CallEnded wherever it waits.

        ``discard`` drops what the flow queued: right when the caller has gone,
        wrong when the flow hung up and its goodbye still waits for delivery.
        """
        if self.ended:
            return
        self.ended, self.ended_by = True, by
        if self.journal is not None:
            self.journal.add({"t": "end", "by": by})
        if discard:
            self.outbox.clear()
        pending, self.pending = self.pending, None
        if pending is not None:
            if isinstance(pending.command, Record) and pending.recording is not None:
                # The caller hung up to end the message, as callers do: the recording
                # is in, so record() returns it and the next verb raises CallEnded.
                pending.result = pending._final_result()
            elif (isinstance(pending.command, Record) and by == "caller"
                  and self.host.recording_grace > 0 and self._task is not None):
                # The recording may still be on its way (Twilio can report the hang-up
                # before the <Record> action): record() waits for it, a little while.
                self._late = pending
                self._late_timer = self.host.spawn(self._wait_for_late_recording)
                pending = None
            else:
                pending.ended = True
            if pending is not None:
                pending.done.set()
        elif self._task is not None and not self.done:
            # Busy in its own I/O: let it reach a verb (which raises CallEnded)
            # or its end, within the grace period.
            self._grace = self.host.spawn(self._cancel_after_grace)
        if self.observers is not None:
            for stream in self.observers:
                stream.close()
            self.observers = None

    def _take_late_recording(self, event: Event) -> None:
        late = self._late
        assert late is not None
        if event.kind == "recording_stopped":
            late.recording = (event.recording_url, event.duration or 0.0)
        elif not (event.kind == "resumed" and event.step == late.command.step):
            return
        self._late = None
        if self._late_timer is not None:
            self._late_timer.cancel()
            self._late_timer = None
        if late.recording is None:
            late.ended = True
        else:
            late.result = late._final_result()
        late.done.set()

    async def _wait_for_late_recording(self) -> None:
        await anyio.sleep(self.host.recording_grace)
        late, self._late = self._late, None
        self._late_timer = None
        if late is not None:
            late.ended = True
            late.done.set()

    def _observe(self, event: Event) -> None:
        if self.observers is None:
            return
        for stream in self.observers:
            try:
                stream.send_nowait(event)
            except anyio.WouldBlock:
                logger.warning("%s: an events() reader is behind; dropped %s", self.call.id,
                               event.name or event.kind)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    def release(self) -> None:
        """Over and forgotten: let go of the ``Call`` (see ``_Over``), which the flow may keep."""
        over: Any = _Over(self.call.id, self.ended_by)
        self.call._session = over

    # -- the flow side ----------------------------------------------------------

    def next_step(self) -> int:
        self.step += 1
        return self.step

    def check_alive(self) -> None:
        if self.evicted:
            raise Evicted()
        if self.ended:
            raise CallEnded(self.call.id, self.ended_by or "caller")

    def queue(self, command: Command) -> None:
        self.check_alive()
        self.host.check(command)  # UnsupportedFeature, raised from the verb that asked
        if len(self.outbox) >= MAX_OUTBOX:
            raise FlowError(
                f"call {self.call.id}: the flow queued {MAX_OUTBOX} commands without waiting "
                "for the caller; is it looping around say() or play()?"
            )
        self.outbox.append(command)

    async def block(self, make: Callable[[int], BlockingCommand]) -> Any:
        """Queue a blocking command, hand the outbox over, and wait for its answer."""
        self.check_alive()
        journal = self.journal
        if journal is not None and journal.replaying:
            entry = journal.next()
            if entry is not None:
                if entry.get("t") != "verb":
                    raise self._diverged(entry, make(entry.get("step", 0)))
                step = int(entry["step"])
                command = make(step)
                if encode_command(command) != entry["cmd"]:
                    raise self._diverged(entry, command)
                self.step = max(self.step, step)
                if entry.get("legs"):
                    self._spend(entry["legs"])
                self.outbox.clear()  # sent when the call first got here
                return decode_result(entry["result"])
            return await self._reach_frontier(journal, make)
        command = make(self.next_step())
        self.queue(command)
        pending = self.pending = _Pending(command)
        if self._stall is not None:  # the flow reached a verb that waits: no longer stalled
            self._stall.cancel()
            self._stall = None
        await self.flush()
        return await self._answer_of(pending)

    async def _answer_of(self, pending: _Pending) -> Any:
        """Wait for the answer to the verb the flow is suspended on."""
        await pending.done.wait()
        if pending.ended:
            raise CallEnded(self.call.id, self.ended_by or "caller")
        return pending.result

    def _spend(self, legs: Iterable[str]) -> None:
        """These dialled legs are over: their late events must not answer a later dial."""
        if self._spent_legs is None:
            self._spent_legs = set()
        self._spent_legs.update(legs)

    async def _reach_frontier(self, journal: Journal, make: Callable[[int], BlockingCommand]
                              ) -> Any:
        """Replay got to where the history ends, at a verb: wait there, or go on live."""
        self.step = max(self.step, journal.step_counter)
        if journal.pending_step is None:
            journal.caught_up.set()  # nothing was sent for this verb yet: live from here
            return await self.block(make)
        command = make(journal.pending_step)
        if encode_command(command) != journal.pending_command:
            raise self._diverged({"t": "verb", "cmd": journal.pending_command}, command)
        self.outbox.clear()
        pending = self.pending = _Pending(command)
        for event in journal.frontier_events:
            pending.feed(event, self.caller_leg, self._spent_legs)
        if journal.held is not None:
            # Held for a Resume marker's callback, which has not come yet.
            self.outbox, self._held = list(journal.held), True
        journal.caught_up.set()
        return await self._answer_of(pending)

    def _diverged(self, entry: dict[str, Any], got: Any) -> NonDeterminismError:
        assert self.journal is not None
        kind = entry.get("t")
        expected = (f"step {entry.get('name')}" if kind == "step"
                    else f"{entry.get('k')}()" if kind == "value" else entry.get("cmd"))
        if not isinstance(got, str):
            got = encode_command(got)
        message = (f"the flow no longer matches its history at entry {self.journal.position}:"
                   f" the history has {expected}, the flow asked for {got}; was the flow "
                   "changed while the call was live, or does it branch on data not recorded "
                   "with call.step()?")
        return NonDeterminismError(message)

    async def run_step(self, func: Callable[..., Any], args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
        """``call.step``: run ``func`` once per call; on replay, its recorded outcome."""
        self.check_alive()
        name = getattr(func, "__qualname__", None) or type(func).__name__
        journal = self.journal
        if journal is not None and journal.replaying:
            entry = journal.next()
            if entry is not None:
                if entry.get("t") != "step" or entry.get("name") != name:
                    raise self._diverged(entry, f"step {name}")
                if "error" in entry:
                    raise decode_exception(entry["error"])
                return entry.get("result")
            journal.caught_up.set()
        try:
            result = func(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            if journal is not None:
                journal.add({"t": "step", "name": name, "error": encode_exception(exc)})
                await journal.commit()
            raise
        if journal is not None:
            try:
                json.dumps(result)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"call.step({name}) returned {type(result).__name__}, which "
                                "cannot be kept in the call's history: return JSON data "
                                "(dict, list, str, int, float, bool, None)") from exc
            journal.add({"t": "step", "name": name, "result": result})
            await journal.commit()
        return result

    def value(self, kind: str, make: Callable[[], Any]) -> Any:
        """``call.now()``, ``random()``, ``uuid()``: made once, then read from the history."""
        journal = self.journal
        if journal is None:
            return make()
        if journal.replaying:
            entry = journal.next()
            if entry is not None:
                if entry.get("t") != "value" or entry.get("k") != kind:
                    raise self._diverged(entry, f"{kind}()")
                return entry.get("v")
            journal.caught_up.set()
        value = make()
        journal.add({"t": "value", "k": kind, "v": value})
        return value

    async def flush(self) -> None:
        """Hand the outbox to whoever can carry it: a waiting request, a marker, or the API."""
        if self._request is not None:
            self._request.set()
        elif self._marker is not None:
            self._held = True
            if self.journal is not None:
                self._note_batch("held", self.outbox)
                await self.journal.commit()
        elif self.outbox:
            commands = self._take_outbox()
            try:
                await self.host.push(self, commands)
            except PlatformError as exc:
                logger.error("%s: could not deliver %d commands: %s; ending the call",
                             self.call.id, len(commands), exc)
                self.end(by="app")
            else:
                if self.journal is not None:
                    self._note_batch("push", commands)
                    await self.journal.commit()

    async def hangup(self, reason: Any) -> None:
        await self.leave(Hangup(reason))

    async def leave(self, last: Command) -> None:
        """Queue the call's last command (a hang-up, a transfer), deliver it, and end."""
        self.queue(last)
        await self.flush()
        self.end(by="app", discard=False)

    async def _watch_stall(self) -> None:
        timeout = self.host.stall_timeout
        await anyio.sleep(timeout or 0.0)
        if self.done or self.ended or self.pending is not None:
            self._stall = None
            return
        logger.error("%s: the flow has not reached a verb that waits for %.1f s; apologising, "
                     "hanging up and cancelling it", self.call.id, timeout)
        self._stall = None
        self.failed = True
        self.end(by="app")
        self.outbox = [Say(self.host.apology)] if self.host.apology else []
        self.outbox.append(Hangup())
        await self.flush()
        if self._task is not None:
            self._task.cancel()

    async def _cancel_after_grace(self) -> None:
        await anyio.sleep(self.host.hangup_grace)
        if not self.done and self._task is not None:
            logger.warning("%s: the flow did not finish within %.0f s of the hang-up; "
                           "cancelling it", self.call.id, self.host.hangup_grace)
            self._task.cancel()

    async def _run(self) -> None:
        # This task's log lines are about this call (--log-format json).
        CURRENT.set((self.call.id, self.flow))
        try:
            try:
                await self.flow(self.call)
                check_awaited(self.call)  # its last verb, never awaited: a FlowError
            except BaseException as exc:
                if self.evicted:
                    return  # the call goes on from its history; nothing to say or free here
                if not _is_call_ended(exc):
                    if not isinstance(exc, Exception):
                        raise
                    self.error = exc
                    self.failed = True
                    if isinstance(exc, NonDeterminismError):
                        logger.error("%s: %s; apologising and hanging up", self.call.id, exc)
                    else:
                        logger.exception("%s: the flow raised; apologising and hanging up",
                                         self.call.id)
                    if isinstance(exc, FlowError):
                        self.outbox.clear()  # a runaway queue: the caller gets the apology only
                    if not self.ended and self.host.apology:
                        self.outbox.append(Say(self.host.apology))
            if not self.ended:
                self.outbox.append(Hangup())
                self.ended, self.ended_by = True, "app"
                if self.journal is not None:
                    self.journal.add({"t": "end", "by": "app"})
                self.done = True
                if self.journal is None or not self.journal.replaying:
                    # A replay that ends here leaves its last words in the outbox, for
                    # the notification that started the replay.
                    await self.flush()
        finally:
            if self.journal is not None:
                self.journal.caught_up.set()
            if self.evicted:
                self.journal = None
                self.release()  # the flow has unwound: no cycle left through its Call
            if self._late_timer is not None:
                self._late_timer.cancel()
                self._late_timer = None
            if not self.evicted:
                self.done = True
                self.pending = None
                if self._stall is not None:
                    self._stall.cancel()
                    self._stall = None
                if self._grace is not None:
                    # The flow is over: no grace timer may outlive it (a FakeCall would
                    # wait it out).
                    self._grace.cancel()
                    self._grace = None
                if self._request is not None:
                    self._request.set()
                elif not self._held and self._marker is None:
                    self.host.finished(self)
