"""The Telnyx Call Control (API v2) front end: the simulated network, as Telnyx shows it.

``Simulator(platform="telnyx")`` installs it (or ``sim.frontend = TelnyxFrontEnd(sim)``).
The app then sees Telnyx: JSON event webhooks signed with Ed25519, answered ``200`` at
once, and every command a REST request to ``/v2/...`` whose completion comes later as
another webhook.  See docs/reference/simulator.md (Telnyx).

How it sits on the engine (``_engine.py``, BlueVia's command model).  Each Telnyx call
(a ``call_control_id``) is one ``SimCall``; a dialled leg (``POST /v2/calls``) is a
``SimCall`` of its own, in the *group* of the call it is ``link_to``-ed to.  An action
becomes a short list of engine commands ending in a *marker*: a ``Redirect`` to a
``telnyx:`` URL that the engine hands back to ``notify`` when the list has run, so the
front end knows exactly which action finished, whatever else was queued meanwhile:

=========================  ==============================================  ========================
Telnyx                     engine commands                                 webhooks
=========================  ==============================================  ========================
an inbound call            ``CalledNumber`` answered with a marker         ``call.initiated``
``answer``                 none (the engine's call is up already)          ``call.answered``
``speak``                  ``Speak`` + marker                              ``call.speak.*``
``playback_start``         ``Play(repeat=loop)`` + marker                  ``call.playback.*``
``gather*``                ``GetDigits`` for the first key, then the rest  ``call.gather.ended``
``record_start`` / stop    ``Record`` + marker / the marker alone          ``call.recording.saved``
``POST /v2/calls``         an outbound ``SimCall``; its phone decides      ``call.initiated``, ...
``bridge``                 both legs ``Dial`` a private conference         ``call.bridged`` twice
``transfer``               a new leg, bridged when it answers              its own, ``call.bridged``
conferences                ``Dial(conferenceName)`` + marker               ``conference.*``
``hangup`` / ``reject``    ``Hangup``                                      ``call.hangup``
=========================  ==============================================  ========================

A call with nothing to do is *parked*: its notifier waits inside ``notify`` (on the
marker of its last action) until the next action arrives, so the engine never sees it
idle.  Virtual time: the app's thinking takes none.  A *keeper* task per group holds the
clock still (for up to the simulator's ``idle_hold`` real seconds) while every leg of the
group is parked, while a leg the app was just told about is parked and the app has not
answered (one dialled leg answered while others still ring), and for ``reaction_hold``
after a key pressed outside a gather (the app may stop a recording on it).  After
``idle_timeout`` simulated seconds with every leg parked and no move from the app, the
parked legs are hung up.

Webhooks of a group are delivered in order by one sender task, unless ``reorder`` or
``duplicate`` ask for what Telnyx really does (out of order, twice), decided per webhook
by a seeded random generator.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hmac
import itertools
import json
import math
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs
from xml.etree import ElementTree

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from .._recognise import recognise
from ._asgi import Receive, Scope, Send
from ._clock import Signal
from ._errors import ApiError, ConfigError, WireError
from ._http import read_body
from ._network import DETECTION_SECONDS, Line, Outcome, Phone
from ._reading import spoken_words
from ._recordings import make_wav
from ._transcript import EntryKind, TranscriptEntry
from ._wire import (
    Command,
    ConferenceProperties,
    Dial,
    GetDigits,
    Hangup,
    Play,
    Redirect,
    Speak,
    Wait,
    normalize_number,
)

if TYPE_CHECKING:
    from ._clock import Clock
    from ._engine import SimCall
    from ._simulator import NotificationOutcome, Simulator

__all__ = ("TelnyxFrontEnd", "TelnyxWebhook")

API = "/v2"
MARKER = "telnyx:"
DEFAULT_API_KEY = "KEYsimulator"
DEFAULT_CONNECTION_ID = "1234567890"
NO_LIMIT = 14400.0
"""Seconds used for Telnyx's "0 = no limit" (its longest call, four hours)."""
ALL_KEYS = "0123456789*#"
COMMAND_ID_WINDOW = 60.0
"""Telnyx ignores a repeated ``command_id`` for 60 seconds: "Commands with duplicate
command_ids within 60 seconds will be ignored" (developers.telnyx.com, Programmable Voice,
receiving-webhooks), the account's commands, whatever call they are for (and Dial "will
ignore other Dial commands with the same command_id", api-reference: dial)."""
RECORDING_URL_LIFE = 600.0
"""Seconds a ``call.recording.saved`` URL works: they are presigned S3 URLs with
``X-Amz-Expires=600`` (developers.telnyx.com, storing-call-recordings; "Recording URLs are
valid for 10 minutes", texml-verbs/record)."""
MIN_PARTICIPANTS, MAX_PARTICIPANTS, DEFAULT_PARTICIPANTS = 2, 800, 250
"""``max_participants`` of ``POST /v2/conferences``: "Must be between 2 and 800. Defaults
to 250" (api-reference: create-conference)."""
BRIDGE_ROOM = "telnyx-bridge:"
"""The private conferences that carry bridges (kept out of transcripts)."""
SENT_MEMORY = 10_000
"""How many delivered webhooks ``TelnyxFrontEnd.sent`` keeps."""
ENDED_MEMORY = 10_000
"""How many ended calls the front end still knows (a command to one: ``90018``; after
that, ``404``), and how many dials it remembers the ``command_id`` of."""

_MEDIA = frozenset({"speak", "playback", "gather"})
_AMD_MODES = ("premium", "detect", "detect_beep", "detect_words", "greeting_end")
"""``answering_machine_detection`` of a dial (docs: dial); ``premium`` is taken, and
simulated as ``detect``."""
_HOLDABLE = frozenset({"call.speak.started", "call.playback.started", "call.bridged",
                       "conference.created", "conference.participant.joined"})
"""Progress webhooks that ``reorder`` may hold back until after the next one."""
_MIRRORED: frozenset[EntryKind] = frozenset({
    "ringing", "answered", "busy", "no-answer", "failed", "not-reachable", "speak", "play",
    "beep", "silence", "keys", "talk", "recording-started", "recording-stopped", "hangup",
    "error",
})
"""What a dialled leg's transcript shows in its caller's (as a BlueVia dial would)."""
_FAILED_LEGS: Mapping[str, tuple[str, str]] = {
    "Busy": ("user_busy", "486"),
    "NoAnswer": ("timeout", "480"),
    "NotReachable": ("not_found", "404"),
    "Failed": ("unspecified", "503"),
}
_ACTION_PATH = re.compile(r"^/v2/calls/([^/]+)/actions/([a-z_]+)$")
_CALL_PATH = re.compile(r"^/v2/calls/([^/]+)$")
_CONFERENCE_PATH = re.compile(r"^/v2/conferences/([^/]+)$")
_CONFERENCE_ACTION = re.compile(r"^/v2/conferences/([^/]+)/actions/([a-z_]+)$")
_APPLICATION_PATH = re.compile(r"^/v2/call_control_applications/([^/]+)$")
_inline: contextvars.ContextVar[list[_Outgoing] | None] = contextvars.ContextVar(
    "callflow_telnyx_inline", default=None)


# -- errors ---------------------------------------------------------------------------------


class _Problem(Exception):
    """An error answer of the Telnyx API: ``{"errors": [{code, title, detail, source}]}``."""

    def __init__(self, status: int, code: str, title: str, detail: str = "",
                 pointer: str | None = None) -> None:
        super().__init__(detail or title)
        self.status, self.code, self.title, self.detail, self.pointer = (
            status, code, title, detail or title, pointer)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "title": self.title, "detail": self.detail}
        if self.pointer:
            error["source"] = {"pointer": self.pointer}
        return {"errors": [error]}


def _missing(name: str) -> _Problem:
    return _Problem(422, "10004", "Missing required parameter",
                    f"The '{name}' parameter is required.", f"/{name}")


def _invalid(name: str, detail: str) -> _Problem:
    return _Problem(422, "10015", "Bad Request", detail, f"/{name}")


def _not_found(what: str) -> _Problem:
    return _Problem(404, "10005", "Resource not found", f"{what} could not be found.")


def _ended() -> _Problem:
    return _Problem(422, "90018", "Call has already ended",
                    "This call is no longer active and can't receive commands.")


def _not_answered() -> _Problem:
    return _Problem(422, "10015", "Bad Request",
                    "The call has not been answered: issue answer first.")


# -- helpers ---------------------------------------------------------------------------------


