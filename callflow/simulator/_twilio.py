"""Twilio Programmable Voice on the simulated network: TwiML in, signed form posts out.

The engine runs every call with BlueVia's command semantics; ``TwilioFrontEnd`` is where
the app sees Twilio instead (docs/reference/simulator.md#twilio):

- **webhooks**: of the engine's notifications, only those Twilio has an equivalent for
  become requests: the number's ``VoiceUrl`` (or a created call's ``Url``), the
  ``action`` of ``<Gather>``/``<Record>``/``<Dial>``, ``<Number url>``, ``<Redirect>``,
  the fallback URL and status callbacks. Each is form-encoded and signed
  (``X-Twilio-Signature``: HMAC-SHA1 of the URL and the sorted parameters, keyed with the
  auth token, base64);
- **TwiML**: each document the app answers with becomes engine commands
  (``TwilioFrontEnd._translate``). Where Twilio decides what follows a verb (an action
  request, or falling through to the next verb), the commands hold a *marker*: a redirect
  to a ``twiml-sim:`` URL that comes back to ``notify``, which decides with the document
  at hand. A marker's "fall through" answers with the rest of the document;
- the **REST API** under ``/2010-04-01/Accounts/{AccountSid}``: ``Calls`` and
  ``IncomingPhoneNumbers``, Basic auth, Twilio's JSON errors.

Two optional hooks beyond ``FrontEnd``: ``leg_answered`` (the engine awaits it when a
dialled party answers; here it fetches ``<Number url>`` and plays the whisper) and
``app_settings`` (what an app needs to talk to this simulator).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import anyio

from ._api import _base as _base_url
from ._asgi import Receive, Scope, Send
from ._errors import ApiError, WireError
from ._http import read_body
from ._network import DETECTION_SECONDS
from ._reading import spoken_words
from ._recordings import make_wav
from ._wire import (
    Command,
    ConferenceProperties,
    Dial,
    GetDigits,
    Hangup,
    Play,
    Prompt,
    Record,
    Redirect,
    Speak,
    Tones,
    Wait,
    normalize_number,
)

if TYPE_CHECKING:
    from ._engine import Leg, SimCall
    from ._simulator import NotificationOutcome, Simulator

__all__ = ("TwilioFrontEnd", "signature")

API = "/2010-04-01"
API_VERSION = "2010-04-01"
MARKER = "twiml-sim:"
ANY_KEY = "1234567890*#"
LOOP_FOREVER = 1000
"""``loop="0"`` repeats until the call ends: a long but finite stand-in."""
MAX_DOCS = 16
"""TwiML documents kept per call: markers refer to the current one or its predecessor."""
PAGE_SIZE = 50
QUEUE_POLL = 2.0
"""Simulated seconds between an agent's looks at an empty queue."""

# Amazon Polly's male voices (Polly.<Name>, any engine suffix): the rest speak as "female".
_MALE_VOICES = frozenset({
    "matthew", "joey", "justin", "kevin", "stephen", "gregory", "brian", "arthur", "russell",
    "geraint", "daniel", "hans", "giorgio", "adriano", "mathieu", "remi", "enrique", "miguel",
    "andres", "sergio", "pedro", "thiago", "cristiano", "ricardo", "takumi", "liam", "ruben",
    "jacek", "jan", "maxim", "mads", "karl", "hyunsoo",
})
_STATUS_OF_EVENT = {"initiated": "initiated", "ringing": "ringing", "answered": "in-progress"}
_UNANSWERED = {"Busy": "busy", "NoAnswer": "no-answer", "Failed": "failed",
               "NotReachable": "failed"}
_LEG_OUTCOMES = (("busy", "busy"), ("no-answer", "no-answer"), ("failed", "failed"),
                 ("not-reachable", "failed"))


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature`` of a request to ``url`` with POST ``params`` (none for GET)."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _rfc2822(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(int(epoch), UTC))


def _with_query(url: str, params: Mapping[str, str]) -> str:
    if not params:
        return url
    return url + ("&" if urlsplit(url).query else "?") + urlencode(params)


def _is_url(text: str | None) -> bool:
    if not text:
        return False
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _method(value: str | None) -> Literal["GET", "POST"]:
    return "GET" if (value or "").strip().upper() == "GET" else "POST"


def _number(value: str | None, default: float, *, least: float = 0.0) -> float:
    """A TwiML number attribute; Twilio warns about a bad one and uses the default."""
    try:
        number = float(value) if value is not None and value.strip() else default
    except ValueError:
        return default
    return number if number >= least and number == number else default


def _int(value: str | None, default: int, *, least: int = 0) -> int:
    number = _number(value, float(default), least=float(least))
    return int(number) if number == int(number) else default


