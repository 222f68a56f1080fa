"""The ``Call`` object: what a flow holds and the verbs it awaits."""

from __future__ import annotations

import dataclasses
import random as _random
import uuid as _uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeAlias, TypeVar, overload

import anyio
import typing_extensions
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._awaited import _Verb, verb
from ._checks import check_count, check_keys, check_seconds, check_voice, e164
from ._commands import (
    DTMF_OUT,
    Conference,
    ConferenceOptions,
    Dequeue,
    Dial,
    Enqueue,
    Gather,
    HangupReason,
    Pause,
    Play,
    Prompt,
    Record,
    Say,
    SendDigits,
    SpeechInput,
    StartRecording,
    Transfer,
)
from ._events import Event
from ._exceptions import ConfigurationError
from ._hotkeys import HotkeyHandler, Hotkeys
from ._machine import AnsweredBy
from ._recording import Recording
from ._results import DialResult, GatherResult, QueueResult, RecordResult
from ._ssml import Speech

if TYPE_CHECKING:
    from ._session import Session

__all__ = ("Call", "Direction")

Direction: TypeAlias = Literal["inbound", "outbound"]
T = TypeVar("T")
P = ParamSpec("P")
S = typing_extensions.TypeVar("S", default=Any)
"""What the app's lifespan yields: the services a flow reaches as ``call.services``."""

_NO_SERVICES: Any = object()

DEFAULT_NO_INPUT: tuple[str, ...] = (
    "Sorry, I didn't hear anything.",
    "Please press a key on your phone's keypad.",
)
DEFAULT_NO_MATCH: tuple[str, ...] = (
    "Sorry, that is not one of the options.",
    "Please listen to the options and press one of the keys.",
)


MAX_REPEAT = 100
MAX_WAIT = 3600.0
MAX_DIGITS = 128  # what a notification may carry (platforms._limits)
MAX_RECORDING = 14_400.0  # Twilio's longest <Record> (4 hours)
MAX_RING = 600.0  # Twilio's and Telnyx's longest dial timeout


def _prompt(prompt: str | Speech | Prompt | None, *, what: str) -> Prompt | None:
    if isinstance(prompt, str):
        return Say(prompt)
    if isinstance(prompt, Speech):
        return Say(prompt.text, ssml=prompt.ssml)
    if isinstance(prompt, Say):
        check_voice(prompt.voice, what=f"{what}(prompt=Say(...))")
        check_count(prompt.repeat, what=f"{what}(prompt=Say(repeat=...))", minimum=1,
                    maximum=MAX_REPEAT)
    elif isinstance(prompt, Play):
        check_count(prompt.repeat, what=f"{what}(prompt=Play(repeat=...))", minimum=1,
                    maximum=MAX_REPEAT)
    elif prompt is not None:
        raise ValueError(f"{what}(prompt=...) is text, Speech(...), Say(...) or Play(...), not "
                         f"{type(prompt).__name__}")
    return prompt


def _speech(text: str | Speech, voice: str, language: str | None, repeat: int) -> Say:
    if isinstance(text, Speech):
        return Say(text.text, voice=voice, repeat=repeat, language=language, ssml=text.ssml)
    if not isinstance(text, str):
        raise TypeError(f"say() takes a str or a Speech, not {type(text).__name__}")
    return Say(text, voice=voice, repeat=repeat, language=language)


def _check_digits(digits: str) -> str:
    bad = sorted(set(digits) - DTMF_OUT)
    if not digits or bad:
        raise ValueError(f"send_digits({digits!r}): send 0-9, * and #, with w for a half-second "
                         f"pause{'; not ' + ', '.join(map(repr, bad)) if bad else ''}")
    return digits


def _e164(number: str) -> str:
    return number[4:] if number.startswith("tel:") else number


