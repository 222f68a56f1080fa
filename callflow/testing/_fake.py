"""``FakeCall``: run a flow with no server, no platform and no real waiting."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import anyio.lowlevel
from anyio import TaskHandle
from anyio.abc import TaskGroup

from .._awaited import check_awaited, check_flow
from .._call import _NO_SERVICES, Call, Direction
from .._commands import (
    Command,
    Conference,
    Dequeue,
    Dial,
    Enqueue,
    Gather,
    Hangup,
    Pause,
    Play,
    Prompt,
    Record,
    Resume,
    Say,
    SendDigits,
    StartRecording,
    StopRecording,
    Transfer,
)
from .._events import Event, EventKind
from .._exceptions import FlowError
from .._machine import AnsweredBy
from .._recognise import recognise
from .._results import DialStatus
from .._session import Session, _is_call_ended
from .._settings import DEFAULT_APOLOGY
from ..platforms import Platform

__all__ = ("DialOutcome", "FakeCall", "Line")

SECONDS_PER_WORD = 0.4
PLAY_SECONDS = 3.0
MAX_BLOCKING = 1000
BUSY_ROUNDS = 32
"""Scheduler rounds after an answer within which a flow not busy in its own I/O reaches its
next verb (it takes about ten)."""


@dataclass(frozen=True, slots=True)
class DialOutcome:
    """What a dialled number does in a FakeCall: answer and talk, or fail."""

    status: DialStatus | Literal["unreachable"] = "answered"
    talk: float = 10.0
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a FakeCall transcript, at ``time`` seconds of virtual time."""

    time: float
    who: Literal["app", "caller", "network"]
    what: str

    def __str__(self) -> str:
        return f"{self.time:6.1f}s  {self.who:<7}  {self.what}"


@dataclass(frozen=True, slots=True)
class _Step:
    action: Literal["press", "silence", "hang_up", "speak", "record_nothing", "hang_up_busy",
                    "say"]
    value: str = ""
    seconds: float = 0.0


