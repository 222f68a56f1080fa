"""The browser phone: a telephone on a web page, plugged into a running `Simulator`.

`callflow dev FILE --web` serves it; any ASGI server can (it is a plain ASGI app). The page
(static files in ``callflow/simulator/web/``, shipped in the package: no build step, no CDN)
shows a keypad, a call button, the live transcript and the other parties' phones. What it
shows comes from the simulator itself: each transcript entry is sent as it is written, in
the simulator's own words (`TranscriptEntry.render()`), over server-sent events
(``GET /events``); what the person does goes through a `LiveCaller` (``POST /api/...``); the
person's own number is a `LivePhone`, so calls to it ring on the page.

Under a virtual clock a person could never keep up: time jumps to the next timer whenever
the simulator is idle, so a 5 s wait for keys would pass in an instant. There the phone
holds time still while it is the person's turn (the platform listens for their keys, or
their phone rings), and the page's "Let time pass" button lets it run on (a timeout, no
answer). Real and scaled clocks need none of this.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from .._exceptions import CallflowError
from ._asgi import Receive, Scope, Send
from ._live import LiveCaller, LivePhone, Ring
from ._network import Phone
from ._transcript import TranscriptEntry
from ._wire import normalize_number

if TYPE_CHECKING:
    from ._engine import SimCall
    from ._simulator import Simulator

__all__ = ("STATIC_FILES", "WebPhone")

logger = logging.getLogger("callflow.simulator.web")

STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/phone.css": ("phone.css", "text/css; charset=utf-8"),
    "/phone.js": ("phone.js", "text/javascript; charset=utf-8"),
}
"""Path → (file in ``callflow/simulator/web/``, content type): everything the page loads."""

OUTCOMES = ("answer", "busy", "no-answer", "unreachable", "fail")
"""How the page can make another party's phone behave (`Phone.outcome`)."""

RECHECK = 0.5
"""Real seconds between checks that a person's turn is over, besides each event's nudge."""

Event = dict[str, Any]
CallOut = Callable[[str], Awaitable[str]]
"""The app calls a number (``POST /api/callout``); returns how the call went, in words."""


class _Problem(Exception):
    """A request the phone cannot do: answered 400 with the message, shown on the page."""


