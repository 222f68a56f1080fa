"""The BlueVia Voice wire format: TypedDicts and lenient, pure parsing (no I/O).

Commands are parsed into frozen dataclasses once, at the edge, so the engine never sees
the documented variants (numeric strings, `lenght`, `callbackUrl` for `actionUrl`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict

from ._errors import WireError

__all__ = (
    "CallLegObject",
    "CallObject",
    "Command",
    "ConferenceProperties",
    "Dial",
    "GetDigits",
    "Hangup",
    "Notification",
    "Notifications",
    "Play",
    "Record",
    "Redirect",
    "Speak",
    "Wait",
    "iso",
    "normalize_number",
    "parse_commands",
    "tel",
)

EventName = Literal[
    "CalledNumber",
    "Answered",
    "Ringing",
    "DigitsCollected",
    "Busy",
    "Failed",
    "NotReachable",
    "NoAnswer",
    "HangUp",
    "PlaybackStarted",
    "PlaybackStopped",
    "RecordingStarted",
    "RecordingStopped",
    "Redirected",
    "CallbackUnavailable",
]


class Notification(TypedDict):
    timestamp: str
    eventName: EventName
    callId: str
    legId: str
    callerId: str
    destination: str
    digits: NotRequired[str]
    direction: NotRequired[Literal["fromParticipant", "fromApplication"]]
    recordingUrl: NotRequired[str]
    duration: NotRequired[str]
    reason: NotRequired[str]
    failedEventName: NotRequired[str]


class CallLegObject(TypedDict):
    callLegId: str
    callerId: str
    destination: str
    legStatus: Literal["ringing", "connected", "onhold", "terminated"]
    direction: Literal["Inbound", "Outbound"]
    duration: str
    createdAt: str
    lastUpdated: str


class CallObject(TypedDict, total=False):
    callId: str
    createdAt: str
    lastUpdated: str
    callStatus: Literal["connecting", "established", "terminated"]
    startTime: str
    duration: str
    numberOfLegs: str
    callLegs: list[CallLegObject]


# -- numbers and times ---------------------------------------------------------------------

_NUMBER = re.compile(r"^\+?[0-9]{3,15}$")


def normalize_number(value: object, field_name: str = "number") -> str:
    """`tel:+34900000001`, `+34900000001` or `34900000001` → `+34900000001`."""
    if not isinstance(value, str):
        raise WireError(field_name)
    text = value.strip()
    if text.lower().startswith("tel:"):
        text = text[4:]
    text = text.replace(" ", "")
    if not _NUMBER.match(text):
        raise WireError(field_name)
    return text if text.startswith("+") else "+" + text


def tel(number: str) -> str:
    """`+34900000001` → `tel:+34900000001`."""
    return "tel:" + number


def iso(epoch_seconds: float) -> str:
    """ISO-8601 UTC with `Z`, whole seconds."""
    moment = datetime.fromtimestamp(epoch_seconds, UTC).replace(microsecond=0, tzinfo=None)
    return moment.isoformat() + "Z"


# -- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speak:
    text: str
    voice: Literal["female", "male"] = "female"
    repeat: int = 1


@dataclass(frozen=True)
class Play:
    url: str
    repeat: int = 1


Prompt = Speak | Play


@dataclass(frozen=True)
class Wait:
    length: float = 0.0


@dataclass(frozen=True)
class GetDigits:
    action_url: str | None = None
    timeout: float = 5.0
    finish_on_key: str = "#"
    number_of_digits: int = 0
    valid_digits: str = "1234567890*#"
    retries: int = 1
    prompt: Prompt | None = None
    # Speech input: not on BlueVia's wire (getDigits collects keys only); the Twilio
    # front end sets these from <Gather input="speech" hints language>.
    keys: bool = True
    speech: bool = False
    hints: tuple[str, ...] = ()


@dataclass(frozen=True)
class Record:
    timeout: float = 15.0
    play_beep: bool = False
    finish_on_key: str = ""
    maximum_length: float = 60.0
    prompt: Prompt | None = None
    export_url: str | None = None
    timeout_after_speech: bool = False
    """The silence ``timeout`` only counts once the caller has spoken (Telnyx); else it
    counts from the start too, ending a recording nobody speaks into (BlueVia)."""


@dataclass(frozen=True)
class ConferenceProperties:
    beeps_on_enter: int = 0
    speak_on_enter: str | None = None
    beeps_on_exit: int = 0
    speak_on_exit: str | None = None
    play_on_exit: str | None = None
    end_on_exit: bool = False
    start_on_enter: bool = True
    mute: bool = False
    max_members: int = 41
    time_limit: float = 0.0


@dataclass(frozen=True)
class Dial:
    """A `dial`: exactly one of `destinations`, `conference` or `call_id` is set."""

    destinations: tuple[str, ...] = ()
    caller_id: str | None = None
    timeout: float = 30.0
    conference: str | None = None
    conference_properties: ConferenceProperties = field(default_factory=ConferenceProperties)
    call_id: str | None = None
    on_answer: Prompt | None = None


@dataclass(frozen=True)
class Hangup:
    reason: Literal["rejected", "busy"] = "rejected"


@dataclass(frozen=True)
class Tones:
    """DTMF the application sends down the line (not on BlueVia's wire: Twilio's
    ``<Play digits>``); ``w`` is half a second's pause."""

    digits: str


