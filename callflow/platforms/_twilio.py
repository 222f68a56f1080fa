"""Twilio Programmable Voice: form-encoded webhooks answered with TwiML (docs/reference/twilio.md).

Where a flow's verb becomes TwiML:

- ``gather``  -> ``<Gather action=STEP>`` (once per retry: a ``<Gather>`` with no input
  falls through to the next verb) then ``<Redirect>STEP</Redirect>``, which is how
  "no input" reaches the app, as with BlueVia;
- ``record``  -> the prompt, ``<Record action=STEP>``, then ``<Redirect>STEP``: Twilio
  skips the action of an empty recording and falls through;
- ``dial``    -> ``<Dial action=STEP><Number url=STEP&leg=answer>``...: the number's
  ``url`` is fetched when that number answers, which tells the app who answered and
  serves the whisper; the action says how the dialled leg ended;
- ``conference`` -> ``<Dial action=STEP><Conference>``;
- ``hangup``  -> ``<Hangup/>``, or ``<Reject reason=...>`` as the very first verb of a call;
- a slow flow's marker -> ``<Redirect>``; the rest of its commands go by the Calls API
  (``POST .../Calls/{CallSid}.json`` with ``Twiml``), and since Twilio hangs up a call
  whose document runs out, a slow flow with nothing to say holds the line with
  ``<Pause>`` + ``<Redirect>`` (``keepalive``).

Every webhook carries ``X-Twilio-Signature``: HMAC-SHA1, keyed with the auth token,
over the URL Twilio requested followed by the POST parameters sorted by name, each
name directly followed by its value; base64.  The URL is the app's public one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx

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
from .._exceptions import NotificationError, PlatformError, UnsupportedFeature
from .._machine import AnsweredBy, MachineDetection
from ._base import ApiRequest, Mode, Reply, UrlFor, Webhook
from ._limits import checked, parse_step

__all__ = ("Twilio",)

API = "/2010-04-01/Accounts"
ALL_KEYS = "0123456789*#"
MAX_NUMBERS = 10  # <Number> nouns in one <Dial>
MAX_PARTICIPANTS = 250

VOICES = {"female": "woman", "male": "man"}
"""The portable voices as Twilio names them; ``voice=`` also takes Twilio's own names."""
VOICE_NAMES = ("man", "woman", "alice")
"""Twilio's basic voices: they read text only (no SSML)."""
VOICE_PREFIXES = ("Polly.", "Google.")
"""Twilio's neural voice families (docs: TwiML <Say>, text-to-speech voices): SSML too."""

_DIAL_FAILURES: Mapping[str, EventKind] = {
    "busy": "busy",
    "no-answer": "no_answer",
    "failed": "failed",
    "canceled": "failed",
}
_TERMINAL: Mapping[str, EventKind] = {"completed": "hangup", **_DIAL_FAILURES}

UNSUPPORTED: Mapping[tuple[str, str | None], str] = {
    ("gather", "valid_digits"): "<Gather> accepts every key; check the digits in the flow",
    ("conference", "speak_on_enter"): "<Conference> has no entry announcement",
    ("conference", "speak_on_exit"): "<Conference> has no exit announcement",
    ("conference", "play_on_exit"): "<Conference> has no exit announcement",
}


MACHINE_DETECTION: Mapping[str, str] = {"detect": "Enable",
                                        "wait_for_beep": "DetectMessageEnd"}
"""``MachineDetection`` of the Calls API for each neutral mode."""
ANSWERED_BY: Mapping[str, AnsweredBy] = {
    # twilio.com/docs/voice/answering-machine-detection: the values of AnsweredBy.
    "human": "human",
    "machine_start": "machine",
    "machine_end_beep": "machine",
    "machine_end_silence": "machine",
    "machine_end_other": "machine",
    "fax": "machine",
    "unknown": "unknown",
}


def _answered_by(value: str | None) -> AnsweredBy | None:
    """``AnsweredBy`` as a neutral value (None: no detection was asked)."""
    if not value:
        return None
    return ANSWERED_BY.get(value, "unknown")


def _bad(code: str, message: str, status: int = 400) -> NotificationError:
    return NotificationError(status, code, message)


