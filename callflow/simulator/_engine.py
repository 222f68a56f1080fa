"""One call on the simulated platform: its legs, its command queue and their execution."""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio
from anyio.abc import TaskGroup

from .._recognise import recognise
from ._clock import Signal
from ._network import Machine, Phone, Step, run_script
from ._recordings import make_wav
from ._transcript import EntryKind, Transcript, TranscriptEntry
from ._wire import (
    CallLegObject,
    CallObject,
    Command,
    Dial,
    EventName,
    GetDigits,
    Hangup,
    Notification,
    Notifications,
    Play,
    Prompt,
    Record,
    Redirect,
    Speak,
    Tones,
    Wait,
    iso,
    tel,
)

if TYPE_CHECKING:
    from ._simulator import Simulator

__all__ = ("Leg", "SimCall")

_DEFAULT_HANGUP_REASON = "rejected"
"""BlueVia's hangup reason when none is chosen (and a TwiML <Hangup>'s): every normal end
carries it, so it is not shown; "the application hung up" says it all. A reason chosen
(busy, idle...) is shown."""

logger = logging.getLogger("callflow.simulator")

SECONDS_PER_WORD = 0.4
BEEP_SECONDS = 0.3
UNKNOWN_AUDIO_SECONDS = 3.0
_OUTCOME_EVENTS: dict[str, tuple[EventName, EntryKind]] = {
    "busy": ("Busy", "busy"),
    "no-answer": ("NoAnswer", "no-answer"),
    "unreachable": ("NotReachable", "not-reachable"),
    "fail": ("Failed", "failed"),
}

LegStatus = Literal["ringing", "connected", "onhold", "terminated"]


def speech_seconds(text: str) -> float:
    return SECONDS_PER_WORD * len(text.split())


class Leg:
    """One party's connection to a call; also the `Line` its script acts on."""

    def __init__(
        self,
        call: SimCall,
        caller: str,
        destination: str,
        direction: Literal["Inbound", "Outbound"],
        *,
        main: bool = False,
    ) -> None:
        self.call = call
        self.leg_id = str(uuid.uuid4())
        self.caller = caller
        self.destination = destination
        self.direction = direction
        self.main = main
        self.status: LegStatus = "ringing"
        self.created = call.clock.now()
        self.updated = self.created
        self.connected_at: float | None = None
        self.ended_at: float | None = None
        self.heard: list[str] = []
        self.talks: list[tuple[float, float]] = []
        self.changed = call.changed

    # the party's number, as shown in transcripts
    @property
    def party(self) -> str:
        return self.caller if self.direction == "Inbound" else self.destination

    @property
    def live(self) -> bool:
        return self.status != "terminated" and not self.call.terminated

    @property
    def listening(self) -> bool:
        return self.main and (self.call._listening or self.call._recording)

    @property
    def hearing(self) -> bool:
        """True while a gather listens for this party's speech."""
        return self.main and (self.call._hearing or self.call.transcriber is not None)

    def set_status(self, status: LegStatus) -> None:
        now = self.call.clock.now()
        self.status = status
        self.updated = now
        if status == "connected" and self.connected_at is None:
            self.connected_at = now
        if status == "terminated" and self.ended_at is None:
            self.ended_at = now
        self.call.changed.notify()

    def press(self, key: str) -> None:
        self.call._log("keys", key, self, main=self.main)
        if self.main:
            self.call._key(key)

    def say(self, text: str) -> None:
        """The party speaks ``text``: a gather listening for speech recognises it."""
        self.call._log("said", text, self, main=self.main)
        if self.main:
            self.call._said(text)
        now = self.call.clock.now()
        self.talks.append((now, now + speech_seconds(text)))

    def talk(self, seconds: float) -> None:
        now = self.call.clock.now()
        self.talks.append((now, now + seconds))
        self.call._log("talk", f"{self.party} talks for {seconds:g}s", self)
        self.call.changed.notify()

    def hang_up(self) -> None:
        if self.main:
            self.call._end("participant", self)
        elif self.live:
            self.call._leg_ended(self, "fromParticipant")

    def to_object(self, wall: float) -> CallLegObject:
        start = self.connected_at
        end = self.ended_at if self.ended_at is not None else self.call.clock.now()
        return {
            "callLegId": self.leg_id,
            "callerId": tel(self.caller),
            "destination": tel(self.destination),
            "legStatus": self.status,
            "direction": self.direction,
            "duration": str(int(end - start)) if start is not None else "0",
            "createdAt": iso(wall + self.created),
            "lastUpdated": iso(wall + self.updated),
        }