def _true(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() == "true"


def _text(node: ET.Element) -> str:
    return " ".join("".join(node.itertext()).split())


def _voice(name: str | None) -> Literal["female", "male"]:
    """man/woman/alice and Polly voices to the engine's two voices."""
    low = (name or "").strip().lower()
    if low == "man":
        return "male"
    person = low.split(".", 1)[-1].split("-", 1)[0]
    return "male" if low.startswith("polly.") and person in _MALE_VOICES else "female"


def _loop(node: ET.Element) -> int:
    loop = _int(node.get("loop"), 1)
    return LOOP_FOREVER if loop == 0 else loop


class _TwilioError(Exception):
    """An error answer of the REST API, in Twilio's JSON shape."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
                "status": self.status}


def _not_found(path: str) -> _TwilioError:
    return _TwilioError(404, 20404, f"The requested resource {path} was not found")


@dataclass
class _Doc:
    """One TwiML document as the engine runs it."""

    doc_id: int
    url: str  # where it came from: relative URLs and default actions; "" for inline TwiML
    verbs: list[ET.Element]
    commands: list[Command] = field(default_factory=list)
    after: dict[tuple[int, str], int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def rest(self, index: int, kind: str) -> list[Command]:
        """The commands after a verb's marker: Twilio falling through to the next verb."""
        return self.commands[self.after[(index, kind)]:]

    def action(self, verb: ET.Element) -> str | None:
        """A verb's action URL, absolute; the document's own URL when it has none."""
        action = verb.get("action")
        if action is None or not action.strip():
            return self.url or None
        return urljoin(self.url, action.strip()) if self.url else action.strip()


@dataclass(frozen=True)
class _Request:
    kind: str  # what the request is, as the transcript names it: "VoiceUrl", "Gather"...
    url: str
    method: Literal["GET", "POST"]
    params: dict[str, str]
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # same for duplicates


@dataclass(frozen=True)
class _Answer:
    status: int | None
    doc: ET.Element | None  # the <Response> of a blocking request that worked
    summary: str
    ok: bool


@dataclass(eq=False)
class _Waiting:
    """A caller in a queue (``<Enqueue>``)."""

    name: str
    call: SimCall
    joined: float
    doc_id: int
    index: int
    bridged_at: float | None = None
    agent: str | None = None


@dataclass(frozen=True)
class _Background:
    """A ``<Start><Recording>`` running on a call."""

    start: float
    channels: Literal["mono", "dual"]
    callback: str | None
    method: Literal["GET", "POST"]
    completed: bool  # "completed" is among its recordingStatusCallbackEvent


@dataclass
class _CallState:
    """What the front end knows about one call beyond the engine."""

    direction: Literal["inbound", "outbound-api"]
    voice_method: Literal["GET", "POST"] = "POST"
    fallback_method: Literal["GET", "POST"] = "POST"
    status_callback: str | None = None
    status_callback_method: Literal["GET", "POST"] = "POST"
    events: frozenset[str] = frozenset({"completed"})
    answer_twiml: str | None = None  # Calls.json Twiml=: no Url to fetch when answered
    machine_detection: str | None = None  # Calls.json MachineDetection=
    phone_number_sid: str | None = None
    docs: dict[int, _Doc] = field(default_factory=dict)
    recordings: dict[str, _Background] = field(default_factory=dict)
    waiting: _Waiting | None = None  # in a queue
    dequeued: _Waiting | None = None  # the caller an agent's <Dial><Queue> took
    dequeue_by: float | None = None  # until when an agent's <Dial><Queue> waits
    urls: dict[int, tuple[str, Literal["GET", "POST"]]] = field(default_factory=dict)
    leg_sids: dict[str, str] = field(default_factory=dict)
    seen_legs: set[str] = field(default_factory=set)
    last_failed: tuple[str, dict[str, str]] | None = None
    deferred: list[_Request] = field(default_factory=list)
    sequence: int = 0
    first_doc: bool = True
    canceled: bool = False
    ended: bool = False

    def sid(self, leg: Leg) -> str:
        """The CallSid of a dialled leg."""
        if leg.leg_id not in self.leg_sids:
            self.leg_sids[leg.leg_id] = "CA" + uuid.uuid4().hex
        return self.leg_sids[leg.leg_id]


def _outcome(status: int | None, commands: list[Command] | None,
             summary: str) -> NotificationOutcome:
    from ._simulator import NotificationOutcome

    return NotificationOutcome(status, commands, summary, logged=True)


def _not_sent() -> NotificationOutcome:
    return _outcome(None, [], "not sent: Twilio has no such webhook")


class TwilioFrontEnd:
    """Twilio Programmable Voice: TwiML webhooks, status callbacks and the REST API."""

    name = "twilio"

    def __init__(self, sim: Simulator, *, account_sid: str | None = None,
                 auth_token: str | None = None) -> None:
        self.sim = sim
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        self._calls: dict[str, _CallState] = {}
        self._numbers: dict[str, dict[str, str]] = {}  # the Twilio-only fields of a number
        self._pending: _CallState | None = None  # the state of a call Calls.json creates
        self._ids = itertools.count(1)
        self._queues: dict[str, list[_Waiting]] = {}
        self._waited: dict[str, list[float]] = {}  # seconds each dequeued caller waited

    def app_settings(self) -> dict[str, str]:
        """The ``Settings`` fields an app needs to use this simulator as its Twilio."""
        return {"platform": "twilio", "twilio_account_sid": self.account_sid,
                "twilio_auth_token": self.auth_token}

    # -- calls ---------------------------------------------------------------------------

    def call_created(self, call: SimCall) -> None:
        sid = "CA" + uuid.uuid4().hex
        call.call_id = sid
        call.transcript.call_id = sid
        # Every engine event reaches notify(); only Twilio's equivalents become requests.
        call.all_events = True
        state, self._pending = self._pending, None
        if state is None and call.direction == "inbound":
            extra = self._numbers.get(call.account_number, {})
            state = _CallState(
                "inbound",
                voice_method=_method(extra.get("VoiceMethod")),
                fallback_method=_method(extra.get("VoiceFallbackMethod")),
                status_callback=extra.get("StatusCallback") or None,
                status_callback_method=_method(extra.get("StatusCallbackMethod")),
                phone_number_sid=self.number_sid(call.account_number),
            )
        self._calls[sid] = state or _CallState("outbound-api")

    def _params(self, call: SimCall, state: _CallState, status: str) -> dict[str, str]:
        """The parameters of every voice request about the call."""
        main = call.main
        return {"AccountSid": self.account_sid, "ApiVersion": API_VERSION,
                "CallSid": call.call_id, "CallStatus": status, "Direction": state.direction,
                "From": main.caller, "To": main.destination, "Caller": main.caller,
                "Called": main.destination}

    # -- notifications out ---------------------------------------------------------------

    async def notify(
        self, call: SimCall, url: str, payload: Mapping[str, Any]
    ) -> NotificationOutcome:
        state = self._calls.get(call.call_id)
        if state is None:
            return _not_sent()
        name = payload.get("eventName")
        if url.startswith(MARKER):
            return await self._at_marker(call, state, url, payload)
        if name == "CalledNumber":
            return await self._fetch(call, state, "VoiceUrl", url, state.voice_method,
                                     self._params(call, state, "ringing"))
        main = payload.get("legId") == call.main.leg_id
        if name == "Answered" and main:
            await self._status(call, state, "answered")
            detected = await self._detect(call, state)
            if state.answer_twiml is not None:
                return self._inline(call, state, state.answer_twiml)
            return await self._fetch(call, state, "Url", url, state.voice_method,
                                     {**self._params(call, state, "in-progress"), **detected})
        if name == "CallbackUnavailable":
            return await self._fallback(call, state, url)
        if not main:
            return _not_sent()
        if name == "Ringing":
            await self._status(call, state, "initiated")
            await self._status(call, state, "ringing")
        elif name in _UNANSWERED:
            await self._end(call, state, _UNANSWERED[str(name)])
        elif name == "HangUp":
            await self._end(call, state, "canceled" if state.canceled else "completed")
        elif name == "RecordingStopped" and call.terminated:
            await self._record_after_hangup(call, state)
        return _not_sent()

    async def _detect(self, call: SimCall, state: _CallState) -> dict[str, str]:
        """Synchronous answering machine detection: Twilio holds the call's ``Url`` request
        until it knows who answered, and adds ``AnsweredBy`` (``human``, ``machine_start``;
        with ``DetectMessageEnd`` it waits for the end of a machine's greeting:
        ``machine_end_beep`` or ``machine_end_silence``) and ``MachineDetectionDuration``
        in milliseconds (twilio.com/docs/voice/answering-machine-detection)."""
        mode = state.machine_detection
        if mode is None:
            return {}
        phone = call._phone or self.sim.phone_for(call.main.destination)
        machine = phone.machine
        if machine is None:
            seconds, answered_by = DETECTION_SECONDS, "human"
        elif mode == "DetectMessageEnd":
            seconds = machine.ready_after
            answered_by = "machine_end_beep" if machine.beep else "machine_end_silence"
        else:
            seconds, answered_by = min(DETECTION_SECONDS, machine.greeting), "machine_start"
        await call.clock.sleep(seconds)
        call._log("answered", f"machine detection: {answered_by}", call.main,
                  answered_by=answered_by)
        return {"AnsweredBy": answered_by,
                "MachineDetectionDuration": str(round(seconds * 1000))}

    async def _fetch(self, call: SimCall, state: _CallState, kind: str, url: str,
                     method: Literal["GET", "POST"], params: dict[str, str]
                     ) -> NotificationOutcome:
        """A request whose TwiML the call runs next."""
        answer = await self._webhook(call, state, _Request(kind, url, method, params),
                                     blocking=True)
        assert answer is not None  # blocking requests are never held back
        if answer.doc is None:
            state.last_failed = (url, params)
            return _outcome(answer.status, None, answer.summary)
        doc = self._translate(call, state, answer.doc, url)
        return _outcome(answer.status, doc.commands, answer.summary)

    def _inline(self, call: SimCall, state: _CallState, twiml: str) -> NotificationOutcome:
        root = _parse_twiml(twiml.encode())
        if root is None:
            call._log("error", "the call's Twiml is not a TwiML <Response> (12100)")
            return _outcome(None, None, "Twiml is not TwiML")
        return _outcome(None, self._translate(call, state, root, "").commands, "Twiml")

    async def _fallback(self, call: SimCall, state: _CallState, url: str
                        ) -> NotificationOutcome:
        """Twilio requests the fallback URL with what failed, plus ErrorCode and ErrorUrl."""
        failed_url, params = state.last_failed or ("", self._params(call, state, "in-progress"))
        params = {**params, "ErrorCode": "11200", "ErrorUrl": failed_url}
        kind = "VoiceFallbackUrl" if state.direction == "inbound" else "FallbackUrl"
        return await self._fetch(call, state, kind, url, state.fallback_method, params)

    async def _status(self, call: SimCall, state: _CallState, event: str,
                      status: str | None = None) -> None:
        """A status callback, if the call has one and subscribed to ``event``."""
        if not state.status_callback or event not in state.events:
            return
        params = self._params(call, state, status or _STATUS_OF_EVENT.get(event, event))
        params.update(CallbackSource="call-progress-events", SequenceNumber=str(state.sequence),
                      Timestamp=_rfc2822(self.sim.epoch + call.clock.now()))
        state.sequence += 1
        if event == "completed":
            start = call.established_at
            seconds = 0 if start is None else int(call.clock.now() - start)
            params.update(CallDuration=str(seconds), Duration=str(-(-seconds // 60)))
        request = _Request("StatusCallback", state.status_callback,
                           state.status_callback_method, params)
        await self._webhook(call, state, request, blocking=False)

    async def _end(self, call: SimCall, state: _CallState, status: str) -> None:
        if state.ended:
            return
        state.ended = True
        if state.waiting is not None:  # hung up in the queue
            queue = self._queues.get(state.waiting.name, [])
            if state.waiting in queue:
                queue.remove(state.waiting)
            state.waiting = None
        await self._status(call, state, "completed", status)
        # "The recording stops when the call ends": its callback comes after the call's.
        await self._stop_recording(call, state, None)
        await self._flush(call, state)
        state.docs.clear()
        state.urls.clear()

    # -- HTTP, chaos ------------------------------------------------------------------------

    async def _webhook(self, call: SimCall, state: _CallState, request: _Request, *,
                       blocking: bool) -> _Answer | None:
        """Send a webhook as Twilio would, with ``sim.chaos``: an asynchronous one (a status
        callback, the action of a <Record> the caller hung up on) may be held back behind
        the call's next webhook, and webhooks held back together arrive in any order; any
        webhook may be delivered twice (the duplicate's answer is ignored). None: held back."""
        chaos = self.sim.chaos
        if not blocking and chaos.reorders():
            state.deferred.append(request)
            return None
        answer = await self._send(call, request, blocking=blocking)
        if chaos.duplicates():
            await self._send(call, request, blocking=blocking, note=" (duplicate)")
        await self._flush(call, state)
        return answer

    async def _flush(self, call: SimCall, state: _CallState) -> None:
        """Send what was held back, in an order of its own (real callbacks race each other)."""
        held, state.deferred = state.deferred, []
        self.sim.chaos.shuffle(held)
        for request in held:
            await self._send(call, request, blocking=False, note=" (late)")

    async def _send(self, call: SimCall, request: _Request, *, blocking: bool,
                    note: str = "") -> _Answer:
        """One HTTP exchange with the app, logged in the call's transcript."""
        answer = await self._exchange(request, blocking=blocking)
        call._log("notification", f"{request.kind} → {request.url} ({answer.summary}){note}",
                  eventName=request.kind, url=request.url, status=answer.status, ok=answer.ok,
                  method=request.method)
        if not answer.ok:
            call._log("error", f"{request.kind}: {answer.summary}", eventName=request.kind,
                      url=request.url)
        return answer

    async def _exchange(self, request: _Request, *, blocking: bool) -> _Answer:
        headers = {"User-Agent": "TwilioProxy/1.1", "I-Twilio-Idempotency-Token": request.token}
        http = self.sim._http()
        try:
            with anyio.fail_after(self.sim.notification_timeout):
                if request.method == "GET":
                    url = _with_query(request.url, request.params)
                    headers["X-Twilio-Signature"] = signature(self.auth_token, url, {})
                    response = await http.get(url, headers=headers)
                else:
                    headers["X-Twilio-Signature"] = signature(self.auth_token, request.url,
                                                              request.params)
                    response = await http.post(request.url, data=request.params,
                                               headers=headers)
        except TimeoutError:
            return _Answer(None, None, "timed out (11205)", False)
        except Exception as exc:  # a broken app must not break the simulator
            return _Answer(None, None, f"failed: {type(exc).__name__}: {exc} (11205)", False)
        status = response.status_code
        if not 200 <= status < 300:
            return _Answer(status, None, f"HTTP {status} (11200)", False)
        if not blocking:
            return _Answer(status, None, str(status), True)
        root = _parse_twiml(response.content)
        if root is None:
            return _Answer(status, None, f"{status}, not a TwiML <Response> (12100)", False)
        verbs = len(root)
        return _Answer(status, root, f"{status}, {verbs} verb{'s' if verbs != 1 else ''}", True)

    # -- TwiML in ---------------------------------------------------------------------------

    def _translate(self, call: SimCall, state: _CallState, root: ET.Element, url: str) -> _Doc:
        """A TwiML document as engine commands, with markers where Twilio decides."""
        doc = _Doc(next(self._ids), url, list(root))
        first, state.first_doc = state.first_doc, False
        commands = doc.commands
        for index, verb in enumerate(doc.verbs):
            tag = verb.tag

            def marker(kind: str, index: int = index) -> Redirect:
                return Redirect(f"{MARKER}{doc.doc_id}/{index}/{kind}")

            if tag in ("Say", "Play", "Pause"):
                commands.extend(self._prompts(doc, [verb]))
            elif tag == "Gather":
                commands.extend(self._gather(doc, verb, marker("gather").action_url))
                doc.after[(index, "gather")] = len(commands)
                if _true(verb.get("actionOnEmptyResult"), False):
                    commands.append(marker("gather-empty"))
            elif tag == "Record":
                commands.append(Record(
                    timeout=_number(verb.get("timeout"), 5.0) or 3600.0,
                    play_beep=_true(verb.get("playBeep"), True),
                    finish_on_key=_keys(verb.get("finishOnKey"), ANY_KEY),
                    maximum_length=_number(verb.get("maxLength"), 3600.0, least=1.0),
                ))
                commands.append(marker("record"))
                doc.after[(index, "record")] = len(commands)
            elif tag == "Enqueue" or (tag == "Dial" and any(n.tag == "Queue" for n in verb)):
                kind = "enqueue" if tag == "Enqueue" else "dequeue"
                commands.append(marker(kind))
                doc.after[(index, kind)] = len(commands)
            elif tag == "Dial":
                dial = self._dial(call, doc, verb)
                if dial is not None:
                    commands.append(dial)
                commands.append(marker("dial"))
                doc.after[(index, "dial")] = len(commands)
            elif tag == "Hangup":
                commands.append(Hangup())
            elif tag == "Reject":
                if not (first and index == 0):
                    doc.problems.append("<Reject> is only honoured as the first verb of a "
                                        "call; hanging up instead")
                busy = verb.get("reason", "").strip().lower() == "busy"
                commands.append(Hangup("busy" if busy else "rejected"))
            elif tag == "Redirect":
                commands.append(marker("redirect"))
                doc.after[(index, "redirect")] = len(commands)
            elif tag in ("Start", "Stop") and [n.tag for n in verb] == ["Recording"]:
                kind = tag.lower()
                commands.append(marker(kind))
                doc.after[(index, kind)] = len(commands)
            else:
                doc.problems.append(f"<{tag}> is not simulated; skipped")
        commands.append(Hangup())  # a document that runs out of verbs ends the call
        state.docs[doc.doc_id] = doc
        while len(state.docs) > MAX_DOCS:
            del state.docs[next(iter(state.docs))]
        for problem in doc.problems:
            call._log("error", f"TwiML: {problem}")
        return doc

    def _prompts(self, doc: _Doc, nodes: Iterable[ET.Element]) -> list[Command]:
        commands: list[Command] = []
        for node in nodes:
            if node.tag == "Say":
                commands.append(Speak(spoken_words(node), voice=_voice(node.get("voice")),
                                      repeat=_loop(node)))
            elif node.tag == "Play":
                target = _text(node)
                if target:
                    url = urljoin(doc.url, target) if doc.url else target
                    commands.append(Play(url, repeat=_loop(node)))
                elif node.get("digits"):
                    # <Play digits>: tones down the line; "w" waits 0.5 s (docs: <Play>).
                    tones = node.get("digits", "")
                    if set(tones) - set(ANY_KEY + "w"):
                        doc.problems.append(f"<Play digits={tones!r}>: only 0-9 * # w; skipped")
                    else:
                        commands.append(Tones(tones))
                else:
                    doc.problems.append("<Play> has no URL; skipped")
            elif node.tag == "Pause":
                commands.append(Wait(_number(node.get("length"), 1.0)))
            else:
                doc.problems.append(f"<{node.tag}> is not allowed here; skipped")
        return commands

    def _gather(self, doc: _Doc, verb: ET.Element, action: str) -> list[Command]:
        """``<Gather>``: its nested verbs, the last Say/Play as the prompt of the listening."""
        nested = self._prompts(doc, list(verb))
        prompt: Prompt | None = None
        if nested and isinstance(nested[-1], Speak | Play):
            last = nested.pop()
            assert isinstance(last, Speak | Play)
            prompt = last
        finish = verb.get("finishOnKey")
        if finish is None or (finish and (len(finish) != 1 or finish not in ANY_KEY)):
            finish = "#"  # absent or invalid (Twilio warning 13310): the default
        # docs: <Gather> input "dtmf" (default), "speech" or "dtmf speech"; hints are
        # comma-separated words and phrases.
        modes = set((verb.get("input") or "dtmf").lower().split())
        if not modes or modes - {"dtmf", "speech"}:
            doc.problems.append(f"<Gather input={verb.get('input')!r}> is not dtmf, speech or "
                                "'dtmf speech'; collecting keys")
            modes = {"dtmf"}
        hints = tuple(h.strip() for h in (verb.get("hints") or "").split(",") if h.strip())
        return [*nested, GetDigits(
            action_url=action,
            timeout=_number(verb.get("timeout"), 5.0),
            finish_on_key=finish,
            number_of_digits=_int(verb.get("numDigits"), 0),
            valid_digits=ANY_KEY,
            prompt=prompt,
            keys="dtmf" in modes,
            speech="speech" in modes,
            hints=hints,
        )]

    def _dial(self, call: SimCall, doc: _Doc, verb: ET.Element) -> Dial | None:
        caller = verb.get("callerId")
        try:
            caller_id = normalize_number(caller) if caller else call.main.caller
        except WireError:
            doc.problems.append(f"<Dial callerId={caller!r}> is not a phone number")
            caller_id = call.main.caller
        nouns = list(verb)
        room = next((noun for noun in nouns if noun.tag == "Conference"), None)
        if room is not None:
            beep = (room.get("beep") or "true").strip().lower()
            return Dial(conference=_text(room), conference_properties=ConferenceProperties(
                beeps_on_enter=int(beep in ("true", "onenter")),
                beeps_on_exit=int(beep in ("true", "onexit")),
                start_on_enter=_true(room.get("startConferenceOnEnter"), True),
                end_on_exit=_true(room.get("endConferenceOnExit"), False),
                mute=_true(room.get("muted"), False),
                max_members=_int(room.get("maxParticipants"), 250, least=2),
                time_limit=_number(verb.get("timeLimit"), 0.0),
            ))
        targets = [_text(noun) for noun in nouns if noun.tag == "Number"]
        for noun in nouns:
            if noun.tag != "Number":
                doc.problems.append(f"<Dial><{noun.tag}> is not simulated; skipped")
        if not nouns and _text(verb):
            targets = [_text(verb)]
        numbers: list[str] = []
        for target in targets:
            try:
                numbers.append(normalize_number(target))
            except WireError:
                doc.problems.append(f"<Dial> {target!r} is not a phone number")
        if not numbers:
            return None
        return Dial(destinations=tuple(numbers), caller_id=caller_id,
                    timeout=_number(verb.get("timeout"), 30.0, least=1.0))

    # -- markers: where Twilio decides what follows a verb ---------------------------------------

    def _marked(self, state: _CallState, url: str) -> tuple[_Doc, int, str] | None:
        match = re.fullmatch(rf"{MARKER}(\d+)/(\d+)/([a-z-]+)", url)
        if match is None:
            return None
        doc = state.docs.get(int(match[1]))
        index = int(match[2])
        if doc is None or index >= len(doc.verbs):
            return None
        return doc, index, match[3]

    async def _at_marker(self, call: SimCall, state: _CallState, url: str,
                         payload: Mapping[str, Any]) -> NotificationOutcome:
        match = re.fullmatch(rf"{MARKER}(\d+)/0/url", url)
        if match is not None and int(match[1]) in state.urls:  # the Calls API's Url=
            target, method = state.urls.pop(int(match[1]))
            return await self._fetch(call, state, "Url", target, method,
                                     self._params(call, state, "in-progress"))
        marked = self._marked(state, url)
        if marked is None:
            call._log("error", f"a TwiML document the simulator no longer has: {url}")
            return _outcome(None, None, "unknown document")
        doc, index, kind = marked
        verb = doc.verbs[index]
        extra: dict[str, str]
        if kind == "gather" and payload.get("speech") is not None:
            # docs: <Gather> action parameters for speech: SpeechResult, Confidence
            extra = {"SpeechResult": str(payload["speech"]),
                     "Confidence": f"{float(payload.get('confidence') or 0.0):.8f}"}
        elif kind == "gather":
            digits = str(payload.get("digits", ""))
            finish = verb.get("finishOnKey")
            finish = "#" if finish is None else finish
            finished = ""
            if finish and digits.endswith(finish):
                digits, finished = digits[: -len(finish)], finish
            if not digits:  # a lone finish key is no input: on to the next verb
                return _outcome(None, doc.rest(index, kind), "no input")
            extra = {"Digits": digits, "FinishedOnKey": finished}
        elif kind == "gather-empty":
            extra = {"Digits": "", "FinishedOnKey": ""}
        elif kind == "record":
            found = self._recording(call)
            if found is None:  # Twilio does not request the action of an empty recording
                return _outcome(None, doc.rest(index, kind), "nothing recorded")
            extra = found
        elif kind == "dial":
            extra = self._dial_outcome(call, state, verb)
            if verb.get("action") is None:  # no action: on to the next verb
                return _outcome(None, doc.rest(index, kind), extra["DialCallStatus"])
        elif kind in ("enqueue", "dequeue", "enqueue-done", "dequeue-done"):
            return await self._queue_marker(call, state, doc, index, kind)
        elif kind in ("start", "stop"):
            if kind == "start":
                self._start_recording(call, state, doc, verb[0])
            else:
                await self._stop_recording(call, state, verb[0].get("name"))
            return _outcome(None, doc.rest(index, kind), f"{kind} recording")
        elif kind == "redirect":
            target = _text(verb)
            if not target or (not doc.url and not _is_url(target)):
                call._log("error", "TwiML: <Redirect> without a URL; skipped")
                return _outcome(None, doc.rest(index, kind), "no URL")
            return await self._fetch(call, state, "Redirect",
                                     urljoin(doc.url, target) if doc.url else target,
                                     _method(verb.get("method")),
                                     self._params(call, state, "in-progress"))
        else:
            return _outcome(None, None, f"unknown marker {kind}")
        action = doc.action(verb)
        if action is None:
            return _outcome(None, doc.rest(index, kind.removesuffix("-empty")), "no action")
        return await self._fetch(call, state, verb.tag, action, _method(verb.get("method")),
                                 {**self._params(call, state, "in-progress"), **extra})

    # -- queues: <Enqueue>, <Dial><Queue> (twilio.com/docs/voice/twiml/enqueue, .../queue) ---

    def _queue_params(self, waiting: _Waiting) -> dict[str, str]:
        queue = self._queues.setdefault(waiting.name, [])
        done = self._waited.get(waiting.name, [])
        return {"QueueSid": "QU" + hashlib.md5(waiting.name.encode()).hexdigest(),
                "QueuePosition": str(queue.index(waiting) + 1) if waiting in queue else "0",
                "QueueTime": str(int(waiting.call.clock.now() - waiting.joined)),
                "AvgQueueTime": str(int(sum(done) / len(done)) if done else 0),
                "CurrentQueueSize": str(len(queue))}

    async def _queue_marker(self, call: SimCall, state: _CallState, doc: _Doc, index: int,
                            kind: str) -> NotificationOutcome:
        verb = doc.verbs[index]
        here = f"{MARKER}{doc.doc_id}/{index}/"
        if kind == "enqueue":
            waiting = state.waiting
            if waiting is None:
                name = _text(verb)
                waiting = state.waiting = _Waiting(name, call, call.clock.now(), doc.doc_id,
                                                   index)
                self._queues.setdefault(name, []).append(waiting)
                call._log("music", f"waits in queue {name!r}", call.main, queue=name)
            params = {**self._params(call, state, "in-progress"),
                      **self._queue_params(waiting)}
            url = verb.get("waitUrl")
            commands: list[Command] = [Wait(10.0)]  # Twilio's own hold music, in silence
            if url:
                target = urljoin(doc.url, url) if doc.url else url
                answer = await self._webhook(call, state, _Request(
                    "WaitUrl", target, _method(verb.get("waitUrlMethod")), params),
                    blocking=True)
                nodes = list(answer.doc) if answer is not None and answer.doc is not None else []
                if any(node.tag == "Leave" for node in nodes):
                    return await self._left_queue(call, state, doc, index, "leave")
                played = self._prompts(doc, [n for n in nodes
                                             if n.tag in ("Say", "Play", "Pause")])
                commands = played or [Wait(1.0)]
            return _outcome(None, [*commands, Redirect(f"{here}enqueue")], "in queue")
        if kind == "enqueue-done":
            return await self._left_queue(call, state, doc, index, "bridged")
        if kind == "dequeue":
            # "If the queue is empty, Dial will wait until the next person joins the queue
            # or until the <Dial> timeout duration is reached" (twiml/queue).  Waiting is
            # done in the engine (a notification in flight holds simulated time still).
            queue_name = next(_text(n) for n in verb if n.tag == "Queue")
            if state.dequeue_by is None:
                state.dequeue_by = call.clock.now() + _number(verb.get("timeout"), 30.0,
                                                              least=1.0)
            queue = [w for w in self._queues.get(queue_name, []) if not w.call.terminated]
            left = state.dequeue_by - call.clock.now()
            if not queue and left > 0:
                return _outcome(None, [Wait(min(QUEUE_POLL, left)),
                                       Redirect(f"{here}dequeue")], "nobody in the queue")
            state.dequeue_by = None
            if not queue:
                return await self._dequeued(call, state, doc, index,
                                            {"DialCallStatus": "no-answer"})
            waiting = queue[0]
            self._queues[queue_name].remove(waiting)
            room = f"queue-{uuid.uuid4().hex}"
            waiting.bridged_at, waiting.agent = call.clock.now(), call.call_id
            state.dequeued = waiting
            bridge = Dial(conference=room,
                          conference_properties=ConferenceProperties(end_on_exit=True))
            waiting.call.set_commands([bridge, Redirect(
                f"{MARKER}{waiting.doc_id}/{waiting.index}/enqueue-done")])
            return _outcome(None, [bridge, Redirect(f"{here}dequeue-done")], "bridging")
        waiting = state.dequeued
        state.dequeued = None
        params = {"DialCallStatus": "completed"}
        if waiting is not None and waiting.bridged_at is not None:
            params.update(DialCallSid=waiting.call.call_id, DialCallDuration=str(
                int(call.clock.now() - waiting.bridged_at)))
        return await self._dequeued(call, state, doc, index, params)

    async def _dequeued(self, call: SimCall, state: _CallState, doc: _Doc, index: int,
                        params: dict[str, str]) -> NotificationOutcome:
        """The agent's <Dial><Queue> is over: its action, or the next verb."""
        verb = doc.verbs[index]
        if verb.get("action") is None:
            return _outcome(None, doc.rest(index, "dequeue"), params["DialCallStatus"])
        action = doc.action(verb)
        assert action is not None
        return await self._fetch(call, state, "Dial", action, _method(verb.get("method")),
                                 {**self._params(call, state, "in-progress"), **params})

    async def _left_queue(self, call: SimCall, state: _CallState, doc: _Doc, index: int,
                          result: str) -> NotificationOutcome:
        """The caller is out of the queue (``bridged`` and back, or ``leave``): the
        <Enqueue> action with QueueResult and QueueTime, or the next verb."""
        waiting, state.waiting = state.waiting, None
        params = self._params(call, state, "in-progress")
        if waiting is not None:
            params.update(self._queue_params(waiting))
            end = waiting.bridged_at if waiting.bridged_at is not None else call.clock.now()
            params["QueueTime"] = str(int(end - waiting.joined))
            self._waited.setdefault(waiting.name, []).append(end - waiting.joined)
            if waiting in self._queues.get(waiting.name, []):
                self._queues[waiting.name].remove(waiting)
        params["QueueResult"] = result
        verb = doc.verbs[index]
        if verb.get("action") is None:
            return _outcome(None, doc.rest(index, "enqueue"), result)
        action = doc.action(verb)
        assert action is not None
        return await self._fetch(call, state, "Enqueue", action, _method(verb.get("method")),
                                 params)

    def _start_recording(self, call: SimCall, state: _CallState, doc: _Doc,
                         noun: ET.Element) -> None:
        """``<Start><Recording>``: record the call from now on, beside what follows
        (twilio.com/docs/voice/twiml/recording)."""
        callback = noun.get("recordingStatusCallback")
        events = (noun.get("recordingStatusCallbackEvent") or "completed").split()
        name = noun.get("name") or f"RE{uuid.uuid4().hex}"
        if name in state.recordings:
            call._log("error", f"TwiML: a recording named {name} is running already")
            return
        state.recordings[name] = _Background(
            call.clock.now(), "dual" if noun.get("channels") == "dual" else "mono",
            urljoin(doc.url, callback) if callback and doc.url else callback,
            _method(noun.get("recordingStatusCallbackMethod")), "completed" in events)
        call._log("recording-started", f"recording the call in the background ({name})",
                  call.main, background=True)

    async def _stop_recording(self, call: SimCall, state: _CallState,
                              name: str | None) -> None:
        """Stop the recording ``name`` (None: every one, the call is over) and send its
        ``recordingStatusCallback`` with the file (RecordingStatus ``completed``)."""
        names = [name] if name is not None else list(state.recordings)
        for key in names:
            running = state.recordings.pop(key, None)
            if running is None:
                continue
            end = call.clock.now()
            duration = end - running.start
            talks = [(max(s, running.start) - running.start, min(e, end) - running.start)
                     for leg in call.legs for s, e in leg.talks if e > running.start and s < end]
            key = uuid.uuid4().hex  # the simulator serves /recordings/<hex>.wav
            sid = "RE" + key
            url = self.sim.store_recording(key, make_wav(duration, talks))
            call._log("recording-stopped", f"recorded {duration:.1f}s {url}", call.main,
                      recordingUrl=url, duration=duration, background=True)
            if running.callback is None or not running.completed:
                continue
            params = {"AccountSid": self.account_sid, "CallSid": call.call_id,
                      "RecordingSid": sid, "RecordingUrl": url,
                      "RecordingStatus": "completed",
                      "RecordingDuration": str(round(duration)),
                      "RecordingChannels": "2" if running.channels == "dual" else "1",
                      "RecordingStartTime": _rfc2822(self.sim.epoch + running.start),
                      "RecordingSource": "StartCallRecordingTwiML"}
            await self._webhook(call, state, _Request("RecordingStatusCallback",
                                                      running.callback, running.method,
                                                      params), blocking=False)

    def _recording(self, call: SimCall) -> dict[str, str] | None:
        """The last recording's action parameters; None when nobody spoke into it."""
        main = call.main.leg_id
        entry = next((e for e in reversed(call.transcript.entries)
                      if e.kind == "recording-stopped" and e.leg_id == main), None)
        if entry is None:
            return None
        duration = float(entry.data.get("duration", 0.0))
        end = call.started + entry.at
        start = end - duration
        if not any(s < end and e > start for s, e in call.main.talks):
            return None  # Twilio trims silence: an empty recording
        url = str(entry.data.get("recordingUrl", ""))
        name = url.rsplit("/", 1)[-1].removesuffix(".wav").replace("-", "")
        params = {"RecordingUrl": url, "RecordingDuration": str(round(duration)),
                  "RecordingSid": "RE" + (name if len(name) == 32 else uuid.uuid4().hex)}
        key = next((e.text for e in reversed(call.transcript.entries)
                    if e.kind == "keys" and e.data.get("main") and e.at == entry.at), None)
        if key:
            params["Digits"] = key
        return params

    def _dial_outcome(self, call: SimCall, state: _CallState, verb: ET.Element
                      ) -> dict[str, str]:
        """The ``<Dial>`` action's parameters, from the legs this dial created."""
        legs = [leg for leg in call.legs if not leg.main and leg.leg_id not in state.seen_legs]
        state.seen_legs.update(leg.leg_id for leg in legs)
        now = call.clock.now()
        room = next((noun for noun in verb if noun.tag == "Conference"), None)
        if room is not None:
            name = _text(room)
            entries = [e for e in call.transcript.entries
                       if e.data.get("conference") == name and e.leg_id == call.main.leg_id]
            joined = next((e for e in reversed(entries) if e.kind == "conference-joined"), None)
            if joined is None:
                return {"DialCallStatus": "failed"}
            seconds = now - (call.started + joined.at)
            return {"DialCallStatus": "completed", "DialCallDuration": str(int(seconds))}
        winner = next((leg for leg in legs if leg.connected_at is not None), None)
        if winner is not None:
            assert winner.connected_at is not None
            end = winner.ended_at if winner.ended_at is not None else now
            return {"DialCallStatus": "completed", "DialCallSid": state.sid(winner),
                    "DialCallDuration": str(int(end - winner.connected_at))}
        ids = {leg.leg_id for leg in legs}
        kinds = {e.kind for e in call.transcript.entries if e.leg_id in ids}
        status = next((twilio for kind, twilio in _LEG_OUTCOMES if kind in kinds), "failed")
        if "no-answer" in kinds and "busy" not in kinds:
            status = "no-answer"
        params = {"DialCallStatus": status}
        if legs:
            params["DialCallSid"] = state.sid(legs[0])
        return params

    async def _record_after_hangup(self, call: SimCall, state: _CallState) -> None:
        """The caller hung up during <Record>: Twilio still requests its action (the
        TwiML it answers is not run), with ``Digits=hangup``."""
        head = call.queue[0] if call.queue else None
        marked = self._marked(state, head.action_url) if isinstance(head, Redirect) else None
        if marked is None or marked[2] != "record":
            return
        doc, index, _ = marked
        verb = doc.verbs[index]
        found = self._recording(call)
        action = doc.action(verb)
        if found is None or action is None:
            return
        params = {**self._params(call, state, "completed"), **found, "Digits": "hangup"}
        await self._webhook(call, state, _Request("Record", action, _method(verb.get("method")),
                                                  params), blocking=False)

    async def leg_answered(self, call: SimCall, leg: Leg) -> bool:
        """A dialled number answered: fetch its ``<Number url>`` and run the answer (the
        whisper) on that party alone. False turns the leg away."""
        state = self._calls.get(call.call_id)
        head = call.queue[0] if call.queue else None
        marked = (self._marked(state, head.action_url)
                  if state is not None and isinstance(head, Redirect) else None)
        if state is None or marked is None or marked[2] != "dial":
            return True
        doc, index, _ = marked
        noun = next((n for n in doc.verbs[index] if n.tag == "Number" and n.get("url")
                     and _same_number(_text(n), leg.destination)), None)
        if noun is None:
            return True
        url = noun.get("url", "").strip()
        params = {"AccountSid": self.account_sid, "ApiVersion": API_VERSION,
                  "CallSid": state.sid(leg), "ParentCallSid": call.call_id,
                  "CallStatus": "in-progress", "Direction": "outbound-dial",
                  "From": leg.caller, "To": leg.destination, "Caller": leg.caller,
                  "Called": leg.destination}
        request = _Request("Number url", urljoin(doc.url, url) if doc.url else url,
                           _method(noun.get("method")), params)
        answer = await self._webhook(call, state, request, blocking=True)
        if answer is None or answer.doc is None:
            return False  # Twilio hangs up a party whose url fails
        whisper = _Doc(0, request.url, list(answer.doc))
        try:
            for node in whisper.verbs:
                if node.tag in ("Hangup", "Reject"):
                    return False
                for command in self._prompts(whisper, [node]):
                    if isinstance(command, Wait):
                        await call.clock.sleep(command.length)
                    elif isinstance(command, Speak | Play):
                        await call._prompt(command, leg)
        finally:
            for problem in whisper.problems:
                call._log("error", f"TwiML (<Number url>): {problem}")
        return True

    # -- the REST API --------------------------------------------------------------------------

    async def handle_api(self, scope: Scope, receive: Receive, send: Send) -> bool:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == API or path.startswith(API + "/")):
            return False
        headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
        try:
            with self.sim.clock.busy():
                status, body = await self._api(scope, receive)
        except _TwilioError as exc:
            status, body = exc.status, exc.body()
            if exc.status == 401:
                headers.append((b"www-authenticate", b'Basic realm="Twilio API"'))
        except ApiError as exc:  # the body reader's (too large, bad length)
            status, body = exc.status, _TwilioError(exc.status, 20001, str(exc)).body()
        except Exception as exc:  # a bug here must not take the simulator down
            status = 500
            body = _TwilioError(500, 20500, f"Internal Server Error ({type(exc).__name__})"
                                ).body()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})
        return True

    def _authenticate(self, scope: Scope) -> None:
        denied = _TwilioError(401, 20003, "Authenticate")
        header = next((v for k, v in scope.get("headers", []) if k.lower() == b"authorization"),
                      None)
        if header is None or header[:6].lower() != b"basic ":
            raise denied
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).partition(b":")
        except ValueError:
            raise denied from None
        if not (hmac.compare_digest(user, self.account_sid.encode())
                and hmac.compare_digest(password, self.auth_token.encode())):
            raise denied

    async def _api(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        _base_url(self.sim, scope)
        self._authenticate(scope)
        path: str = scope["path"]
        method: str = scope["method"]
        match = re.fullmatch(r"/2010-04-01/Accounts/([^/]+)(/.*)", path)
        if match is None or match[1] != self.account_sid:
            raise _not_found(path)
        rest = match[2]
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                               keep_blank_values=True))
        form: dict[str, list[str]] = {}
        if method == "POST":
            raw = await read_body(self.sim, scope, receive)
            for name, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
                form.setdefault(name, []).append(value)
        one = {name: values[-1] for name, values in form.items()}
        allowed: tuple[str, ...]
        if rest == "/Calls.json":
            allowed = ("GET", "POST")
            if method == "POST":
                return 201, self._create_call(one, form)
            if method == "GET":
                return 200, self._list_calls(query, path)
        elif call_match := re.fullmatch(r"/Calls/([^/]+)\.json", rest):
            allowed = ("GET", "POST")
            if method == "GET":
                return 200, self._call_resource(self._call(call_match[1], path))
            if method == "POST":
                return 200, self._update_call(self._call(call_match[1], path), one)
        elif rest == "/IncomingPhoneNumbers.json":
            allowed = ("GET", "POST")
            if method == "GET":
                return 200, self._list_numbers(query, path)
            if method == "POST":
                number = _e164(one.get("PhoneNumber"), 21421, "PhoneNumber")
                if number not in self.sim.account_numbers:
                    self.sim.add_account_number(number)
                return 201, self._update_number(number, one)
        elif number_match := re.fullmatch(r"/IncomingPhoneNumbers/([^/]+)\.json", rest):
            allowed = ("GET", "POST")
            owned = next((n for n in self.sim.account_numbers
                          if self.number_sid(n) == number_match[1]), None)
            if owned is None:
                raise _not_found(path)
            if method == "GET":
                return 200, self._number_resource(owned)
            if method == "POST":
                return 200, self._update_number(owned, one)
        else:
            raise _not_found(path)
        raise _TwilioError(405, 20004, f"Method not allowed (use {' or '.join(allowed)})")

    # Calls

    def _call(self, sid: str, path: str) -> SimCall:
        call = self.sim.calls.get(sid)
        if call is None or sid not in self._calls:
            raise _not_found(path)
        return call

    def _create_call(self, one: Mapping[str, str], form: Mapping[str, list[str]]
                     ) -> dict[str, Any]:
        if not one.get("To"):
            raise _TwilioError(400, 21201, "No 'To' number is specified")
        if not one.get("From"):
            raise _TwilioError(400, 21213, "No 'From' number is specified")
        to = _e164(one["To"], 21211, "To")
        caller = _e164(one["From"], 21210, "From")
        if caller not in self.sim.account_numbers:
            raise _TwilioError(400, 21210, f"The source phone number provided, {caller}, is "
                                           "not yet verified for your account")
        url, twiml = one.get("Url"), one.get("Twiml")
        if not url and not twiml:
            raise _TwilioError(400, 21205, "A 'Url' or 'Twiml' parameter is required "
                                           "(ApplicationSid is not simulated)")
        if url and not _is_url(url):
            raise _TwilioError(400, 21205, f"Url is not a valid URL: {url}")
        if twiml and _parse_twiml(twiml.encode()) is None:
            raise _TwilioError(400, 12100, "Twiml is not a TwiML <Response> document")
        fallback = one.get("FallbackUrl") or None
        callback = one.get("StatusCallback") or None
        for name, value in (("FallbackUrl", fallback), ("StatusCallback", callback)):
            if value and not _is_url(value):
                raise _TwilioError(400, 21205, f"{name} is not a valid URL: {value}")
        detection = one.get("MachineDetection") or None
        if detection not in (None, "Enable", "DetectMessageEnd"):
            raise _TwilioError(400, 21234, f"MachineDetection must be Enable or "
                                           f"DetectMessageEnd, not {detection}")
        events = frozenset(word for value in form.get("StatusCallbackEvent", [])
                           for word in re.split(r"[\s,]+", value) if word) or {"completed"}
        self._pending = _CallState(
            "outbound-api", voice_method=_method(one.get("Method")),
            fallback_method=_method(one.get("FallbackMethod")), status_callback=callback,
            status_callback_method=_method(one.get("StatusCallbackMethod")),
            events=frozenset(events), answer_twiml=twiml if not url else None,
            machine_detection=detection,
        )
        try:
            call = self.sim.create_call(caller, to, callback_url=url or None,
                                        fallback_url=fallback)
        finally:
            self._pending = None
        return self._call_resource(call)

    def _update_call(self, call: SimCall, one: Mapping[str, str]) -> dict[str, Any]:
        """``POST Calls/{Sid}.json``: new TwiML (Twiml= or Url=) replaces the running
        document at once; Status=completed hangs up, Status=canceled cancels a ringing call."""
        state = self._calls[call.call_id]
        if call.terminated or call.main.status == "terminated":
            raise _TwilioError(400, 21220, "Call is not in-progress. Cannot redirect.")
        answered = call.main.status == "connected"
        for name in ("StatusCallback", "FallbackUrl", "Url"):
            if one.get(name) and not _is_url(one[name]):
                raise _TwilioError(400, 21205, f"{name} is not a valid URL: {one[name]}")
        if one.get("StatusCallback"):
            state.status_callback = one["StatusCallback"]
            state.status_callback_method = _method(one.get("StatusCallbackMethod"))
        if one.get("FallbackUrl"):
            call.fallback_url = one["FallbackUrl"]
            state.fallback_method = _method(one.get("FallbackMethod"))
        status = one.get("Status", "").strip().lower()
        if status in ("completed", "canceled"):
            if not answered:
                state.canceled = True
                call._end("application", reason="canceled")
            elif status == "completed":
                call.set_commands([Hangup()])
            # canceled on a call in progress: Twilio leaves it be
        elif one.get("Twiml"):
            root = _parse_twiml(one["Twiml"].encode())
            if root is None:
                raise _TwilioError(400, 12100, "Twiml is not a TwiML <Response> document")
            if answered:
                call.set_commands(self._translate(call, state, root, "").commands)
            else:
                state.answer_twiml = one["Twiml"]
        elif one.get("Url"):
            method = _method(one.get("Method"))
            if answered:
                key = next(self._ids)
                state.urls[key] = (one["Url"], method)
                call.set_commands([Redirect(f"{MARKER}{key}/0/url")])
            else:
                call.callback_url, state.voice_method = one["Url"], method
                state.answer_twiml = None
        elif status:
            raise _TwilioError(400, 21218, f"Invalid Status {status!r}: use completed or "
                                           "canceled")
        return self._call_resource(call)

    def _call_status(self, call: SimCall, state: _CallState) -> str:
        main = call.main
        if not (call.terminated or main.status == "terminated"):
            if main.status == "connected":
                return "in-progress"
            rang = any(e.kind == "ringing" and e.leg_id == main.leg_id
                       for e in call.transcript.entries)
            return "ringing" if rang else "queued"
        kinds = {e.kind for e in call.transcript.entries if e.leg_id == main.leg_id}
        for kind, status in _LEG_OUTCOMES:
            if kind in kinds:
                return status
        return "canceled" if state.canceled else "completed"

    def _call_resource(self, call: SimCall) -> dict[str, Any]:
        state = self._calls[call.call_id]
        wall = self.sim.epoch
        start = call.established_at
        ended = call.terminated or call.main.status == "terminated"
        end = call.updated if call.status == "terminated" else call.clock.now()
        uri = f"{API}/Accounts/{self.account_sid}/Calls/{call.call_id}"
        return {
            "sid": call.call_id, "account_sid": self.account_sid, "parent_call_sid": None,
            "to": call.main.destination, "to_formatted": call.main.destination,
            "from": call.main.caller, "from_formatted": call.main.caller,
            "phone_number_sid": state.phone_number_sid or (
                self.number_sid(call.account_number) if state.direction == "outbound-api"
                else None),
            "status": self._call_status(call, state),
            "start_time": _rfc2822(wall + start) if start is not None else None,
            "end_time": _rfc2822(wall + end) if ended else None,
            "duration": str(int(end - start)) if ended and start is not None else None,
            "price": None, "price_unit": "USD", "direction": state.direction,
            "answered_by": None, "annotation": None, "api_version": API_VERSION,
            "forwarded_from": None, "group_sid": None, "caller_name": None, "queue_time": "0",
            "trunk_sid": None,
            "date_created": _rfc2822(wall + call.started),
            "date_updated": _rfc2822(wall + max(call.updated, call.main.updated)),
            "uri": uri + ".json",
            "subresource_uris": {"recordings": uri + "/Recordings.json",
                                 "notifications": uri + "/Notifications.json"},
        }

    def _list_calls(self, query: Mapping[str, str], path: str) -> dict[str, Any]:
        calls = [self._call_resource(call) for sid, call in self.sim.calls.items()
                 if sid in self._calls]
        for name, key in (("To", "to"), ("From", "from"), ("Status", "status")):
            if query.get(name):
                wanted = query[name].strip().replace(" ", "+")
                calls = [c for c in calls if c[key] == wanted]
        return _page("calls", calls, path)

    # Numbers

    @staticmethod
    def number_sid(number: str) -> str:
        """The ``PN…`` SID of an account number (stable: derived from the number)."""
        return "PN" + hashlib.md5(number.encode(), usedforsecurity=False).hexdigest()

    def _number_resource(self, number: str) -> dict[str, Any]:
        config = self.sim.account_numbers[number]
        extra = self._numbers.get(number, {})
        sid = self.number_sid(number)
        created = _rfc2822(self.sim.epoch)
        return {
            "sid": sid, "account_sid": self.account_sid, "phone_number": number,
            "friendly_name": extra.get("FriendlyName", number),
            "voice_url": config.callback_url, "voice_method": _method(extra.get("VoiceMethod")),
            "voice_fallback_url": config.fallback_url,
            "voice_fallback_method": _method(extra.get("VoiceFallbackMethod")),
            "status_callback": extra.get("StatusCallback") or None,
            "status_callback_method": _method(extra.get("StatusCallbackMethod")),
            "voice_caller_id_lookup": False, "voice_application_sid": None,
            "capabilities": {"voice": True, "sms": False, "mms": False, "fax": False},
            "status": "in-use", "api_version": API_VERSION, "date_created": created,
            "date_updated": created,
            "uri": f"{API}/Accounts/{self.account_sid}/IncomingPhoneNumbers/{sid}.json",
        }

    def _list_numbers(self, query: Mapping[str, str], path: str) -> dict[str, Any]:
        pattern = query.get("PhoneNumber", "").strip().replace(" ", "+")
        numbers = sorted(self.sim.account_numbers)
        if pattern:
            try:
                exact = normalize_number(pattern)
            except WireError:
                exact = None
            # The simulated account owns every number it is asked about by its full
            # E.164 form, as the BlueVia numbers API takes any number: no set-up needed.
            if exact is not None and pattern.startswith("+") and exact not in numbers:
                self.sim.add_account_number(exact)
                numbers.append(exact)
            digits = re.escape(pattern.lstrip("+")).replace(r"\*", "[0-9]")
            numbers = [n for n in numbers if re.search(digits, n.lstrip("+"))]
        resources = [self._number_resource(n) for n in numbers]
        return _page("incoming_phone_numbers", resources, path)

    def _update_number(self, number: str, one: Mapping[str, str]) -> dict[str, Any]:
        config = self.sim.account_numbers[number]
        for name in ("VoiceUrl", "VoiceFallbackUrl", "StatusCallback"):
            if one.get(name) and not _is_url(one[name]):
                raise _TwilioError(400, 21502, f"{name} is not a valid URL: {one[name]}")
        voice = one.get("VoiceUrl", config.callback_url)
        fallback = one.get("VoiceFallbackUrl", config.fallback_url)
        self.sim.add_account_number(number, callback_url=voice or None,
                                    fallback_url=fallback or None)
        extra = self._numbers.setdefault(number, {})
        for name in ("VoiceMethod", "VoiceFallbackMethod", "StatusCallback",
                     "StatusCallbackMethod", "FriendlyName"):
            if name in one:
                extra[name] = one[name]
        return self._number_resource(number)


def _page(key: str, items: list[dict[str, Any]], path: str) -> dict[str, Any]:
    return {key: items, "start": 0, "end": max(0, len(items) - 1), "page": 0,
            "page_size": PAGE_SIZE, "uri": path, "first_page_uri": path,
            "next_page_uri": None, "previous_page_uri": None}


def _e164(value: str | None, code: int, name: str) -> str:
    try:
        return normalize_number((value or "").strip().replace(" ", "+"))
    except WireError:
        raise _TwilioError(400, code, f"Invalid '{name}' Phone Number: {value}") from None


def _keys(value: str | None, default: str) -> str:
    if value is None:
        return default
    keys = "".join(key for key in value if key in ANY_KEY)
    return keys if keys == value else default


def _same_number(text: str, number: str) -> bool:
    try:
        return normalize_number(text) == number
    except WireError:
        return False


def _parse_twiml(body: bytes) -> ET.Element | None:
    """A TwiML ``<Response>``; None for anything else (Twilio's 12100, document parse failure)."""
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, ValueError):
        return None
    return root if root.tag == "Response" else None
