"""Settings: from keyword arguments, the command line, or ``CALLFLOW_*`` variables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._exceptions import ConfigurationError

__all__ = ("Settings",)

DEFAULT_SHUTDOWN_MESSAGE = (
    "Sorry, we have to end this call now. Please call again later. Goodbye."
)
DEFAULT_APOLOGY = "Sorry, something went wrong on our side. Please call again later. Goodbye."

PLATFORM_URLS: dict[str, str] = {
    "bluevia": "http://127.0.0.1:8080",  # BlueVia is gone: a local ``callflow simulator``
    "twilio": "https://api.twilio.com",
    "telnyx": "https://api.telnyx.com",
}
"""Each platform's REST API, used unless ``platform_url`` says otherwise."""


@dataclass(slots=True)
class Settings:
    """How an app reaches its platform and how it behaves under load and faults.

    Every field can be set with an environment variable named ``CALLFLOW_`` plus
    the field's name in capitals (``CALLFLOW_PUBLIC_URL``...).
    """

    public_url: str = "http://127.0.0.1:8000"
    """Where the platform reaches this app (behind a proxy or tunnel: its public address)."""
    platform_url: str = ""
    """The platform's REST API base URL; empty for the platform's own (``api_url``)."""
    platform: str = "bluevia"
    """Which platform the app speaks to: ``bluevia``, ``twilio`` or ``telnyx``."""
    api_key: str = "key"
    """BlueVia: the API key (user of HTTP Basic auth)."""
    api_secret: str = "secret"
    """BlueVia: the API secret."""
    twilio_account_sid: str = ""
    """Twilio: the account SID (``AC…``)."""
    twilio_auth_token: str = ""
    """Twilio: the auth token; it also signs every webhook (``X-Twilio-Signature``)."""
    telnyx_api_key: str = ""
    """Telnyx: the API v2 key (``KEY…``)."""
    telnyx_public_key: str = ""
    """Telnyx: the account's base64 Ed25519 public key, to verify webhook signatures."""
    telnyx_connection_id: str = ""
    """Telnyx: the Call Control Application (connection) that dials and outbound calls use."""
    language: str = "en-US"
    """Text-to-speech language on platforms that take one (Twilio, Telnyx)."""
    signature_tolerance: float = 300.0
    """Seconds a timestamped webhook signature stays acceptable (Telnyx)."""
    keepalive: float = 1.0
    """Seconds of silence per hold loop while a slow flow has nothing to say, on platforms
    that hang up a call with nothing left to do (Twilio)."""
    secret: str = ""
    """The webhook secret in every URL handed to the platform (random when empty)."""
    response_budget: float = 2.0
    """Seconds a notification waits for a slow flow before the rest goes by REST."""
    hangup_grace: float = 10.0
    """Seconds a flow busy in its own I/O may run on after the caller hung up."""
    apology: str = DEFAULT_APOLOGY
    """What the caller hears when a flow raises, before the hang-up."""
    stall_timeout: float = 45.0
    """Seconds a flow may stay busy in its own I/O after missing the response budget,
    before the caller gets the apology and a hang-up (0: no limit). Keep it under the
    platform's idle hang-up (60 s on BlueVia)."""
    shutdown_message: str = DEFAULT_SHUTDOWN_MESSAGE
    """What live callers hear when the app shuts down, before the hang-up."""
    caller_id: str = ""
    """Default caller id of outbound calls (default: the app's first number)."""
    max_body: int = 64 * 1024
    push_retries: int = 3
    push_timeout: float = 5.0
    outbound_timeout: float = 120.0
    path_prefix: str = "/callflow"
    store: str = "memory"
    """Where calls are kept: ``memory`` (in this process only), ``sqlite:///PATH`` (durable,
    shared by the processes of one host) or ``postgresql://USER@HOST/DB`` (shared by hosts).
    ``callflow serve`` defaults to ``sqlite:///.callflow/calls.db``."""
    cache_size: int = 10_000
    """Suspended calls a worker keeps in memory with a durable store; the others are
    rebuilt from their history when their next notification comes (0: always)."""
    lease: float = 5.0
    """Seconds a worker's hold on a call lasts unless renewed; after a crash, how long
    until another worker may take the call over."""
    lease_wait: float = 6.0
    """Seconds a notification waits for another worker to let go of its call, before 503."""
    store_timeout: float = 5.0
    """Seconds a store request may take before the notification gets a 503."""
    max_call_duration: float = 4 * 3600.0
    """Seconds after its start at which a call still live is taken for one whose hang-up
    was lost, and ended: hung up by REST and forgotten (memory and durable mode alike;
    0: never). Keep it above the longest call you expect (a conference, a long dial)."""
    history_retention: float = 7 * 86400.0
    """Seconds an ended call's history is kept for ``callflow history`` (0: forever)."""
    command_timeout: float = 120.0
    """Telnyx: seconds a command's completion webhook (``call.answered``,
    ``call.speak.ended``...) may be overdue, past the longest the command could take,
    before the call is ended with a logged error and a REST hang-up, rather than waiting
    for ever on a lost webhook (0: no limit). A prompt whose length callflow cannot know
    (a ``play``) gets this long per repeat."""
    body_timeout: float = 10.0
    """Seconds a request's body may take to arrive in full; a slower one gets a 408 and its
    connection closed (a client sending a byte a second would hold a connection forever)."""
    loop_stall_warning: float = 1.0
    """Seconds the event loop may be blocked (a flow calling ``time.sleep``, a CPU-bound
    loop) before a warning names the call and the flow's line; 0: no watch. Served with
    ``callflow serve`` (``callflow._server.serving``)."""
    recording_grace: float = 5.0
    """Twilio: seconds a ``record()`` the caller hung up on waits for its recording, which
    Twilio may report after the call's end (0: ``CallEnded`` at once)."""
    idle_timeout: float = 900.0
    """Memory mode: seconds a call waiting on the platform (a gather, a recording, a hold
    loop, Telnyx's ``call.answered``) may go without any notification before it is taken
    for lost (its hang-up went missing): the app logs it, hangs it up by REST and forgets it
    (0: no limit). A dial or a conference is exempt: a conversation may be long and
    silent; ``max_call_duration`` bounds it."""
    shutdown_grace: float = 10.0
    """Memory mode: seconds the app gives itself at shutdown to hang up every live call
    (each hears ``shutdown_message``); the calls the platform did not confirm in time are
    logged (count as a warning, ids at debug)."""
    metrics: bool = False
    """Serve Prometheus metrics at ``{path_prefix}/{secret}/metrics`` (``callflow serve
    --metrics``; needs ``pip install "callflow[metrics]"``). See docs/reference/metrics.md."""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``CALLFLOW_*`` variables, then ``overrides`` that are not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            raw = env.get(f"CALLFLOW_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _convert(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.public_url = settings.public_url.rstrip("/")
        settings.platform_url = settings.platform_url.rstrip("/")
        return settings

    @property
    def api_url(self) -> str:
        """The platform's REST API base URL: ``platform_url``, else the platform's own."""
        return (self.platform_url or PLATFORM_URLS.get(self.platform, "")).rstrip("/")


def _convert(name: str, type_: Any, raw: str) -> Any:
    kind = type_ if isinstance(type_, str) else getattr(type_, "__name__", str(type_))
    try:
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
        if kind == "bool":
            return {"1": True, "true": True, "yes": True, "on": True, "0": False,
                    "false": False, "no": False, "off": False, "": False}[raw.strip().lower()]
    except (KeyError, ValueError):
        raise ConfigurationError(
            f"CALLFLOW_{name.upper()}={raw!r} is not a valid {kind}"
        ) from None
    return raw
