"""The interface every platform adapter implements.

A platform is split the way flask's ``sansio`` package splits a web framework:

- a **sans-I/O** part that tests call as pure functions: ``verify`` a webhook's
  signature, ``parse`` it into neutral events, ``reply`` to it with a batch of
  neutral commands rendered in the platform's format, and ``check`` whether the
  platform can carry a command at all;
- a **thin async REST part** that takes the app's ``httpx.AsyncClient`` (base URL
  and credentials already set from ``client_options``): ``push`` commands to a
  live call, ``create_call``, ``configure_number``.

Platforms come in two modes.  In ``respond`` mode (BlueVia, Twilio) a batch of
commands travels in the reply to a webhook, and ``push`` delivers one when no
webhook is waiting.  In ``execute`` mode (Telnyx Call Control) every webhook is
acknowledged at once and every command is a REST call of its own: a per-call
command runner (``callflow._runner``) executes the neutral queue through the
platform's ``ExecutingPlatform.execute``.

The app does the routing, the session bookkeeping and the retries; an adapter
never keeps per-call state (the runner keeps it for ``execute`` platforms).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

import httpx

from .._commands import Command
from .._events import Event
from .._exceptions import PlatformError
from .._machine import MachineDetection

if TYPE_CHECKING:
    from .._runner import CallControl

__all__ = (
    "ApiRequest",
    "ExecutingPlatform",
    "Mode",
    "Platform",
    "Reply",
    "UrlFor",
    "Webhook",
)

_compact = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
"""``json.dumps(payload, separators=(",", ":"))`` without building an encoder per call (the
cost of any ``dumps`` call with options), which is a reply's hot path.  Replies are trees
of fresh dicts and lists, never circular: no need to track every container to tell."""

UrlFor = Callable[[int], str]
"""Builds the app's action URL for a step (secret included)."""

Mode: TypeAlias = Literal["respond", "execute"]


@dataclass(frozen=True, slots=True)
class Webhook:
    """One HTTP request from the platform, as the app received it.

    ``url`` is the public URL it was sent to (the app's ``public_url`` plus the
    path and query), which is what signatures are computed over: it works behind
    proxies and tunnels that rewrite the host.  ``headers`` have lower-case names.
    ``received_at`` is the wall-clock time of arrival (seconds since the epoch).
    """

    method: str
    url: str
    path: str = "/"
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    received_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the app answers a webhook with."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Reply:
        return cls(status, _compact(payload).encode())

    def json_body(self) -> Any:
        """The body parsed as JSON (tests and logs)."""
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """A REST request to the platform, relative to its base URL.

    ``json`` is sent as a JSON body, ``form`` as a form-encoded one (Twilio).
    """

    method: str
    path: str
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str | Sequence[str]] | None = None
    params: Mapping[str, str] | None = None

    async def send(self, http: httpx.AsyncClient) -> httpx.Response:
        """Send it; an unreachable platform is a ``PlatformError`` with no status."""
        try:
            return await http.request(
                self.method, self.path, json=self.json, data=self.form, params=self.params,
                headers=dict(self.headers),
            )
        except httpx.HTTPError as exc:
            raise PlatformError(f"{type(exc).__name__}: {exc}") from exc


