"""Telnyx Call Control (API v2): JSON event webhooks, every command a REST call.

See docs/reference/telnyx.md.  Telnyx is an ``execute``-mode platform: each
webhook is answered ``200 {}`` at once, and the call's command runner
(``callflow._runner``) carries out the neutral queue through the actions below,
one at a time, each waiting for its completion event:

==============  =============================================================
neutral         Telnyx
==============  =============================================================
first event     ``answer`` (or ``reject`` when the flow hangs up at once)
Say             ``speak`` ... ``call.speak.ended``
Play            ``playback_start`` ... ``call.playback.ended``
Pause           nothing: the runner waits
Gather          ``gather_using_speak`` / ``gather_using_audio`` / ``gather``
                ... ``call.gather.ended``; retries are re-issued by the runner
Record          the prompt, ``record_start`` ... ``call.recording.saved``; a finish
                key is a ``call.dtmf.received`` that makes the runner ``record_stop``
Dial            ``POST /v2/calls`` per number (``link_to`` the caller), the first
                ``call.answered`` wins, the rest are hung up; the whisper is spoken
                on the winner, then ``bridge`` (``park_after_unbridge: self``)
Conference      ``POST /v2/conferences`` (first in the room) or ``.../actions/join``
Hangup          ``hangup``
Resume          nothing to send: the runner tells the session it got there
==============  =============================================================

Every action carries a ``command_id`` of its own, a fresh UUID (Telnyx ignores a
repeat for 60 seconds, so retries of one request are safe, and since the window is
the account's, not the call's, no two commands may share one) and a
``client_state``: base64 JSON ``{"c": call, "n": seq, "s": step, "i": index}`` that
Telnyx echoes on the events the action causes.  It routes a
dialled leg's events to its call, and it tells a late completion of an
interrupted command from the current one.  Events arrive duplicated (dropped by
``data.id``) and out of order (every wait is registered before its request).

Webhooks are signed with Ed25519 over ``f"{telnyx-timestamp}|{body}"``; a
timestamp outside the tolerance window is refused like a forged signature.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import logging
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import anyio
import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

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
from .._events import Event, EventKind, HangupBy
from .._exceptions import (
    CallflowError,
    ConfigurationError,
    NotificationError,
    PlatformError,
    UnsupportedFeature,
)
from .._machine import MachineDetection
from ._base import ApiRequest, Mode, Reply, UrlFor, Webhook
from ._limits import MAX_STEP, checked

if TYPE_CHECKING:
    from .._runner import CallControl, Watch

__all__ = ("Telnyx",)

logger = logging.getLogger("callflow")

V2 = "/v2"
MAX_DIGITS = 128

MIN_PARTICIPANTS, MAX_PARTICIPANTS = 2, 800
"""``max_participants`` of ``POST /v2/conferences`` (docs: create-conference)."""
MIN_DIAL_TIMEOUT, MAX_DIAL_TIMEOUT = 5, 600
"""``timeout_secs`` of ``POST /v2/calls`` (docs: dial)."""
LIVE_ROOMS = ("init", "in_progress")
"""A room that is not started yet (``start_conference_on_create: false``) is ``init``."""

VOICE_PREFIXES = ("Polly.", "AWS.Polly.", "Azure.", "ElevenLabs.", "Telnyx.", "Google.")
"""Telnyx's voice families (docs: speak, ``voice``: "male", "female", or
``Provider.Model.VoiceId``); the portable female and male pass as they are."""
DTMF_SECONDS = 0.25
"""How long each tone of ``send_dtmf`` lasts (docs: send_dtmf ``duration_millis``, 250)."""


def _voice_name(name: str) -> str | None:
    """A flow's ``voice=`` as Telnyx's ``voice``, or None when Telnyx has no such voice."""
    if name in ("female", "male"):
        return name
    if name.startswith(VOICE_PREFIXES) and "." in name.rstrip("."):
        return name
    return None


UNSUPPORTED: Mapping[tuple[str, str | None], str] = {
    ("conference", "speak_on_enter"): "Call Control conferences have no entry announcement",
    ("conference", "speak_on_exit"): "Call Control conferences have no exit announcement",
    ("conference", "play_on_exit"): "Call Control conferences have no exit announcement",
    ("enqueue", None): "Call Control queues (enqueue) are not supported by callflow yet",
    ("take_next", None): "Call Control queues (enqueue) are not supported by callflow yet",
}


_KINDS: Mapping[str, EventKind] = {
    "call.answered": "answered",
    "call.speak.started": "playback_started",
    "call.playback.started": "playback_started",
    "call.speak.ended": "playback_stopped",
    "call.playback.ended": "playback_stopped",
    "call.gather.ended": "digits",
    "call.recording.saved": "recording_stopped",
}
LEG_OUTCOMES = frozenset({"busy", "no_answer", "failed", "unreachable"})

_HANGUP_KINDS: Mapping[str, EventKind] = {
    "user_busy": "busy",
    "call_rejected": "busy",
    "timeout": "no_answer",  # the dial's timeout_secs ran out
    "no_answer": "no_answer",  # the far end gave up ringing first
    "not_found": "unreachable",
}


MACHINE_DETECTION: Mapping[str, str] = {"detect": "detect", "wait_for_beep": "greeting_end"}
"""The dial's ``answering_machine_detection`` for each neutral mode: ``greeting_end``
always ends with ``call.machine.greeting.ended``, where ``detect_beep`` sends it only when
it heard a beep (docs: answering-machine-detection)."""
_AMD_EVENTS = frozenset({"call.answered", "call.machine.detection.ended",
                         "call.machine.greeting.ended"})


def _detected(name: str, result: Any, mode: Any) -> tuple[EventKind, str | None]:
    """An outbound call placed with machine detection starts its flow on the event that
    settles who answered, not on ``call.answered``: ``call.machine.detection.ended``
    (result ``human``, ``machine`` or ``not_sure``), or for a machine with
    ``wait_for_beep`` the ``call.machine.greeting.ended`` that follows it (docs:
    answering-machine-detection, ``greeting_end``)."""
    if name == "call.machine.greeting.ended":
        return "answered", "machine"
    if name == "call.machine.detection.ended":
        if result == "machine":
            return ("other", None) if mode == "wait_for_beep" else ("answered", "machine")
        return "answered", "human" if result == "human" else "unknown"
    return "other", None  # call.answered: detection is still running


def _bad(code: str, message: str, status: int = 400) -> NotificationError:
    return NotificationError(status, code, message)


def _encode_state(state: Mapping[str, Any]) -> str:
    """A ``client_state``: base64 of compact JSON."""
    return base64.b64encode(json.dumps(dict(state), separators=(",", ":")).encode()).decode()


def _decode_state(value: Any) -> dict[str, Any]:
    """The state callflow put in ``client_state``, or {} (someone else's, or none)."""
    if not isinstance(value, str) or not value:
        return {}
    try:
        data = json.loads(base64.b64decode(value, validate=True))
    except (ValueError, binascii.Error):
        return {}
    return data if isinstance(data, dict) else {}


def _tag(event: Event) -> dict[str, Any]:
    """The decoded ``client_state`` of a parsed Telnyx event."""
    payload = event.raw.get("payload")
    return _decode_state(payload.get("client_state") if isinstance(payload, dict) else None)


def _seconds_between(start: Any, end: Any) -> float | None:
    try:
        a = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())