class Call(Generic[S]):
    """A live telephone call, as a flow sees it.

    ``say``, ``play`` and ``wait`` queue a command and return at once; ``gather``,
    ``record``, ``dial`` and ``conference`` send everything queued to the platform
    and suspend the flow until the platform answers.  When the caller hangs up,
    ``CallEnded`` is raised from whatever the flow awaits, and from every later verb.

    ``Call[Services]`` types ``call.services`` (what the app's lifespan yields).
    """

    __slots__ = ("_began", "_hotkeys", "_services", "_session", "_unawaited", "answered_by",
                 "callee", "caller", "data", "direction", "id", "recordings")

    def __init__(
        self,
        id: str,
        *,
        caller: str,
        callee: str,
        direction: Direction = "inbound",
        data: dict[str, Any] | None = None,
        services: Any = _NO_SERVICES,
        answered_by: AnsweredBy | None = None,
    ) -> None:
        self.id = id
        self.caller = _e164(caller)
        self.callee = _e164(callee)
        self.direction: Direction = direction
        self.data: dict[str, Any] = {} if data is None else data
        self._services = services
        self._unawaited: _Verb[Any] | None = None
        # (placed, answered) wall-clock times, kept only for call-end hooks (_records).
        self._began: tuple[float, float] | None = None
        self.answered_by: AnsweredBy | None = answered_by
        """Who picked up an outbound call placed with ``machine_detection``: ``human``,
        ``machine`` or ``unknown``; None when no detection was asked."""
        self.recordings: list[Recording] = []
        """The call's background recordings (``start_recording``), in order."""
        self._session: Session
        self._hotkeys: list[Hotkeys] = []

    def __repr__(self) -> str:
        return (f"<Call {self.id} {self.direction} {self.caller} -> {self.callee}"
                f"{' ended' if self.ended else ''}>")

    @property
    def ended(self) -> bool:
        """True once the call is over; every verb then raises ``CallEnded``."""
        return self._session.ended

    @property
    def services(self) -> S:
        """The app's services: what its lifespan yielded (``App(lifespan=...)``).

        In a test, ``FakeCall(flow, services=...)`` hands the flow fakes instead.
        """
        services = self._services
        if services is _NO_SERVICES:
            raise ConfigurationError(
                "call.services: this app has no lifespan; give it one that yields the "
                "services, App(lifespan=...), or pass FakeCall(flow, services=...) in a test")
        return services  # type: ignore[no-any-return]

    # -- side effects, once per call ------------------------------------------------

    @overload
    async def step(self, func: Callable[P, Awaitable[T]], /, *args: P.args,
                   **kwargs: P.kwargs) -> T: ...
    @overload
    async def step(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...

    @verb
    async def step(self, func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Call ``func(*args, **kwargs)`` (sync or async) once per call, and keep its outcome.

        With a durable store, the result (JSON data) or the exception is recorded in
        the call's history; when the call is rebuilt from its history (after a restart,
        on another worker), ``step`` returns or raises the recorded outcome without
        calling ``func`` again.  Wrap every side effect in a step (a database write, a
        payment, an HTTP request): code outside steps runs again on each replay.  A
        step interrupted by a crash runs again (at least once, never lost).
        """
        return await self._session.run_step(func, args, kwargs)

    def now(self) -> datetime:
        """The current time (UTC), the same on every replay of this point of the flow."""
        stamp = self._session.value("now", lambda: datetime.now(UTC).timestamp())
        return datetime.fromtimestamp(stamp, UTC)

    def random(self) -> float:
        """A random float in [0, 1), the same on every replay of this point of the flow."""
        value: float = self._session.value("random", _random.random)
        return value

    def uuid(self) -> _uuid.UUID:
        """A random UUID (version 4), the same on every replay of this point of the flow."""
        return _uuid.UUID(self._session.value("uuid", lambda: str(_uuid.uuid4())))

    # -- verbs that queue --------------------------------------------------------

    @verb
    async def say(self, text: str | Speech, *, voice: str = "female",
                  language: str | None = None, repeat: int = 1) -> None:
        """Speak ``text`` to the caller (queued; sent with the next blocking verb).

        ``text`` is plain text or a ``Speech`` (pauses, digits, dates, amounts...).
        ``voice`` is "female", "male" or one of the platform's voice names;
        ``language`` (BCP 47, "es-ES") None is the platform's default.
        """
        check_voice(voice, what="say()")
        check_count(repeat, what="say(repeat=...)", minimum=1, maximum=MAX_REPEAT)
        self._session.queue(_speech(text, voice, language, repeat))

    @verb
    async def play(self, url: str, *, repeat: int = 1) -> None:
        """Play the audio file at ``url`` (queued)."""
        check_count(repeat, what="play(repeat=...)", minimum=1, maximum=MAX_REPEAT)
        self._session.queue(Play(url, repeat=repeat))

    @verb
    async def wait(self, seconds: float) -> None:
        """Keep the line silent for ``seconds`` (queued)."""
        seconds = check_seconds(seconds, what="wait()", maximum=MAX_WAIT)
        self._session.queue(Pause(seconds))

    @verb
    async def send_digits(self, digits: str) -> None:
        """Send DTMF tones down the line, e.g. an extension to another IVR (queued).

        ``digits`` are 0-9, * and #; each ``w`` waits half a second ("1234w#").
        """
        self._session.queue(SendDigits(_check_digits(digits)))

    def hotkeys(self, keys: Mapping[str, HotkeyHandler | None]) -> Hotkeys:
        """Keys honoured during every ``gather`` and ``menu`` of a section of the flow.

        ``async with call.hotkeys({"0": operator, "*": None}) as keys:`` -- when the
        caller presses one of the keys at a prompt inside the block, the block is left
        at once; its handler (``async def operator(call)``, or None) is awaited, and
        ``keys.pressed`` says which key it was.  Built on gather results, so it
        replays like any other verb in a durable call.
        """
        return Hotkeys(self, keys)

    # -- verbs that wait for the platform -----------------------------------------

    @verb
    async def gather(
        self,
        *,
        prompt: str | Speech | Prompt | None = None,
        num_digits: int = 0,
        finish_on_key: str = "#",
        valid_digits: str = "0123456789*#",
        timeout: float = 5,
        retries: int = 1,
        input: SpeechInput = "dtmf",
        hints: Sequence[str] = (),
        language: str | None = None,
        barge_in: bool | None = None,
    ) -> GatherResult:
        """Play ``prompt`` and collect keys until ``num_digits`` or the finish key.

        With ``input="speech"`` (or ``"dtmf speech"``, either) the caller may answer by
        speaking: the result's ``transcript`` and ``confidence`` say what was heard;
        ``hints`` are words and phrases they are likely to say, ``language`` the one
        they speak (BCP 47).  ``barge_in=True`` lets a key or speech cut the prompt
        short, ``False`` plays it out first (None: the platform's default).  With no
        input after ``retries`` attempts the result has ``timed_out`` set.
        """
        if input not in ("dtmf", "speech", "dtmf speech"):
            raise ValueError(f"gather(input={input!r}): use 'dtmf', 'speech' or 'dtmf speech'")
        if isinstance(hints, str):
            raise TypeError("gather(hints=...) takes a list of phrases, not one string")
        prompt_ = _prompt(prompt, what="gather")
        check_count(num_digits, what="gather(num_digits=...)", minimum=0, maximum=MAX_DIGITS)
        check_keys(finish_on_key, what="gather(finish_on_key=...)", single=True)
        check_keys(valid_digits, what="gather(valid_digits=...)", single=False)
        timeout = check_seconds(timeout, what="gather(timeout=...)", above=True,
                                maximum=MAX_WAIT)
        check_count(retries, what="gather(retries=...)", minimum=1, maximum=MAX_REPEAT)
        command = Gather(
            0,
            prompt=prompt_,
            num_digits=num_digits,
            finish_on_key=finish_on_key,
            valid_digits=valid_digits,
            timeout=timeout,
            retries=retries,
            input=input,
            hints=tuple(hints),
            language=language,
            barge_in=barge_in,
        )
        if self._hotkeys:
            return await Hotkeys.gather(self, command)
        return await self._gather(command)

    async def _gather(self, command: Gather) -> GatherResult:
        result: GatherResult = await self._session.block(
            lambda step: dataclasses.replace(command, step=step))
        return result

    @verb
    async def record(
        self,
        *,
        prompt: str | Speech | Prompt | None = None,
        max_length: float = 60,
        silence_timeout: float = 15,
        beep: bool = False,
        finish_on_key: str | None = None,
    ) -> RecordResult:
        """Record the caller until silence, the finish key or ``max_length`` seconds."""
        prompt_ = _prompt(prompt, what="record")
        max_length = check_seconds(max_length, what="record(max_length=...)", above=True,
                                   maximum=MAX_RECORDING)
        silence_timeout = check_seconds(silence_timeout, what="record(silence_timeout=...)",
                                        maximum=MAX_WAIT)
        if finish_on_key is not None:
            check_keys(finish_on_key, what="record(finish_on_key=...)", single=True)
        result: RecordResult = await self._session.block(
            lambda step: Record(
                step,
                prompt=prompt_,
                max_length=max_length,
                silence_timeout=silence_timeout,
                beep=beep,
                finish_on_key=finish_on_key,
            )
        )
        return result

    @verb
    async def dial(
        self,
        number_or_numbers: str | Sequence[str],
        *,
        caller_id: str | None = None,
        timeout: float = 30,
        on_answer: str | Speech | Prompt | None = None,
    ) -> DialResult:
        """Ring one number, or several at once, and bridge the caller to whoever answers.

        Returns when the bridged leg hangs up or nobody answered; the status says which.
        ``on_answer`` is played to the answering party before the bridge (a whisper).
        """
        if isinstance(number_or_numbers, str):
            numbers: tuple[str, ...] = (e164(number_or_numbers, what="dial()"),)
        else:
            numbers = tuple(e164(n, what="dial()") for n in number_or_numbers)
        if not numbers:
            raise ValueError("dial() needs at least one number")
        caller = e164(caller_id, what="dial(caller_id=...)") if caller_id else None
        timeout = check_seconds(timeout, what="dial(timeout=...)", above=True,
                                maximum=MAX_RING)
        whisper = _prompt(on_answer, what="dial(on_answer=...)")
        result: DialResult = await self._session.block(
            lambda step: Dial(
                step,
                numbers=numbers,
                caller_id=caller,
                timeout=timeout,
                on_answer=whisper,
            )
        )
        return result

    @verb
    async def conference(
        self,
        name: str,
        *,
        beeps_on_enter: Literal[0, 1, 2] = 0,
        speak_on_enter: str | None = None,
        beeps_on_exit: Literal[0, 1, 2] = 0,
        speak_on_exit: str | None = None,
        play_on_exit: str | None = None,
        end_on_exit: bool = False,
        start_on_enter: bool = True,
        mute: bool = False,
        max_members: int = 41,
        time_limit: float = 0,
    ) -> None:
        """Put the caller in conference room ``name``; returns when they leave it."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"conference() needs a room name, not {name!r}")
        check_count(max_members, what="conference(max_members=...)", minimum=1,
                    maximum=10_000)
        time_limit = check_seconds(time_limit, what="conference(time_limit=...)")
        for option, beeps in (("beeps_on_enter", beeps_on_enter),
                              ("beeps_on_exit", beeps_on_exit)):
            check_count(beeps, what=f"conference({option}=...)", minimum=0, maximum=2)
        options = ConferenceOptions(
            beeps_on_enter=beeps_on_enter,
            speak_on_enter=speak_on_enter,
            beeps_on_exit=beeps_on_exit,
            speak_on_exit=speak_on_exit,
            play_on_exit=play_on_exit,
            end_on_exit=end_on_exit,
            start_on_enter=start_on_enter,
            mute=mute,
            max_members=max_members,
            time_limit=time_limit,
        )
        await self._session.block(lambda step: Conference(step, name=name, options=options))

    @verb
    async def enqueue(self, name: str, *, music: str | None = None,
                      announce_every: float = 30, max_wait: float = 0) -> QueueResult:
        """Wait in queue ``name`` until an agent's ``take_next(name)`` takes the caller.

        The caller hears ``music`` (an audio URL) and, every ``announce_every`` seconds,
        their position in the queue and the expected wait.  Returns when the caller's
        conversation with the agent is over (``bridged``), or after ``max_wait`` seconds
        (0: no limit) without an agent (``left``).  Twilio's queues (``<Enqueue>``).
        """
        result: QueueResult = await self._session.block(
            lambda step: Enqueue(step, name, music, float(announce_every), float(max_wait)))
        return result

    @verb
    async def take_next(self, name: str, *, timeout: float = 30) -> DialResult:
        """Bridge this caller (an agent) to the caller who waited longest in queue ``name``.

        Waits up to ``timeout`` seconds for someone to be in the queue; returns when the
        conversation is over (``answered``, with its duration), or ``no_answer`` when
        nobody came.  Twilio's queues (``<Dial><Queue>``).
        """
        result: DialResult = await self._session.block(
            lambda step: Dequeue(step, name, float(timeout)))
        return result

    @verb
    async def hangup(self, reason: HangupReason = "rejected") -> None:
        """End the call now; later verbs raise ``CallEnded``."""
        await self._session.hangup(reason)

    @verb
    async def start_recording(self, *, dual: bool = False) -> Recording:
        """Start recording the call in the background and return at once (queued).

        ``dual`` records each party on a channel of its own where the platform can.
        ``await rec.stop()`` stops it; ``rec.result`` is the saved recording once the
        platform reports it, and ``call.recordings`` lists them all.
        """
        session = self._session
        session.check_alive()
        recording = Recording(session, session.next_step(), dual=dual)
        if session.saved_recordings:  # a rebuilt call: saved before this replay got here
            recording.result = session.saved_recordings.pop(recording.id, None)
        session.queue(StartRecording(recording.id, dual=dual))
        self.recordings.append(recording)
        return recording

    def recording(self, *, dual: bool = False) -> _Recorded:
        """``async with call.recording(dual=True) as rec:``: record what happens inside."""
        return _Recorded(self, dual)

    @verb
    async def transfer(self, number: str, *, caller_id: str | None = None,
                       timeout: float = 30) -> None:
        """Put the caller through to ``number`` and leave the call (a blind transfer).

        What the flow queued before is said first; then the caller talks to ``number``
        until either hangs up, and the flow is done with the call: later verbs raise
        ``CallEnded``.  When ``number`` does not answer within ``timeout`` seconds (or
        is busy), the call ends.  To stay with the caller and hear how it went, use
        ``dial`` instead.
        """
        await self._session.leave(Transfer(e164(number, what="transfer()"),
                                           e164(caller_id, what="transfer(caller_id=...)")
                                           if caller_id else None,
                                           float(timeout)))

    @verb
    async def menu(
        self,
        prompt: str | Speech | Prompt,
        options: Mapping[str, T],
        *,
        retries: int = 3,
        timeout: float = 5,
        no_input: str | Sequence[str] = DEFAULT_NO_INPUT,
        no_match: str | Sequence[str] = DEFAULT_NO_MATCH,
    ) -> T | None:
        """Offer a keypad menu and return the chosen option's value.

        Re-prompts on silence (``no_input``) and on a key that is not an option
        (``no_match``); each may be a list of messages that escalate with the
        failures of its own kind (the first no-match after a no-input hears
        ``no_match[0]``).  Returns None when every attempt failed.
        """
        if not options:
            raise ValueError("menu() needs at least one option")
        check_seconds(timeout, what="menu(timeout=...)", above=True, maximum=MAX_WAIT)
        widths = {len(key) for key in options}
        num_digits = widths.pop() if len(widths) == 1 else 0
        attempts = max(1, retries)
        # How often each kind of failure happened so far: each list escalates on its own,
        # so a caller who mistyped once is not scolded with the last no-input message.
        failures = {True: 0, False: 0}
        for attempt in range(attempts):
            result = await self.gather(prompt=prompt, num_digits=num_digits, timeout=timeout)
            if result.digits in options:
                return options[result.digits]
            if attempt == attempts - 1:
                break
            silent = result.timed_out
            messages = no_input if silent else no_match
            if isinstance(messages, str):
                messages = (messages,)
            if messages:
                await self.say(messages[min(failures[silent], len(messages) - 1)])
            failures[silent] += 1
        return None

    def events(self) -> AsyncIterator[Event]:
        """Every notification about this call and its legs, as it arrives.

        Iterate it in a task beside the flow; it ends when the call ends.  Events
        are kept from the moment ``events()`` is called, even before the
        iteration starts.
        """
        session = self._session
        session.check_alive()
        send, receive = anyio.create_memory_object_stream[Event](64)
        if session.observers is None:
            session.observers = []
        session.observers.append(send)
        return _drain(session, send, receive)


class _Recorded:
    """What ``call.recording()`` returns: starts on entry, stops on exit."""

    __slots__ = ("_call", "_dual", "_recording")

    def __init__(self, call: Call, dual: bool) -> None:
        self._call, self._dual = call, dual
        self._recording: Recording | None = None

    async def __aenter__(self) -> Recording:
        self._recording = await self._call.start_recording(dual=self._dual)
        return self._recording

    async def __aexit__(self, *exc: object) -> None:
        if self._recording is not None and not self._call.ended:
            await self._recording.stop()


async def _drain(
    session: Session,
    send: MemoryObjectSendStream[Event],
    receive: MemoryObjectReceiveStream[Event],
) -> AsyncIterator[Event]:
    try:
        async with receive:
            async for event in receive:
                yield event
    finally:
        if session.observers is not None and send in session.observers:
            session.observers.remove(send)
        send.close()