def _voice_name(name: str) -> str | None:
    """A flow's ``voice=`` as Twilio's ``<Say voice>``, or None when Twilio has no such voice."""
    if name in VOICES:
        return VOICES[name]
    if name in VOICE_NAMES or (name.startswith(VOICE_PREFIXES) and len(name) > 7):
        return name
    return None


def _confidence(value: str | None) -> float | None:
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number is not None and 0.0 <= number <= 1.0 else None


def _whole(seconds: float, *, least: int = 1) -> int:
    """TwiML times are whole seconds: round up, so a timeout is never shorter."""
    return max(least, math.ceil(seconds))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _with_port(url: str, add: bool) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if add and parts.port is None:
        netloc = f"{host}:{443 if parts.scheme == 'https' else 80}"
    elif not add and parts.port is not None:
        netloc = host
    else:
        return url
    if parts.username:
        netloc = f"{parts.username}{':' + parts.password if parts.password else ''}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


def _signed_params(params: Mapping[str, str | Sequence[str]]) -> str:
    """What a signature covers after the URL: each name followed by each of its values.

    Names sorted, and each name's values sorted *and de-duplicated*, as Twilio's own SDK
    does (``sorted(set(values))`` in ``RequestValidator.compute_signature``): a webhook
    with ``X=1&X=1`` is signed over ``X1`` once (twilio/twilio-python#613).
    """
    parts: list[str] = []
    for name in sorted(params):
        values = params[name]
        parts.extend(name + value
                     for value in sorted(set([values] if isinstance(values, str) else values)))
    return "".join(parts)


def _signature(auth_token: str, url: str, params: Mapping[str, str | Sequence[str]]) -> str:
    """Twilio's ``X-Twilio-Signature`` for a POST of ``params`` to ``url``."""
    data = url + _signed_params(params)
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


MAX_SIGNATURE = 64
"""Characters in an ``X-Twilio-Signature`` (base64 of a SHA-1 is 28, of a SHA-256 44)."""


def _signed_bytes(body: bytes) -> bytes:
    """The part of the signed text that comes from a POST body, whatever the body holds.

    For a UTF-8 body, ``_signed_params`` of its fields.  Bytes that are not UTF-8 (which
    Twilio never sends) are carried through as they are (``surrogateescape``), so that
    such a body is refused for its signature, before anything tries to read it.
    """
    params: dict[str, list[str]] = {}
    text = body.decode("utf-8", "surrogateescape")
    for name, value in parse_qsl(text, keep_blank_values=True, errors="surrogateescape"):
        params.setdefault(name, []).append(value)
    return _signed_params(params).encode("utf-8", "surrogateescape")