@dataclass(frozen=True)
class Redirect:
    action_url: str


@dataclass(frozen=True)
class Notifications:
    enabled: bool = True


Command = (Speak | Play | Wait | Tones | GetDigits | Record | Dial | Hangup | Redirect
           | Notifications)


# -- lenient scalar parsing ------------------------------------------------------------------


def _number(value: object, name: str, *, integer: bool = False, minimum: float = 0) -> float:
    if isinstance(value, bool):
        raise WireError(name, commands=True)
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise WireError(name, commands=True) from None
    if not isinstance(value, int | float) or value != value or value < minimum:
        raise WireError(name, commands=True)
    if integer and int(value) != value:
        raise WireError(name, commands=True)
    return float(value)


def _int(value: object, name: str, minimum: int = 0) -> int:
    return int(_number(value, name, integer=True, minimum=minimum))


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise WireError(name, commands=True)


def _str(value: object, name: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise WireError(name, commands=True)
    return value


def _obj(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireError(name, commands=True)
    return value


def _url(value: object, name: str) -> str:
    text = _str(value, name).strip()
    if not (text.startswith("http://") or text.startswith("https://")):
        raise WireError(name, commands=True)
    return text


# -- command parsers --------------------------------------------------------------------------


def _speak(body: object) -> Speak:
    data = _obj(body, "speak")
    voice = str(data.get("voice", "female")).lower()
    if voice not in ("female", "male"):
        raise WireError("speak.voice", commands=True)
    return Speak(
        text=_str(data.get("text"), "speak.text", allow_empty=True),
        voice="male" if voice == "male" else "female",
        repeat=_int(data.get("repeat", 1), "speak.repeat", 1),
    )


def _play(body: object) -> Play:
    data = _obj(body, "play")
    return Play(
        url=_str(data.get("url"), "play.url"),
        repeat=_int(data.get("repeat", 1), "play.repeat", 1),
    )


def _prompt(data: dict[str, Any], name: str) -> Prompt | None:
    if "speak" in data and "play" in data:
        raise WireError(f"{name}.prompt", commands=True)
    if "speak" in data:
        return _speak(data["speak"])
    if "play" in data:
        return _play(data["play"])
    return None


def _wait(body: object) -> Wait:
    data = _obj(body, "wait")
    raw = data.get("length", data.get("lenght", 0))
    return Wait(_number(raw, "wait.length"))


def _get_digits(body: object) -> GetDigits:
    data = _obj(body, "getDigits")
    action = data.get("actionUrl")
    valid = _str(data.get("validDigits", "1234567890*#"), "getDigits.validDigits")
    finish = _str(data.get("finishOnKey", "#"), "getDigits.finishOnKey", allow_empty=True)
    if len(finish) > 1:
        raise WireError("getDigits.finishOnKey", commands=True)
    return GetDigits(
        action_url=None if action is None else _url(action, "getDigits.actionUrl"),
        timeout=_number(data.get("timeout", 5), "getDigits.timeout"),
        finish_on_key=finish,
        number_of_digits=_int(data.get("numberOfDigits", 0), "getDigits.numberOfDigits"),
        valid_digits=valid,
        retries=_int(data.get("retries", 1), "getDigits.retries", 1),
        prompt=_prompt(data, "getDigits"),
    )


def _record(body: object) -> Record:
    data = _obj(body, "record")
    export = data.get("export")
    export_url = None
    if export is not None:
        export_url = _url(_obj(export, "record.export").get("url"), "record.export.url")
    finish = _str(data.get("finishOnKey", ""), "record.finishOnKey", allow_empty=True)
    if len(finish) > 1:
        raise WireError("record.finishOnKey", commands=True)
    return Record(
        timeout=_number(data.get("timeout", 15), "record.timeout"),
        play_beep=_bool(data.get("playBeep", False), "record.playBeep"),
        finish_on_key=finish,
        maximum_length=_number(data.get("maximumLength", 60), "record.maximumLength"),
        prompt=_prompt(data, "record"),
        export_url=export_url,
    )


def _conference_properties(body: object) -> ConferenceProperties:
    data = _obj(body, "dial.conferenceProperties")
    name = "dial.conferenceProperties."

    def opt_str(key: str) -> str | None:
        value = data.get(key)
        return None if value is None else _str(value, name + key)

    return ConferenceProperties(
        beeps_on_enter=_int(data.get("beepsOnEnter", 0), name + "beepsOnEnter"),
        speak_on_enter=opt_str("speakOnEnter"),
        beeps_on_exit=_int(data.get("beepsOnExit", 0), name + "beepsOnExit"),
        speak_on_exit=opt_str("speakOnExit"),
        play_on_exit=opt_str("playOnExit"),
        end_on_exit=_bool(data.get("endOnExit", False), name + "endOnExit"),
        start_on_enter=_bool(data.get("startOnEnter", True), name + "startOnEnter"),
        mute=_bool(data.get("mute", False), name + "mute"),
        max_members=_int(data.get("maxMembers", 41), name + "maxMembers", 1),
        time_limit=_number(data.get("timeLimit", 0), name + "timeLimit"),
    )


def _dial(body: object) -> Dial:
    data = _obj(body, "dial")
    on_answer_raw = data.get("behaviorOnAnswer")
    targets = [key for key in ("number", "conferenceName", "callId") if key in data]
    if len(targets) != 1:
        raise WireError("dial", commands=True)
    if targets[0] == "number":
        number = data["number"]
        if isinstance(number, str | list):
            number = {"destination": number}
        number = _obj(number, "dial.number")
        if on_answer_raw is None:
            on_answer_raw = number.get("behaviorOnAnswer")
        raw = number.get("destination")
        raw_list = raw if isinstance(raw, list) else [raw]
        if not raw_list:
            raise WireError("dial.number.destination", commands=True)
        destinations = tuple(
            normalize_number(item, "dial.number.destination") for item in raw_list
        )
        caller = number.get("callerId")
        dial = Dial(
            destinations=destinations,
            caller_id=None if caller is None else normalize_number(caller, "dial.number.callerId"),
            timeout=_number(number.get("timeout", 30), "dial.number.timeout"),
        )
    elif targets[0] == "conferenceName":
        dial = Dial(
            conference=_str(data["conferenceName"], "dial.conferenceName"),
            conference_properties=_conference_properties(data.get("conferenceProperties", {})),
        )
    else:
        dial = Dial(call_id=_str(data["callId"], "dial.callId"))
    if on_answer_raw is not None:
        on_answer = _prompt(_obj(on_answer_raw, "dial.behaviorOnAnswer"), "dial.behaviorOnAnswer")
        return Dial(
            destinations=dial.destinations,
            caller_id=dial.caller_id,
            timeout=dial.timeout,
            conference=dial.conference,
            conference_properties=dial.conference_properties,
            call_id=dial.call_id,
            on_answer=on_answer,
        )
    return dial


def _hangup(body: object) -> Hangup:
    if body is None or body == [] or body == {}:
        return Hangup()
    data = _obj(body, "hangup")
    reason = str(data.get("reason", "rejected")).lower()
    if reason not in ("rejected", "busy"):
        raise WireError("hangup.reason", commands=True)
    return Hangup("busy" if reason == "busy" else "rejected")


def _redirect(body: object) -> Redirect:
    data = _obj(body, "redirect")
    url = data.get("actionUrl", data.get("callbackUrl"))
    return Redirect(_url(url, "redirect.actionUrl"))


def _notifications(body: object) -> Notifications:
    return Notifications(_bool(body, "notifications"))


_PARSERS: dict[str, Callable[[Any], Command]] = {
    "speak": _speak,
    "play": _play,
    "wait": _wait,
    "getDigits": _get_digits,
    "record": _record,
    "dial": _dial,
    "hangup": _hangup,
    "redirect": _redirect,
    "notifications": _notifications,
}


def parse_command(item: object) -> Command:
    """Parse one one-key command object."""
    if not isinstance(item, dict) or len(item) != 1:
        raise WireError("commands", commands=True)
    ((name, body),) = item.items()
    if name == "sms":
        raise WireError("sms", commands=True, detail="sms is not supported")
    parser = _PARSERS.get(name)
    if parser is None:
        raise WireError(str(name), commands=True)
    return parser(body)


def parse_commands(body: object) -> list[Command]:
    """Parse `{"commands": [...]}` (or the bare list); raises `WireError` (400 SVC/2)."""
    if isinstance(body, dict):
        if set(body) - {"commands"}:
            raise WireError("commands", commands=True)
        body = body.get("commands", [])
    if not isinstance(body, list):
        raise WireError("commands", commands=True)
    return [parse_command(item) for item in body]
