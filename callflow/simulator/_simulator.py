"""The `Simulator`: a BlueVia Voice platform plus its simulated telephone network."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from ._asgi import Receive, Scope, Send
from ._clock import Clock
from ._conference import Conferences
from ._engine import UNKNOWN_AUDIO_SECONDS, SimCall
from ._errors import ConfigError, SimulatorError, WireError
from ._frontend import BlueViaFrontEnd, FrontEnd
from ._live import LiveEvent, Observer, subscribe
from ._network import (
    DEFAULT_PHONE,
    NetworkConfig,
    NumberConfig,
    Phone,
    Step,
    load_config,
    parse_script,
)
from ._recordings import wav_duration
from ._serving import serve_asgi
from ._transcript import Transcript
from ._wire import Command, normalize_number, parse_commands

__all__ = ("PLATFORMS", "Chaos", "NotificationOutcome", "Simulator", "serve_simulator")

PLATFORMS = ("bluevia", "twilio", "telnyx")
"""The providers whose wire format the simulator can speak (``Simulator(platform=...)``)."""


@dataclass(frozen=True)
class NotificationOutcome:
    """What became of one notification POST."""

    status: int | None
    commands: list[Command] | None  # None: the exchange failed
    summary: str
    logged: bool = False
    """The front end wrote the transcript lines itself (or sent nothing worth one)."""


@dataclass
class Chaos:
    """Webhooks delivered as real providers sometimes deliver them: twice, or out of order.

    Each is a probability per webhook (0 to 1); ``seed`` makes a run repeatable. What a
    front end duplicates or reorders is documented with it (docs/reference/simulator.md).
    """

    duplicate: float = 0.0
    reorder: float = 0.0
    seed: int | None = None
    _random: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("duplicate", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"Chaos({name}=...) is a probability, from 0 to 1")
        self._random = random.Random(self.seed)

    def duplicates(self) -> bool:
        """Whether to deliver this webhook twice."""
        return self.duplicate > 0 and self._random.random() < self.duplicate

    def reorders(self) -> bool:
        """Whether to hold this webhook back behind the call's next one."""
        return self.reorder > 0 and self._random.random() < self.reorder

    def shuffle(self, held: list[Any]) -> None:
        """Put webhooks held back together in the order they will arrive in."""
        self._random.shuffle(held)


