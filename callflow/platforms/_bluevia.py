"""The BlueVia Voice protocol (see docs/reference/bluevia.md).

Where a flow's verb becomes wire commands:

- ``gather``  -> ``getDigits`` (actionUrl = step) then ``redirect`` (same step),
  because BlueVia says nothing when a ``getDigits`` times out: it falls through
  to the next command, and the ``redirect`` makes that fall-through visible;
- ``record``, ``dial``, ``conference`` -> the command, then a ``redirect`` that
  marks where the platform's queue resumes once it has finished;
- the first batch of a call starts with ``{"notifications": "true"}`` so the app
  sees every event (leg outcomes, recordings, hang-ups).

BlueVia signs nothing: the secret in every callback URL (checked by the app) is
what keeps strangers out.  ``parse_notification``, ``render_commands`` and the
``*_request`` builders are the pure functions underneath the ``Platform`` methods.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict
from urllib.parse import quote

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
from .._machine import MachineDetection
from ._base import ApiRequest, Mode, Reply, UrlFor, Webhook
from ._limits import checked, parse_step

__all__ = ("EVENT_KINDS", "BlueVia", "Notification")

BASE = "/comms/v1"

EVENT_KINDS: Mapping[str, EventKind] = {
    "CalledNumber": "incoming",
    "Answered": "answered",
    "Ringing": "ringing",
    "DigitsCollected": "digits",
    "Redirected": "resumed",
    "Busy": "busy",
    "NoAnswer": "no_answer",
    "Failed": "failed",
    "NotReachable": "unreachable",
    "HangUp": "hangup",
    "PlaybackStarted": "playback_started",
    "PlaybackStopped": "playback_stopped",
    "RecordingStarted": "recording_started",
    "RecordingStopped": "recording_stopped",
    "CallbackUnavailable": "callback_unavailable",
}


class Notification(TypedDict):
    """A BlueVia notification body."""

    timestamp: str
    eventName: str
    callId: str
    legId: NotRequired[str]
    callerId: NotRequired[str]
    destination: NotRequired[str]
    digits: NotRequired[str]
    direction: NotRequired[Literal["fromParticipant", "fromApplication"]]
    recordingUrl: NotRequired[str]
    duration: NotRequired[str | int | float]
    reason: NotRequired[str]
    failedEventName: NotRequired[str]


def tel(number: str) -> str:
    """``+34…`` as a BlueVia address, ``tel:+34…``."""
    return number if number.startswith("tel:") else f"tel:{number}"


def _e164(address: str) -> str:
    return address[4:] if address.startswith("tel:") else address


def _bad(code: str, message: str, status: int = 400) -> NotificationError:
    return NotificationError(status, code, message)


VOICES = ("female", "male")
"""BlueVia's ``speak`` voices (bluevia-voice-api.md): the portable two, nothing else."""
UNSUPPORTED: Mapping[tuple[str, str | None], str] = {
    ("gather", "input"): "getDigits collects keys only: BlueVia has no speech recognition",
    ("say", "language"): "speak has no language: BlueVia speaks its own",
    ("send_digits", None): "BlueVia has no command that sends tones",
    ("call", "machine_detection"): "BlueVia cannot tell a person from an answering machine",
    ("start_recording", None): "BlueVia records only while the flow waits: use record()",
    ("recording", None): "BlueVia records only while the flow waits: use record()",
    ("enqueue", None): "call queues are not built on BlueVia conferences yet",
    ("take_next", None): "call queues are not built on BlueVia conferences yet",
}

_TEXT_ONLY = frozenset({str})


def _checked(payload: Mapping[str, Any]) -> Callable[[str, str | None], str | None]:
    """``payload.get`` for a notification with a field that is not a string.

    A null is an absent field; any other value that is not a string is refused.
    """

    def get(name: str, default: str | None) -> str | None:
        value = payload.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise _bad("invalid_field", f"the notification's {name!r} must be a string")
        return value

    return get


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _bad("invalid_field", "the notification's 'duration' must be a number")
    try:
        return float(value)
    except ValueError:
        raise _bad("invalid_field", "the notification's 'duration' must be a number") from None