def _load_public_key(text: str) -> Ed25519PublicKey:
    """The portal's public key: base64 of the raw 32 bytes, or PEM."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            return key
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ConfigurationError(f"the Telnyx public key is not a base64 Ed25519 key: {exc}"
                                 ) from None


class Telnyx:
    """The Telnyx Call Control adapter."""

    name = "telnyx"
    mode: Mode = "execute"
    keepalive = False  # a parked call stays up until someone hangs up

    def __init__(self, *, api_key: str = "", public_key: str = "", connection_id: str = "",
                 api_url: str = "https://api.telnyx.com", language: str = "en-US",
                 tolerance: float = 300.0, command_timeout: float = 120.0) -> None:
        self.api_key = api_key
        self.connection_id = connection_id
        self.api_url = api_url
        self.language = language
        self.tolerance = tolerance
        self.command_timeout = command_timeout
        """Seconds a command's completion webhook may be late before the call is hung up
        (``Settings.command_timeout``; 0: wait for ever)."""
        self._key = _load_public_key(public_key) if public_key else None

    def client_options(self) -> dict[str, Any]:
        return {"base_url": self.api_url, "headers": {"Authorization": f"Bearer {self.api_key}"}}

    # -- webhooks in ----------------------------------------------------------------------

    def verify(self, webhook: Webhook) -> None:
        signature = webhook.headers.get("telnyx-signature-ed25519", "")
        stamp = webhook.headers.get("telnyx-timestamp", "")
        if not signature or not stamp:
            raise _bad("bad_signature", "the webhook has no telnyx-signature-ed25519 and "
                                        "telnyx-timestamp", 403)
        try:
            # Seconds since the epoch: a long number would overflow the comparison below.
            if not (len(stamp) <= 12 and stamp.isascii() and stamp.isdigit()):
                raise ValueError(stamp)
            sent = int(stamp)
            raw = base64.b64decode(signature, validate=True)
        except (ValueError, binascii.Error):
            raise _bad("bad_signature", "malformed Telnyx signature headers", 403) from None
        if abs(webhook.received_at - sent) > self.tolerance:
            # Stale (or from the future): a replay of an old webhook, or a bad clock.
            raise _bad("bad_signature", f"the webhook was signed {webhook.received_at - sent:.0f}"
                                        f" s ago, outside the {self.tolerance:g} s window", 403)
        if self._key is None:
            raise _bad("bad_signature", "no Telnyx public key is configured", 403)
        try:
            self._key.verify(raw, f"{sent}|".encode() + webhook.body)
        except InvalidSignature:
            raise _bad("bad_signature", "the Telnyx signature does not match", 403) from None

    def parse(self, webhook: Webhook) -> list[Event]:
        return checked(self._parse(webhook))

    def _parse(self, webhook: Webhook) -> list[Event]:
        try:
            document = json.loads(webhook.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _bad("malformed_json", "the webhook body is not valid JSON") from None
        data = document.get("data", document) if isinstance(document, dict) else None
        if not isinstance(data, dict):
            raise _bad("malformed_json", "the webhook body must be a JSON object")
        name = data.get("event_type")
        payload = data.get("payload")
        if not isinstance(name, str) or not isinstance(payload, dict):
            raise _bad("missing_field", "the webhook has no event_type and payload")
        state = _decode_state(payload.get("client_state"))
        leg = str(payload.get("call_control_id") or payload.get("call_leg_id") or "")
        leg_id = str(payload.get("call_control_id") or "")
        if name.startswith("conference."):
            # A conference's webhooks carry its owner's client_state, whoever they are
            # about ("used for all webhooks related to the created conference", docs:
            # create-conference; a joiner's "will not affect conferencing webhooks",
            # docs: join-conference): the participant's leg says whose call it is.
            call_id = leg_id or str(state.get("c") or "")
        else:
            call_id = str(state.get("c") or leg_id)
        if not call_id:
            return []  # about no call of ours (conference.created...)
        kind: EventKind = _KINDS.get(name, "other")
        reason = payload.get("status")
        by: HangupBy | None = None
        if name == "call.initiated":
            kind = "incoming" if payload.get("direction") == "incoming" else "ringing"
        elif name == "call.hangup":
            reason = payload.get("hangup_cause")
            kind = _HANGUP_KINDS.get(str(reason), "hangup")
            by = "caller" if kind == "hangup" else None
        answered_by = None
        if "amd" in state and name in _AMD_EVENTS:
            kind, answered_by = _detected(name, payload.get("result"), state["amd"])
        digits = payload.get("digits", payload.get("digit"))
        speech, confidence = _transcription(payload) if name == "call.transcription" else (
            None, None)
        url = duration = None
        if name == "call.recording.saved" and state.get("bg"):
            kind = "recording_saved"
        if name == "call.recording.saved":
            urls = payload.get("recording_urls") or payload.get("public_recording_urls") or {}
            if isinstance(urls, dict):
                url = urls.get("wav") or urls.get("mp3")
            duration = _seconds_between(payload.get("recording_started_at"),
                                        payload.get("recording_ended_at"))
        step = state.get("s")
        return [Event(
            kind=kind, call_id=call_id, leg_id=leg,
            caller=str(payload.get("from") or ""), callee=str(payload.get("to") or ""),
            timestamp=str(data.get("occurred_at") or ""),
            # Our own client_state, but a bool is an int too, and a stranger's may be anything.
            step=step if type(step) is int and 0 <= step <= MAX_STEP else None,
            digits=digits if isinstance(digits, str) else None,
            recording_url=url if isinstance(url, str) else None, duration=duration,
            reason=str(reason) if reason is not None else None, by=by,
            name=name, id=str(data.get("id") or ""), raw=data,
            speech=speech, confidence=confidence, answered_by=answered_by,
        )]

    def reply(
        self, commands: Sequence[Command] | None, *, url_for: UrlFor, first: bool
    ) -> Reply:
        """Always ``200 {}``: the commands go by REST, through the call's runner."""
        return Reply.json({})

    def direct_reply(self, webhook: Webhook) -> Reply | None:
        return None

    def failed_event(self, event: Event) -> Event | None:
        return None  # Call Control has no fallback URL: a failed webhook is retried as is

    # -- what Telnyx cannot do --------------------------------------------------------------

    def unsupported(self) -> Mapping[tuple[str, str | None], str]:
        return UNSUPPORTED

    def check(self, command: Command) -> None:
        prompt = command.prompt if isinstance(command, Gather) else command
        if isinstance(prompt, Say) and _voice_name(prompt.voice) is None:
            raise UnsupportedFeature("say", self.name, option="voice",
                                     hint=f"{prompt.voice!r} is not a Telnyx voice: use female, "
                                          "male or Provider.Model.Voice (Polly.Joanna...)")
        if isinstance(command, Enqueue | Dequeue):
            verb = "enqueue" if isinstance(command, Enqueue) else "take_next"
            raise UnsupportedFeature(verb, self.name, hint=UNSUPPORTED[(verb, None)])
        if isinstance(command, Conference):
            o = command.options
            for option in ("speak_on_enter", "speak_on_exit", "play_on_exit"):
                if getattr(o, option):
                    raise UnsupportedFeature("conference", self.name, option=option,
                                             hint=UNSUPPORTED[("conference", option)])

    # -- REST: requests ------------------------------------------------------------------------

    @staticmethod
    def action(leg: str, name: str, body: Mapping[str, Any]) -> ApiRequest:
        """``POST /v2/calls/{call_control_id}/actions/{name}``."""
        return ApiRequest("POST", f"{V2}/calls/{quote(leg, safe=':')}/actions/{name}",
                          json=dict(body))

    @staticmethod
    def _stamp(ctl: CallControl, seq: int, *, s: int | None = None, i: int | None = None
               ) -> dict[str, str]:
        """``client_state`` and ``command_id`` for an action: which call, command, step, leg."""
        state: dict[str, Any] = {"c": ctl.call_id, "n": seq}
        if s is not None:
            state["s"] = s
        if i is not None:
            state["i"] = i
        return {"client_state": _encode_state(state), "command_id": _command_id()}

    def error(self, response: httpx.Response) -> PlatformError:
        text = response.text
        status = response.status_code
        # 90018: "Call has already ended".
        gone = status in (404, 410) or (status == 422 and (
            "90018" in text or "already ended" in text.lower()))
        return PlatformError(f"Telnyx refused the request ({status}): {text[:200]}",
                             status=status, body=text, gone=gone)

    async def _send(self, http: httpx.AsyncClient, request: ApiRequest) -> Any:
        response = await request.send(http)
        if response.status_code >= 300:
            raise self.error(response)
        try:
            return response.json() if response.content else None
        except ValueError:
            return None

    async def push(
        self, http: httpx.AsyncClient, call_id: str, commands: Sequence[Command], *,
        url_for: UrlFor,
    ) -> None:
        raise PlatformError("Telnyx takes commands through the call's runner, not by push")

    def create_call_request(self, *, to: str, caller_id: str, callback_url: str,
                            link_to: str | None = None, timeout: float | None = None,
                            state: Mapping[str, str] | None = None) -> ApiRequest:
        body: dict[str, Any] = {
            "connection_id": self.connection_id, "to": to, "from": caller_id,
            "webhook_url": callback_url, "webhook_url_method": "POST",
        }
        if timeout is not None:
            body["timeout_secs"] = min(MAX_DIAL_TIMEOUT, max(MIN_DIAL_TIMEOUT,
                                                             math.ceil(timeout)))
        if link_to:
            body["link_to"] = link_to
        body.update(state or {})
        return ApiRequest("POST", f"{V2}/calls", json=body)

    async def create_call(
        self, http: httpx.AsyncClient, *, to: str, caller_id: str, callback_url: str,
        fallback_url: str | None, machine_detection: MachineDetection | None = None,
    ) -> str:
        # The call's webhooks go to callback_url; a failover URL is the connection's.
        state: dict[str, str] = {}
        if machine_detection is not None:
            # The dial's client_state comes back on the call's own webhooks (docs: dial):
            # it tells _parse to hold the flow's start until detection is over.
            state = {"answering_machine_detection": MACHINE_DETECTION[machine_detection],
                     "client_state": _encode_state({"amd": machine_detection})}
        answer = await self._send(http, self.create_call_request(
            to=to, caller_id=caller_id, callback_url=callback_url, state=state))
        call_id = _data(answer).get("call_control_id")
        if not isinstance(call_id, str) or not call_id:
            raise PlatformError("Telnyx's dial response has no call_control_id",
                                body=json.dumps(answer))
        return call_id

    async def configure_number(
        self, http: httpx.AsyncClient, number: str, *, callback_url: str,
        fallback_url: str | None,
    ) -> str:
        """Point the Call Control Application at the app (numbers are assigned in the portal)."""
        path = f"{V2}/call_control_applications/{quote(self.connection_id, safe='')}"
        current = _data(await self._send(http, ApiRequest("GET", path)))
        body: dict[str, Any] = {
            "application_name": current.get("application_name") or "callflow",
            "webhook_event_url": callback_url,
            "webhook_api_version": "2",
        }
        if fallback_url:
            body["webhook_event_failover_url"] = fallback_url
        await self._send(http, ApiRequest("PATCH", path, json=body))
        return (f"{number}: via Call Control Application {self.connection_id} "
                "(webhook_event_url set; the number must be assigned to it)")

    def farewell(self, leg: str, message: str | None
                 ) -> tuple[ApiRequest | None, float, ApiRequest]:
        say = None
        if message:
            say = self.action(leg, "speak", {**self._voice(Say(message)),
                                             "command_id": _command_id()})
        return (say, _saying(message or ""),
                self.action(leg, "hangup", {"command_id": _command_id()}))

    async def reject(self, http: httpx.AsyncClient, event: Event) -> None:
        await self._send(http, self.action(event.leg_id, "reject", {
            "cause": "CALL_REJECTED", "command_id": _command_id()}))

    # -- REST: the command runner's side ---------------------------------------------------------

    @staticmethod
    def _completion(leg: str, seq: int, *names: str) -> Callable[[Event], bool]:
        def matches(event: Event) -> bool:
            if event.name not in names:
                return False
            n = _tag(event).get("n")
            # Our tag, when Telnyx echoes one; else at least the right leg.
            return n == seq if n is not None else event.leg_id == leg
        return matches

    def _voice(self, say: Say) -> dict[str, str]:
        body = {"payload": say.text, "voice": _voice_name(say.voice) or "female",
                "language": say.language or self.language}
        if say.ssml is not None:
            # docs: speak / gather_using_speak, payload_type "text" (default) or "ssml"
            body.update(payload=say.ssml, payload_type="ssml")
        return body

    async def _wait(self, watch: Watch, what: str, longest: float) -> Event:
        """The next event of ``watch``; a ``PlatformError`` (the runner hangs up) when it
        has not come ``command_timeout`` seconds after the command could have finished."""
        if not self.command_timeout:
            return await watch.get()
        limit = longest + self.command_timeout
        with anyio.move_on_after(limit):
            return await watch.get()
        raise PlatformError(f"no {what} within {limit:.0f} s: the webhook was lost, or "
                            "the call is stuck")

    async def _speak(self, ctl: CallControl, leg: str, say: Say) -> None:
        seq = ctl.next_seq()
        with ctl.watch(self._completion(leg, seq, "call.speak.ended")) as watch:
            await ctl.post(self.action(leg, "speak", {**self._voice(say),
                                                      **self._stamp(ctl, seq)}))
            await self._wait(watch, "call.speak.ended", _speaking(say.text))

    async def _play(self, ctl: CallControl, leg: str, play: Play, *, times: int | None = None
                    ) -> None:
        seq = ctl.next_seq()
        with ctl.watch(self._completion(leg, seq, "call.playback.ended")) as watch:
            loop = times or max(1, play.repeat)
            await ctl.post(self.action(leg, "playback_start", {
                "audio_url": play.url, "loop": loop, **self._stamp(ctl, seq)}))
            # The audio's length is unknown here: each loop may take command_timeout.
            await self._wait(watch, "call.playback.ended", (loop - 1) * self.command_timeout)

    async def _prompt(self, ctl: CallControl, leg: str, prompt: Prompt) -> None:
        if isinstance(prompt, Say):
            for _ in range(max(1, prompt.repeat)):
                await self._speak(ctl, leg, prompt)
        else:
            await self._play(ctl, leg, prompt)

    async def start(
        self, ctl: CallControl, first: Event, commands: list[Command]
    ) -> list[Command] | None:
        if first.kind != "incoming" or ctl.answered:
            return commands
        if commands and isinstance(commands[0], Hangup):
            cause = "USER_BUSY" if commands[0].reason == "busy" else "CALL_REJECTED"
            await ctl.post(self.action(ctl.leg, "reject", {
                "cause": cause, **self._stamp(ctl, ctl.next_seq())}))
            return None
        seq = ctl.next_seq()
        with ctl.watch(lambda e: e.name == "call.answered" and e.leg_id == ctl.leg) as watch:
            await ctl.post(self.action(ctl.leg, "answer", self._stamp(ctl, seq)))
            await self._wait(watch, "call.answered", 0.0)
        ctl.answered = True
        return commands

    async def execute(self, ctl: CallControl, command: Command) -> list[Command] | None:
        self.check(command)
        if isinstance(command, Say | Play):
            await self._prompt(ctl, ctl.leg, command)
            return None
        if isinstance(command, Pause):
            await anyio.sleep(command.seconds)
            return None
        if isinstance(command, SendDigits):
            # send_dtmf has no completion webhook (docs: send_dtmf): wait for the tones
            # (and each "w", half a second) to go out before the next command.
            await ctl.post(self.action(ctl.leg, "send_dtmf", {
                "digits": command.digits, "duration_millis": int(DTMF_SECONDS * 1000),
                **self._stamp(ctl, ctl.next_seq())}))
            await anyio.sleep(command.digits.count("w") * 0.5
                              + len(command.digits.replace("w", "")) * DTMF_SECONDS)
            return None
        if isinstance(command, Resume):
            return await ctl.feed(ctl.event("resumed", step=command.step, name="Resume"))
        if isinstance(command, Hangup):
            with suppress(CallflowError):  # already gone: that is what we wanted
                await ctl.post(self.action(ctl.leg, "hangup", self._stamp(ctl, ctl.next_seq())))
            return None
        if isinstance(command, Gather):
            return await self._gather(ctl, command)
        if isinstance(command, Record):
            return await self._record(ctl, command)
        if isinstance(command, Dial):
            return await self._dial(ctl, command)
        if isinstance(command, Transfer):
            await self._transfer(ctl, command)
            return None
        if isinstance(command, StartRecording):
            # Runs beside whatever follows (docs: start-recording); "bg" in the state
            # makes its call.recording.saved a recording_saved for the session (_parse).
            body = {"format": "wav", "channels": "dual" if command.dual else "single",
                    **self._stamp(ctl, ctl.next_seq(), s=command.id)}
            body["client_state"] = _encode_state({**_decode_state(body["client_state"]),
                                                  "bg": 1})
            await ctl.post(self.action(ctl.leg, "record_start", body))
            return None
        if isinstance(command, Enqueue | Dequeue):  # pragma: no cover (check refuses them)
            return None
        if isinstance(command, StopRecording):
            with suppress(CallflowError):  # already stopped (the call is ending): fine
                await ctl.post(self.action(ctl.leg, "record_stop",
                                           self._stamp(ctl, ctl.next_seq())))
            return None
        return await self._conference(ctl, command)

    async def _transfer(self, ctl: CallControl, transfer: Transfer) -> None:
        """``transfer``: Telnyx dials the number and bridges the caller to it.  The new
        leg's webhooks carry ``target_leg_client_state`` (ours, so they reach this call);
        its ``call.hangup`` before the caller's ``call.bridged`` is a transfer that failed,
        after which "the original call will remain active" (docs: transfer-call): the
        flow has left it, so it is hung up."""
        seq = ctl.next_seq()

        def matches(event: Event) -> bool:
            if event.leg_id == ctl.leg:
                return event.name == "call.bridged"
            return event.name == "call.hangup" and _tag(event).get("n") == seq

        body: dict[str, Any] = {
            "to": transfer.number,
            "timeout_secs": min(MAX_DIAL_TIMEOUT, max(MIN_DIAL_TIMEOUT,
                                                      math.ceil(transfer.timeout))),
            "target_leg_client_state": _encode_state({"c": ctl.call_id, "n": seq}),
            **self._stamp(ctl, seq),
        }
        if transfer.caller_id:
            body["from"] = transfer.caller_id
        with ctl.watch(matches) as watch:
            await ctl.post(self.action(ctl.leg, "transfer", body))
            event = await self._wait(watch, "call.bridged", transfer.timeout + 5)
        if event.name == "call.hangup":
            logger.info("%s: the transfer to %s failed (%s); hanging up", ctl.call_id,
                        transfer.number, event.reason)
            with suppress(CallflowError):
                await ctl.post(self.action(ctl.leg, "hangup", self._stamp(ctl, ctl.next_seq())))

    async def stop(self, ctl: CallControl, command: Command) -> None:
        if isinstance(command, Say | Play):
            name, body = "playback_stop", {"stop": "all"}
        elif isinstance(command, Gather):
            name, body = "gather_stop", {}
        elif isinstance(command, Record):
            name, body = "record_stop", {}
        else:
            return  # a dial hangs up its legs, a conference ends with the call
        await ctl.post(self.action(ctl.leg, name, {**body, **self._stamp(ctl, ctl.next_seq())}))

    async def _gather(self, ctl: CallControl, gather: Gather) -> list[Command] | None:
        if gather.input != "dtmf":
            return await self._gather_speech(ctl, gather)
        answer = await self._collect(ctl, gather)
        if answer == "cancelled":
            return None  # the hang-up, or whoever cancelled it, has the next word
        if answer is None:
            return await ctl.feed(ctl.event("resumed", step=gather.step, name="GatherTimeout"))
        return await ctl.feed(answer)

    async def _collect(self, ctl: CallControl, gather: Gather
                       ) -> Event | Literal["cancelled"] | None:
        """The keys of a gather (its retries included) as the session's digits event; None
        when every attempt timed out; "cancelled" when a hang-up or a stop ended it."""
        millis = int(gather.timeout * 1000)
        key = gather.finish_on_key
        maximum = gather.num_digits or MAX_DIGITS
        digits_body: dict[str, Any] = {
            "minimum_digits": 1,
            "maximum_digits": maximum,
            "valid_digits": gather.valid_digits,
            "inter_digit_timeout_millis": millis,
        }
        if key:
            digits_body["terminating_digit"] = key
        # Typing takes at most a timeout per key (a long number: a generous cap).
        typing = gather.timeout * (min(maximum, 20) + 1)
        prompt = gather.prompt
        for _ in range(max(1, gather.retries)):
            if prompt is not None and gather.barge_in is False:
                await self._prompt(ctl, ctl.leg, prompt)  # heard out, then listen
            elif isinstance(prompt, Say) and prompt.repeat > 1:
                for _ in range(prompt.repeat - 1):
                    await self._speak(ctl, ctl.leg, prompt)
            elif isinstance(prompt, Play) and prompt.repeat > 1:
                await self._play(ctl, ctl.leg, prompt, times=prompt.repeat - 1)
            seq = ctl.next_seq()
            stamp = self._stamp(ctl, seq, s=gather.step)
            longest = typing
            if gather.barge_in is False:
                request = self.action(ctl.leg, "gather", {
                    **digits_body, "initial_timeout_millis": millis, **stamp})
            elif isinstance(prompt, Say):
                request = self.action(ctl.leg, "gather_using_speak", {
                    **self._voice(prompt), **digits_body, "timeout_millis": millis,
                    "maximum_tries": 1, **stamp})
                longest += _speaking(prompt.text)
            elif isinstance(prompt, Play):
                request = self.action(ctl.leg, "gather_using_audio", {
                    "audio_url": prompt.url, **digits_body, "timeout_millis": millis,
                    "maximum_tries": 1, **stamp})
                longest += self.command_timeout
            else:
                request = self.action(ctl.leg, "gather", {
                    **digits_body, "initial_timeout_millis": millis, **stamp})
            ended, pressed = await self._gather_once(ctl, seq, request, longest)
            if ended.reason in ("call_hangup", "cancelled", "cancelled_amd"):
                return "cancelled"
            digits = ended.digits or ""
            if key and digits:
                # Telnyx leaves the terminating digit out: put it back, the way the
                # session expects it, when fewer than the maximum digits came.
                if (ended.reason == "valid" and not digits.endswith(key)
                        and (not gather.num_digits or len(digits) < gather.num_digits)):
                    digits += key
            elif not key:
                # No finish key, but Telnyx's terminating_digit is "#" whatever callflow
                # sends (docs: gather): a "#" ended the gather, so it is one of the
                # digits and the caller may go on typing.
                while (ended.reason != "timeout" and pressed[-1:] == ["#"]
                       and len(digits) < maximum):
                    if "#" in gather.valid_digits:
                        digits += "#"
                    if len(digits) >= maximum:
                        break
                    seq = ctl.next_seq()
                    ended, pressed = await self._gather_once(ctl, seq, self.action(
                        ctl.leg, "gather", {
                            **digits_body, "maximum_digits": maximum - len(digits),
                            "initial_timeout_millis": millis,
                            **self._stamp(ctl, seq, s=gather.step)}), typing)
                    if ended.reason in ("call_hangup", "cancelled", "cancelled_amd"):
                        return "cancelled"
                    digits += ended.digits or ""
            if digits:
                return ctl.event("digits", step=gather.step, digits=digits, name=ended.name,
                                 timestamp=ended.timestamp)
        return None

    async def _gather_speech(self, ctl: CallControl, gather: Gather) -> list[Command] | None:
        """Speech input: ``transcription_start`` (docs: transcription_start; Google engine
        config ``language`` and ``hints``) around the prompt and, for "dtmf speech", a key
        gather; the first final ``call.transcription`` or the keys answer the flow, then
        ``transcription_stop``."""
        config: dict[str, Any] = {"language": gather.language or self.language}
        if gather.hints:
            config["hints"] = list(gather.hints)
        keys = gather.input == "dtmf speech"
        prompt = gather.prompt
        seq = ctl.next_seq()
        leg = ctl.leg

        def heard(event: Event) -> bool:
            return (event.name == "call.transcription" and event.leg_id == leg
                    and event.speech is not None)

        answer: Event | None = None
        with ctl.watch(heard) as transcripts:
            await ctl.post(self.action(leg, "transcription_start", {
                "transcription_engine": "Google", "transcription_engine_config": config,
                "transcription_tracks": "inbound", **self._stamp(ctl, seq, s=gather.step)}))
            try:
                for _ in range(max(1, gather.retries)):
                    if keys:
                        # Keys and speech race: whichever answers first stops the other.
                        single = dataclasses.replace(gather, input="dtmf", retries=1)
                        pressed: Event | Literal["cancelled"] | None = None
                        async with anyio.create_task_group() as tg:
                            async def listen(scope: anyio.CancelScope = tg.cancel_scope
                                             ) -> None:
                                nonlocal answer
                                answer = await transcripts.get()
                                scope.cancel()

                            tg.start_soon(listen)
                            pressed = await self._collect(ctl, single)
                            tg.cancel_scope.cancel()
                        if answer is not None:
                            with suppress(CallflowError):  # the key gather may be over
                                await ctl.post(self.action(leg, "gather_stop",
                                                           self._stamp(ctl, ctl.next_seq())))
                        elif pressed == "cancelled":
                            return None
                        elif pressed is not None:
                            return await ctl.feed(pressed)
                    else:
                        if prompt is not None:
                            await self._prompt(ctl, leg, prompt)
                        with anyio.move_on_after(gather.timeout):
                            answer = await transcripts.get()
                    if answer is not None:
                        break
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5), \
                        suppress(CallflowError):
                    await ctl.post(self.action(leg, "transcription_stop",
                                               self._stamp(ctl, ctl.next_seq())))
        if answer is None:
            return await ctl.feed(ctl.event("resumed", step=gather.step, name="GatherTimeout"))
        return await ctl.feed(ctl.event("digits", step=gather.step, digits="",
                                        speech=answer.speech, confidence=answer.confidence,
                                        name="call.transcription"))

    async def _gather_once(self, ctl: CallControl, seq: int, request: ApiRequest,
                           longest: float) -> tuple[Event, list[str]]:
        """One gather: its ``call.gather.ended``, and the keys pressed meanwhile."""
        done = self._completion(ctl.leg, seq, "call.gather.ended")

        def matches(event: Event) -> bool:
            return done(event) or (event.name == "call.dtmf.received"
                                   and event.leg_id == ctl.leg)

        pressed: list[str] = []
        with ctl.watch(matches) as watch:
            with anyio.CancelScope(shield=True):
                # Whole or not at all: a speech answer that cancels this wait then knows
                # the gather exists, and its gather_stop finds it.
                await ctl.post(request)
            while True:
                event = await self._wait(watch, "call.gather.ended", longest)
                if event.name != "call.dtmf.received":
                    return event, pressed
                pressed.extend(event.digits or "")

    async def _record(self, ctl: CallControl, record: Record) -> list[Command] | None:
        if record.prompt is not None:
            await self._prompt(ctl, ctl.leg, record.prompt)
        seq = ctl.next_seq()
        saved = self._completion(ctl.leg, seq, "call.recording.saved", "call.recording.error")
        key = record.finish_on_key

        def matches(event: Event) -> bool:
            return saved(event) or (bool(key) and event.name == "call.dtmf.received"
                                    and event.leg_id == ctl.leg)

        body: dict[str, Any] = {
            "format": "wav", "channels": "single", "play_beep": record.beep,
            "max_length": math.ceil(record.max_length),
            **self._stamp(ctl, seq, s=record.step),
        }
        if record.silence_timeout > 0:
            # It counts from the caller's last words, not from the start (a silent caller
            # is recorded up to max_length), and Telnyx detects silence by transcribing,
            # billed as such (docs: start-recording): none asked, none sent.
            body["timeout_secs"] = math.ceil(record.silence_timeout)
        with ctl.watch(matches) as watch:
            await ctl.post(self.action(ctl.leg, "record_start", body))
            while True:
                event = await self._wait(watch, "call.recording.saved",
                                         record.max_length + 1)
                if event.name == "call.dtmf.received":
                    if key and event.digits and key in event.digits:
                        await ctl.post(self.action(ctl.leg, "record_stop",
                                                   self._stamp(ctl, ctl.next_seq())))
                    continue
                break
        if event.name == "call.recording.saved":
            await ctl.feed(ctl.event("recording_stopped", recording_url=event.recording_url,
                                     duration=event.duration or 0.0, name=event.name,
                                     timestamp=event.timestamp))
        return await ctl.feed(ctl.event("resumed", step=record.step, name="RecordEnded"))

    async def _dial(self, ctl: CallControl, dial: Dial) -> list[Command] | None:
        seq = ctl.next_seq()
        call = ctl.session.call
        caller_id = dial.caller_id or (call.callee if call.direction == "inbound"
                                       else call.caller)
        legs: dict[int, str] = {}  # index -> call_control_id
        ended: dict[int, Event] = {}
        answered: dict[int, Event] = {}

        def index(event: Event) -> int | None:
            state = _tag(event)
            i = state.get("i")
            if isinstance(i, int) and state.get("n") == seq and i < len(dial.numbers):
                return i
            # After a whisper the leg's events carry that command's state: go by the leg.
            return next((i for i, leg in legs.items() if leg == event.leg_id), None)

        def matches(event: Event) -> bool:
            return (event.name in ("call.answered", "call.bridged", "call.hangup")
                    and index(event) is not None)

        async def hang_up(i: int) -> None:
            if i in legs and i not in ended:
                ended[i] = ctl.event("hangup", leg_id=legs[i], reason="dial_over")
                with contextlib.suppress(CallflowError):
                    await ctl.post(self.action(legs[i], "hangup", {
                        "command_id": _command_id()}))

        winner: int | None = None
        try:
            with ctl.watch(matches) as watch:
                for i, number in enumerate(dial.numbers):
                    request = self.create_call_request(
                        to=number, caller_id=caller_id, callback_url=ctl.callback_url,
                        link_to=ctl.leg, timeout=dial.timeout,
                        state=self._stamp(ctl, seq, i=i))
                    try:
                        legs[i] = str(_data(await ctl.post(request)).get("call_control_id"))
                    except PlatformError as exc:
                        ended.setdefault(i, ctl.event(
                            "failed", leg_id=f"{ctl.leg}/dial/{seq}/{i}", callee=number,
                            reason=exc.body or str(exc)))
                with anyio.move_on_after(dial.timeout + 30):
                    while winner is None and len(ended) < len(dial.numbers):
                        event = await watch.get()
                        found = index(event)
                        if found is None or found in ended:
                            continue
                        i = found
                        if event.name != "call.hangup":
                            answered[i] = event
                            winner = i
                            break
                        ended[i] = event
                        if event.kind == "hangup" and event.reason == "normal_clearing":
                            # It answered and hung up already: its call.answered is late.
                            answered[i] = event
                            winner = i
                for i in range(len(dial.numbers)):
                    if i != winner:
                        await hang_up(i)
                if winner is None:
                    for i, number in enumerate(dial.numbers):
                        outcome = ended.get(i)
                        kind: EventKind = "no_answer"
                        if outcome is not None and outcome.kind in LEG_OUTCOMES:
                            kind = outcome.kind
                        await ctl.feed(ctl.event(
                            kind, leg_id=legs.get(i, f"{ctl.leg}/dial/{seq}/{i}"),
                            callee=number, reason=outcome.reason if outcome else "timeout",
                            timestamp=outcome.timestamp if outcome else ""))
                else:
                    leg, number, answer = legs[winner], dial.numbers[winner], answered[winner]
                    if winner not in ended:
                        await self._bridge(ctl, dial, leg)
                    await ctl.feed(ctl.event("answered", leg_id=leg, callee=number,
                                             timestamp=answer.timestamp))
                    while winner not in ended:
                        event = await watch.get()
                        if event.name == "call.hangup" and event.leg_id == leg:
                            ended[winner] = event
                    await ctl.feed(ctl.event("hangup", leg_id=leg, callee=number, by="caller",
                                             timestamp=ended[winner].timestamp))
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                for i in list(legs):
                    await hang_up(i)  # the caller hung up mid-dial: leave no leg behind
        return await ctl.feed(ctl.event("resumed", step=dial.step, name="DialEnded"))

    async def _bridge(self, ctl: CallControl, dial: Dial, leg: str) -> None:
        """Whisper to the party who answered, then connect the caller to them."""
        try:
            if dial.on_answer is not None:
                await self._prompt(ctl, leg, dial.on_answer)
            await ctl.post(self.action(ctl.leg, "bridge", {
                "call_control_id": leg, "park_after_unbridge": "self",
                **self._stamp(ctl, ctl.next_seq())}))
        except CallflowError as exc:
            # The answering party hung up meanwhile: its call.hangup ends the dial.
            logger.info("%s: could not connect %s: %s", ctl.call_id, leg, exc)

    async def _conference(self, ctl: CallControl, room: Conference) -> list[Command] | None:
        o = room.options
        seq = ctl.next_seq()
        stamp = self._stamp(ctl, seq, s=room.step)
        beep = {(True, True): "always", (True, False): "on_enter", (False, True): "on_exit",
                (False, False): "never"}[(o.beeps_on_enter > 0, o.beeps_on_exit > 0)]

        def left(event: Event) -> bool:
            return (event.name in ("conference.participant.left", "conference.ended")
                    and event.leg_id == ctl.leg)

        created: str | None = None
        try:
            with ctl.watch(left) as watch:
                # A room created with start_conference_on_create false is "init" until
                # someone starts it: it is as much the room to join as a started one.
                found = await ctl.post(ApiRequest("GET", f"{V2}/conferences", params={
                    "filter[name]": room.name}))
                rooms = found.get("data") if isinstance(found, dict) else None
                live = [r for r in rooms or [] if isinstance(r, dict)
                        and r.get("status") in LIVE_ROOMS and r.get("name") == room.name]
                if live:
                    path = f"{V2}/conferences/{quote(str(live[0].get('id')), safe='')}"
                    try:
                        await ctl.post(ApiRequest("POST", f"{path}/actions/join", json={
                            "call_control_id": ctl.leg, "start_conference_on_enter":
                            o.start_on_enter, "mute": o.mute, "beep_enabled": beep,
                            "end_conference_on_exit": o.end_on_exit, **stamp}))
                    except PlatformError as exc:
                        if exc.status is None or exc.status >= 500:
                            raise
                        # Full (max_participants) or ended meanwhile: the caller is not
                        # in, as when a BlueVia room turns them away.
                        logger.info("%s: could not join conference %s: %s", ctl.call_id,
                                    room.name, exc)
                        return await ctl.feed(ctl.event("resumed", step=room.step,
                                                        name="ConferenceFull"))
                else:
                    body: dict[str, Any] = {
                        "call_control_id": ctl.leg, "name": room.name, "beep_enabled": beep,
                        "start_conference_on_create": o.start_on_enter,
                        "max_participants": min(MAX_PARTICIPANTS,
                                                max(MIN_PARTICIPANTS, o.max_members)),
                        **stamp}
                    if o.time_limit:
                        body["duration_minutes"] = math.ceil(o.time_limit / 60)
                    answer = _data(await ctl.post(ApiRequest("POST", f"{V2}/conferences",
                                                             json=body)))
                    created = str(answer.get("id") or "") or None
                    if o.mute and created:
                        await ctl.post(ApiRequest(
                            "POST", f"{V2}/conferences/{quote(created, safe='')}"
                                    "/actions/mute", json={"call_control_ids": [ctl.leg]}))
                await watch.get()
        finally:
            if created and o.end_on_exit:
                # Creating a room takes no end_conference_on_exit: its creator ends it
                # on leaving, with the documented "end" (docs: end-a-conference).
                with anyio.CancelScope(shield=True), anyio.move_on_after(5), \
                        suppress(CallflowError):
                    await ctl.post(ApiRequest(
                        "POST", f"{V2}/conferences/{quote(created, safe='')}/actions/end",
                        json={"command_id": _command_id()}))
        return await ctl.feed(ctl.event("resumed", step=room.step, name="ConferenceLeft"))