class Simulator:
    """A BlueVia Voice platform and telephone network, as an ASGI application.

    Run it with `async with sim:` (tests) or serve it (its ASGI lifespan starts it).
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        api_key: str = "key",
        api_secret: str = "secret",
        base_url: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        notification_timeout: float | None = None,
        idle_timeout: float = 60.0,
        idle_hold: float | None = None,
        outbound_ring_timeout: float = 60.0,
        default_phone: Phone = DEFAULT_PHONE,
        config: NetworkConfig | str | Path | None = None,
        max_body_size: int = 1 << 20,
        platform: str = "bluevia",
        twilio_account_sid: str | None = None,
        twilio_auth_token: str | None = None,
        chaos: Chaos | None = None,
    ) -> None:
        """``platform`` picks the wire format the app sees: ``bluevia`` (default), ``twilio``
        (with the account's SID and auth token; made up when not given) or ``telnyx``.
        ``notification_timeout`` defaults to the provider's webhook timeout: 10 s, and
        Twilio's 15 s."""
        self.clock = clock if clock is not None else Clock.virtual()
        self.chaos = chaos if chaos is not None else Chaos()
        if platform not in PLATFORMS:
            raise ConfigError(f"unknown platform {platform!r}; choose one of: "
                              f"{', '.join(PLATFORMS)}")
        self.platform = platform
        self.frontend: FrontEnd = BlueViaFrontEnd(self)
        """The provider whose wire format the app sees (see ``_frontend.py``)."""
        if notification_timeout is None:
            notification_timeout = 15.0 if platform == "twilio" else 10.0
        self.api_key = api_key
        self.api_secret = api_secret
        self.base_url = base_url.rstrip("/") if base_url else None
        self.notification_timeout = notification_timeout
        self.idle_timeout = idle_timeout
        # Real seconds an idle call holds virtual time for the app (see SimCall): as long as
        # the app gets to answer a notification, unless chosen.
        self.idle_hold = notification_timeout if idle_hold is None else idle_hold
        self.outbound_ring_timeout = outbound_ring_timeout
        self.default_phone = default_phone
        self.max_body_size = max_body_size
        self.phones: dict[str, Phone] = {}
        self.account_numbers: dict[str, NumberConfig] = {}
        self.calls: dict[str, SimCall] = {}
        self.conferences = Conferences()
        self.recordings: dict[str, bytes] = {}
        self.observers: list[Observer] = []  # see subscribe()
        self.epoch = time.time()
        self._client = http_client
        self._owns_client = http_client is None
        self._audio_cache: dict[str, float] = {}
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        if config is not None:
            self.load(config)
        # Last: a front end may set itself up on the simulator's attributes.
        if platform == "twilio":
            from ._twilio import TwilioFrontEnd

            self.frontend = TwilioFrontEnd(self, account_sid=twilio_account_sid,
                                           auth_token=twilio_auth_token)
        elif platform == "telnyx":
            self.frontend = _telnyx_frontend(self)

    # -- configuration --------------------------------------------------------------------

    def load(self, config: NetworkConfig | str | Path) -> None:
        """Add the phones and account numbers of a config (file path or `NetworkConfig`)."""
        if not isinstance(config, NetworkConfig):
            config = load_config(config)
        self.phones.update(config.phones)
        self.account_numbers.update(config.account_numbers)

    def add_phone(self, number: str, phone: Phone) -> None:
        """Make a simulated number behave as `phone` when dialled."""
        self.phones[self._number(number)] = phone

    def add_account_number(
        self, number: str, *, callback_url: str | None = None, fallback_url: str | None = None
    ) -> NumberConfig:
        """Add (or reconfigure) one of the account's numbers."""
        config = NumberConfig(self._number(number), callback_url, fallback_url)
        self.account_numbers[config.number] = config
        return config

    def phone_for(self, number: str) -> Phone:
        return self.phones.get(number, self.default_phone)

    @staticmethod
    def _number(number: str) -> str:
        try:
            return normalize_number(number)
        except WireError:
            raise ConfigError(f"{number!r} is not a phone number") from None

    def app_settings(self) -> dict[str, str]:
        """The ``callflow.Settings`` fields an app needs to use this simulator as its platform:
        the platform's name and credentials (add ``platform_url``, the simulator's URL)."""
        settings = getattr(self.frontend, "app_settings", None)
        if settings is not None:
            return dict(settings())
        if self.platform == "telnyx" and all(
                hasattr(self.frontend, name) for name in ("api_key", "public_key",
                                                          "connection_id")):
            frontend: Any = self.frontend
            return {"platform": "telnyx", "telnyx_api_key": frontend.api_key,
                    "telnyx_public_key": frontend.public_key,
                    "telnyx_connection_id": frontend.connection_id}
        if self.platform != "bluevia":
            raise ConfigError(f"the {self.platform} front end does not say what credentials "
                              "an app needs (it has no app_settings())")
        return {"platform": "bluevia", "api_key": self.api_key, "api_secret": self.api_secret}

    # -- calls ------------------------------------------------------------------------------

    def subscribe(
        self, call: SimCall | None = None
    ) -> AbstractContextManager[MemoryObjectReceiveStream[LiveEvent]]:
        """Every call's transcript entries as they happen (see `callflow.simulator._live`):
        `with sim.subscribe() as events: async for event in events: ...`"""
        return subscribe(self, call)

    def transcript(self, call_id: str) -> Transcript:
        """The transcript (so far) of a call."""
        return self.calls[call_id].transcript

    async def place_inbound_call(
        self, from_: str, to: str, *, script: Iterable[str | Step] = ()
    ) -> SimCall:
        """A simulated phone `from_` calls the account number `to`, following `script`."""
        caller, callee = self._number(from_), self._number(to)
        number = self.account_numbers.get(callee)
        if number is None or not number.callback_url:
            raise ConfigError(f"{callee} is not an account number with a callback URL")
        call = SimCall(
            self,
            caller=caller,
            callee=callee,
            direction="inbound",
            callback_url=number.callback_url,
            fallback_url=number.fallback_url,
            script=parse_script(script),
        )
        self._start_call(call)
        return call

    def create_call(
        self,
        caller: str,
        destination: str,
        *,
        callback_url: str | None = None,
        fallback_url: str | None = None,
        all_events: bool = False,
    ) -> SimCall:
        """Start an outbound call from an account number (what `POST /calls` does)."""
        caller, destination = self._number(caller), self._number(destination)
        number = self.account_numbers.get(caller)
        if number is None:
            raise ConfigError(f"{caller} is not an account number")
        call = SimCall(
            self,
            caller=caller,
            callee=destination,
            direction="outbound",
            callback_url=callback_url or number.callback_url,
            fallback_url=fallback_url or number.fallback_url,
            all_events=all_events,
        )
        self._start_call(call)
        return call

    def _start_call(self, call: SimCall) -> None:
        if self._tg is None:
            raise SimulatorError("the simulator is not running: use `async with sim:`")
        self.frontend.call_created(call)  # may give the call its provider's id
        self.calls[call.call_id] = call
        self.clock.spawn(self._tg, call.run)

    # -- running ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._tg is not None

    async def __aenter__(self) -> Simulator:
        if self._stack is not None:
            raise SimulatorError("the simulator is already running")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._client is None:
                self._client = await stack.enter_async_context(httpx.AsyncClient())
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            tg.start_soon(self.clock.run)
            self._tg = tg
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self.epoch = time.time()
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._tg = None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)
        if self._owns_client:
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI 3 entry point: the REST API, recordings, and lifespan."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if await self.frontend.handle_api(scope, receive, send):
            return
        from ._api import handle

        await handle(self, scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        started_here = False
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if not self.running:
                    try:
                        await self.__aenter__()
                    except Exception as exc:
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                    started_here = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if started_here:
                    await self.__aexit__(None, None, None)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- I/O used by calls --------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise SimulatorError("the simulator is not running")
        return self._client

    async def post_notification(self, url: str, payload: Mapping[str, Any]) -> NotificationOutcome:
        """POST a notification; never raises (a misbehaving app is a failed outcome)."""
        try:
            with anyio.fail_after(self.notification_timeout):
                response = await self._http().post(url, json=dict(payload))
        except TimeoutError:
            return NotificationOutcome(None, None, "timed out")
        except Exception as exc:  # a broken app must not break the simulator
            return NotificationOutcome(None, None, f"failed: {type(exc).__name__}: {exc}")
        status = response.status_code
        if not 200 <= status < 300:
            return NotificationOutcome(status, None, f"HTTP {status}")
        content = response.content.strip()
        if not content:
            return NotificationOutcome(status, [], f"{status}, empty")
        try:
            commands = parse_commands(response.json())
        except ValueError:
            return NotificationOutcome(status, None, f"{status}, body is not JSON")
        except WireError as exc:
            return NotificationOutcome(status, None, f"{status}, invalid commands: {exc}")
        return NotificationOutcome(status, commands, f"{status}, {len(commands)} commands")

    async def put_export(self, url: str, data: bytes) -> bool:
        """PUT a recording to a `record` command's `export.url`."""
        try:
            with anyio.fail_after(self.notification_timeout):
                response = await self._http().put(
                    url, content=data, headers={"Content-Type": "audio/wav"}
                )
        except Exception:
            return False
        return 200 <= response.status_code < 300

    def store_recording(self, recording_id: str, data: bytes) -> str:
        """Keep a recording and return the URL it is served at."""
        self.recordings[recording_id] = data
        return f"{self.base_url or 'http://127.0.0.1'}/recordings/{recording_id}.wav"

    async def audio_seconds(self, url: str) -> float:
        """How long a `play` of `url` lasts: a WAV file's length, else 3 s."""
        if url in self._audio_cache:
            return self._audio_cache[url]
        seconds = UNKNOWN_AUDIO_SECONDS
        name = url.split("?", 1)[0].rsplit("/", 1)[-1]  # (a presigned URL's query aside)
        if "/recordings/" in url and name.removesuffix(".wav") in self.recordings:
            seconds = wav_duration(self.recordings[name.removesuffix(".wav")]) or seconds
        elif url.lower().endswith(".wav") and url.startswith(("http://", "https://")):
            try:
                with anyio.fail_after(min(2.0, self.notification_timeout)):
                    response = await self._http().get(url)
                if response.status_code == 200:
                    seconds = wav_duration(response.content) or seconds
            except Exception:
                pass
        self._audio_cache[url] = seconds
        return seconds


def _telnyx_frontend(sim: Simulator) -> FrontEnd:
    try:
        from ._telnyx import TelnyxFrontEnd  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise ConfigError("the simulator cannot speak Telnyx yet (no "
                          "callflow.simulator._telnyx.TelnyxFrontEnd); use --platform "
                          f"bluevia or twilio ({exc})") from None
    chaos = sim.chaos
    options: dict[str, Any] = {}
    if chaos.duplicate or chaos.reorder:  # its own knobs: reorder is on or off
        options = {"duplicate": chaos.duplicate, "reorder": chaos.reorder > 0,
                   "seed": chaos.seed}
    frontend: FrontEnd = TelnyxFrontEnd(sim, **options)
    return frontend


@asynccontextmanager
async def serve_simulator(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Run `sim` over real HTTP on `host:port` (0 = any free port); yields its base URL."""
    async with serve_asgi(sim, host, port) as base_url:
        if sim.base_url is None:
            sim.base_url = base_url
        yield base_url