class Platform(Protocol):
    """A telephony provider, as the app sees it."""

    name: str
    mode: Mode
    keepalive: bool
    """True when the platform hangs up a call that has nothing left to do (Twilio):
    a slow flow's empty response then becomes a hold loop (``Session``)."""

    def client_options(self) -> dict[str, Any]:
        """``httpx.AsyncClient`` options for the REST API: ``base_url``, ``auth``, ``headers``."""

    # -- sans-I/O ---------------------------------------------------------------------

    def verify(self, webhook: Webhook) -> None:
        """Raise ``NotificationError(403, "bad_signature", ...)`` unless the platform sent it."""

    def parse(self, webhook: Webhook) -> list[Event]:
        """The neutral events a webhook carries, in order; ``NotificationError`` when it is bad.

        One webhook may carry several (Twilio's ``<Dial>`` action says how the
        dialled leg ended *and* that the call moved on).  The app feeds them to the
        session in order and replies with the last answer.
        """

    def reply(
        self, commands: Sequence[Command] | None, *, url_for: UrlFor, first: bool
    ) -> Reply:
        """The reply to a webhook: these commands (None: leave the call be) in wire format.

        ``first`` is true for the first batch a call receives.  Raises
        ``UnsupportedFeature`` for a command the platform cannot carry.
        """

    def direct_reply(self, webhook: Webhook) -> Reply | None:
        """A reply that the webhook itself determines, or None (most webhooks).

        Twilio fetches the whisper for a dialled party from a URL: that URL
        carries the whisper, and this renders it.
        """

    def failed_event(self, event: Event) -> Event | None:
        """The notification a fallback request stands for, or None.

        A platform that could not reach the app sends what it could not deliver to the
        fallback URL; a durable app answers it as that notification (another worker takes
        the call over).
        """

    def check(self, command: Command) -> None:
        """Raise ``UnsupportedFeature`` when the platform cannot carry ``command``."""

    def unsupported(self) -> Mapping[tuple[str, str | None], str]:
        """What the platform cannot do, for a static check of a flows file.

        Keys are ``(verb, option)`` (option None: the verb itself); values say why.
        """

    # -- REST -----------------------------------------------------------------------------

    async def push(
        self, http: httpx.AsyncClient, call_id: str, commands: Sequence[Command], *,
        url_for: UrlFor,
    ) -> None:
        """Deliver commands to a live call while no webhook waits (``respond`` mode).

        Raises ``PlatformError``: with ``gone`` set when the call no longer exists,
        else with the HTTP ``status`` (None when unreachable) so the app can retry.
        """

    async def create_call(
        self, http: httpx.AsyncClient, *, to: str, caller_id: str, callback_url: str,
        fallback_url: str | None, machine_detection: MachineDetection | None = None,
    ) -> str:
        """Place an outbound call whose webhooks go to ``callback_url``; its call id.

        With ``machine_detection`` the call's first ``answered`` event comes once the
        platform knows who answered, with ``answered_by`` set (``callflow._machine``);
        a platform without detection raises ``UnsupportedFeature``.
        """

    async def configure_number(
        self, http: httpx.AsyncClient, number: str, *, callback_url: str,
        fallback_url: str | None,
    ) -> str:
        """Point ``number``'s inbound calls at the app; a line saying what was done."""


class ExecutingPlatform(Platform, Protocol):
    """An ``execute``-mode platform: the command runner calls it for each command."""

    async def start(
        self, ctl: CallControl, first: Event, commands: list[Command]
    ) -> list[Command] | None:
        """Take the call: answer an inbound one, or reject it when the flow hangs up at once.

        ``commands`` are the session's answer to ``first``; returns those left to
        execute (None: the call is over).
        """

    async def execute(self, ctl: CallControl, command: Command) -> list[Command] | None:
        """Carry out one command and wait for it to finish.

        Returns the session's answer when the command's completion answered the
        flow (it replaces the queue), else None (the queue goes on).
        """

    async def stop(self, ctl: CallControl, command: Command) -> None:
        """Interrupt ``command`` if it is running (new commands replace the queue)."""

    async def reject(self, http: httpx.AsyncClient, event: Event) -> None:
        """Turn away an inbound call no flow answers."""

    def error(self, response: httpx.Response) -> PlatformError:
        """The ``PlatformError`` for a refused request (``gone`` when the call is over)."""

    def farewell(self, leg: str, message: str | None
                 ) -> tuple[ApiRequest | None, float, ApiRequest]:
        """Ending a call by REST alone, when no webhook can come (the app shuts down).

        The request that says ``message`` (None without one), about how long saying it
        takes, and the request that hangs up.
        """