def _prompt(prompt: Prompt | None) -> dict[str, Any]:
    if isinstance(prompt, Say):
        # speak takes text only: a Speech goes as its plain reading (Say.text).
        return {"speak": {"text": prompt.text, "voice": prompt.voice, "repeat": prompt.repeat}}
    if isinstance(prompt, Play):
        return {"play": {"url": prompt.url, "repeat": prompt.repeat}}
    return {}


def _number(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else seconds


_NO_COMMANDS = Reply.json({"commands": []})



class BlueVia:
    """The BlueVia Voice adapter (docs/reference/bluevia.md)."""

    name = "bluevia"
    mode: Mode = "respond"
    keepalive = False  # an empty queue leaves the call up, in silence

    def __init__(self, *, api_url: str = "http://127.0.0.1:8080", api_key: str = "key",
                 api_secret: str = "secret") -> None:
        self.api_url = api_url
        self.api_key = api_key
        self.api_secret = api_secret

    def client_options(self) -> dict[str, Any]:
        return {"base_url": self.api_url, "auth": (self.api_key, self.api_secret)}

    # -- the Platform interface -----------------------------------------------------------

    def verify(self, webhook: Webhook) -> None:
        """Nothing to verify: the app has checked the secret in the URL."""

    def parse(self, webhook: Webhook) -> list[Event]:
        return checked([self.parse_notification(webhook.body, webhook.query)])

    def reply(
        self, commands: Sequence[Command] | None, *, url_for: UrlFor, first: bool
    ) -> Reply:
        if commands is None or (not commands and not first):
            return _NO_COMMANDS  # most notifications (playback, ringing...) get this
        return Reply.json(self.render_commands(commands, url_for=url_for, first=first))

    def direct_reply(self, webhook: Webhook) -> Reply | None:
        return None

    def failed_event(self, event: Event) -> Event | None:
        # The fallback request is "the same body with eventName CallbackUnavailable and an
        # extra failedEventName" (bluevia-voice-api.md, notifications): the failed one.
        if event.kind != "callback_unavailable":
            return event
        failed = event.raw.get("failedEventName")
        kind = EVENT_KINDS.get(failed) if isinstance(failed, str) else None
        if kind is None or kind == "callback_unavailable":
            return None
        return dataclasses.replace(event, kind=kind, name=str(failed))

    def check(self, command: Command) -> None:
        """The neutral commands were modelled on BlueVia's, but for speech and tones, and
        background recordings and queues (it records only in ``record``, which the flow
        waits for)."""
        if isinstance(command, StartRecording | StopRecording):
            raise UnsupportedFeature("start_recording", self.name,
                                     hint=UNSUPPORTED[("start_recording", None)])
        if isinstance(command, Enqueue | Dequeue):
            verb = "enqueue" if isinstance(command, Enqueue) else "take_next"
            raise UnsupportedFeature(verb, self.name, hint=UNSUPPORTED[(verb, None)])
        if isinstance(command, SendDigits):
            raise UnsupportedFeature("send_digits", self.name,
                                     hint=UNSUPPORTED[("send_digits", None)])
        prompt = command.prompt if isinstance(command, Gather) else command
        if isinstance(prompt, Say):
            if prompt.voice not in VOICES:
                raise UnsupportedFeature("say", self.name, option="voice",
                                         hint=f"{prompt.voice!r}: BlueVia speaks with a "
                                              "female or a male voice")
            if prompt.language is not None:
                raise UnsupportedFeature("say", self.name, option="language",
                                         hint=UNSUPPORTED[("say", "language")])
        if isinstance(command, Gather):
            if command.input != "dtmf":  # (a language or hints for keys mean nothing)
                raise UnsupportedFeature("gather", self.name, option="input",
                                         hint=UNSUPPORTED[("gather", "input")])
            if command.barge_in:
                raise UnsupportedFeature("gather", self.name, option="barge_in",
                                         hint="keys pressed during a getDigits prompt are "
                                              "ignored (no barge-in)")

    def unsupported(self) -> Mapping[tuple[str, str | None], str]:
        return UNSUPPORTED

    async def push(
        self, http: httpx.AsyncClient, call_id: str, commands: Sequence[Command], *,
        url_for: UrlFor,
    ) -> None:
        body = self.render_commands(commands, url_for=url_for, first=False)
        response = await self.set_commands_request(call_id, body).send(http)
        if response.status_code < 300:
            return
        raise PlatformError(
            f"setcommands refused ({response.status_code}): {response.text[:200]}",
            status=response.status_code, body=response.text,
            gone=response.status_code in (404, 409),
        )

    async def create_call(
        self, http: httpx.AsyncClient, *, to: str, caller_id: str, callback_url: str,
        fallback_url: str | None, machine_detection: MachineDetection | None = None,
    ) -> str:
        if machine_detection is not None:
            raise UnsupportedFeature("call", self.name, option="machine_detection",
                                     hint=UNSUPPORTED[("call", "machine_detection")])
        request = self.create_call_request(to=to, caller_id=caller_id,
                                           callback_url=callback_url, fallback_url=fallback_url)
        response = await request.send(http)
        return self.call_id_from_create_response(response.status_code, response.content)

    async def configure_number(
        self, http: httpx.AsyncClient, number: str, *, callback_url: str,
        fallback_url: str | None,
    ) -> str:
        request = self.configure_number_request(number, callback_url=callback_url,
                                                fallback_url=fallback_url)
        response = await request.send(http)
        if response.status_code >= 300:
            raise PlatformError(
                f"the platform refused to configure {number} ({response.status_code}): "
                f"{response.text[:200]}", status=response.status_code, body=response.text,
            )
        return f"{number}: voiceCallbackUrl set"

    # -- pure helpers ------------------------------------------------------------------------

    def parse_notification(self, body: bytes, query: Mapping[str, str]) -> Event:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _bad("malformed_json", "the notification body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise _bad("malformed_json", "the notification body must be a JSON object")
        # Every notification passes here.  When all its fields are strings (all but a
        # RecordingStopped with a numeric duration, or a broken one) the text fields
        # need no check each: read them straight from the dict.  Otherwise each read
        # checks its field, in the same order, so the first bad field is reported.
        text: Callable[[str, str | None], Any] = (
            payload.get if _TEXT_ONLY.issuperset(map(type, payload.values()))
            else _checked(payload)
        )
        name = text("eventName", None)
        if name is None:
            raise _bad("missing_field", "the notification has no 'eventName' field")
        kind = EVENT_KINDS.get(name)
        if kind is None:
            raise _bad("unknown_event", f"unknown eventName {name!r}")
        call_id = text("callId", None)
        if call_id is None:
            raise _bad("missing_field", "the notification has no 'callId' field")
        if not call_id:
            raise _bad("missing_field", "the notification's 'callId' is empty")
        step = parse_step(query)
        direction = text("direction", "")
        digits = payload.get("digits")
        if kind == "digits" and not isinstance(digits, str):
            raise _bad("missing_field", "a DigitsCollected notification needs 'digits'")
        return Event(
            kind=kind,
            call_id=call_id,
            leg_id=text("legId", ""),
            caller=_e164(text("callerId", "")),
            callee=_e164(text("destination", "")),
            timestamp=text("timestamp", ""),
            step=step,
            digits=digits if isinstance(digits, str) else None,
            recording_url=text("recordingUrl", "") or None,
            duration=_seconds(payload.get("duration")),
            reason=text("reason", "") or text("failedEventName", "") or None,
            by=(
                "app" if direction == "fromApplication"
                else "caller" if kind == "hangup" else None
            ),
            name=name,
            raw=payload,
        )

    def render_commands(
        self, commands: Sequence[Command], *, url_for: UrlFor, first: bool
    ) -> dict[str, Any]:
        wire: list[dict[str, Any]] = [{"notifications": "true"}] if first else []
        for command in commands:
            wire.extend(self._render(command, url_for))
        return {"commands": wire}

    def _render(self, command: Command, url_for: UrlFor) -> list[dict[str, Any]]:
        if isinstance(command, SendDigits):
            self.check(command)  # raises: BlueVia cannot send tones
        if isinstance(command, Say | Play):
            return [_prompt(command)]
        if isinstance(command, Pause):
            return [{"wait": {"length": _number(command.seconds)}}]
        if isinstance(command, Hangup):
            return [{"hangup": {"reason": command.reason}}]
        if isinstance(command, Transfer):
            # A dial the app does not wait for: the caller talks to the number, and the
            # hang-up after it ends the call when the dialled leg ends or fails.
            target: dict[str, Any] = {"destination": tel(command.number),
                                      "timeout": _number(command.timeout)}
            if command.caller_id:
                target["callerId"] = tel(command.caller_id)
            return [{"dial": {"number": target}}, {"hangup": {}}]
        if isinstance(command, Resume):
            return [{"redirect": {"actionUrl": url_for(command.step)}}]
        if isinstance(command, SendDigits | StartRecording | StopRecording | Enqueue | Dequeue):
            self.check(command)
            return []  # pragma: no cover (check raises)
        url = url_for(command.step)
        resume = {"redirect": {"actionUrl": url}}
        if isinstance(command, Gather):
            get_digits: dict[str, Any] = {
                "actionUrl": url,
                "timeout": _number(command.timeout),
                "finishOnKey": command.finish_on_key,
                "numberOfDigits": command.num_digits,
                "validDigits": command.valid_digits,
                "retries": command.retries,
                **_prompt(command.prompt),
            }
            return [{"getDigits": get_digits}, resume]
        if isinstance(command, Record):
            record: dict[str, Any] = {
                "timeout": _number(command.silence_timeout),
                "playBeep": command.beep,
                "maximumLength": _number(command.max_length),
                **_prompt(command.prompt),
            }
            if command.finish_on_key:
                record["finishOnKey"] = command.finish_on_key
            return [{"record": record}, resume]
        if isinstance(command, Dial):
            destinations = [tel(n) for n in command.numbers]
            number: dict[str, Any] = {
                "destination": destinations[0] if len(destinations) == 1 else destinations,
                "timeout": _number(command.timeout),
            }
            if command.caller_id:
                number["callerId"] = tel(command.caller_id)
            dial: dict[str, Any] = {"number": number}
            if command.on_answer is not None:
                dial["behaviorOnAnswer"] = _prompt(command.on_answer)
            return [{"dial": dial}, resume]
        if isinstance(command, Conference):
            o = command.options
            properties: dict[str, Any] = {
                "beepsOnEnter": str(o.beeps_on_enter),
                "beepsOnExit": str(o.beeps_on_exit),
                "endOnExit": o.end_on_exit,
                "startOnEnter": o.start_on_enter,
                "mute": o.mute,
                "maxMembers": o.max_members,
                "timeLimit": _number(o.time_limit),
            }
            if o.speak_on_enter:
                properties["speakOnEnter"] = o.speak_on_enter
            if o.speak_on_exit:
                properties["speakOnExit"] = o.speak_on_exit
            if o.play_on_exit:
                properties["playOnExit"] = o.play_on_exit
            return [{"dial": {"conferenceName": command.name,
                              "conferenceProperties": properties}}, resume]
        raise TypeError(f"cannot render {command!r}")  # pragma: no cover

    def set_commands_request(self, call_id: str, body: Any) -> ApiRequest:
        return ApiRequest("POST", f"{BASE}/calls/{quote(call_id, safe='')}/setcommands", body)

    def create_call_request(
        self, *, to: str, caller_id: str, callback_url: str, fallback_url: str | None
    ) -> ApiRequest:
        body: dict[str, Any] = {
            "callerId": tel(caller_id),
            "destination": tel(to),
            "callbackUrl": callback_url,
            "notifications": "true",
        }
        if fallback_url:
            body["fallbackUrl"] = fallback_url
        return ApiRequest("POST", f"{BASE}/calls", body)

    def configure_number_request(
        self, number: str, *, callback_url: str, fallback_url: str | None
    ) -> ApiRequest:
        body: dict[str, Any] = {"notificationFormat": "JSON", "voiceCallbackUrl": callback_url}
        if fallback_url:
            body["voiceFallbackUrl"] = fallback_url
        return ApiRequest("POST", f"{BASE}/me/numbers/{quote(tel(number), safe=':')}", body)

    def call_id_from_create_response(self, status: int, body: bytes) -> str:
        if status != 201:
            raise PlatformError(f"the platform refused the call ({status})", status=status,
                                body=body.decode("utf-8", "replace"))
        try:
            payload = json.loads(body)
            call_id = payload["callId"]
        except (ValueError, KeyError, TypeError):
            raise PlatformError("the platform's create-call response has no callId",
                                status=status, body=body.decode("utf-8", "replace")) from None
        if not isinstance(call_id, str) or not call_id:
            raise PlatformError("the platform returned an empty callId", status=status)
        return call_id