class FakeCall:
    """A scripted caller and network for one run of a flow.

    Script the caller with ``press``, ``silence``, ``speak``, ``record_nothing`` and
    ``hang_up`` (each consumed by the next ``gather``/``record``, in order),
    ``hang_up_while_busy`` (hang up while the flow is inside its own code between
    verbs: a ``call.step``, an HTTP request, an ``anyio.sleep``) or with
    ``hang_up_at=k`` (hang up when the flow reaches its k-th waiting verb);
    script the network with ``on_dial`` and ``on_conference``.  After
    ``await fake.run()``, assert on ``heard``, ``commands``, ``transcript``,
    ``ended_by`` and ``error``.  Time is virtual: a 30 s timeout passes at once.
    """

    def __init__(
        self,
        flow: Callable[[Call], Awaitable[None]],
        *,
        caller: str = "+34600000001",
        callee: str = "+34900000001",
        direction: Direction = "inbound",
        data: dict[str, Any] | None = None,
        call_id: str = "fake-call",
        hang_up_at: int | None = None,
        apology: str | None = DEFAULT_APOLOGY,
        response_budget: float | None = None,
        hangup_grace: float = 10.0,
        keepalive: float | None = None,
        platform: Platform | None = None,
        services: Any = _NO_SERVICES,
        answered_by: AnsweredBy | None = None,
    ) -> None:
        """``platform`` makes verbs raise ``UnsupportedFeature`` where that platform would;
        ``keepalive`` holds the line the way Twilio needs when a slow flow has nothing
        to say (see ``Session``); ``services`` is what the flow finds in
        ``call.services`` (fakes of what the app's lifespan yields).  ``answered_by`` is
        what machine detection found on an outbound call (``call.answered_by``):
        ``"machine"`` is an answering machine whose beep has gone, as with
        ``machine_detection="wait_for_beep"``."""
        check_flow(flow, getattr(flow, "__name__", "flow"))
        self.flow = flow
        self.call: Call[Any] = Call(call_id, caller=caller, callee=callee,
                                    direction=direction, data=data, services=services,
                                    answered_by=answered_by)
        self.hang_up_at = hang_up_at
        self.apology = apology
        self.response_budget = response_budget
        self.hangup_grace = hangup_grace
        self.stall_timeout: float | None = None
        self.recording_grace = 0.0  # the fake network never reports a recording late
        self.keepalive = keepalive
        self.platform = platform
        self.clock = 0.0
        self.commands: list[Command] = []
        self.transcript: list[Line] = []
        self.ended_by: Literal["caller", "app"] | None = None
        self.error: BaseException | None = None
        self.blocking = 0
        self._script: deque[_Step] = deque()
        self._dial: dict[str, DialOutcome] = {}
        self._conference: dict[str, float] = {}
        self._queue: dict[str, tuple[float, float, bool]] = {}
        self._take: dict[str, tuple[bool, float]] = {}
        self._recordings = 0
        self._background: dict[int, float] = {}  # background recordings: id -> start
        self._tg: TaskGroup | None = None
        self._pushed: list[Command] = []
        self._push_event = anyio.Event()
        self._session: Session | None = None

    # -- scripting ------------------------------------------------------------------

    def press(self, keys: str) -> FakeCall:
        """The caller presses ``keys`` at the next gather (or ends the next recording)."""
        self._script.append(_Step("press", keys))
        return self

    def silence(self) -> FakeCall:
        """The caller stays silent through the next gather (every retry times out)."""
        self._script.append(_Step("silence"))
        return self

    def say(self, words: str) -> FakeCall:
        """The caller says ``words`` at the next gather.

        A gather listening for speech (``input="speech"`` or ``"dtmf speech"``) gets
        the transcript the simulator's recogniser makes of them: the closest of its
        ``hints`` when one is close enough, else the words as said, with a confidence.
        A gather that only listens for keys hears nothing (it times out).
        """
        if not words.strip():
            raise ValueError("say() needs words to say")
        self._script.append(_Step("say", words))
        return self

    def talk(self, seconds: float) -> FakeCall:
        """The caller talks for ``seconds`` at the next recording (a script's ``talk:S``)."""
        self._script.append(_Step("speak", seconds=seconds))
        return self

    speak = talk
    """The old name of ``talk``."""

    def record_nothing(self) -> FakeCall:
        """The caller says nothing at the next recording: no recording is made, and
        ``record()`` returns ``RecordResult(url=None, duration=0.0)``, as Twilio does
        for an empty one (at a gather, this step is silence)."""
        self._script.append(_Step("record_nothing"))
        return self

    def hang_up(self) -> FakeCall:
        """The caller hangs up at the next verb that waits for the network or them."""
        self._script.append(_Step("hang_up"))
        return self

    def hang_up_while_busy(self) -> FakeCall:
        """The caller hangs up while the flow is busy in its own code between two verbs.

        Once the steps before it are used, the next answer the flow is given that leaves
        it waiting on something other than a verb (inside ``call.step``, an HTTP request,
        an ``anyio.sleep``; its first I/O before any verb counts too) is followed at once
        by the hang-up: the flow learns of it at its next verb or ``call.step``, which
        raise ``CallEnded``.  A flow that reaches its next waiting verb without such a
        pause has the caller hang up there, as with ``hang_up()``; the transcript says
        which (``hangs up while the flow is busy`` or ``hangs up``).
        """
        self._script.append(_Step("hang_up_busy"))
        return self

    def on_dial(self, number: str, status: DialStatus | Literal["unreachable"] = "answered",
                *, talk: float = 10.0, reason: str | None = None) -> FakeCall:
        """What ``number`` does when the flow dials it (default: answers, talks 10 s)."""
        self._dial[number] = DialOutcome(status, talk, reason)
        return self

    def on_queue(self, name: str, *, wait: float = 30.0, talk: float = 60.0,
                 left: bool = False) -> FakeCall:
        """How the caller's wait in queue ``name`` goes: an agent takes them after ``wait``
        seconds and talks ``talk`` seconds (default), or with ``left`` nobody does and
        they leave the queue after ``wait`` seconds (``max_wait``)."""
        self._queue[name] = (wait, talk, left)
        return self

    def on_take_next(self, name: str, *, waiting: bool = True, talk: float = 60.0
                     ) -> FakeCall:
        """Whether someone waits in queue ``name`` when the flow (an agent) takes the next
        caller (default: yes, and they talk ``talk`` seconds)."""
        self._take[name] = (waiting, talk)
        return self

    def on_conference(self, name: str, *, stay: float) -> FakeCall:
        """How long the caller stays in conference ``name`` (default 60 s)."""
        self._conference[name] = stay
        return self

    # -- what happened --------------------------------------------------------------

    @property
    def heard(self) -> list[str]:
        """What the caller heard: spoken texts, and ``play:URL`` for audio files."""
        return [line.what.split(" ", 1)[1] for line in self.transcript
                if line.who == "app" and line.what.startswith(("says ", "plays "))]

    @property
    def said(self) -> str:
        """Everything spoken to the caller, as one string."""
        return " ".join(h for h in self.heard if not h.startswith("play:"))

    def transcript_text(self) -> str:
        return "\n".join(str(line) for line in self.transcript)

    # -- SessionHost ----------------------------------------------------------------

    def spawn(self, func: Callable[[], Coroutine[Any, Any, None]]) -> TaskHandle[None]:
        assert self._tg is not None
        return self._tg.start_soon(func)

    def check(self, command: Command) -> None:
        if self.platform is not None:
            self.platform.check(command)

    async def push(self, session: Session, commands: list[Command]) -> None:
        self._log("network", f"setcommands with {len(commands)} command(s)")
        self._pushed.extend(commands)
        self._push_event.set()

    def finished(self, session: Session) -> None:
        self._push_event.set()

    # -- running --------------------------------------------------------------------

    async def run(self) -> FakeCall:
        """Run the flow to the end of the call; returns self for chaining asserts."""
        async def flow(call: Call) -> None:
            try:
                await self.flow(call)
                check_awaited(call)
            except BaseException as exc:
                if isinstance(exc, Exception) and not _is_call_ended(exc):
                    self.error = exc
                raise

        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._session = Session(self, self.call, flow)
            c = self.call
            kind: EventKind = "incoming" if c.direction == "inbound" else "answered"
            self._log("network", f"{c.caller} calls {c.callee}" if kind == "incoming"
                      else f"{c.callee} answers a call from {c.caller}")
            if c.answered_by is not None:
                self._log("network", "an answering machine answered; it beeps" if
                          c.answered_by == "machine" else f"answered by: {c.answered_by}")
            first = await self._deliver(kind)
            await self._execute(deque(first or []))
            tg.cancel_scope.deadline = anyio.current_time() + self.hangup_grace
        return self

    async def _deliver(self, kind: EventKind, **fields: Any) -> list[Command] | None:
        assert self._session is not None
        c = self.call
        fields.setdefault("leg_id", "caller-leg")
        fields.setdefault("caller", c.caller)
        fields.setdefault("callee", c.callee)
        event = Event(kind=kind, call_id=c.id, timestamp=_iso(self.clock), **fields)
        # A real network leaves the flow's other tasks (an ``events()`` reader) time
        # to run between notifications; without this yield trio may starve them.
        await anyio.lowlevel.checkpoint()
        if self._script and self._script[0].action == "hang_up_busy":
            return await self._deliver_then_hang_up(event)
        commands = await self._session.handle(event)
        if commands:
            self.commands.extend(commands)
        return commands

    async def _deliver_then_hang_up(self, event: Event) -> list[Command] | None:
        """Deliver ``event``; if the flow then waits on its own I/O, the caller hangs up."""
        session = self._session
        assert session is not None
        answers: list[list[Command] | None] = []
        answered = anyio.Event()

        async def answer() -> None:
            answers.append(await session.handle(event))
            answered.set()

        self.spawn(answer)
        # A flow that goes straight to its next verb answers within a few scheduler rounds;
        # one still at work after them waits on its own I/O (or computes between awaits).
        # Not wait_all_tasks_blocked(): on asyncio it polls every 0.1 s, long enough for a
        # short I/O to finish unseen.
        for _ in range(BUSY_ROUNDS):
            if answered.is_set():
                break
            await anyio.lowlevel.checkpoint()
        if answered.is_set():
            commands = answers[0]
            if commands:
                self.commands.extend(commands)
            return commands
        self._script.popleft()
        self._log("caller", "hangs up while the flow is busy")
        self.ended_by = "caller"
        # What the flow answers after this is for a call that is gone: nobody runs it.
        await self._deliver("hangup", by="caller")
        return None

    async def _execute(self, queue: deque[Command]) -> None:
        session = self._session
        assert session is not None
        while True:
            if self.ended_by is not None:
                return
            if not queue:
                if session.done or session.ended:
                    if self.ended_by is None:
                        self.ended_by = "caller" if session.ended_by == "caller" else "app"
                    return
                await self._push_event.wait()
                self._push_event = anyio.Event()
                queue = deque(self._pushed)
                self.commands.extend(self._pushed)
                self._pushed.clear()
                continue
            command = queue.popleft()
            replacement = await self._run_command(command)
            if self.ended_by is not None:
                return
            if replacement is not None:
                queue = deque(replacement)

    async def _run_command(self, command: Command) -> list[Command] | None:
        if isinstance(command, Say | Play):
            self._hear(command)
            return None
        if isinstance(command, SendDigits):
            self._log("app", f"sends tones {command.digits}")
            self.clock += 0.5 * command.digits.count("w") + 0.25 * len(
                command.digits.replace("w", ""))
            return None
        if isinstance(command, Pause):
            self._log("app", f"waits {command.seconds:g}s")
            self.clock += command.seconds
            return None
        if isinstance(command, Hangup):
            self._log("app", "hangs up")
            for id in list(self._background):  # the end of the call stops them
                await self._save_background(id)
            self.ended_by = "app"
            await self._deliver("hangup", by="app")
            return None
        if isinstance(command, Resume):
            return await self._deliver("resumed", step=command.step)
        if isinstance(command, StartRecording):
            self._log("app", f"starts recording {command.id}" + (" (dual)" if command.dual
                                                                 else ""))
            self._background[command.id] = self.clock
            return None
        if isinstance(command, StopRecording):
            await self._save_background(command.id)
            return None
        if isinstance(command, Transfer):
            outcome = self._dial.get(command.number, DialOutcome())
            self._log("app", f"transfers the caller to {command.number}")
            self._log("network", f"{command.number}: {outcome.status.replace('_', ' ')}")
            self.ended_by = "app"
            return None
        self.blocking += 1
        if self.blocking > MAX_BLOCKING:
            raise FlowError(f"the flow reached {MAX_BLOCKING} waiting verbs; is it looping?")
        if self._caller_hangs_up():
            self._log("caller", "hangs up")
            self.ended_by = "caller"
            await self._deliver("hangup", by="caller")
            return None
        if isinstance(command, Gather):
            return await self._gather(command)
        if isinstance(command, Record):
            return await self._record(command)
        if isinstance(command, Dial):
            return await self._dial_numbers(command)
        if isinstance(command, Enqueue):
            wait, talk, left = self._queue.get(command.name, (30.0, 60.0, False))
            if command.max_wait and wait > command.max_wait:
                wait, left = command.max_wait, True
            self._log("app", f"puts the caller in queue {command.name!r}")
            self.clock += wait
            if left:
                self._log("network", f"the caller leaves queue {command.name!r}")
                return await self._deliver("resumed", step=command.step, reason="leave",
                                           duration=wait)
            self._log("network", f"an agent takes the caller; they talk {talk:g}s")
            self.clock += talk
            return await self._deliver("resumed", step=command.step, reason="bridged",
                                       duration=wait)
        if isinstance(command, Dequeue):
            waiting, talk = self._take.get(command.name, (True, 60.0))
            self._log("app", f"takes the next caller of queue {command.name!r}")
            leg = f"queue-{self.blocking}"
            if not waiting:
                self.clock += command.timeout
                self._log("network", f"nobody in queue {command.name!r}")
                await self._deliver("no_answer", leg_id=leg, callee="")
            else:
                await self._deliver("answered", leg_id=leg, callee="")
                self.clock += talk
                self._log("network", f"the queued caller talks {talk:g}s and hangs up")
                await self._deliver("hangup", leg_id=leg, callee="", by="caller")
            return await self._deliver("resumed", step=command.step)
        if isinstance(command, Conference):
            self._log("app", f"puts the caller in conference {command.name!r}")
            self.clock += self._conference.get(command.name, 60.0)
            self._log("caller", f"leaves conference {command.name!r}")
            return await self._deliver("resumed", step=command.step)
        raise TypeError(f"FakeCall cannot run {command!r}")  # pragma: no cover

    async def _save_background(self, id: int) -> None:
        """A background recording stops: the network reports it saved."""
        start = self._background.pop(id, None)
        if start is None:
            return
        seconds = round(self.clock - start, 1)
        self._log("app", f"stops recording {id} ({seconds:g}s)")
        await self._deliver("recording_saved", step=id, duration=seconds,
                            recording_url=f"https://recordings.invalid/{self.call.id}/"
                                          f"background-{id}.wav")

    def _caller_hangs_up(self) -> bool:
        if self.hang_up_at is not None and self.blocking >= self.hang_up_at:
            return True
        if self._script and self._script[0].action in ("hang_up", "hang_up_busy"):
            self._script.popleft()
            return True
        return False

    async def _gather(self, command: Gather) -> list[Command] | None:
        step = self._script.popleft() if self._script else _Step("silence")
        if step.action == "press":
            if command.prompt is not None:
                self._hear(command.prompt)
            digits = ""
            for key in step.value:
                if key not in command.valid_digits:
                    continue
                digits += key
                if key == command.finish_on_key or (
                    command.num_digits and len(digits) >= command.num_digits
                ):
                    break
                self.clock += 0.3
            self._log("caller", f"presses {digits or step.value}")
            if digits:
                return await self._deliver("digits", step=command.step, digits=digits)
        if step.action == "say":
            if command.prompt is not None:
                self._hear(command.prompt)
            self.clock += SECONDS_PER_WORD * len(step.value.split())
            self._log("caller", f"says {step.value!r}")
            if command.input != "dtmf":
                transcript, confidence = recognise(step.value, command.hints)
                self._log("network", f"recognises {transcript!r} ({confidence:.2f})")
                return await self._deliver("digits", step=command.step, digits="",
                                           speech=transcript, confidence=confidence)
        for _ in range(max(1, command.retries)):
            if command.prompt is not None:
                self._hear(command.prompt)
            self.clock += command.timeout
        self._log("caller", "says nothing")
        return await self._deliver("resumed", step=command.step)

    async def _record(self, command: Record) -> list[Command] | None:
        if command.prompt is not None:
            self._hear(command.prompt)
        step = self._script.popleft() if self._script else _Step("speak", seconds=5.0)
        if step.action == "record_nothing":
            # No recording at all: no recording events, the platform just goes on.
            self.clock += command.silence_timeout
            self._log("caller", "records nothing")
            return await self._deliver("resumed", step=command.step)
        seconds = step.seconds if step.action == "speak" else 3.0
        seconds = min(seconds, command.max_length)
        self._recordings += 1
        url = f"https://recordings.invalid/{self.call.id}/{self._recordings}.wav"
        await self._deliver("recording_started")
        self.clock += seconds
        self._log("caller", f"records {seconds:g}s")
        await self._deliver("recording_stopped", recording_url=url, duration=seconds)
        return await self._deliver("resumed", step=command.step)

    async def _dial_numbers(self, command: Dial) -> list[Command] | None:
        self._log("app", f"dials {', '.join(command.numbers)}")
        legs = [(f"leg-{self.blocking}-{i}", n, self._dial.get(n, DialOutcome()))
                for i, n in enumerate(command.numbers)]
        for leg, number, _ in legs:
            await self._deliver("ringing", leg_id=leg, callee=number)
        winner = next(((leg, n, o) for leg, n, o in legs if o.status == "answered"), None)
        if winner is not None:
            leg, number, outcome = winner
            self.clock += 2.0
            self._log("network", f"{number} answers")
            await self._deliver("answered", leg_id=leg, callee=number)
            if command.on_answer is not None:
                self._log("app", f"whispers to {number}")
            self.clock += outcome.talk
            self._log("network", f"{number} hangs up after {outcome.talk:g}s")
            await self._deliver("hangup", leg_id=leg, callee=number, by="caller")
        else:
            self.clock += min(command.timeout, 30.0)
            for leg, number, outcome in legs:
                self._log("network", f"{number}: {outcome.status.replace('_', ' ')}")
                kind: EventKind = outcome.status
                await self._deliver(kind, leg_id=leg, callee=number, reason=outcome.reason)
        return await self._deliver("resumed", step=command.step)

    def _hear(self, prompt: Prompt) -> None:
        for _ in range(max(1, prompt.repeat)):
            if isinstance(prompt, Say):
                self._log("app", f"says {prompt.text}")
                self.clock += SECONDS_PER_WORD * max(1, len(prompt.text.split()))
            else:
                self._log("app", f"plays play:{prompt.url}")
                self.clock += PLAY_SECONDS

    def _log(self, who: Literal["app", "caller", "network"], what: str) -> None:
        self.transcript.append(Line(round(self.clock, 1), who, what))


def _iso(seconds: float) -> str:
    whole = int(seconds)
    return f"2013-03-01T10:{whole // 60 % 60:02d}:{whole % 60:02d}Z" if whole < 3600 else (
        f"2013-03-01T{10 + whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}Z")