def _form_params(body: bytes) -> dict[str, list[str]]:
    """A form-encoded body as name -> values (Twilio sends one value per name)."""
    params: dict[str, list[str]] = {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("malformed_form", "the webhook body is not UTF-8") from None
    for name, value in parse_qsl(text, keep_blank_values=True):
        params.setdefault(name, []).append(value)
    return params


def _encode_whisper(prompt: Prompt) -> str:
    if isinstance(prompt, Say):
        data: dict[str, Any] = {"say": prompt.text, "voice": prompt.voice, "repeat": prompt.repeat}
        if prompt.language:
            data["language"] = prompt.language
        if prompt.ssml:
            data["ssml"] = prompt.ssml
    else:
        data = {"play": prompt.url, "repeat": prompt.repeat}
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_whisper(text: str) -> Prompt | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        repeat = int(data.get("repeat", 1))
        if "say" in data:
            name = data.get("voice")
            language, ssml = data.get("language"), data.get("ssml")
            if ssml is not None:
                ET.fromstring(str(ssml))  # a whisper URL is outside text: well-formed or none
            return Say(str(data["say"]),
                       voice=name if isinstance(name, str) and _voice_name(name) else "female",
                       repeat=repeat, language=language if isinstance(language, str) else None,
                       ssml=ssml if isinstance(ssml, str) else None)
        if "play" in data:
            return Play(str(data["play"]), repeat=repeat)
    except (ValueError, TypeError, AttributeError, binascii.Error, ET.ParseError):
        pass
    return None


class Twilio:
    """The Twilio Programmable Voice adapter."""

    name = "twilio"
    mode: Mode = "respond"
    keepalive = True  # a TwiML document that runs out of verbs ends the call

    def __init__(self, *, account_sid: str = "", auth_token: str = "",
                 api_url: str = "https://api.twilio.com", language: str = "en-US") -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.api_url = api_url
        self.language = language

    def client_options(self) -> dict[str, Any]:
        return {"base_url": self.api_url, "auth": (self.account_sid, self.auth_token)}

    # -- webhooks in ----------------------------------------------------------------------

    def verify(self, webhook: Webhook) -> None:
        text = webhook.headers.get("x-twilio-signature", "")
        if not text:
            raise _bad("bad_signature", "the webhook has no X-Twilio-Signature", 403)
        # base64 is ASCII (and compare_digest refuses to compare other text).
        if len(text) > MAX_SIGNATURE or not text.isascii():
            raise _bad("bad_signature", "the X-Twilio-Signature is not base64 of a digest", 403)
        given = text.encode()
        # The body part of the signed text is built once, whatever the body holds (its size
        # is bounded by max_body), and hashed once: each URL below only adds its own bytes.
        tail = _signed_bytes(webhook.body) if webhook.method == "POST" else b""
        key = hmac.new(self.auth_token.encode(), digestmod=hashlib.sha1)
        # Twilio may sign the URL with or without the default port; so does its SDK.
        for url in dict.fromkeys((webhook.url, _with_port(webhook.url, False),
                                  _with_port(webhook.url, True))):
            mac = key.copy()
            mac.update(url.encode())
            mac.update(tail)
            if hmac.compare_digest(base64.b64encode(mac.digest()), given):
                return
        raise _bad("bad_signature", "the X-Twilio-Signature does not match", 403)

    def parse(self, webhook: Webhook) -> list[Event]:
        return checked(self._parse(webhook))

    def _parse(self, webhook: Webhook) -> list[Event]:
        values = _form_params(webhook.body)
        form = {name: items[0] for name, items in values.items()}
        query = webhook.query
        call_sid = form.get("CallSid", "")
        if not call_sid:
            raise _bad("missing_field", "the webhook has no CallSid")
        step = parse_step(query)
        stamp = form.get("Timestamp")
        timestamp = _iso(webhook.received_at)
        if stamp:
            with contextlib.suppress(TypeError, ValueError, OverflowError, OSError):
                timestamp = _iso(parsedate_to_datetime(stamp).timestamp())
        base = {"caller": form.get("From", ""), "callee": form.get("To", ""),
                "timestamp": timestamp, "raw": form}

        def event(kind: EventKind, name: str, **fields: Any) -> Event:
            fields.setdefault("call_id", call_sid)
            fields.setdefault("leg_id", call_sid)
            return Event(kind=kind, name=name, **{**base, **fields})

        if query.get("wait"):
            return []  # an <Enqueue waitUrl> request: direct_reply answers it
        if query.get("rec"):
            # A <Start><Recording>'s recordingStatusCallback: "completed" with the file.
            if form.get("RecordingStatus", "completed") != "completed" or step is None:
                return []
            return [event("recording_saved", "RecordingStatusCallback", step=step,
                          recording_url=form.get("RecordingUrl") or None,
                          duration=_number(form.get("RecordingDuration")) or 0.0)]
        if query.get("leg") == "answer":
            # A dialled number answered: Twilio fetches its <Number url> on the new leg.
            parent = form.get("ParentCallSid") or query.get("call", "")
            return [event("answered", "NumberAnswered", call_id=parent, step=step)]
        if step is not None:
            return self._parse_action(form, call_sid, step, event)
        status = form.get("CallStatus", "")
        if status in _TERMINAL:
            kind = _TERMINAL[status]
            return [event(kind, f"CallStatus={status}", by="caller" if kind == "hangup" else None,
                          reason=None if kind == "hangup" else status,
                          duration=_number(form.get("CallDuration")))]
        if status in ("ringing", "queued", "initiated") or "out" not in query:
            return [event("incoming", "IncomingCall")]
        return [event("answered", "CallAnswered",
                      answered_by=_answered_by(form.get("AnsweredBy")))]

    @staticmethod
    def _parse_action(form: Mapping[str, str], call_sid: str, step: int, event: Any
                      ) -> list[Event]:
        resumed = event("resumed", "Redirect", step=step)
        if "DialCallStatus" in form:
            status = form["DialCallStatus"]
            leg = form.get("DialCallSid") or f"{call_sid}/dial/{step}"
            if status in ("completed", "answered"):
                talked = _number(form.get("DialCallDuration"))
                return [event("answered", "DialAnswered", leg_id=leg, callee=""),
                        event("hangup", "DialEnded", leg_id=leg, callee="", by="caller",
                              duration=talked if talked is not None else 0.0),
                        resumed]
            failure = _DIAL_FAILURES.get(status, "failed")
            return [event(failure, f"DialCallStatus={status}", leg_id=leg, callee="",
                          reason=status), resumed]
        if "QueueResult" in form:
            # The <Enqueue> action: when the caller left the queue, or when the call an
            # agent's <Dial><Queue> bridged them to is over (twilio.com/docs/voice/twiml/
            # enqueue#action).
            return [event("resumed", "Enqueue", step=step, reason=form["QueueResult"],
                          duration=_number(form.get("QueueTime")) or 0.0)]
        if "RecordingUrl" in form:
            return [event("recording_stopped", "RecordingStopped",
                          recording_url=form["RecordingUrl"] or None,
                          duration=_number(form.get("RecordingDuration")) or 0.0),
                    resumed]
        if "SpeechResult" in form and not form.get("Digits"):
            # <Gather input="speech">'s action: SpeechResult and Confidence (0.0-1.0).
            return [event("digits", "Gather", step=step, digits="",
                          speech=form["SpeechResult"],
                          confidence=_confidence(form.get("Confidence")))]
        if form.get("Digits"):
            digits = form["Digits"]
            key = form.get("FinishedOnKey", "")
            if key and not digits.endswith(key):
                digits += key
            return [event("digits", "Gather", step=step, digits=digits)]
        return [resumed]

    # -- replies out ----------------------------------------------------------------------

    def reply(
        self, commands: Sequence[Command] | None, *, url_for: UrlFor, first: bool
    ) -> Reply:
        return Reply(200, self.render(commands or (), url_for=url_for, first=first),
                     "text/xml")

    def failed_event(self, event: Event) -> Event | None:
        # Twilio requests the fallback URL with the parameters the primary one got
        # (plus ErrorCode and ErrorUrl): it is the notification itself.
        return event

    def direct_reply(self, webhook: Webhook) -> Reply | None:
        if webhook.query.get("wait"):
            return Reply(200, self._wait_twiml(webhook), "text/xml")
        if webhook.query.get("leg") != "answer":
            return None
        whisper = _decode_whisper(webhook.query.get("whisper", ""))
        return Reply(200, self.render((), prompt=whisper), "text/xml")

    def _wait_twiml(self, webhook: Webhook) -> bytes:
        """What a queued caller hears until the waitUrl is requested again: their position
        and the expected wait, then the music (or silence) until the next announcement;
        ``<Leave/>`` once they have waited ``max_wait``."""
        form = {name: values[0] for name, values in _form_params(webhook.body).items()}
        query = webhook.query
        response = ET.Element("Response")
        waited = _int(form.get("QueueTime"))
        limit = _int(query.get("max"))
        if limit and waited >= limit:
            ET.SubElement(response, "Leave")
        else:
            position = _int(form.get("QueuePosition"))
            average = _int(form.get("AvgQueueTime"))
            if position:
                self._prompt(response, Say(f"You are number {position} in the queue."))
            if average:
                minutes = max(1, round(average / 60))
                self._prompt(response, Say(
                    f"The expected wait is about {minutes} minute{'s' if minutes > 1 else ''}."))
            music = query.get("music")
            if music:
                self._prompt(response, Play(music))
            else:
                every = max(1, _int(query.get("every")) or 30)
                ET.SubElement(response, "Pause", length=str(every))
        return b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response)

    def render(self, commands: Sequence[Command], *, url_for: UrlFor | None = None,
               first: bool = False, prompt: Prompt | None = None) -> bytes:
        """A TwiML ``<Response>`` document for these commands."""
        response = ET.Element("Response")
        if prompt is not None:
            self._prompt(response, prompt)
        for index, command in enumerate(commands):
            self._render(response, command, url_for, first=first and index == 0)
        return b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response)

    def _prompt(self, parent: ET.Element, prompt: Prompt) -> None:
        if isinstance(prompt, Say):
            name = _voice_name(prompt.voice) or VOICES["female"]
            say = ET.SubElement(parent, "Say", voice=name,
                                language=prompt.language or self.language)
            if prompt.repeat != 1:
                say.set("loop", str(prompt.repeat))
            say.text = prompt.text
            if prompt.ssml is not None and name not in VOICE_NAMES:
                # SSML goes inside <Say> as elements (docs: TwiML <Say>, SSML); the basic
                # voices read text only, so they get the plain reading, as does a
                # hand-made Say whose ssml is not a document.
                with contextlib.suppress(ET.ParseError):
                    speak = ET.fromstring(prompt.ssml)
                    say.text = speak.text
                    say.extend(list(speak))
        else:
            play = ET.SubElement(parent, "Play")
            if prompt.repeat != 1:
                play.set("loop", str(prompt.repeat))
            play.text = prompt.url

    def _render(self, response: ET.Element, command: Command, url_for: UrlFor | None, *,
                first: bool) -> None:
        self.check(command)
        if isinstance(command, Say | Play):
            self._prompt(response, command)
            return
        if isinstance(command, SendDigits):
            # <Play digits>: tones down the line, "w" a half-second pause (docs: <Play>).
            ET.SubElement(response, "Play", digits=command.digits)
            return
        if isinstance(command, Pause):
            if command.seconds > 0:
                ET.SubElement(response, "Pause", length=str(_whole(command.seconds)))
            return
        if isinstance(command, Hangup):
            if first:
                # Only a call that has not been answered yet can be rejected.
                ET.SubElement(response, "Reject", reason=command.reason)
            else:
                ET.SubElement(response, "Hangup")
            return
        if isinstance(command, Transfer):
            # <Dial> with no action: when it ends Twilio goes on to the next verb, the
            # <Hangup/> (twilio.com/docs/voice/twiml/dial#action).
            dial = ET.SubElement(response, "Dial", timeout=str(_whole(command.timeout)))
            if command.caller_id:
                dial.set("callerId", command.caller_id)
            ET.SubElement(dial, "Number").text = command.number
            ET.SubElement(response, "Hangup")
            return
        if isinstance(command, StopRecording):
            stop = ET.SubElement(response, "Stop")
            ET.SubElement(stop, "Recording", name=f"callflow-{command.id}")
            return
        if url_for is None:
            raise TypeError(f"rendering {command!r} needs url_for")
        if isinstance(command, StartRecording):
            # twilio.com/docs/voice/twiml/recording: recording starts at once and the
            # document goes on; the status callback (its URL says which recording) brings
            # the file once it is complete.
            start = ET.SubElement(response, "Start")
            ET.SubElement(start, "Recording", name=f"callflow-{command.id}",
                          channels="dual" if command.dual else "mono",
                          recordingStatusCallback=f"{url_for(command.id)}&rec=1",
                          recordingStatusCallbackMethod="POST",
                          recordingStatusCallbackEvent="completed")
            return
        action = url_for(command.step)
        if isinstance(command, Resume):
            self._redirect(response, action)
            return
        if isinstance(command, Gather):
            for _ in range(max(1, command.retries)):
                if command.prompt is not None and command.barge_in is False:
                    self._prompt(response, command.prompt)  # heard out before listening
                gather = ET.SubElement(response, "Gather", action=action, method="POST",
                                       timeout=str(_whole(command.timeout)),
                                       finishOnKey=command.finish_on_key)
                if command.num_digits:
                    gather.set("numDigits", str(command.num_digits))
                if command.input != "dtmf":
                    # docs: <Gather> input, hints (comma-separated), language, speechTimeout
                    gather.set("input", command.input)
                    gather.set("language", command.language or self.language)
                    gather.set("speechTimeout", "auto")
                    if command.hints:
                        gather.set("hints", ", ".join(command.hints))
                if command.prompt is not None and command.barge_in is not False:
                    self._prompt(gather, command.prompt)
        elif isinstance(command, Record):
            if command.prompt is not None:
                self._prompt(response, command.prompt)
            record = ET.SubElement(response, "Record", action=action, method="POST",
                                   maxLength=str(_whole(command.max_length, least=2)),
                                   timeout=str(_whole(command.silence_timeout)),
                                   playBeep="true" if command.beep else "false")
            if command.finish_on_key:
                record.set("finishOnKey", command.finish_on_key)
        elif isinstance(command, Dial):
            dial = ET.SubElement(response, "Dial", action=action, method="POST",
                                 timeout=str(_whole(command.timeout)))
            if command.caller_id:
                dial.set("callerId", command.caller_id)
            answer_url = f"{action}&leg=answer"
            if command.on_answer is not None:
                answer_url += f"&whisper={quote(_encode_whisper(command.on_answer))}"
            for number in command.numbers:
                noun = ET.SubElement(dial, "Number", url=answer_url, method="POST")
                noun.text = number
        elif isinstance(command, Enqueue):
            # The waitUrl is requested again each time its TwiML has run (with the
            # caller's QueuePosition, QueueTime, AvgQueueTime): direct_reply answers it.
            wait = f"{action}&wait=1&every={_whole(command.announce_every)}"
            if command.music:
                wait += f"&music={quote(command.music, safe='')}"
            if command.max_wait:
                wait += f"&max={_whole(command.max_wait)}"
            node = ET.SubElement(response, "Enqueue", action=action, method="POST",
                                 waitUrl=wait, waitUrlMethod="POST")
            node.text = command.name
        elif isinstance(command, Dequeue):
            dial = ET.SubElement(response, "Dial", action=action, method="POST",
                                 timeout=str(_whole(command.timeout)))
            ET.SubElement(dial, "Queue").text = command.name
        elif isinstance(command, Conference):
            o = command.options
            dial = ET.SubElement(response, "Dial", action=action, method="POST")
            if o.time_limit:
                dial.set("timeLimit", str(_whole(o.time_limit)))
            beep = {(True, True): "true", (True, False): "onEnter", (False, True): "onExit",
                    (False, False): "false"}[(o.beeps_on_enter > 0, o.beeps_on_exit > 0)]
            room = ET.SubElement(
                dial, "Conference", beep=beep,
                startConferenceOnEnter="true" if o.start_on_enter else "false",
                endConferenceOnExit="true" if o.end_on_exit else "false",
                muted="true" if o.mute else "false",
                maxParticipants=str(o.max_members),
            )
            room.text = command.name
        else:  # pragma: no cover
            raise TypeError(f"cannot render {command!r}")
        self._redirect(response, action)

    @staticmethod
    def _redirect(response: ET.Element, url: str) -> None:
        ET.SubElement(response, "Redirect", method="POST").text = url

    # -- what Twilio cannot do ---------------------------------------------------------------

    def unsupported(self) -> Mapping[tuple[str, str | None], str]:
        return UNSUPPORTED

    def check(self, command: Command) -> None:
        prompt = command.prompt if isinstance(command, Gather) else command
        if isinstance(prompt, Say) and _voice_name(prompt.voice) is None:
            raise UnsupportedFeature("say", self.name, option="voice",
                                     hint=f"{prompt.voice!r} is not a Twilio voice: use female, "
                                          "male, man, woman, alice, Polly.* or Google.*")
        if isinstance(command, Gather) and set(command.valid_digits) != set(ALL_KEYS):
            raise UnsupportedFeature("gather", self.name, option="valid_digits",
                                     hint=UNSUPPORTED[("gather", "valid_digits")])
        if isinstance(command, Dial) and len(command.numbers) > MAX_NUMBERS:
            raise UnsupportedFeature("dial", self.name, option="numbers",
                                     hint=f"<Dial> rings at most {MAX_NUMBERS} numbers at once")
        if isinstance(command, Conference):
            o = command.options
            for option in ("speak_on_enter", "speak_on_exit", "play_on_exit"):
                if getattr(o, option):
                    raise UnsupportedFeature("conference", self.name, option=option,
                                             hint=UNSUPPORTED[("conference", option)])
            if not 2 <= o.max_members <= MAX_PARTICIPANTS:
                raise UnsupportedFeature("conference", self.name, option="max_members",
                                         hint=f"rooms hold 2 to {MAX_PARTICIPANTS} members")

    # -- the REST API ----------------------------------------------------------------------

    def _account(self) -> str:
        return f"{API}/{quote(self.account_sid, safe='')}"

    def update_call_request(self, call_sid: str, twiml: bytes) -> ApiRequest:
        return ApiRequest("POST", f"{self._account()}/Calls/{quote(call_sid, safe='')}.json",
                          form={"Twiml": twiml.decode()})

    async def push(
        self, http: httpx.AsyncClient, call_id: str, commands: Sequence[Command], *,
        url_for: UrlFor,
    ) -> None:
        twiml = self.render(commands, url_for=url_for)
        response = await self.update_call_request(call_id, twiml).send(http)
        if response.status_code < 300:
            return
        # 21220: "Call is not in-progress. Cannot redirect."
        gone = response.status_code == 404 or (
            response.status_code == 400 and "21220" in response.text)
        raise PlatformError(
            f"the call update was refused ({response.status_code}): {response.text[:200]}",
            status=response.status_code, body=response.text, gone=gone,
        )

    def create_call_request(self, *, to: str, caller_id: str, callback_url: str,
                            fallback_url: str | None,
                            machine_detection: MachineDetection | None = None) -> ApiRequest:
        form: dict[str, str] = {
            "To": to, "From": caller_id, "Url": callback_url, "Method": "POST",
            "StatusCallback": callback_url, "StatusCallbackMethod": "POST",
            "StatusCallbackEvent": "completed",
        }
        if machine_detection is not None:
            # Synchronous AMD: Twilio requests Url once it knows, with AnsweredBy
            # (after the greeting with DetectMessageEnd).
            form["MachineDetection"] = MACHINE_DETECTION[machine_detection]
        if fallback_url:
            form.update(FallbackUrl=fallback_url, FallbackMethod="POST")
        return ApiRequest("POST", f"{self._account()}/Calls.json", form=form)

    async def create_call(
        self, http: httpx.AsyncClient, *, to: str, caller_id: str, callback_url: str,
        fallback_url: str | None, machine_detection: MachineDetection | None = None,
    ) -> str:
        request = self.create_call_request(to=to, caller_id=caller_id,
                                           callback_url=callback_url, fallback_url=fallback_url,
                                           machine_detection=machine_detection)
        response = await request.send(http)
        if response.status_code >= 300:
            raise PlatformError(f"Twilio refused the call ({response.status_code})",
                                status=response.status_code, body=response.text)
        try:
            sid = response.json()["sid"]
        except (ValueError, KeyError, TypeError):
            sid = None
        if not isinstance(sid, str) or not sid:
            raise PlatformError("Twilio's create-call response has no sid",
                                status=response.status_code, body=response.text)
        return sid

    async def configure_number(
        self, http: httpx.AsyncClient, number: str, *, callback_url: str,
        fallback_url: str | None,
    ) -> str:
        lookup = ApiRequest("GET", f"{self._account()}/IncomingPhoneNumbers.json",
                            params={"PhoneNumber": number})
        response = await lookup.send(http)
        if response.status_code >= 300:
            raise PlatformError(f"could not look up {number} ({response.status_code}): "
                                f"{response.text[:200]}", status=response.status_code,
                                body=response.text)
        try:
            found = response.json()["incoming_phone_numbers"]
            sid = found[0]["sid"] if found else None
        except (ValueError, KeyError, TypeError, IndexError):
            sid = None
        if not isinstance(sid, str):
            raise PlatformError(f"{number} is not a phone number of Twilio account "
                                f"{self.account_sid}", status=404)
        form = {"VoiceUrl": callback_url, "VoiceMethod": "POST",
                "StatusCallback": callback_url, "StatusCallbackMethod": "POST"}
        if fallback_url:
            form.update(VoiceFallbackUrl=fallback_url, VoiceFallbackMethod="POST")
        update = ApiRequest("POST", f"{self._account()}/IncomingPhoneNumbers/"
                                    f"{quote(sid, safe='')}.json", form=form)
        response = await update.send(http)
        if response.status_code >= 300:
            raise PlatformError(f"Twilio refused to configure {number} "
                                f"({response.status_code}): {response.text[:200]}",
                                status=response.status_code, body=response.text)
        return f"{number} ({sid}): VoiceUrl and StatusCallback set"


def _int(value: str | None) -> int:
    """A whole number from a request, 0 when absent or not one (it only shapes a prompt)."""
    try:
        return max(0, int(float(value or 0)))
    except (ValueError, OverflowError):  # "inf", "nan" and the like
        return 0


def _number(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise _bad("invalid_field", f"{value!r} is not a number") from None