@dataclass
class _Job:
    kind: Literal["notify", "put"]
    url: str | None
    payload: dict[str, Any] = field(default_factory=dict)
    data: bytes = b""
    blocking: bool = False
    done: bool = False
    result: list[Command] | None = None


class SimCall:
    """A call on the simulated platform. Await `wait_ended()` for its transcript."""

    def __init__(
        self,
        sim: Simulator,
        *,
        caller: str,
        callee: str,
        direction: Literal["inbound", "outbound"],
        callback_url: str | None,
        fallback_url: str | None,
        all_events: bool = False,
        script: Iterable[Step] = (),
        phone: Phone | None = None,
    ) -> None:
        self.sim = sim
        self.clock = sim.clock
        self.call_id = str(uuid.uuid4())
        self.changed: Signal = self.clock.signal()
        self.direction = direction
        self.account_number = callee if direction == "inbound" else caller
        self.callback_url = callback_url
        self.fallback_url = fallback_url
        self.all_events = all_events
        self.transcript = Transcript(self.call_id, caller, callee, direction)
        self.status: Literal["connecting", "established", "terminated"] = "connecting"
        self.started = self.clock.now()
        self.established_at: float | None = None
        self.updated = self.started
        self.queue: deque[Command] = deque()
        self.legs: list[Leg] = []
        self.main = Leg(
            self, caller, callee, "Inbound" if direction == "inbound" else "Outbound", main=True
        )
        self.legs.append(self.main)
        self._script = tuple(script)
        self._phone = phone
        self._listening = False
        self._recording = False
        self._keys: deque[str] = deque()
        self._valid = ""
        self._speech: deque[str] = deque()
        self._hearing = False  # a gather listens for speech
        self.transcriber: Callable[[str], None] | None = None
        """Set while a front end transcribes the caller (Telnyx ``transcription_start``):
        it gets every utterance of the main leg."""
        self._record_finish = ""
        self._record_stop = False
        self._epoch = 0
        self._command_scope: anyio.CancelScope | None = None
        self._engine_scope: anyio.CancelScope | None = None
        self._ended_by: tuple[Literal["fromParticipant", "fromApplication"], str] | None = None
        self._outbox: deque[_Job] = deque()
        self._closing = False
        self._ended = anyio.Event()
        self._ptg: TaskGroup | None = None

    # -- public ---------------------------------------------------------------------------

    @property
    def terminated(self) -> bool:
        return self.status == "terminated" or self._ended_by is not None

    async def wait_ended(self) -> Transcript:
        """Wait until the call is over and its notifications are delivered."""
        await self._ended.wait()
        return self.transcript

    def to_object(self) -> CallObject:
        """The call object of `GET /calls/{callId}`."""
        wall = self.sim.epoch
        start = self.established_at
        end = self.updated if self.status == "terminated" else self.clock.now()
        obj: CallObject = {
            "callId": self.call_id,
            "createdAt": iso(wall + self.started),
            "lastUpdated": iso(wall + max(self.updated, *(leg.updated for leg in self.legs))),
            "callStatus": self.status,
            "startTime": iso(wall + (start if start is not None else self.started)),
            "duration": str(int(end - start)) if start is not None else "0",
            "numberOfLegs": str(len(self.legs)),
            "callLegs": [leg.to_object(wall) for leg in self.legs],
        }
        return obj

    def set_commands(self, commands: list[Command]) -> None:
        """Replace the queue and interrupt the running command (setcommands)."""
        self._epoch += 1
        self.queue = deque(commands)
        if self._command_scope is not None:
            self._command_scope.cancel()
        self.changed.notify()

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        logger.info("%s: %s call %s → %s", self.call_id, self.direction, self.main.caller,
                    self.main.destination)
        try:
            async with anyio.create_task_group() as tg:
                self.clock.spawn(tg, self._notifier)
                await self._engine()
                self._closing = True
                self.changed.notify()
        finally:
            self.status = "terminated"
            self.transcript.ended = True
            self.transcript.duration = round(self.clock.now() - self.started, 3)
            self._ended.set()
            for observer in tuple(self.sim.observers):
                observer(self, None)
            last = self.transcript.texts("hangup")
            logger.info("%s: ended after %.1fs%s", self.call_id, self.transcript.duration,
                        f" ({last[-1]})" if last else "")

    async def _engine(self) -> None:
        with anyio.CancelScope() as self._engine_scope:
            if self._ended_by is not None:  # hung up before the engine started
                self._engine_scope.cancel()
            async with anyio.create_task_group() as ptg:
                self._ptg = ptg
                try:
                    if self.direction == "inbound":
                        await self._start_inbound()
                    else:
                        await self._start_outbound()
                    await self._run_queue()
                finally:
                    ptg.cancel_scope.cancel()
        self._finish()

    def _end(self, by: Literal["participant", "application"], leg: Leg | None = None,
             reason: str = "") -> None:
        if self._ended_by is not None:
            return
        direction: Literal["fromParticipant", "fromApplication"] = (
            "fromParticipant" if by == "participant" else "fromApplication"
        )
        self._ended_by = (direction, reason)
        if self._engine_scope is not None:
            self._engine_scope.cancel()
        self.changed.notify()

    async def _stop(self, by: Literal["participant", "application"], reason: str = "") -> None:
        """End the call from inside the engine: cancels the engine scope, never returns."""
        self._end(by, reason=reason)
        await anyio.sleep_forever()

    def _finish(self) -> None:
        direction, reason = self._ended_by or ("fromApplication", "")
        who = self.main.party if direction == "fromParticipant" else "the application"
        if direction == "fromApplication" and reason == _DEFAULT_HANGUP_REASON:
            reason = ""
        if self.main.status == "connected" or direction == "fromParticipant":
            self._log("hangup", f"{who} hung up" + (f" ({reason})" if reason else ""),
                      self.main, direction=direction)
        for leg in self.legs:
            if leg.status != "terminated":
                was_up = leg.status == "connected" or leg.main
                leg.set_status("terminated")
                if was_up:
                    self._event("HangUp", leg, direction=direction if leg.main
                                else "fromApplication")
        self.status = "terminated"
        self.updated = self.clock.now()
        self.changed.notify()

    async def _start_inbound(self) -> None:
        self._log("call", f"{self.main.caller} calls {self.main.destination}", self.main)
        self.main.set_status("connected")
        self.status = "established"
        self.established_at = self.clock.now()
        commands = await self._notify("CalledNumber", self.main, force=True)
        self._apply_first(commands)
        self.clock.spawn(self._tg(), run_script, self.clock, self.main, self._script)

    async def _start_outbound(self) -> None:
        self._log("call", f"{self.main.caller} calls {self.main.destination}", self.main)
        phone = self._phone or self.sim.phone_for(self.main.destination)
        outcome = await self._ring(self.main, phone, self.sim.outbound_ring_timeout)
        if outcome != "answer":
            await self._stop("application", reason=outcome)
        self.main.set_status("connected")
        self.status = "established"
        self.established_at = self.clock.now()
        self._log("answered", f"{self.main.destination} answered", self.main)
        if phone.machine is not None:  # before Answered: detection may wait for the beep
            self.clock.spawn(self._tg(), self._machine_greeting, phone.machine)
        commands = await self._notify("Answered", self.main, force=True)
        self._apply_first(commands)
        self.clock.spawn(self._tg(), run_script, self.clock, self.main, phone.script)

    async def _machine_greeting(self, machine: Machine) -> None:
        """An answering machine's greeting (speech, for detection and recordings), then
        its beep; what the app says afterwards is what it records."""
        now = self.clock.now()
        self.main.talks.append((now, now + machine.greeting))
        self._log("talk", f"answering machine greeting ({machine.greeting:g}s)", self.main,
                  machine=True)
        await self.clock.sleep(machine.greeting)
        if machine.beep and self.main.live:
            self._log("beep", "the answering machine beeps: recording", self.main,
                      machine=True)

    def _tg(self) -> TaskGroup:
        assert self._ptg is not None
        return self._ptg

    def _apply_first(self, commands: list[Command] | None) -> None:
        commands = list(commands or [])
        if commands and isinstance(commands[0], Notifications):
            if commands[0].enabled:
                self.all_events = True
            commands.pop(0)
        self.queue = deque(commands)

    async def _run_queue(self) -> None:
        while True:
            if not self.queue:
                await self._wait_for_commands()
            command = self.queue.popleft()
            with anyio.CancelScope() as scope:
                self._command_scope = scope
                try:
                    await self._execute(command)
                finally:
                    self._command_scope = None
                    self._listening = False

    async def _wait_for_commands(self) -> None:
        """The call is idle: wait for setcommands; hang up after `idle_timeout` without any.

        An idle call waits on the application, an outside party, just as a notification in
        flight does. So under the virtual clock it holds time still for up to `idle_hold`
        real seconds: a flow busy with its own I/O (a database, a CRM) pushes its next
        commands to a call that is where the flow left it, instead of one whose 60 s of
        idleness went by in an instant. Only an application that stays silent longer than
        that lets virtual time run on to the idle hang-up.
        """
        hold = self.sim.idle_hold if self.clock.mode == "virtual" else 0.0
        if hold > 0:
            with self.clock.busy(), anyio.move_on_after(hold):  # real time, like HTTP limits
                await self.changed.wait_for(lambda: bool(self.queue))
            if self.queue:
                return
        if not await self.changed.wait_for(lambda: bool(self.queue), self.sim.idle_timeout):
            await self._stop("application", reason="idle")

    # -- commands -------------------------------------------------------------------------

    async def _execute(self, command: Command) -> None:
        if isinstance(command, Speak | Play):
            await self._prompt(command, self.main)
        elif isinstance(command, Wait):
            self._log("silence", f"silence {command.length:g}s")
            await self.clock.sleep(command.length)
        elif isinstance(command, GetDigits):
            await self._get_digits(command)
        elif isinstance(command, Tones):
            self._log("keys", command.digits, self.main, sent=True)
            await self.clock.sleep(0.5 * command.digits.count("w")
                                   + 0.25 * len(command.digits.replace("w", "")))
        elif isinstance(command, Record):
            await self._record(command)
        elif isinstance(command, Dial):
            await self._dial(command)
        elif isinstance(command, Hangup):
            await self._stop("application", reason=command.reason)
        elif isinstance(command, Redirect):
            epoch = self._epoch
            commands = await self._notify(
                "Redirected", self.main, url=command.action_url, force=True
            )
            if commands is not None and epoch == self._epoch:
                self.queue = deque(commands)
        # `notifications` anywhere but first in the first response is ignored (reference)

    async def _prompt(self, prompt: Prompt, leg: Leg) -> None:
        for _ in range(prompt.repeat):
            if isinstance(prompt, Speak):
                text, seconds = prompt.text, speech_seconds(prompt.text)
                self._log("speak", text, leg, voice=prompt.voice)
            else:
                text, seconds = prompt.url, await self.sim.audio_seconds(prompt.url)
                self._log("play", prompt.url, leg)
            self._event("PlaybackStarted", leg)
            await self.clock.sleep(seconds)
            leg.heard.append(text)
            self._event("PlaybackStopped", leg)
            self.changed.notify()

    async def _get_digits(self, command: GetDigits) -> None:
        digits = ""
        said: str | None = None
        for _attempt in range(command.retries):
            if command.prompt is not None:
                await self._prompt(command.prompt, self.main)
            self._keys.clear()
            self._speech.clear()
            self._valid = (command.valid_digits + command.finish_on_key) if command.keys else ""
            self._listening = True
            self._hearing = command.speech
            self.changed.notify()
            done = False
            try:
                while not done and await self.changed.wait_for(
                    lambda: bool(self._keys) or bool(self._speech), command.timeout
                ):
                    if self._speech and not digits:
                        said = self._speech.popleft()
                        break
                    while self._keys and not done:
                        key = self._keys.popleft()
                        digits += key
                        done = key == command.finish_on_key or (
                            command.number_of_digits > 0
                            and len(digits) >= command.number_of_digits
                        )
            finally:
                self._listening = False
                self._hearing = False
            if digits or said is not None:
                break
        if not digits and said is None:
            return
        extra: dict[str, Any] = {"digits": digits}
        if said is not None:
            transcript, confidence = recognise(said, command.hints)
            extra = {"digits": "", "speech": transcript, "confidence": confidence}
            self._log("recognised", transcript, self.main, confidence=confidence)
        epoch = self._epoch
        commands = await self._notify(
            "DigitsCollected", self.main, url=command.action_url, force=True, **extra
        )
        if commands is not None and epoch == self._epoch:
            self.queue = deque(commands)

    def _said(self, text: str) -> None:
        if self._hearing:
            self._speech.append(text)
        if self.transcriber is not None:
            self.transcriber(text)
        self.changed.notify()

    def _key(self, key: str) -> None:
        if self._listening and key in self._valid:
            self._keys.append(key)
        # Any of several keys may end a recording (Twilio's finishOnKey="1234567890*#").
        if self._recording and self._record_finish and key in self._record_finish:
            self._record_stop = True
        self.changed.notify()

    async def _record(self, command: Record) -> None:
        if command.prompt is not None:
            await self._prompt(command.prompt, self.main)
        if command.play_beep:
            self._log("beep", "beep", self.main)
            await self.clock.sleep(BEEP_SECONDS)
        start = self.clock.now()
        self._log("recording-started", "recording", self.main)
        self._event("RecordingStarted", self.main)
        self._recording, self._record_stop = True, False
        self._record_finish = command.finish_on_key
        self.changed.notify()
        try:
            while not self._record_stop:
                now = self.clock.now()
                sounds = [end for s, end in self.main.talks if end > start]
                last_sound = max([start, *sounds])
                deadline = start + command.maximum_length
                if sounds or not command.timeout_after_speech:
                    deadline = min(deadline, last_sound + command.timeout)
                if now >= deadline:
                    break
                await self.changed.wait(deadline - now)
        finally:
            self._recording = False
            self._save_recording(command, start)

    def _save_recording(self, command: Record, start: float) -> None:
        end = self.clock.now()
        duration = end - start
        talks = [(max(s, start) - start, min(e, end) - start) for s, e in self.main.talks
                 if e > start and s < end]
        recording_id = str(uuid.uuid4())
        data = make_wav(duration, talks)
        url = self.sim.store_recording(recording_id, data)
        self._log("recording-stopped", f"recorded {duration:.1f}s {url}", self.main,
                  recordingUrl=url, duration=duration)
        self._event("RecordingStopped", self.main, recordingUrl=url, duration=str(round(duration)))
        if command.export_url:
            self._outbox.append(_Job("put", command.export_url, data=data))
            self.changed.notify()

    async def _ring(self, leg: Leg, phone: Phone, timeout: float) -> str:
        """Ring a leg until its phone decides; returns the outcome and sends its events."""
        outcome: str = phone.outcome
        try:
            if outcome in ("unreachable", "fail"):
                await self.clock.sleep(min(phone.after, timeout))
            else:
                self._log("ringing", f"{leg.destination} ringing", leg)
                self._event("Ringing", leg)
                outcome = await phone.ring(self.clock, leg, timeout)
        except BaseException:
            # a losing or abandoned leg is hung up by the platform
            self._leg_ended(leg, "fromApplication")
            raise
        if outcome != "answer":
            event, kind = _OUTCOME_EVENTS[outcome]
            self._log(kind, f"{leg.destination} {kind.replace('-', ' ')}", leg)
            leg.set_status("terminated")
            self._event(event, leg, reason=kind)
        return outcome

    async def _dial(self, command: Dial) -> None:
        if command.conference is not None:
            await self.sim.conferences.join(self, command)
            return
        if command.call_id is not None:
            await self.sim.conferences.bridge_call(self, command)
            return
        caller = command.caller_id or self.account_number
        legs = [Leg(self, caller, number, "Outbound") for number in command.destinations]
        self.legs.extend(legs)
        winner: list[tuple[Leg, Phone]] = []
        pending = [len(legs)]

        async def attempt(leg: Leg) -> None:
            phone = self.sim.phone_for(leg.destination)
            try:
                outcome = await self._ring(leg, phone, command.timeout)
            finally:
                pending[0] -= 1
                self.changed.notify()
            if outcome == "answer":
                if winner:
                    self._leg_ended(leg, "fromApplication")
                else:
                    winner.append((leg, phone))
                    leg.set_status("connected")
                    self._log("answered", f"{leg.destination} answered", leg)
                    self._event("Answered", leg)

        try:
            async with anyio.create_task_group() as tg:
                for leg in legs:
                    self.clock.spawn(tg, attempt, leg)
                await self.changed.wait_for(lambda: bool(winner) or pending[0] == 0)
                tg.cancel_scope.cancel()
            if not winner:
                return
            leg, phone = winner[0]
            # A front end may run something on the answering party first (Twilio's
            # <Number url>): False turns the leg away without bridging it.
            answered = getattr(self.sim.frontend, "leg_answered", None)
            if answered is not None and not await answered(self, leg):
                return
            await self._bridge(leg, phone.script, command.on_answer)
        finally:
            for leg in legs:
                if leg.status != "terminated":
                    if leg.status == "connected":
                        self._leg_ended(leg, "fromApplication")
                    else:
                        leg.set_status("terminated")

    async def _bridge(self, leg: Leg, script: tuple[Step, ...], on_answer: Prompt | None) -> None:
        async with anyio.create_task_group() as tg:
            try:
                if on_answer is not None:
                    await self._prompt(on_answer, leg)
                self._log("bridged", f"{self.main.party} ⇄ {leg.party}", leg)
                self.clock.spawn(tg, run_script, self.clock, leg, script)
                await self.changed.wait_for(lambda: not leg.live)
            finally:
                tg.cancel_scope.cancel()
                if leg.status != "terminated":
                    self._leg_ended(leg, "fromApplication")
                self._log("unbridged", f"{leg.party} left the call", leg)

    def _leg_ended(
        self, leg: Leg, direction: Literal["fromParticipant", "fromApplication"]
    ) -> None:
        if leg.status == "terminated":
            return
        leg.set_status("terminated")
        who = leg.party if direction == "fromParticipant" else "the application"
        self._log("hangup", f"{who} hung up {leg.party}" if direction == "fromApplication"
                  else f"{who} hung up", leg, direction=direction)
        self._event("HangUp", leg, direction=direction)

    # -- notifications ---------------------------------------------------------------------

    def _payload(self, name: EventName, leg: Leg, extra: dict[str, Any]) -> Notification:
        payload: Notification = {
            "timestamp": iso(self.sim.epoch + self.clock.now()),
            "eventName": name,
            "callId": self.call_id,
            "legId": leg.leg_id,
            "callerId": tel(leg.caller),
            "destination": tel(leg.destination),
        }
        payload.update(extra)  # type: ignore[typeddict-item]
        return payload

    def _event(self, name: EventName, leg: Leg, *, force: bool = False, **extra: Any) -> None:
        """Queue a notification that does not block the running command."""
        if not (force or self.all_events):
            return
        self._outbox.append(_Job("notify", None, dict(self._payload(name, leg, extra))))
        self.changed.notify()

    async def _notify(
        self,
        name: EventName,
        leg: Leg,
        *,
        url: str | None = None,
        force: bool = False,
        **extra: Any,
    ) -> list[Command] | None:
        """Send a notification and wait for its commands (None: failed, call hung up)."""
        job = _Job("notify", url, dict(self._payload(name, leg, extra)), blocking=True)
        self._outbox.append(job)
        self.changed.notify()
        await self.changed.wait_for(lambda: job.done)
        if job.result is None:
            await self._stop("application", reason="callback unavailable")
        return job.result

    async def _notifier(self) -> None:
        while True:
            await self.changed.wait_for(lambda: bool(self._outbox) or self._closing)
            if not self._outbox:
                return
            job = self._outbox.popleft()
            if job.kind == "put":
                ok = await self.sim.put_export(job.url or "", job.data)
                if not ok:
                    self._log("error", f"export PUT to {job.url} failed")
                continue
            await self._deliver(job)

    async def _deliver(self, job: _Job) -> None:
        name = job.payload["eventName"]
        url = job.url or self.callback_url
        result = await self._post(url, job.payload)
        if result is None:
            fallback = dict(job.payload, eventName="CallbackUnavailable", failedEventName=name)
            if self.fallback_url:
                result = await self._post(self.fallback_url, fallback)
            if result is None and not self._closing:
                self._end("application", reason="callback unavailable")
        job.result = result
        job.done = True
        if not job.blocking and result and not self._closing and not self.terminated:
            self.queue = deque(result)
        self.changed.notify()

    async def _post(self, url: str | None, payload: dict[str, Any]) -> list[Command] | None:
        name = str(payload["eventName"])
        if not url:
            self._log("error", f"no URL to send {name} to", eventName=name)
            return None
        outcome = await self.sim.frontend.notify(self, url, payload)
        if outcome.logged:
            return outcome.commands
        self._log(
            "notification", f"{name} → {url} ({outcome.summary})",
            eventName=name, url=url, status=outcome.status, ok=outcome.commands is not None,
        )
        if outcome.commands is None:
            self._log("error", f"{name}: {outcome.summary}", eventName=name, url=url)
        return outcome.commands

    # -- transcript ------------------------------------------------------------------------

    def _log(self, kind: EntryKind, text: str, leg: Leg | None = None, **data: Any) -> None:
        at = round(self.clock.now() - self.started, 3)
        entry = TranscriptEntry(at, kind, text, leg.leg_id if leg else None, data)
        self.transcript.entries.append(entry)
        for observer in tuple(self.sim.observers):  # sim.subscribe(): live watchers
            observer(self, entry)