def _transcription(payload: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """A final ``call.transcription``'s transcript and confidence (docs: transcription
    webhook, ``transcription_data``); interim results (``is_final`` false) are not answers."""
    data = payload.get("transcription_data")
    if not isinstance(data, dict) or data.get("is_final") is False:
        return None, None
    transcript = data.get("transcript")
    if not isinstance(transcript, str):
        return None, None
    confidence = data.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) \
            or not 0 <= confidence <= 1:
        return transcript, None
    return transcript, float(confidence)


def _speaking(text: str) -> float:
    """The longest text-to-speech could take to say ``text`` (a slow 5 characters a second)."""
    return len(text) / 5


def _saying(text: str) -> float:
    """How long text-to-speech usually takes to say ``text`` (150 words a minute)."""
    return 0.4 * len(text.split())


def _command_id() -> str:
    """A ``command_id`` no other command shares: Telnyx drops any command that repeats
    one within 60 seconds (docs: receiving-webhooks), whichever call it is for, and Dial
    "will ignore other Dial commands with the same command_id" (docs: dial)."""
    return f"callflow-{uuid.uuid4().hex}"


def _data(answer: Any) -> dict[str, Any]:
    data = answer.get("data") if isinstance(answer, dict) else None
    return data if isinstance(data, dict) else {}