def _iso(epoch_seconds: float) -> str:
    """ISO 8601 UTC with microseconds and ``Z``, as Telnyx writes ``occurred_at``."""
    moment = datetime.fromtimestamp(epoch_seconds, UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def _load_private_key(key: Ed25519PrivateKey | str | bytes | None) -> Ed25519PrivateKey:
    if key is None:
        return Ed25519PrivateKey.generate()
    if isinstance(key, Ed25519PrivateKey):
        return key
    raw = key.encode() if isinstance(key, str) else key
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            loaded = load_pem_private_key(raw, password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ValueError("not an Ed25519 key")
            return loaded
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(raw, validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ConfigError(f"the Telnyx private key is not an Ed25519 key: {exc}") from None


def _str(body: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, str):
        raise _invalid(name, f"'{name}' must be a string.")
    return value


def _spoken(body: Mapping[str, Any]) -> str:
    """What a speak's ``payload`` says: text, or with ``payload_type: "ssml"`` an SSML
    document read as its words (docs: speak, payload_type "text" or "ssml")."""
    payload = _str(body, "payload", required=True) or ""
    kind = _str(body, "payload_type") or "text"
    if kind == "text":
        return payload
    if kind != "ssml":
        raise _invalid("payload_type", "'payload_type' must be text or ssml.")
    try:
        root = ElementTree.fromstring(payload)
    except ElementTree.ParseError:
        raise _invalid("payload", "'payload' is not well-formed SSML.") from None
    if root.tag != "speak":
        raise _invalid("payload", "an SSML 'payload' must be a <speak> document.")
    return spoken_words(root)


def _int(body: Mapping[str, Any], name: str, default: int, *, minimum: int = 0,
         maximum: int | None = None) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        limits = f" between {minimum} and {maximum}" if maximum is not None else ""
        raise _invalid(name, f"'{name}' must be an integer{limits}.")
    return value


def _bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _invalid(name, f"'{name}' must be true or false.")
    return value


def _number(body: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = _str(body, name, required=required)
    if value is None:
        return None
    try:
        return normalize_number(value, name)
    except WireError:
        raise _Problem(422, "10016", "Phone number must be in +E.164 format",
                       f"'{name}' must be a phone number in +E.164 format.",
                       f"/{name}") from None


def _url(body: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = _str(body, name, required=required)
    if value is not None and not value.startswith(("http://", "https://")):
        raise _Problem(422, "10003", "Invalid URL", f"'{name}' is not an http(s) URL.",
                       f"/{name}")
    return value


def _client_state(body: Mapping[str, Any], name: str = "client_state") -> str | None:
    value = _str(body, name)
    if value:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(name, f"'{name}' must be a valid Base-64 encoded string.") from None
    return value or None


# -- state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TelnyxWebhook:
    """One webhook delivery, as it went over the wire (``TelnyxFrontEnd.sent``)."""

    url: str
    body: bytes
    headers: dict[str, str]
    status: int | None
    """The app's HTTP status; None when it could not be reached."""

    @property
    def document(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value

    @property
    def data(self) -> dict[str, Any]:
        value: dict[str, Any] = self.document["data"]
        return value

    @property
    def event_type(self) -> str:
        return str(self.data["event_type"])

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = self.data["payload"]
        return value

    @property
    def attempt(self) -> int:
        return int(self.document["meta"]["attempt"])


@dataclass(eq=False)
class _Gather:
    """A gather in progress: Telnyx's parameters and what the caller typed so far."""

    prompt: Speak | Play | None
    invalid_prompt: Speak | Play | None
    minimum: int
    maximum: int
    first_timeout: float
    inter_timeout: float
    terminator: str
    valid: str
    tries: int
    digits: str = ""


@dataclass(eq=False)
class _Action:
    """One Telnyx action on one leg: its engine commands end with its marker."""

    kind: str
    token: int
    state: str | None
    commands: list[Command] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)
    gather: _Gather | None = None
    bridge: _Bridge | None = None
    conference: _Conference | None = None
    park: bool = False
    """A bridge leg that stays up (parked) when the other leg leaves."""
    done: bool = False
    """Its ending webhook is out; the marker only moves the leg on."""
    stopped: bool = False
    """A recording asked to stop (``record_stop``)."""

    @property
    def marker(self) -> Redirect:
        return Redirect(f"{MARKER}done/{self.token}")


@dataclass(eq=False)
class _Bridge:
    room: str
    legs: tuple[_Leg, _Leg]
    ended: bool = False


@dataclass(eq=False)
class _Conference:
    id: str
    name: str
    room: str
    created_at: float
    expires_at: float | None
    beep: str
    creator: _Leg
    members: list[_Leg] = field(default_factory=list)
    status: Literal["init", "in_progress", "completed"] = "in_progress"
    end_reason: str | None = None
    hang_up_rest: bool = False
    max_participants: int = DEFAULT_PARTICIPANTS

    @property
    def owner_state(self) -> str:
        """The ``client_state`` every webhook about the conference carries: its creator's
        ("will be used for all webhooks related to the created conference"; a joiner's
        "will not affect conferencing webhooks unless the participant is the owner",
        api-reference: create-conference, join-conference). "" for none."""
        return self.creator.client_state or ""

    def to_json(self, front: TelnyxFrontEnd) -> dict[str, Any]:
        data: dict[str, Any] = {
            "record_type": "conference", "id": self.id, "name": self.name,
            "created_at": _iso(front.sim.epoch + self.created_at),
            "expires_at": _iso(front.sim.epoch + (self.expires_at if self.expires_at
                                                  is not None else self.created_at + NO_LIMIT)),
            "status": self.status, "connection_id": front.connection_id, "region": "simulator",
        }
        if self.end_reason:
            data["end_reason"] = self.end_reason
        return data


@dataclass(eq=False)
class _Outgoing:
    leg: _Leg
    data: dict[str, Any]
    attempt: int = 1
    late: bool = False
    """Held back by ``reorder``."""


@dataclass(eq=False)
class _Group:
    """A call and the legs linked to it: one call session, one webhook sender, one keeper."""

    index: int
    session_id: str
    signal: Signal
    rng: random.Random
    legs: list[_Leg] = field(default_factory=list)
    outbox: deque[_Outgoing] = field(default_factory=deque)
    held: list[_Outgoing] = field(default_factory=list)
    stamp: float = field(default_factory=time.monotonic)
    """Real time of the app's last request or webhook about the group."""
    sending: int = 0
    """Webhooks being delivered right now."""
    sender: bool = False
    """Whether its sender task runs (it stops once every leg has ended)."""
    forgotten: bool = False
    react_until: float = 0.0
    """Real time until which the app may still react to a key (``reaction_hold``)."""
    version: int = 0
    """Bumped at every change: the keeper looks again."""
    parked_since: float = 0.0
    """Simulated time the group last became parked (or heard from the app)."""
    was_parked: bool = False
    told_at: float = 0.0
    """Real time of the last webhook delivered about the group."""
    heard_at: float = 0.0
    """Real time of the app's last request about the group."""

    @property
    def root(self) -> _Leg:
        return self.legs[0]

    @property
    def finished(self) -> bool:
        return all(leg.ended for leg in self.legs)

    @property
    def parked(self) -> bool:
        """True while every live leg waits for the app (and one is live)."""
        live = [leg for leg in self.legs if not leg.ended]
        return bool(live) and all(leg.parked for leg in live)

    @property
    def idle(self) -> bool:
        """True while no live leg runs an action (recordings may run)."""
        live = [leg for leg in self.legs if not leg.ended]
        return bool(live) and all(leg.idle for leg in live)


@dataclass(eq=False)
class _Leg:
    """One Telnyx call: a ``call_control_id`` and the ``SimCall`` that carries it."""

    ccid: str
    call: SimCall
    group: _Group
    direction: Literal["incoming", "outgoing"]
    webhook_url: str | None = None
    client_state: str | None = None
    answered: bool = False
    ended: bool = False
    current: _Action | None = None
    pending: deque[_Action] = field(default_factory=deque)
    parking: bool = False
    resume: list[Command] | None = None
    idle_token: int = 0
    hangup: tuple[str, str] | None = None
    """(hangup_cause, hangup_source) when the front end knows why the leg ends."""
    recording: _Action | None = None
    transfer_of: _Leg | None = None
    """The call a ``transfer`` leg is for."""
    amd: str | None = None
    """The dial's ``answering_machine_detection`` (``detect``, ``greeting_end``...)."""
    answered_at: float | None = None
    ended_at: float | None = None
    turn_at: float = 0.0
    """Real time the app was last told something about this leg while it was parked."""
    heard_at: float = 0.0
    """Real time of the app's last request about this leg."""

    @property
    def owed(self) -> bool:
        """The app was told something about this parked leg and has not answered since."""
        return self.idle and self.turn_at > self.heard_at

    @property
    def number_from(self) -> str:
        return self.call.main.caller

    @property
    def number_to(self) -> str:
        return self.call.main.destination

    @property
    def ringing(self) -> bool:
        return self.direction == "outgoing" and not self.answered and not self.ended

    @property
    def parked(self) -> bool:
        # A recording runs on by itself: a leg with one is not waiting on the app (time
        # runs, and it is not hung up as idle) unless the app owes it an answer (owed).
        return self.idle and self.recording is None

    @property
    def idle(self) -> bool:
        """No action runs on the leg (a recording may)."""
        return not self.ended and not self.ringing and self.current is None


class _RingLimit(Phone):
    """A dialled number's phone, giving up after the dial's ``timeout_secs``."""

    # A plain subclass rather than a dataclass field: Phone is a frozen dataclass whose
    # behaviour (including a LivePhone's) is kept by delegating ``ring`` to the original.

    def __init__(self, inner: Phone, limit: float) -> None:
        super().__init__(inner.outcome, min(inner.after, limit), inner.script, inner.machine)
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_limit", limit)
        object.__setattr__(self, "timed_out", False)

    async def ring(self, clock: Clock, line: Line, timeout: float) -> Outcome:
        inner: Phone = object.__getattribute__(self, "_inner")
        limit: float = object.__getattribute__(self, "_limit")
        # Whose clock stops the ringing: the dial's timeout_secs (hangup_cause "timeout")
        # or the network's own (the far end gives up: "no_answer").
        object.__setattr__(self, "timed_out", limit <= timeout)
        return await inner.ring(clock, line, min(timeout, limit))

    @staticmethod
    def cause(call: SimCall) -> str:
        """The ``hangup_cause`` of a dialled call nobody answered."""
        phone = call._phone
        return "timeout" if not isinstance(phone, _RingLimit) or bool(
            object.__getattribute__(phone, "timed_out")) else "no_answer"


# -- the front end ------------------------------------------------------------------------------


class TelnyxFrontEnd:
    """The simulated network as Telnyx Call Control (v2) shows it to an app.

    ``api_key`` is the ``Authorization: Bearer`` key the REST API accepts; ``connection_id``
    the id of the one Call Control Application (what the app's ``connection_id`` must be);
    ``private_key`` signs the webhooks (an ``Ed25519PrivateKey``, base64 of its 32 raw
    bytes, or PEM; a new one when omitted). Give the app ``public_key``.

    ``duplicate`` (0..1) delivers each webhook a second time with that probability;
    ``reorder`` delivers an action's immediate webhooks before its HTTP response and may
    hold progress webhooks back until after the next one; ``seed`` makes both repeatable.
    ``reaction_hold``: see the attribute.
    """

    name = "telnyx"

    def __init__(
        self,
        sim: Simulator,
        *,
        api_key: str = DEFAULT_API_KEY,
        connection_id: str = DEFAULT_CONNECTION_ID,
        private_key: Ed25519PrivateKey | str | bytes | None = None,
        duplicate: float = 0.0,
        reorder: bool = False,
        seed: int | str | None = None,
        reaction_hold: float = 0.2,
    ) -> None:
        if not 0.0 <= duplicate <= 1.0:
            raise ConfigError("duplicate is a probability, between 0 and 1")
        self.sim = sim
        self.api_key = api_key
        self.connection_id = connection_id
        self._key = _load_private_key(private_key)
        self.public_key = base64.b64encode(
            self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
        """The webhooks' Ed25519 public key, base64 of its 32 raw bytes (what the app's
        ``telnyx_public_key`` setting takes)."""
        self.duplicate = duplicate
        self.reorder = reorder
        self.seed = seed
        self.reaction_hold = reaction_hold
        """Real seconds virtual time waits, after a key pressed outside a gather, for the app
        to react (a recording it stops on ``#``) before the call moves on."""
        self.application: dict[str, Any] = {
            "id": connection_id, "record_type": "call_control_application",
            "application_name": "callflow-simulator", "active": True,
            "webhook_event_url": None, "webhook_event_failover_url": None,
            "webhook_api_version": "2", "webhook_timeout_secs": None,
            "first_command_timeout": True, "first_command_timeout_secs": 30,
            "dtmf_type": "RFC 2833", "anchorsite_override": "Latency",
            "inbound": {"channel_limit": None, "sip_subdomain": None},
            "outbound": {"channel_limit": None, "outbound_voice_profile_id": None},
            "created_at": _iso(time.time()), "updated_at": _iso(time.time()),
        }
        """The Call Control Application (``GET``/``PATCH /v2/call_control_applications``)."""
        self.legs: dict[str, _Leg] = {}
        self.conferences: dict[str, _Conference] = {}
        self.sent: deque[TelnyxWebhook] = deque(maxlen=SENT_MEMORY)
        """Every webhook delivered (the last ``SENT_MEMORY``), in delivery order."""
        self.hold: float | None = None
        self._by_call: dict[str, _Leg] = {}
        self._groups = itertools.count(1)
        self._tokens = itertools.count(1)
        self._dials: dict[str, dict[str, Any]] = {}
        self._command_ids: dict[str, float] = {}
        """Every ``command_id`` of the last ``COMMAND_ID_WINDOW`` simulated seconds, when
        it came (oldest first)."""
        self._ended: deque[_Leg] = deque()
        self._creating: dict[str, Any] | None = None
        sim.observers.append(self._observe)

    # -- public helpers -------------------------------------------------------------------

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The signature headers Telnyx sends with ``body``: Ed25519 over ``f"{t}|{body}"``."""
        stamp = int(time.time()) if timestamp is None else timestamp
        signature = self._key.sign(f"{stamp}|".encode() + body)
        return {"telnyx-signature-ed25519": base64.b64encode(signature).decode(),
                "telnyx-timestamp": str(stamp)}

    def call_control_id(self, call: SimCall) -> str:
        """The ``call_control_id`` the app knows a simulated call by (also its ``call_id``)."""
        return self._by_call[call.call_id].ccid

    def app_settings(self) -> dict[str, str]:
        """The ``callflow.Settings`` fields an app needs to use this simulator as its Telnyx
        (add ``platform_url``: the simulator's URL)."""
        return {"platform": "telnyx", "telnyx_api_key": self.api_key,
                "telnyx_public_key": self.public_key,
                "telnyx_connection_id": self.connection_id}

    def call(self, call_control_id: str) -> SimCall:
        """The simulated call behind a ``call_control_id``."""
        return self.legs[call_control_id].call

    def webhooks(self, call: SimCall | str | None = None) -> list[TelnyxWebhook]:
        """The webhooks delivered (about one call, by ``SimCall`` or ``call_control_id``)."""
        if call is None:
            return list(self.sent)
        ccid = call if isinstance(call, str) else self.call_control_id(call)
        return [hook for hook in self.sent if hook.payload.get("call_control_id") == ccid]

    async def wait_delivered(self, call: SimCall) -> None:
        """Wait until ``call`` and every leg linked to it are over and their webhooks sent."""
        leg = self._by_call.get(call.call_id)
        if leg is None:
            return  # long forgotten
        group = leg.group
        await group.signal.wait_for(
            lambda: group.finished and not group.outbox and not group.held
            and not group.sending)

    # -- the FrontEnd hooks ---------------------------------------------------------------

    def call_created(self, call: SimCall) -> None:
        call.all_events = True  # the engine's leg events (HangUp, Busy...) become webhooks
        if self.hold is None:
            # A parked Telnyx call is not an idle BlueVia call: the keeper holds time for
            # the whole group instead of each call for itself (see the module docstring).
            self.hold = self.sim.idle_hold
            self.sim.idle_hold = 0.0
        info, self._creating = self._creating, None
        parent: _Leg | None = info.get("parent") if info else None
        if parent is not None:
            group = parent.group
            new_group = False
        else:
            index = next(self._groups)
            rng = random.Random(f"{self.seed}:{index}") if self.seed is not None else (
                random.Random())
            group = _Group(index, str(uuid.uuid4()), self.sim.clock.signal(), rng,
                           parked_since=self.sim.clock.now())
            new_group = True
        # The call is known by its call_control_id everywhere (sim.calls, transcripts, the
        # /simulator extension), as the app knows it.
        ccid = f"v3:{base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip('=')}"
        call.call_id = call.transcript.call_id = ccid
        leg = _Leg(
            ccid=ccid, call=call, group=group,
            direction="incoming" if call.direction == "inbound" else "outgoing",
            webhook_url=(info or {}).get("webhook_url") or (
                call.callback_url if call.direction == "outbound" else None),
            client_state=(info or {}).get("client_state"),
            transfer_of=(info or {}).get("transfer_of"),
            amd=(info or {}).get("amd"),
        )
        group.legs.append(leg)
        self.legs[leg.ccid] = leg
        self._by_call[call.call_id] = leg
        if new_group:
            self._spawn(self._keep, group)
        if leg.direction == "outgoing":
            self._emit(leg, "call.initiated", {"direction": "outgoing", "state": "bridging"})
        self._update(group)

    def _spawn(self, func: Callable[..., Awaitable[object]], *args: object) -> None:
        """Start a simulator task, outside any request's context (see ``_inline``)."""
        tg = self.sim._tg
        assert tg is not None  # the simulator is running: calls exist
        token = _inline.set(None)
        try:
            self.sim.clock.spawn(tg, func, *args)
        finally:
            _inline.reset(token)

    async def notify(
        self, call: SimCall, url: str, payload: Mapping[str, Any]
    ) -> NotificationOutcome:
        from ._simulator import NotificationOutcome

        leg = self._by_call.get(call.call_id)
        if leg is None:  # a call from before this front end was installed
            return await self.sim.post_notification(url, payload)
        name = str(payload.get("eventName"))
        commands: list[Command] = []
        summary = "for the Telnyx front end"
        if url.startswith(MARKER) and name in ("Redirected", "DigitsCollected"):
            kind, _, token = url[len(MARKER):].partition("/")
            if name == "DigitsCollected":
                commands = self._digits(leg, int(token), str(payload.get("digits", "")))
            else:
                commands = await self._marker(leg, kind, int(token))
        elif name == "CalledNumber":
            commands = [Redirect(f"{MARKER}initiated/0")]
        elif name == "Answered":
            leg.answered = True
            leg.answered_at = self.sim.clock.now()
            commands = [Redirect(f"{MARKER}answered/0")]
        elif name in _FAILED_LEGS:
            cause, sip = _FAILED_LEGS[name]
            if name == "NoAnswer":
                cause = _RingLimit.cause(call)
            self._leg_ended(leg, cause, "callee", sip)
        elif name == "HangUp":
            self._hung_up(leg, str(payload.get("direction", "")))
        else:
            summary = "no Telnyx webhook"
        self._update(leg.group)
        # logged: the transcript shows the Telnyx webhooks (_post), not these internal ones.
        return NotificationOutcome(None, commands, summary, logged=True)

    async def handle_api(self, scope: Scope, receive: Receive, send: Send) -> bool:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == API or path.startswith(API + "/")):
            return False
        headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
        try:
            self._base_url(scope)
            self._check_auth(scope)
            with self.sim.clock.busy():
                inline: list[_Outgoing] = []
                token = _inline.set(inline if self.reorder else None)
                try:
                    status, answer = await self._dispatch(scope, receive)
                finally:
                    _inline.reset(token)
                # reorder: the webhooks the request caused overtake its response.
                for item in reversed(inline):
                    await self._deliver(item)
        except _Problem as problem:
            status, answer = problem.status, problem.body()
        except ApiError as exc:  # a body too large
            status, answer = exc.status, _Problem(exc.status, "10015", "Bad Request",
                                                  str(exc)).body()
        except Exception as exc:  # a bug here must not take the simulator down
            status, answer = 500, _Problem(500, "10007", "Unexpected error",
                                           type(exc).__name__).body()
        body = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True

    # -- REST: routing ---------------------------------------------------------------------

    def _base_url(self, scope: Scope) -> None:
        if self.sim.base_url:
            return
        host = next((v for k, v in scope.get("headers", []) if k.lower() == b"host"), None)
        if host:
            self.sim.base_url = f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}"

    def _check_auth(self, scope: Scope) -> None:
        header = next((v for k, v in scope.get("headers", [])
                       if k.lower() == b"authorization"), b"")
        expected = f"Bearer {self.api_key}".encode()
        if not header or not hmac.compare_digest(header.strip(), expected):
            raise _Problem(401, "10009", "Authentication failed",
                           "The required authentication headers were either invalid or not "
                           "included in the request.")

    async def _read(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        raw = await read_body(self.sim, scope, receive)
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _Problem(400, "10023", "Invalid JSON",
                           "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise _Problem(400, "10015", "Bad Request", "The request body must be an object.")
        return body

    async def _dispatch(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        method: str = scope["method"]
        path: str = scope["path"]
        if method == "POST" and path == f"{API}/calls":
            return 200, {"data": await self._dial(await self._read(scope, receive))}
        if method == "POST" and (match := _ACTION_PATH.match(path)):
            leg = self._leg(match[1])
            await self._act(leg, match[2], await self._read(scope, receive))
            return 200, {"data": {"result": "ok"}}
        if method == "GET" and (match := _CALL_PATH.match(path)):
            return 200, {"data": self._call_status(self._leg(match[1]))}
        if path == f"{API}/conferences":
            if method == "POST":
                return 200, {"data": await self._create_conference(
                    await self._read(scope, receive))}
            if method == "GET":
                return 200, self._list_conferences(scope)
        if method == "GET" and (match := _CONFERENCE_PATH.match(path)):
            return 200, {"data": self._conference(match[1]).to_json(self)}
        if method == "POST" and (match := _CONFERENCE_ACTION.match(path)):
            await self._conference_action(self._conference(match[1]), match[2],
                                          await self._read(scope, receive))
            return 200, {"data": {"result": "ok"}}
        if (match := _APPLICATION_PATH.match(path)) and method in ("GET", "PATCH"):
            if match[1] != self.connection_id:
                raise _not_found("The Call Control Application")
            if method == "PATCH":
                self._update_application(await self._read(scope, receive))
            return 200, {"data": dict(self.application)}
        raise _not_found("The requested resource or URL")

    def _leg(self, ccid: str) -> _Leg:
        leg = self.legs.get(ccid)
        if leg is None:
            raise _not_found(f"Call {ccid}")
        return leg

    def _update_application(self, body: Mapping[str, Any]) -> None:
        url = _url(body, "webhook_event_url")
        failover = _url(body, "webhook_event_failover_url")
        name = _str(body, "application_name")
        version = body.get("webhook_api_version")
        if version is not None and str(version) not in ("1", "2"):
            raise _invalid("webhook_api_version", "'webhook_api_version' must be 1 or 2.")
        app = self.application
        if "webhook_event_url" in body:
            app["webhook_event_url"] = url
        if "webhook_event_failover_url" in body:
            app["webhook_event_failover_url"] = failover
        if name:
            app["application_name"] = name
        if version is not None:
            app["webhook_api_version"] = str(version)
        app["updated_at"] = _iso(time.time())
        # Every number of the account is assigned to this application.
        if app["webhook_event_url"]:
            for number in list(self.sim.account_numbers):
                self.sim.add_account_number(number, callback_url=app["webhook_event_url"],
                                            fallback_url=app["webhook_event_failover_url"])

    def _call_status(self, leg: _Leg) -> dict[str, Any]:
        now = self.sim.clock.now()
        start = leg.answered_at
        end = leg.ended_at if leg.ended_at is not None else now
        data: dict[str, Any] = {
            "record_type": "call", "call_control_id": leg.ccid,
            "call_leg_id": leg.call.main.leg_id, "call_session_id": leg.group.session_id,
            "is_alive": not leg.ended,
            "call_duration": int(end - start) if start is not None else 0,
            "start_time": _iso(self.sim.epoch + leg.call.started),
        }
        if leg.ended_at is not None:
            data["end_time"] = _iso(self.sim.epoch + leg.ended_at)
        if leg.client_state:
            data["client_state"] = leg.client_state
        return data

    # -- REST: actions -----------------------------------------------------------------------

    async def _act(self, leg: _Leg, name: str, body: dict[str, Any]) -> None:
        handler = getattr(self, f"_do_{name}", None)
        if handler is None:
            raise _not_found(f"The action {name}")
        if leg.ended:
            raise _ended()
        command_id = _str(body, "command_id")
        if self._repeated(command_id):
            return  # a repeat: Telnyx ignores it
        state = _client_state(body)
        await handler(leg, body, state)
        if state:
            leg.client_state = state  # "add state to every subsequent webhook"
        self._remember(command_id)
        self._heard(leg.group, leg, self.legs.get(str(body.get("call_control_id"))))
        if name == "record_start":
            # It owes the app nothing soon (the recording runs on by itself), and the app
            # usually goes on with its next command at once: hold simulated time a moment
            # for it, so that the next command lands where the app sent it.
            leg.group.react_until = time.monotonic() + self.reaction_hold

    def _repeated(self, command_id: str | None) -> bool:
        """Whether a command with this ``command_id`` came in the last 60 seconds (for any
        call: see ``COMMAND_ID_WINDOW``)."""
        if not command_id:
            return False
        now = self.sim.clock.now()
        while self._command_ids:
            oldest, at = next(iter(self._command_ids.items()))
            if now - at < COMMAND_ID_WINDOW:
                break
            del self._command_ids[oldest]
            self._dials.pop(oldest, None)
        return command_id in self._command_ids

    def _remember(self, command_id: str | None) -> None:
        if command_id:
            self._command_ids[command_id] = self.sim.clock.now()

    def _require_answered(self, leg: _Leg) -> None:
        if not leg.answered:
            raise _not_answered()

    async def _do_answer(self, leg: _Leg, body: dict[str, Any], state: str | None) -> None:
        if leg.direction != "incoming":
            raise _invalid("call_control_id", "Only an incoming call can be answered.")
        webhook_url = _url(body, "webhook_url")
        if leg.answered:
            return
        if webhook_url:
            leg.webhook_url = webhook_url
        leg.answered = True
        leg.answered_at = self.sim.clock.now()
        self._emit(leg, "call.answered", {"state": "answered"}, state=state)

    async def _do_reject(self, leg: _Leg, body: dict[str, Any], state: str | None) -> None:
        cause = _str(body, "cause", required=True)
        if cause not in ("CALL_REJECTED", "USER_BUSY"):
            raise _invalid("cause", "'cause' must be CALL_REJECTED or USER_BUSY.")
        if leg.direction != "incoming" or leg.answered:
            raise _invalid("call_control_id", "Only an unanswered incoming call can be "
                                              "rejected.")
        leg.hangup = ("user_busy" if cause == "USER_BUSY" else "call_rejected", "callee")
        leg.pending.clear()
        self._run(leg, [Hangup("busy" if cause == "USER_BUSY" else "rejected")])

    async def _do_hangup(self, leg: _Leg, body: dict[str, Any], state: str | None) -> None:
        self._hang_up(leg, "normal_clearing")

    def _hang_up(self, leg: _Leg, cause: str) -> None:
        leg.pending.clear()
        if leg.ringing:
            leg.hangup = ("originator_cancel", "caller")
            leg.call._end("application", reason="cancelled")
            return
        leg.hangup = (cause, "callee" if leg.direction == "incoming" else "caller")
        self._run(leg, [Hangup()])

    async def _do_speak(self, leg: _Leg, body: dict[str, Any], state: str | None) -> None:
        self._require_answered(leg)
        text = _spoken(body)
        voice = _str(body, "voice", required=True) or ""
        gender: Literal["male", "female"] = "male" if voice == "male" else "female"
        action = self._action("speak", state, body)
        action.commands = [Speak(text, gender), action.marker]
        self._media(leg, action)

    async def _do_playback_start(self, leg: _Leg, body: dict[str, Any],
                                 state: str | None) -> None:
        self._require_answered(leg)
        if body.get("media_name") is not None and body.get("audio_url") is None:
            raise _invalid("media_name", "The simulator has no media storage: use audio_url.")
        url = _url(body, "audio_url", required=True) or ""
        loop = body.get("loop", 1)
        if loop == "infinity":
            loop = 100_000  # until stopped
        if isinstance(loop, bool) or not isinstance(loop, int) or loop < 1:
            raise _invalid("loop", "'loop' must be a positive integer or \"infinity\".")
        action = self._action("playback", state, body)
        action.commands = [Play(url, loop), action.marker]
        self._media(leg, action)

    async def _do_gather_using_speak(self, leg: _Leg, body: dict[str, Any],
                                     state: str | None) -> None:
        text = _spoken(body)
        voice = _str(body, "voice", required=True) or ""
        invalid = _str(body, "invalid_payload")
        gender: Literal["male", "female"] = "male" if voice == "male" else "female"
        await self._gather(leg, body, state, Speak(text, gender),
                           Speak(invalid, gender) if invalid else None, tries=3)

    async def _do_gather_using_audio(self, leg: _Leg, body: dict[str, Any],
                                     state: str | None) -> None:
        url = _url(body, "audio_url", required=True) or ""
        invalid = _url(body, "invalid_audio_url")
        await self._gather(leg, body, state, Play(url), Play(invalid) if invalid else None,
                           tries=3)

    async def _do_gather(self, leg: _Leg, body: dict[str, Any], state: str | None) -> None:
        await self._gather(leg, body, state, None, None, tries=1)

    async def _gather(self, leg: _Leg, body: dict[str, Any], state: str | None,
                      prompt: Speak | Play | None, invalid: Speak | Play | None,
                      tries: int) -> None:
        self._require_answered(leg)
        minimum = _int(body, "minimum_digits", 1, minimum=1, maximum=128)
        maximum = _int(body, "maximum_digits", 128, minimum=1, maximum=128)
        if minimum > maximum:
            raise _invalid("minimum_digits", "'minimum_digits' exceeds 'maximum_digits'.")
        terminator = _str(body, "terminating_digit")
        valid = _str(body, "valid_digits")
        if prompt is None:
            first = _int(body, "initial_timeout_millis", 5000, minimum=1)
        else:
            first = _int(body, "timeout_millis", 60000, minimum=1)
        gather = _Gather(
            prompt=prompt, invalid_prompt=invalid, minimum=minimum, maximum=maximum,
            first_timeout=first / 1000,
            inter_timeout=_int(body, "inter_digit_timeout_millis", 5000, minimum=1) / 1000,
            terminator="#" if terminator is None else terminator[:1],
            valid=ALL_KEYS if valid is None else valid,
            tries=_int(body, "maximum_tries", tries, minimum=1, maximum=10) if prompt else 1,
        )
        action = self._action("gather", state, body)
        action.gather = gather
        action.commands = self._gather_try(action, prompt)
        self._media(leg, action)

    def _gather_try(self, action: _Action, prompt: Speak | Play | None) -> list[Command]:
        """One try: the prompt and the first key, then the action's marker."""
        gather = action.gather
        assert gather is not None
        gather.digits = ""
        return [GetDigits(action_url=action.marker.action_url, timeout=gather.first_timeout,
                          finish_on_key=gather.terminator, number_of_digits=1,
                          valid_digits=ALL_KEYS, retries=1, prompt=prompt), action.marker]

    async def _do_gather_stop(self, leg: _Leg, body: dict[str, Any],
                              state: str | None) -> None:
        action = leg.current
        if action is None or action.kind != "gather":
            return
        self._finish(leg, action, "cancelled")
        self._advance(leg)

    async def _do_playback_stop(self, leg: _Leg, body: dict[str, Any],
                                state: str | None) -> None:
        stop = _str(body, "stop") or "all"
        if stop not in ("all", "current"):
            raise _invalid("stop", "'stop' must be all or current.")
        action = leg.current
        if action is None or action.kind not in ("speak", "playback"):
            return
        self._finish(leg, action, "cancelled")
        if stop == "all":
            leg.pending = deque(a for a in leg.pending if a.kind not in ("speak", "playback"))
        self._advance(leg)

    async def _do_record_start(self, leg: _Leg, body: dict[str, Any],
                               state: str | None) -> None:
        self._require_answered(leg)
        fmt = _str(body, "format", required=True)
        channels = _str(body, "channels", required=True)
        if fmt not in ("wav", "mp3"):
            raise _invalid("format", "'format' must be wav or mp3.")
        if channels not in ("single", "dual"):
            raise _invalid("channels", "'channels' must be single or dual.")
        max_length = _int(body, "max_length", 0, minimum=0, maximum=14400)
        # "The number of seconds that Telnyx will wait for the recording to be stopped if
        # silence is detected. The timer only starts when the speech is detected. Please
        # note that call transcription is used to detect silence and the related charge
        # will be applied ... The default value is 0 (infinite)" (api-reference:
        # start-recording): a caller who never speaks is recorded up to max_length.
        silence = _int(body, "timeout_secs", 0, minimum=0, maximum=14400)
        if leg.recording is not None:
            # One at a time: the simulator's own rule (record_stop names no recording).
            raise _Problem(422, "10015", "Recording already in progress",
                           "The call is being recorded already: record_stop it first.")
        # A recording runs beside whatever the call does (speak, gather, bridge...): "Start
        # recording the call. Recording will stop on call hang-up, or can be initiated via
        # the stop recording command" (api-reference: start-recording).  So it is no
        # engine command (which would hold the line): the front end times it itself.
        action = self._action("record", state, body)
        leg.recording = action
        self._spawn(self._record, leg, action, _bool(body, "play_beep", False),
                    float(max_length or NO_LIMIT), float(silence or NO_LIMIT))
        self._update(leg.group)

    async def _record(self, leg: _Leg, action: _Action, beep: bool, max_length: float,
                      silence: float) -> None:
        """A recording from now until ``record_stop``, the hang-up, ``max_length``, or
        ``silence`` seconds without speech once the caller has spoken."""
        from ._engine import BEEP_SECONDS

        call, clock = leg.call, self.sim.clock
        if beep:
            call._log("beep", "beep", call.main)
            await clock.sleep(BEEP_SECONDS)
        start = clock.now()
        call._log("recording-started", "recording", call.main)
        call._recording = True  # a script's press goes ahead, as during a record
        call.changed.notify()
        try:
            while not action.stopped and not call.terminated and not leg.ended:
                now = clock.now()
                sounds = [end for _, end in call.main.talks if end > start]
                deadline = start + max_length
                if sounds:
                    deadline = min(deadline, max(sounds) + silence)
                if now >= deadline:
                    break
                await call.changed.wait(deadline - now)
        finally:
            call._recording = False
            end = clock.now()
            talks = [(max(s, start) - start, min(e, end) - start)
                     for s, e in call.main.talks if e > start and s < end]
            url = self.sim.store_recording(str(uuid.uuid4()), make_wav(end - start, talks))
            # The transcript entry makes the call.recording.saved (_observe).
            call._log("recording-stopped", f"recorded {end - start:.1f}s {url}", call.main,
                      recordingUrl=url, duration=end - start)
            self._update(leg.group)

    async def _do_record_stop(self, leg: _Leg, body: dict[str, Any],
                              state: str | None) -> None:
        action = leg.recording
        if action is not None:
            action.stopped = True
            leg.call.changed.notify()

    async def _do_send_dtmf(self, leg: _Leg, body: dict[str, Any], state: str | None) -> None:
        self._require_answered(leg)
        digits = _str(body, "digits", required=True) or ""
        if not digits or set(digits) - set(ALL_KEYS + "wW"):
            raise _invalid("digits", "'digits' must be DTMF digits (0-9, *, #, w, W).")
        leg.call._log("keys", digits, leg.call.main, sent=True)

    async def _do_transcription_start(self, leg: _Leg, body: dict[str, Any],
                                      state: str | None) -> None:
        """docs: transcription_start; each final result is a ``call.transcription`` webhook
        with ``transcription_data`` {transcript, confidence, is_final}.  The simulated
        recogniser matches what the caller says against the engine config's ``hints``."""
        self._require_answered(leg)
        config = body.get("transcription_engine_config") or {}
        if not isinstance(config, dict):
            raise _invalid("transcription_engine_config", "it must be an object.")
        hints = config.get("hints") or []
        if not isinstance(hints, list) or not all(isinstance(h, str) for h in hints):
            raise _invalid("transcription_engine_config.hints", "hints must be strings.")
        tracks = _str(body, "transcription_tracks") or "inbound"
        if tracks not in ("inbound", "outbound", "both"):
            raise _invalid("transcription_tracks", "'transcription_tracks' must be inbound, "
                           "outbound or both.")

        def heard(text: str) -> None:
            if leg.ended:
                return
            transcript, confidence = recognise(text, hints)
            leg.call._log("recognised", transcript, leg.call.main, confidence=confidence)
            self._emit(leg, "call.transcription", {"transcription_data": {
                "transcript": transcript, "confidence": confidence, "is_final": True}},
                state=state)

        leg.call.transcriber = heard if tracks != "outbound" else None
        leg.call.changed.notify()

    async def _do_transcription_stop(self, leg: _Leg, body: dict[str, Any],
                                     state: str | None) -> None:
        leg.call.transcriber = None

    async def _do_bridge(self, leg: _Leg, body: dict[str, Any], state: str | None) -> None:
        other = self.legs.get(_str(body, "call_control_id", required=True) or "")
        if other is None or other is leg:
            raise _invalid("call_control_id", "'call_control_id' must be another live call.")
        if other.ended:
            raise _ended()
        self._require_answered(leg)
        if not other.answered:
            raise _not_answered()
        park = _str(body, "park_after_unbridge")
        if park not in (None, "self"):
            raise _invalid("park_after_unbridge", "'park_after_unbridge' must be self.")
        self._interrupt(leg)
        self._interrupt(other)
        b_action = self._bridge(leg, other, state=state, park=park == "self")
        self._start(other, b_action)

    async def _do_transfer(self, leg: _Leg, body: dict[str, Any], state: str | None) -> None:
        to = _number(body, "to") or ""
        caller = _number(body, "from", required=False) or leg.number_from
        timeout = _int(body, "timeout_secs", 30, minimum=5, maximum=600)
        webhook_url = _url(body, "webhook_url")
        target_state = _client_state(body, "target_leg_client_state")
        self._interrupt(leg)
        action = self._action("transfer", state, body)
        leg.current = action
        if not leg.parking:
            self._idle(leg)
        self._place(caller, to, parent=leg, timeout=timeout, webhook_url=webhook_url,
                    client_state=target_state, transfer_of=leg)

    # -- REST: dialling ------------------------------------------------------------------------

    async def _dial(self, body: dict[str, Any]) -> dict[str, Any]:
        connection = _str(body, "connection_id", required=True)
        if connection != self.connection_id:
            raise _Problem(422, "10013", "Missing association",
                           f"connection_id {connection} is not a Call Control Application "
                           "of this account.", "/connection_id")
        to = _number(body, "to") or ""
        caller = _number(body, "from") or ""
        webhook_url = _url(body, "webhook_url")
        timeout = _int(body, "timeout_secs", 30, minimum=5, maximum=600)
        state = _client_state(body)
        amd = _str(body, "answering_machine_detection")
        if amd not in (None, "disabled", *_AMD_MODES):
            raise _invalid("answering_machine_detection", "'answering_machine_detection' "
                           f"must be one of {', '.join(_AMD_MODES)} or disabled.")
        link = _str(body, "link_to")
        parent: _Leg | None = None
        if link:
            parent = self.legs.get(link)
            if parent is None:
                raise _invalid("link_to", "'link_to' must be the call_control_id of a call.")
            if parent.ended:
                raise _ended()
        command_id = _str(body, "command_id")
        if self._repeated(command_id):
            # Ignored: no new call.  The answer is the first dial's (what a retry needs).
            return dict(self._dials.get(command_id or "", {"record_type": "call"}))
        leg = self._place(caller, to, parent=parent, timeout=timeout, webhook_url=webhook_url,
                          client_state=state, transfer_of=None,
                          amd=None if amd == "disabled" else amd)
        data: dict[str, Any] = {
            "record_type": "call", "call_control_id": leg.ccid,
            "call_leg_id": leg.call.main.leg_id, "call_session_id": leg.group.session_id,
            "is_alive": False,
        }
        if state:
            data["client_state"] = state
        if command_id:
            self._remember(command_id)
            self._dials[command_id] = data
        self._heard(leg.group, parent)
        return data

    def _place(self, caller: str, to: str, *, parent: _Leg | None, timeout: float,
               webhook_url: str | None, client_state: str | None,
               transfer_of: _Leg | None, amd: str | None = None) -> _Leg:
        """Start an outbound leg (its phone decides what happens) and say it is initiated."""
        from ._engine import SimCall

        url = webhook_url or self._app_url(parent)
        call = SimCall(self.sim, caller=caller, callee=to, direction="outbound",
                       callback_url=url, fallback_url=self.application.get(
                           "webhook_event_failover_url"),
                       all_events=True, phone=_RingLimit(self.sim.phone_for(to), timeout))
        self._creating = {"parent": parent, "webhook_url": url, "client_state": client_state,
                          "transfer_of": transfer_of, "amd": amd}
        token = _inline.set(None)  # the engine's task must not inherit this request's list
        try:
            self.sim._start_call(call)
        finally:
            _inline.reset(token)
            self._creating = None
        return self._by_call[call.call_id]

    def _app_url(self, parent: _Leg | None) -> str | None:
        url = self.application.get("webhook_event_url")
        if url:
            return str(url)
        if parent is not None:
            return self._url_of(parent)
        return None

    # -- REST: conferences -----------------------------------------------------------------------

    def _conference(self, key: str) -> _Conference:
        found = self.conferences.get(key)
        if found is None:
            found = next((c for c in self.conferences.values()
                          if c.name == key and c.status != "completed"), None)
        if found is None:
            raise _not_found(f"Conference {key}")
        return found

    def _list_conferences(self, scope: Scope) -> dict[str, Any]:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        name = query.get("filter[name]", [None])[0]
        status = query.get("filter[status]", [None])[0]
        rooms = [c for c in self.conferences.values()
                 if (name is None or c.name == name) and (status is None or c.status == status)]
        return {"data": [c.to_json(self) for c in rooms],
                "meta": {"page_number": 1, "page_size": max(20, len(rooms)), "total_pages": 1,
                         "total_results": len(rooms)}}

    async def _create_conference(self, body: dict[str, Any]) -> dict[str, Any]:
        leg = self._leg(_str(body, "call_control_id", required=True) or "")
        name = _str(body, "name", required=True) or ""
        if leg.ended:
            raise _ended()
        self._require_answered(leg)
        beep = self._beep(body)
        minutes = _int(body, "duration_minutes", 0, minimum=0, maximum=240)
        limit = _int(body, "max_participants", DEFAULT_PARTICIPANTS, minimum=MIN_PARTICIPANTS,
                     maximum=MAX_PARTICIPANTS)
        start = _bool(body, "start_conference_on_create", True)
        state = _client_state(body)
        command_id = _str(body, "command_id")
        if self._repeated(command_id):
            found = next((c for c in self.conferences.values() if c.creator is leg), None)
            if found is not None:
                return found.to_json(self)  # ignored: the room it made the first time
        now = self.sim.clock.now()
        room = name
        if any(c.room == room for c in self.conferences.values() if c.status != "completed"):
            room = f"{name}#{len(self.conferences) + 1}"
        conference = _Conference(
            id=str(uuid.uuid4()), name=name, room=room, created_at=now,
            expires_at=now + minutes * 60 if minutes else None, beep=beep, creator=leg,
            max_participants=limit,
            # "If the conference isn't started all participants that join are
            # automatically put on hold" (api-reference: create-conference); the
            # conference object's status says so: init, in_progress, completed.
            status="in_progress" if start else "init")
        self.conferences[conference.id] = conference
        if state:
            leg.client_state = state  # the creator's: every conference webhook's
        self._join(leg, conference, state=state, start=start, mute=False,
                   end_on_exit=False, beep=beep, created=True)
        self._remember(command_id)
        self._heard(leg.group, leg)
        return conference.to_json(self)

    async def _conference_action(self, conference: _Conference, name: str,
                                 body: dict[str, Any]) -> None:
        if name in ("mute", "unmute", "hold", "unhold"):
            ids = body.get("call_control_ids") or []
            if not isinstance(ids, list):
                raise _invalid("call_control_ids", "'call_control_ids' must be a list.")
            return  # the simulator does not model who hears whom
        if name == "end":
            # "End a conference and terminate all active participants" (api-reference:
            # end-a-conference).
            if self._repeated(_str(body, "command_id")):
                return
            self._remember(_str(body, "command_id"))
            if conference.status == "completed":
                return
            conference.hang_up_rest = True
            conference.end_reason = "ended_via_api"
            for member in list(conference.members):
                if not member.ended:
                    self._hang_up(member, "normal_clearing")
            return
        if name not in ("join", "leave"):
            raise _not_found(f"The conference action {name}")
        leg = self._leg(_str(body, "call_control_id", required=True) or "")
        if leg.ended:
            raise _ended()
        if name == "leave":
            action = leg.current
            if action is not None and action.conference is conference:
                self._run(leg, [action.marker])
            return
        if conference.status == "completed":
            raise _Problem(422, "10015", "Bad Request", "The conference has ended.")
        self._require_answered(leg)
        command_id = _str(body, "command_id")
        if self._repeated(command_id):
            return
        if len(conference.members) >= conference.max_participants:
            # "The maximum number of active conference participants to allow"
            # (api-reference: create-conference); how a refusal reads is the simulator's.
            raise _Problem(422, "10015", "Bad Request",
                           f"The conference has its maximum of "
                           f"{conference.max_participants} participants.")
        state = _client_state(body)
        self._remember(command_id)
        self._join(leg, conference, state=state,
                   start=_bool(body, "start_conference_on_enter", False),
                   mute=_bool(body, "mute", False),
                   end_on_exit=_bool(body, "end_conference_on_exit", False),
                   beep=self._beep(body, conference.beep), created=False)
        if state:
            leg.client_state = state
        self._heard(leg.group, leg)

    @staticmethod
    def _beep(body: Mapping[str, Any], default: str = "never") -> str:
        beep = _str(body, "beep_enabled") or default
        if beep not in ("always", "never", "on_enter", "on_exit"):
            raise _invalid("beep_enabled", "'beep_enabled' must be always, never, on_enter "
                                           "or on_exit.")
        return beep

    def _join(self, leg: _Leg, conference: _Conference, *, state: str | None, start: bool,
              mute: bool, end_on_exit: bool, beep: str, created: bool) -> None:
        now = self.sim.clock.now()
        limit = 0.0
        if conference.expires_at is not None:
            limit = max(0.001, conference.expires_at - now)
        props = ConferenceProperties(
            beeps_on_enter=1 if beep in ("always", "on_enter") else 0,
            beeps_on_exit=1 if beep in ("always", "on_exit") else 0,
            start_on_enter=start, mute=mute, end_on_exit=end_on_exit, time_limit=limit)
        if start and conference.status == "init":
            conference.status = "in_progress"
        action = self._action("conference", state, {"end_conference_on_exit": end_on_exit})
        action.conference = conference
        action.commands = [Dial(conference=conference.room, conference_properties=props),
                           action.marker]
        self._interrupt(leg)
        conference.members.append(leg)
        if created:
            self._emit(leg, "conference.created", self._conference_payload(conference),
                       state=conference.owner_state, exact=True)
        self._start(leg, action)

    def _conference_payload(self, conference: _Conference) -> dict[str, Any]:
        return {"conference_id": conference.id}

    # -- actions and the engine ---------------------------------------------------------------

    def _action(self, kind: str, state: str | None, body: dict[str, Any]) -> _Action:
        return _Action(kind, next(self._tokens), state, body=body)

    def _media(self, leg: _Leg, action: _Action) -> None:
        """Prompts and gathers queue behind the one playing; anything else is interrupted."""
        if leg.current is not None and leg.current.kind in _MEDIA:
            leg.pending.append(action)
            return
        self._interrupt(leg)
        self._start(leg, action)

    def _start(self, leg: _Leg, action: _Action) -> None:
        self._begin(leg, action)
        self._run(leg, action.commands)

    def _begin(self, leg: _Leg, action: _Action) -> None:
        """Make ``action`` the leg's current one and send its starting webhooks."""
        leg.current = action
        if action.kind == "speak":
            self._emit(leg, "call.speak.started", {}, state=action.state)
        elif action.kind == "playback":
            self._emit(leg, "call.playback.started",
                       {"media_url": action.body.get("audio_url"), "overlay": False},
                       state=action.state)
        elif action.kind == "record":  # pragma: no cover (recordings are no actions)
            leg.recording = action
        elif action.kind == "conference" and action.conference is not None:
            self._emit(leg, "conference.participant.joined",
                       self._conference_payload(action.conference),
                       state=action.conference.owner_state, exact=True)
        self._update(leg.group)

    def _run(self, leg: _Leg, commands: list[Command]) -> None:
        """Give the leg's engine new commands: to its parked notifier, else setcommands."""
        if leg.parking:
            leg.resume = list(commands)
            leg.call.changed.notify()
        else:
            leg.call.set_commands(list(commands))

    def _idle(self, leg: _Leg) -> None:
        """Stop whatever the engine plays on the leg and park it."""
        if leg.parking:
            return
        leg.idle_token = next(self._tokens)
        self._run(leg, [Redirect(f"{MARKER}idle/{leg.idle_token}")])

    def _advance(self, leg: _Leg) -> None:
        """After a stop: the next queued action, or park."""
        leg.current = None
        if leg.pending:
            self._start(leg, leg.pending.popleft())
        else:
            self._idle(leg)
        self._update(leg.group)

    def _interrupt(self, leg: _Leg) -> None:
        """End the current action (its webhooks say cancelled) and drop the queued ones."""
        leg.pending.clear()
        if leg.current is not None:
            self._finish(leg, leg.current, "cancelled")
            leg.current = None

    def _finish(self, leg: _Leg, action: _Action, how: Literal["done", "cancelled", "hangup"]
                ) -> None:
        """Send an action's ending webhooks (once)."""
        if action.done:
            return
        action.done = True
        status = {"done": "completed", "cancelled": "cancelled", "hangup": "call_hangup"}[how]
        if action.kind == "speak":
            self._emit(leg, "call.speak.ended", {"status": status}, state=action.state)
        elif action.kind == "playback":
            self._emit(leg, "call.playback.ended",
                       {"media_url": action.body.get("audio_url"), "overlay": False,
                        "status": status}, state=action.state)
        elif action.kind == "gather" and how != "done":
            digits = action.gather.digits if action.gather else ""
            self._emit(leg, "call.gather.ended", {"digits": digits, "status": status},
                       state=action.state)
        elif action.kind == "conference" and action.conference is not None:
            self._left(leg, action.conference, action)
        elif action.kind == "bridge" and action.bridge is not None:
            bridge = action.bridge
            other = bridge.legs[1] if bridge.legs[0] is leg else bridge.legs[0]
            bridge.ended = True
            if not leg.ended:
                leg.call._log("unbridged", f"{other.call.main.party} left the call",
                              other.call.main)
        elif action.kind == "transfer":
            target = next((x for x in leg.group.legs if x.transfer_of is leg and x.ringing),
                          None)
            if target is not None:
                self._hang_up(target, "originator_cancel")

    def _left(self, leg: _Leg, conference: _Conference, action: _Action) -> None:
        if leg not in conference.members:
            return
        conference.members.remove(leg)
        self._emit(leg, "conference.participant.left", self._conference_payload(conference),
                   state=conference.owner_state, exact=True)
        if action.body.get("end_conference_on_exit"):
            conference.hang_up_rest = True
            conference.end_reason = "host_left"
        if not conference.members and conference.status != "completed":
            now = self.sim.clock.now()
            conference.status = "completed"
            if conference.end_reason is None:
                conference.end_reason = "time_exceeded" if (
                    conference.expires_at is not None and now >= conference.expires_at
                ) else "all_left"
            owner = conference.creator if not conference.creator.ended else leg
            self._emit(owner, "conference.ended",
                       {**self._conference_payload(conference),
                        "reason": conference.end_reason}, state=conference.owner_state,
                       exact=True)

    def _bridge(self, a: _Leg, b: _Leg, *, state: str | None, park: bool) -> _Action:
        """Bridge ``a`` (the leg that asked) with ``b``: ``b`` enters a private room first,
        then ``a`` joins it; returns ``b``'s action, for the caller to start."""
        room = f"{BRIDGE_ROOM}{next(self._tokens)}"
        bridge = _Bridge(room, (a, b))
        props = ConferenceProperties(end_on_exit=True)
        a_action = self._action("bridge", state, {})
        b_action = self._action("bridge", b.client_state, {})
        for action in (a_action, b_action):
            action.bridge = bridge
            action.commands = [Dial(conference=room, conference_properties=props),
                               action.marker]
        a_action.park = park
        a.current = a_action
        if not a.parking:
            self._idle(a)  # silence a until b is in the room
        self._spawn(self._bridge_second, bridge, a, a_action)
        return b_action

    async def _bridge_second(self, bridge: _Bridge, a: _Leg, a_action: _Action) -> None:
        # The second party joins once the first is in, so neither hears hold music.
        b = bridge.legs[1]

        def ready() -> bool:
            return (b.call.call_id in self.sim.conferences.members(bridge.room)
                    or b.ended or b.call.terminated or a.current is not a_action)

        await b.call.changed.wait_for(ready)
        if a.current is not a_action or a.ended:
            return
        if b.ended or b.call.terminated or b.current is None or b.current.bridge is not bridge:
            a.current = None  # nobody to bridge with any more: a stays parked
            self._update(a.group)
            return
        self._run(a, a_action.commands)
        for leg, action in ((a, a_action), (b, b.current)):
            other = b if leg is a else a
            self._emit(leg, "call.bridged", {"state": "bridged"}, state=action.state)
            leg.call._log("bridged", f"{leg.call.main.party} ⇄ {other.call.main.party}",
                          other.call.main)
        self._update(a.group)

    # -- engine notifications -------------------------------------------------------------------

    async def _marker(self, leg: _Leg, kind: str, token: int) -> list[Command]:
        if kind == "initiated":
            self._emit(leg, "call.initiated", {"direction": "incoming", "state": "parked"})
            return await self._park(leg)
        if kind == "answered":
            self._emit(leg, "call.answered", {"state": "answered"})
            target = leg.transfer_of
            if target is not None and target.current is not None and (
                    target.current.kind == "transfer") and not target.ended:
                target.current = None
                b_action = self._bridge(target, leg, state=target.client_state, park=False)
                self._begin(leg, b_action)
                return b_action.commands
            if leg.amd is not None:
                return self._detect(leg)
            return await self._park(leg)
        if kind == "idle":
            if token != leg.idle_token:
                return []
            return await self._park(leg)
        action = leg.current
        if action is None or action.token != token:
            return []  # the marker of an action that was interrupted meanwhile
        if action.kind == "gather" and not action.done:
            more = self._gather_ended(leg, action, timed_out=True)
            if more:
                return more
        after = self._complete(leg, action)
        if after is not None:
            return after
        return await self._next(leg)

    def _detect(self, leg: _Leg) -> list[Command]:
        """Answering machine detection on an answered dial: the analysis listens for
        ``DETECTION_SECONDS`` (a machine's greeting may end sooner), then
        ``call.machine.detection.ended``; for a machine with ``detect_beep`` (only if it
        beeps), ``detect_words`` or ``greeting_end``, ``call.machine.greeting.ended`` when
        its greeting is over (developers.telnyx.com: answering-machine-detection)."""
        phone = leg.call._phone or self.sim.phone_for(leg.call.main.destination)
        machine = phone.machine
        seconds = DETECTION_SECONDS if machine is None else min(DETECTION_SECONDS,
                                                                 machine.greeting)
        action = self._action("amd", None, {"machine": machine is not None})
        action.commands = [Wait(seconds), action.marker]
        self._begin(leg, action)
        return list(action.commands)

    def _detected(self, leg: _Leg, action: _Action) -> list[Command] | None:
        """The detection's webhooks once its listening is over; a greeting still to wait for
        becomes the leg's next action."""
        phone = leg.call._phone or self.sim.phone_for(leg.call.main.destination)
        machine = phone.machine
        if action.kind == "amd-greeting":
            self._emit(leg, "call.machine.greeting.ended",
                       {"result": "beep_detected" if machine and machine.beep else "ended"})
            return None
        self._emit(leg, "call.machine.detection.ended",
                   {"result": "human" if machine is None else "machine"})
        greeting = machine is not None and (leg.amd in ("detect_words", "greeting_end") or (
            leg.amd == "detect_beep" and machine.beep))
        if not greeting or machine is None:
            return None
        left = max(0.0, machine.ready_after - (self.sim.clock.now() - (leg.answered_at or 0.0)))
        wait = self._action("amd-greeting", None, {})
        wait.commands = [Wait(left), wait.marker]
        self._begin(leg, wait)
        return list(wait.commands)

    def _complete(self, leg: _Leg, action: _Action) -> list[Command] | None:
        """An action ran to its marker: its ending webhooks; commands to run instead of the
        next action (a bridge leg that is not to be parked hangs up)."""
        if action.kind in ("amd", "amd-greeting"):
            leg.current = None
            return self._detected(leg, action)
        if action.kind == "conference" and action.conference is not None:
            self._host_left(action.conference)  # before this leg's leaving may end it
        self._finish(leg, action, "done")
        leg.current = None
        if action.kind == "bridge" and not action.park:
            leg.hangup = ("normal_clearing", "caller" if leg.direction == "outgoing"
                          else "callee")
            leg.pending.clear()
            return [Hangup()]
        if action.kind == "conference" and action.conference is not None and (
                action.conference.hang_up_rest) and not action.body.get(
                    "end_conference_on_exit"):
            leg.hangup = ("normal_clearing", "callee")
            leg.pending.clear()
            return [Hangup()]
        return None

    def _host_left(self, conference: _Conference) -> bool:
        """Whether a member that ends the conference on exit has left its room (maybe
        before the front end heard of its hang-up)."""
        if conference.hang_up_rest:
            return True
        inside = set(self.sim.conferences.members(conference.room))
        for member in conference.members:
            action = member.current
            if (action is not None and action.conference is conference
                    and action.body.get("end_conference_on_exit")
                    and member.call.call_id not in inside):
                conference.hang_up_rest = True
                conference.end_reason = "host_left"
                return True
        return False

    async def _next(self, leg: _Leg) -> list[Command]:
        if leg.pending:
            action = leg.pending.popleft()
            self._begin(leg, action)
            return list(action.commands)
        self._update(leg.group)
        return await self._park(leg)

    async def _park(self, leg: _Leg) -> list[Command]:
        """Wait, inside the engine's notification, for the leg's next commands."""
        leg.parking = True
        self._update(leg.group)
        try:
            await leg.call.changed.wait_for(
                lambda: leg.resume is not None or leg.call.terminated)
        finally:
            leg.parking = False
        commands, leg.resume = leg.resume or [], None
        return commands

    def _digits(self, leg: _Leg, token: int, digits: str) -> list[Command]:
        action = leg.current
        queued = list(leg.call.queue)
        if action is None or action.token != token or action.gather is None or action.done:
            return queued  # stale: leave the queue as it is
        gather = action.gather
        gather.digits += digits
        ended = gather.terminator and gather.digits.endswith(gather.terminator)
        if ended or len(gather.digits) >= gather.maximum:
            return self._gather_ended(leg, action, timed_out=False) or queued
        # The first key came: the rest, each within the inter-digit timeout.
        return [GetDigits(action_url=action.marker.action_url, timeout=gather.inter_timeout,
                          finish_on_key=gather.terminator,
                          number_of_digits=gather.maximum - len(gather.digits),
                          valid_digits=ALL_KEYS, retries=1, prompt=None), action.marker]

    def _gather_ended(self, leg: _Leg, action: _Action, *, timed_out: bool
                      ) -> list[Command] | None:
        """A try is over: the commands of another try, or None (``call.gather.ended`` sent)."""
        gather = action.gather
        assert gather is not None
        digits = gather.digits
        if gather.terminator and digits.endswith(gather.terminator):
            digits = digits[: -len(gather.terminator)]
        if not gather.digits and timed_out:
            status = "timeout"
        elif gather.minimum <= len(digits) <= gather.maximum and all(
                key in gather.valid for key in digits):
            status = "valid"
        else:
            status = "invalid"
        if status != "valid" and gather.tries > 1:
            gather.tries -= 1
            retry = self._gather_try(action, gather.prompt)
            if status == "invalid" and gather.invalid_prompt is not None:
                retry.insert(0, gather.invalid_prompt)
            return retry
        action.done = True
        self._emit(leg, "call.gather.ended", {"digits": digits, "status": status},
                   state=action.state)
        return None

    def _leg_ended(self, leg: _Leg, cause: str, source: str, sip: str) -> None:
        """A dialled leg failed: busy, no answer, unreachable."""
        if leg.ended:
            return
        leg.ended = True
        leg.ended_at = self.sim.clock.now()
        self._emit(leg, "call.hangup", self._hangup_payload(leg, cause, source, sip))
        self._transfer_failed(leg)

    def _hung_up(self, leg: _Leg, direction: str) -> None:
        if leg.ended:
            return
        leg.ended = True
        leg.ended_at = self.sim.clock.now()
        leg.pending.clear()
        if leg.current is not None:
            self._finish(leg, leg.current, "hangup")
            leg.current = None
        if leg.hangup is not None:
            cause, source = leg.hangup
        elif direction == "fromParticipant":
            cause, source = "normal_clearing", (
                "caller" if leg.direction == "incoming" else "callee")
        else:
            cause, source = "unspecified", "unknown"  # the simulator's own idle hang-up
        sip = {"normal_clearing": "200", "user_busy": "486", "call_rejected": "603",
               "originator_cancel": "487"}.get(cause, "")
        self._emit(leg, "call.hangup", self._hangup_payload(leg, cause, source, sip))
        self._transfer_failed(leg)

    def _transfer_failed(self, leg: _Leg) -> None:
        target = leg.transfer_of
        if target is not None and target.current is not None and (
                target.current.kind == "transfer"):
            target.current = None  # the transferring call is parked again
            self._update(target.group)

    def _hangup_payload(self, leg: _Leg, cause: str, source: str, sip: str
                        ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "state": "hangup", "hangup_cause": cause, "hangup_source": source,
            "start_time": _iso(self.sim.epoch + leg.call.started),
            "end_time": _iso(self.sim.epoch + self.sim.clock.now()),
        }
        if sip:
            payload["sip_hangup_cause"] = sip
        return payload

    def _observe(self, call: SimCall, entry: TranscriptEntry | None) -> None:
        leg = self._by_call.get(call.call_id)
        if leg is None or entry is None:
            return
        own = entry.leg_id == call.main.leg_id
        if str(entry.data.get("conference", "")).startswith(BRIDGE_ROOM):
            # The rooms that carry bridges are how the front end works, not what happened
            # on the call: the transcript says "bridged" instead.
            if call.transcript.entries and call.transcript.entries[-1] is entry:
                call.transcript.entries.pop()
            return
        if own and entry.kind == "keys" and entry.data.get("main"):
            for key in entry.text:
                self._emit(leg, "call.dtmf.received", {"digit": key})
        elif own and entry.kind == "recording-stopped":
            self._recording_saved(leg, entry)
        root = leg.group.root
        if leg is root or root.call.transcript.ended:
            return
        telnyx = entry.kind == "notification"
        if entry.kind in _MIRRORED or telnyx:
            data = dict(entry.data)
            if "main" in data:
                data["main"] = False  # the caller's keys are the root call's own
            text = entry.text
            if entry.kind == "hangup" and entry.data.get("direction") == "fromApplication":
                text = f"the application hung up {call.main.party}"  # as a BlueVia dial says
            root.call._log(entry.kind, text, call.main, **data)

    def _recording_saved(self, leg: _Leg, entry: TranscriptEntry) -> None:
        action = leg.recording
        duration = float(entry.data.get("duration", 0.0))
        end = self.sim.clock.now()
        # Presigned, for RECORDING_URL_LIFE seconds from now (the simulator's recordings
        # route refuses it afterwards, as S3 does).
        signed = datetime.fromtimestamp(self.sim.epoch + end, UTC).strftime("%Y%m%dT%H%M%SZ")
        url = (f"{entry.data.get('recordingUrl', '')}?X-Amz-Date={signed}"
               f"&X-Amz-Expires={RECORDING_URL_LIFE:.0f}")
        start = end - duration
        fmt = str(action.body.get("format", "wav")) if action else "wav"
        # The simulator records WAV only: an mp3 request gets the WAV under both names.
        urls = {"wav": url, "mp3": url} if fmt == "mp3" else {"wav": url}
        payload = {
            "channels": str(action.body.get("channels", "single")) if action else "single",
            "recording_started_at": _iso(self.sim.epoch + start),
            "recording_ended_at": _iso(self.sim.epoch + end),
            "recording_urls": urls, "public_recording_urls": urls,
        }
        self._emit(leg, "call.recording.saved", payload,
                   state=action.state if action else None)
        leg.recording = None

    # -- webhooks --------------------------------------------------------------------------------

    def _url_of(self, leg: _Leg) -> str | None:
        return leg.webhook_url or self.application.get("webhook_event_url") or (
            leg.call.callback_url)

    def _emit(self, leg: _Leg, event_type: str, extra: Mapping[str, Any], *,
              state: str | None = None, exact: bool = False) -> None:
        """Queue one webhook about ``leg`` (with the action's ``client_state``, else the
        call's latest; ``exact``: that ``state`` and no other, "" for none)."""
        payload: dict[str, Any] = {
            "call_control_id": leg.ccid, "call_leg_id": leg.call.main.leg_id,
            "call_session_id": leg.group.session_id, "connection_id": self.connection_id,
            "from": leg.number_from, "to": leg.number_to, "direction": leg.direction,
        }
        client_state = state if exact else state or leg.client_state
        if client_state:
            payload["client_state"] = client_state
        payload.update(extra)
        data = {"record_type": "event", "event_type": event_type, "id": str(uuid.uuid4()),
                "occurred_at": _iso(self.sim.epoch + self.sim.clock.now()),
                "payload": payload}
        item = _Outgoing(leg, data)
        group = leg.group
        twice = self.duplicate > 0 and group.rng.random() < self.duplicate
        inline = _inline.get()
        if inline is not None and self._caused_by_request(event_type):
            inline.append(item)
        elif self.reorder and event_type in _HOLDABLE and group.rng.random() < 0.5:
            item.late = True
            group.held.append(item)  # overtaken by the next webhook
        else:
            group.outbox.append(item)
            if group.held:
                group.outbox.extend(group.held)
                group.held.clear()
        if twice:
            copy = _Outgoing(leg, data, attempt=2, late=self.reorder)
            (group.held if self.reorder else group.outbox).append(copy)
        if not group.sender and (group.outbox or group.held):
            group.sender = True  # (again: a conference may speak of a call that has ended)
            self._spawn(self._send, group)
        group.signal.notify()

    @staticmethod
    def _caused_by_request(event_type: str) -> bool:
        return event_type not in ("call.dtmf.received", "call.hangup", "call.recording.saved")

    async def _send(self, group: _Group) -> None:
        """Deliver a group's webhooks one at a time, in order (the sender task)."""
        try:
            while True:
                await group.signal.wait_for(lambda: bool(group.outbox) or group.finished)
                if not group.outbox:
                    if group.held:
                        group.outbox.extend(group.held)
                        group.held.clear()
                        continue
                    return
                await self._deliver(group.outbox.popleft())
        finally:
            group.sender = False
            group.signal.notify()
            if group.finished:
                self._forget(group)

    def _forget(self, group: _Group) -> None:
        """Keep the last ``ENDED_MEMORY`` ended calls: a long run stays small."""
        if group.forgotten:
            return
        group.forgotten = True
        self._ended.extend(group.legs)
        while len(self._ended) > ENDED_MEMORY:
            old = self._ended.popleft()
            self.legs.pop(old.ccid, None)
            self._by_call.pop(old.call.call_id, None)
        for key in [k for k, c in self.conferences.items()
                    if c.status == "completed" and c.creator.ccid not in self.legs]:
            del self.conferences[key]

    async def _deliver(self, item: _Outgoing) -> None:
        group = item.leg.group
        group.sending += 1
        ok = False
        try:
            ok = await self._post(item)
        finally:
            group.sending -= 1
            if ok:
                leg = item.leg
                if item.data["event_type"] == "call.dtmf.received":
                    if leg.current is None or leg.current.kind != "gather":
                        # A key outside a gather may mean something to the app (the end of
                        # a recording, a barge-in): its reaction time, not simulated time.
                        group.react_until = time.monotonic() + self.reaction_hold
                elif leg.idle:
                    leg.turn_at = time.monotonic()  # the app's move, about this leg
                group.told_at = time.monotonic()
                self._stamp(group)
            else:
                group.stamp = -math.inf  # an app that cannot be reached holds no time
                self._update(group)

    async def _post(self, item: _Outgoing) -> bool:
        leg = item.leg
        primary = self._url_of(leg)
        failover = self.application.get("webhook_event_failover_url") or leg.call.fallback_url
        status: int | None = None
        url = primary or ""
        problem = "no webhook URL"
        for target in (primary, failover):
            if not target:
                continue
            url = target
            body = json.dumps({"data": item.data, "meta": {"attempt": item.attempt,
                                                            "delivered_to": target}}).encode()
            headers = {"content-type": "application/json", "user-agent": "telnyx-webhooks",
                       **self.sign(body)}
            try:
                with anyio.fail_after(self.sim.notification_timeout):
                    response = await self.sim._http().post(target, content=body,
                                                           headers=headers)
                status = response.status_code
                problem = f"HTTP {status}"
            except TimeoutError:
                status, problem = None, "timed out"
            except Exception as exc:  # a broken app must not break the simulator
                status, problem = None, f"{type(exc).__name__}: {exc}"
            self.sent.append(TelnyxWebhook(target, body, headers, status))
            if status is not None and 200 <= status < 300:
                break
        ok = status is not None and 200 <= status < 300
        event_type = str(item.data["event_type"])
        call = leg.call
        notes = "".join(note for note, on in ((", duplicate", item.attempt > 1),
                                              (", late", item.late)) if on)
        call._log("notification", f"{event_type} → {url} ({problem}{notes})", call.main,
                  eventName=event_type, url=url, status=status, ok=ok, provider="telnyx",
                  id=item.data["id"], attempt=item.attempt)
        if not ok:
            call._log("error", f"{event_type}: {problem}", call.main, eventName=event_type,
                      url=url)
        return ok

    # -- time ------------------------------------------------------------------------------------

    def _update(self, group: _Group) -> None:
        parked = group.parked
        if parked and not group.was_parked:
            group.parked_since = self.sim.clock.now()
        group.was_parked = parked
        group.version += 1
        group.signal.notify()

    def _stamp(self, group: _Group) -> None:
        """The app did something about the group (or heard from it): its turn starts now."""
        group.stamp = time.monotonic()
        group.parked_since = self.sim.clock.now()
        self._update(group)

    def _heard(self, group: _Group, *legs: _Leg | None) -> None:
        """A request from the app about the group (naming ``legs``): it has reacted."""
        now = time.monotonic()
        for leg in legs:
            if leg is not None:
                leg.heard_at = now
        group.react_until = 0.0
        group.heard_at = now
        self._stamp(group)

    def _hold_until(self, group: _Group) -> float | None:
        """Until when (real time) the group waits on the app, holding virtual time."""
        if self.sim.clock.mode != "virtual":
            return None
        hold = self.hold if self.hold is not None else self.sim.notification_timeout
        ends = [group.react_until]
        if group.parked:  # every leg waits for the app
            ends.append(group.stamp + hold)
        elif group.idle and group.told_at > group.heard_at:
            # Only a recording runs, and the app was told something it has not answered
            # yet (a dialled party hung up): its turn, as if parked.
            ends.append(group.told_at + hold)
        # A leg the app was just told about (say, the one of three dialled that answered)
        # waits for the app even while the others still ring.
        ends.extend(leg.turn_at + hold for leg in group.legs if leg.owed)
        until = max(ends)
        return until if until > time.monotonic() else None

    async def _keep(self, group: _Group) -> None:
        """Hold virtual time while the group waits on the app; hang up an app that never
        moves (``idle_timeout`` simulated seconds after it was last heard from)."""
        clock = self.sim.clock
        while not group.finished:
            version = group.version

            def changed(version: int = version) -> bool:
                return group.version != version or group.finished

            until = self._hold_until(group)
            if until is not None:
                with clock.busy(), anyio.move_on_after(until - time.monotonic()):
                    await group.signal.wait_for(changed)
                continue
            if not group.parked:
                await group.signal.wait_for(changed)
                continue
            budget = group.parked_since + self.sim.idle_timeout - clock.now()
            if budget > 0:
                await group.signal.wait_for(changed, budget)
                continue
            for leg in group.legs:
                if leg.parked and not leg.ended:
                    leg.call._log("error", f"no command from the app for "
                                           f"{self.sim.idle_timeout:g}s: hanging up",
                                  leg.call.main)
                    leg.hangup = ("unspecified", "unknown")
                    self._run(leg, [Hangup()])
            await group.signal.wait_for(lambda: not group.parked or group.finished)