class WebPhone:
    """A browser telephone over `sim`, with the number `number`, as an ASGI app.

    Run it inside `async with phone.running():` (it presses keys and holds virtual time
    in tasks of its own). `dial` checks (and prepares) a number the person calls: raise
    `ConfigError` to refuse it. `call_out`, when given, lets the page make the app call out.
    """

    def __init__(
        self,
        sim: Simulator,
        number: str,
        *,
        default_to: str,
        title: str = "callflow",
        dial: Callable[[str], None] | None = None,
        call_out: CallOut | None = None,
    ) -> None:
        self.sim = sim
        self.number = normalize_number(number)
        self.default_to = default_to
        self.title = title
        self.dial = dial
        self.call_out = call_out
        self.phone = LivePhone(on_ring=self._on_ring)
        self.active: LiveCaller | None = None
        self.holding = False
        """True while virtual time stands still for the person."""
        self._skip = False
        self._talking_until = -math.inf
        self._labels: dict[str, int] = {}
        self._streams: list[MemoryObjectSendStream[Event]] = []
        self._nudge = anyio.Event()
        self._tg: TaskGroup | None = None

    @property
    def speech_input(self) -> bool:
        """Whether the simulator lets a caller speak words (``LiveCaller.say``)."""
        return callable(getattr(LiveCaller, "say", None))

    # -- running ---------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[WebPhone]:
        """Plug the phone into the simulator for the block; ends every page's event stream
        on the way out."""
        self.sim.add_phone(self.number, self.phone)
        self.sim.observers.append(self._observe)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                yield self
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            self.sim.observers.remove(self._observe)
            for stream in self._streams:
                stream.close()

    def _start(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        if self._tg is None:
            raise _Problem("the phone is not running")
        self._tg.start_soon(func, *args)

    # -- what the page is told ---------------------------------------------------------------

    def _label(self, call: SimCall) -> int:
        return self._labels.setdefault(call.call_id, len(self._labels) + 1)

    def state(self) -> Event:
        """What the page shows besides the transcript."""
        active = self.active if self.active is not None and self.active.live else None
        ring = next((r for r in self.phone.rings if r.ringing), None)
        phones = {
            number: phone.outcome for number, phone in sorted(self.sim.phones.items())
            if number != self.number
        }
        return {
            "type": "state", "number": self.number, "to": self.default_to,
            "title": self.title, "platform": self.sim.platform, "clock": self.sim.clock.mode,
            "speed": self.sim.clock.speed,
            "on_call": active is not None,
            "call": self._label(active.call) if active is not None else None,
            "listening": active is not None and active.listening,
            "ringing": ring.caller if ring is not None else None,
            "holding": self.holding, "phones": phones, "outcomes": list(OUTCOMES),
            "speech_input": self.speech_input, "call_out": self.call_out is not None,
        }

    def _entry(self, call: SimCall, entry: TranscriptEntry) -> Event:
        mine = self.active is not None and self.active.call is call and (
            entry.leg_id in (None, self.active.leg.leg_id)
        )
        event: Event = {
            "type": "entry", "call": self._label(call), "kind": entry.kind, "at": entry.at,
            "text": entry.text, "line": entry.render().strip(), "mine": mine,
        }
        audio = self._recording_path(str(entry.data.get("recordingUrl") or "")) or (
            self._recording_path(entry.text) if entry.kind == "play" else None
        )
        if audio is not None:
            event["audio"] = audio
        elif entry.kind == "play" and entry.text.startswith(("http://", "https://")):
            event["audio"] = entry.text
        return event

    def _recording_path(self, url: str) -> str | None:
        """This server's path for a recording the simulator keeps, whatever URL it goes by."""
        name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        for suffix in (".wav", ".mp3", ".json"):
            name = name.removesuffix(suffix)
        return f"/recordings/{name}.wav" if name and name in self.sim.recordings else None

    def _publish(self, event: Event) -> None:
        for stream in list(self._streams):
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                stream.send_nowait(event)

    def _changed(self) -> None:
        """Tell every page the new state, and wake whoever waits for the person's turn."""
        self._publish(self.state())
        self._nudge.set()
        self._nudge = anyio.Event()

    def _observe(self, call: SimCall, entry: TranscriptEntry | None) -> None:
        # Runs inside the simulator's tasks (an Observer): no blocking, no raising.
        try:
            if entry is None:
                duration = call.transcript.duration or 0.0
                self._publish({"type": "end", "call": self._label(call),
                               "line": f"call over after {duration:.1f}s"})
            else:
                self._publish(self._entry(call, entry))
            self._changed()
        except Exception:  # a page missing a line must not break the call
            logger.exception("the browser phone could not show an event")

    def _on_ring(self, ring: Ring) -> None:
        # Runs inside the simulator's tasks too.
        if self.sim.clock.mode == "virtual" and self._tg is not None:
            self._tg.start_soon(self._hold, lambda: ring.ringing)
        self._changed()

    # -- virtual time --------------------------------------------------------------------------

    async def _hold(self, turn: Callable[[], bool]) -> None:
        """Hold virtual time still while `turn()` (the person's turn), unless told to skip.

        Waits on plain anyio events, not the clock's: inside `clock.busy()` a clock wait
        would count as idle and let time run.
        """
        with self.sim.clock.busy():
            while turn() and not self._skip:
                if not self.holding:
                    self.holding = True
                    self._changed()
                with anyio.move_on_after(RECHECK):
                    await self._nudge.wait()
        if self.holding:
            self.holding = False
            self._changed()

    async def _hold_while_listening(self, caller: LiveCaller) -> None:
        """Under a virtual clock, hold time whenever the platform waits for this person."""
        while caller.live:
            await caller.leg.changed.wait_for(
                lambda: (caller.listening and not self._skip and not self._talking())
                or not caller.live
            )
            if not caller.live:
                return
            await self._hold(lambda: caller.listening and caller.live and not self._talking())
            if self._skip:
                # Let the timeout pass: wait until the platform stops listening.
                await caller.leg.changed.wait_for(lambda: not caller.listening)
                self._skip = False

    def _talking(self) -> bool:
        # A person talking into a recording needs time to pass, and then some silence.
        return self.sim.clock.now() < self._talking_until

    def _take_line(self, caller: LiveCaller) -> None:
        self.active = caller
        self._start(self._watch_listening, caller)
        if self.sim.clock.mode == "virtual":
            self._start(self._hold_while_listening, caller)
        self._changed()

    async def _watch_listening(self, caller: LiveCaller) -> None:
        """Tell the page when the platform starts or stops listening (no entry says so)."""
        while caller.live:
            was = caller.listening
            await caller.leg.changed.wait_for(
                lambda: caller.listening != was or not caller.live  # noqa: B023
            )
            self._changed()

    # -- what the person does ----------------------------------------------------------------

    async def act(self, action: str, body: dict[str, Any]) -> Event:
        """Do one of the page's actions; the answer is a JSON object for the page."""
        handler = {
            "call": self._call, "keys": self._keys, "hangup": self._hang_up,
            "answer": self._answer, "talk": self._talk, "say": self._say,
            "phone": self._set_phone, "callout": self._call_out, "skip": self._let_time_pass,
        }.get(action)
        if handler is None:
            raise _Problem(f"unknown action {action!r}")
        message = await handler(body)
        self._changed()
        return {"ok": True, "message": message}

    def _caller(self) -> LiveCaller:
        if self.active is None or not self.active.live:
            raise _Problem("not on a call: call the app, or answer a ringing call")
        return self.active

    async def _call(self, body: dict[str, Any]) -> str:
        if self.active is not None and self.active.live:
            raise _Problem("you are on a call: hang up first")
        caller = _number(body.get("from") or self.number, "your number")
        to = _number(body.get("to") or self.default_to, "the number to call")
        if self.dial is not None:
            self.dial(to)
        call = await self.sim.place_inbound_call(caller, to)
        self._label(call)
        self._take_line(LiveCaller(call.main))
        return f"calling {to}"

    async def _keys(self, body: dict[str, Any]) -> str:
        keys = str(body.get("keys", ""))
        if not keys or set(keys) - set("0123456789*#"):
            raise _Problem(f"{keys!r} is not a string of keys 0-9 * #")
        self._start(_press, self._caller(), keys)
        return f"pressed {keys}"

    async def _hang_up(self, body: dict[str, Any]) -> str:
        if self.active is not None and self.active.live:
            self.active.hang_up()
            self.active = None
            return "hung up"
        ring = next((r for r in self.phone.rings if r.ringing), None)
        if ring is not None:
            ring.reject()
            return f"rejected the call from {ring.caller}"
        raise _Problem("not on a call")

    async def _answer(self, body: dict[str, Any]) -> str:
        ring = next((r for r in self.phone.rings if r.ringing), None)
        if ring is None:
            raise _Problem("nothing is ringing")
        if self.active is not None and self.active.live:
            raise _Problem("you are on a call: hang up first")
        self._take_line(ring.answer())
        return f"answered the call from {ring.caller}"

    async def _talk(self, body: dict[str, Any]) -> str:
        seconds = _float(body.get("seconds", 3), "seconds")
        if not 0 < seconds <= 600:
            raise _Problem("talk for more than 0 and at most 600 seconds")
        self._caller().talk(seconds)
        self._talking_until = self.sim.clock.now() + seconds
        return f"talking for {seconds:g}s"

    async def _say(self, body: dict[str, Any]) -> str:
        # Speech input: only where the simulator has it (a `LiveCaller.say`).
        caller = self._caller()
        say = getattr(caller, "say", None)
        if say is None:
            raise _Problem("this simulator does not take speech yet: press keys instead")
        text = str(body.get("text", "")).strip()
        if not text:
            raise _Problem("say something: the text box is empty")
        result = say(text)
        if isinstance(result, Awaitable):
            self._start(_wait, result)
        return f"said {text!r}"

    async def _set_phone(self, body: dict[str, Any]) -> str:
        number = _number(body.get("number"), "the phone's number")
        if number == self.number:
            raise _Problem(f"{number} is your own phone: it rings here")
        outcome = body.get("outcome")
        if outcome not in OUTCOMES:
            raise _Problem(f"{outcome!r} is not one of: {', '.join(OUTCOMES)}")
        self.sim.add_phone(number, Phone(outcome, 0.0 if outcome == "no-answer" else 1.0))
        return f"{number}: {outcome}"

    async def _call_out(self, body: dict[str, Any]) -> str:
        if self.call_out is None:
            raise _Problem("this phone cannot make the app call out")
        to = _number(body.get("to") or self.number, "the number to call")
        self._start(self._place_outbound, self.call_out, to)
        return f"the app calls {to}"

    async def _place_outbound(self, call_out: CallOut, to: str) -> None:
        try:
            outcome = await call_out(to)
        except Exception as exc:  # the page hears about it; the phone goes on
            outcome = f"the app could not call {to}: {exc}"
        self._publish({"type": "notice", "line": outcome})

    async def _let_time_pass(self, body: dict[str, Any]) -> str:
        if not self.holding:
            raise _Problem("time is not held: nothing to skip")
        self._skip = True
        ring = next((r for r in self.phone.rings if r.ringing), None)
        if ring is not None:
            self._start(self._end_skip_after_ring, ring)
        return "letting time pass"

    async def _end_skip_after_ring(self, ring: Ring) -> None:
        await ring.leg.changed.wait_for(lambda: not ring.ringing)
        self._skip = False

    # -- HTTP ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI 3: the page, its event stream, its actions and the recordings."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        try:
            if method == "GET" and path in STATIC_FILES:
                name, content_type = STATIC_FILES[path]
                data = resources.files(__package__).joinpath("web", name).read_bytes()
                await _respond(send, 200, data, content_type)
            elif method == "GET" and path == "/events":
                await self._event_stream(receive, send)
            elif method == "GET" and path == "/state":
                await _respond_json(send, 200, self.state())
            elif method == "GET" and path.startswith("/recordings/"):
                recording = path.removeprefix("/recordings/").removesuffix(".wav")
                wav = self.sim.recordings.get(recording)
                if wav is None:
                    await _respond_json(send, 404, {"error": "no such recording"})
                else:
                    await _respond(send, 200, wav, "audio/wav")
            elif method == "POST" and path.startswith("/api/"):
                body = await _read_object(receive)
                answer = await self.act(path.removeprefix("/api/"), body)
                await _respond_json(send, 200, answer)
            else:
                await _respond_json(send, 404, {"error": f"nothing at {method} {path}"})
        except (_Problem, CallflowError) as exc:
            await _respond_json(send, 400, {"error": str(exc)})
        except Exception as exc:  # the call goes on; the page shows what broke
            await _respond_json(send, 500, {"error": f"{type(exc).__name__}: {exc}"})

    async def _event_stream(self, receive: Receive, send: Send) -> None:
        """Server-sent events: the state, every call's transcript so far, then live events."""
        sender, events = anyio.create_memory_object_stream[Event](math.inf)
        # Subscribe and snapshot in one synchronous step: nothing is missed or doubled.
        self._streams.append(sender)
        backlog: list[Event] = [self.state()]
        for call in list(self.sim.calls.values()):
            backlog.extend({**self._entry(call, entry), "backlog": True}
                           for entry in call.transcript.entries)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-store"),
        ]})
        try:
            async with anyio.create_task_group() as tg:

                async def disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(disconnect)
                for event in backlog:
                    await _send_event(send, event)
                with events:
                    async for event in events:
                        await _send_event(send, event)
                tg.cancel_scope.cancel()
        finally:
            if sender in self._streams:
                self._streams.remove(sender)
            sender.close()
        with suppress(Exception):  # the page may have gone already
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _press(caller: LiveCaller, keys: str) -> None:
    # Key by key, each when the platform listens: a gap between keys would be a clock wait,
    # which a virtual clock held still for the person would never end.
    for key in keys:
        if not await caller.press(key):
            return


async def _wait(awaitable: Awaitable[Any]) -> None:
    await awaitable


def _number(value: Any, what: str) -> str:
    try:
        return normalize_number(str(value or "").strip())
    except Exception:
        raise _Problem(f"{what} {value!r} is not a phone number like +34600000001") from None


def _float(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _Problem(f"{what}: {value!r} is not a number") from None


async def _send_event(send: Send, event: Event) -> None:
    data = json.dumps(event, ensure_ascii=False)
    await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(),
                "more_body": True})


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type.encode()), (b"cache-control", b"no-store"),
    ]})
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Send, status: int, body: Any) -> None:
    await _respond(send, status, json.dumps(body).encode(), "application/json")


async def _read_object(receive: Receive) -> dict[str, Any]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > 65536:
            raise _Problem("the request is too large")
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            break
    raw = b"".join(chunks).strip()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise _Problem("the request is not JSON") from None
    if not isinstance(body, dict):
        raise _Problem("the request is not a JSON object")
    return body


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
