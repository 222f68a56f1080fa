"""``App``: the registry of flows, and the ASGI application the platform posts to."""

from __future__ import annotations

import ast
import hmac
import inspect
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast, overload
from urllib.parse import parse_qsl, quote
from xml.etree import ElementTree

import anyio
import httpx
from anyio.abc import TaskGroup

from . import _logformat
from ._asgi import BodyTimeout, BodyTooLarge, Headers, drain_of, read_body, send_json, send_reply
from ._awaited import check_flow
from ._call import _NO_SERVICES, Call, Direction
from ._checks import check_voice, e164
from ._commands import Command, Hangup, Say
from ._durable import DurableCalls
from ._events import LEG_FAILURES, Event
from ._exceptions import (
    ConfigurationError,
    FlowNotFound,
    NotificationError,
    OutboundCallError,
    PlatformError,
    UnsupportedFeature,
)
from ._expiry import Expiry
from ._logformat import running
from ._machine import AnsweredBy, MachineDetection
from ._metrics import Metrics, TimedStore
from ._recording import UNSAVED_MEMORY, Recording
from ._records import CallEndHook, CallLog
from ._results import DialStatus, RecordResult
from ._runner import Runner
from ._session import EventKey, Flow, Session, event_key, same_notification
from ._settings import Settings
from ._shutdown import hang_up_all
from ._spawner import Cancellable, Spawner
from ._types import Message, Receive, Scope, Send
from .platforms import ExecutingPlatform, Platform, Reply, UrlFor, Webhook, get_platform
from .stores import Store, open_store

__all__ = ("App", "FlowSpec", "Lifespan", "OutboundCallResult", "flow")

logger = logging.getLogger("callflow")

Lifespan = Callable[["App"], AbstractAsyncContextManager[Any]]
"""``App(lifespan=...)``: called with the app at start; what it yields is ``call.services``."""

_OUTBOUND_STATUS: dict[str, DialStatus] = {"busy": "busy", "no_answer": "no_answer"}

_PUSH_NAMES = {"bluevia": "setcommands", "twilio": "call update"}
"""What pushing commands is called on each platform, for the logs."""

ENDED_MEMORY = 10_000
"""How many ended call ids are remembered, to answer their late notifications harmlessly."""

_ANSWERED = frozenset({"digits", "resumed", "answered"})
"""Kinds of notification whose answer is what the call does next (besides ``incoming``)."""



class _Ended:
    """What is remembered of an ended call: its last answer, for a redelivery of its question.

    ``late`` answers any other notification that waits for commands (``_ANSWERED``):
    nothing for a call that ended as calls do, a hang-up for one the app did not know (it
    may still be up on the platform's side).  Other notifications get nothing: on BlueVia
    their answer would replace what the call is about to do (the apology).
    """

    __slots__ = ("first", "key", "late", "response")

    def __init__(self, key: EventKey | None, response: list[Command] | None, first: bool,
                 late: list[Command] | None = None) -> None:
        self.key, self.response, self.first, self.late = key, response, first, late

    @classmethod
    def of(cls, session: Session | None) -> _Ended:
        if session is None:
            return cls(None, None, False)
        key, response, first = session.last_answer()
        return cls(key, response, first)

    def answer(self, event: Event) -> tuple[list[Command] | None, bool]:
        """The answer to a notification of this ended call: ``(commands or None, first?)``.

        A redelivery of the notification that ended it (also as a fallback request, which
        has no step) gets the same answer.
        """
        if self.key is not None and same_notification(event_key(event), self.key):
            return self.response, self.first
        return (self.late if event.kind in _ANSWERED else None), False


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """A registered flow: its name, the function, and the numbers it answers."""

    name: str
    func: Flow
    numbers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OutboundCallResult:
    """How an outbound call placed with ``App.call`` turned out.

    On ``answered`` the flow is running; otherwise it never started.
    """

    call_id: str
    status: DialStatus
    reason: str | None = None
    answered_by: AnsweredBy | None = None
    """With ``machine_detection``: who answered (``call.answered_by``)."""

    @property
    def answered(self) -> bool:
        return self.status == "answered"


@dataclass(slots=True)
class _Outbound:
    spec: FlowSpec
    to: str
    caller_id: str
    data: dict[str, Any] | None
    outcome: anyio.Event = field(default_factory=anyio.Event)
    placed: float = field(default_factory=time.time)
    status: DialStatus | None = None
    reason: str | None = None
    machine_detection: MachineDetection | None = None
    answered_by: AnsweredBy | None = None


def _answered_by(value: str | None) -> AnsweredBy:
    """An answered event's ``answered_by``, checked: what the platform could not tell is
    ``unknown``."""
    return value if value in ("human", "machine") else "unknown"  # type: ignore[return-value]


def _normalise(number: str) -> str:
    number = number.strip()
    if number.startswith("tel:"):
        number = number[4:]
    return number


class App:
    """A set of call flows, served as an ASGI application.

    Run it under any ASGI server with lifespan support (``callflow serve`` uses
    hypercorn), or enter it with ``async with app:`` to run it in-process.
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        lifespan: Lifespan | None = None,
        **overrides: Any,
    ) -> None:
        """``transport`` replaces the network under the platform client (tests: no sockets).

        ``lifespan(app)`` is an async context manager entered when the app starts (in
        each worker) and left when it stops, after the last call: what it yields is
        the app's services, which flows reach as ``call.services``.
        """
        self._settings = settings
        self._user_lifespan = lifespan
        self._services: Any = _NO_SERVICES
        self._transport = transport
        self._overrides = overrides
        self._flows: dict[str, FlowSpec] = {}
        self._numbers: dict[str, str] = {}
        self._default: str | None = None
        self.sessions: dict[str, Session] = {}
        self._ended: OrderedDict[str, _Ended] = OrderedDict()
        self._hung_up: OrderedDict[str, None] = OrderedDict()
        self._hangup_waiters: dict[str, anyio.Event] = {}
        self._end_waiters: dict[str, anyio.Event] = {}
        self._outbound: dict[str, _Outbound] = {}
        self._unsaved: OrderedDict[str, Call] = OrderedDict()  # see finished()
        self._runners: dict[str, Runner] = {}
        self._tg: TaskGroup | None = None
        self._spawner: Spawner | None = None
        self._closing = False
        self._client: httpx.AsyncClient | None = None
        self._stack: AsyncExitStack | None = None
        self._platform: Platform | None = None
        self._store: Store | None = None
        self._durable: DurableCalls | None = None
        self._secret_generated = False
        self._call_log = CallLog()
        self.metrics: Metrics | None = None
        """The app's Prometheus figures while it runs with ``metrics`` on; else None."""

    # -- registration ---------------------------------------------------------------

    @overload
    def flow(self, func: Flow, /) -> Flow: ...
    @overload
    def flow(
        self, /, *, number: str | None = None, numbers: tuple[str, ...] = (),
        name: str | None = None,
    ) -> Callable[[Flow], Flow]: ...

    def flow(
        self,
        func: Flow | None = None,
        /,
        *,
        number: str | None = None,
        numbers: tuple[str, ...] = (),
        name: str | None = None,
    ) -> Flow | Callable[[Flow], Flow]:
        """Register a flow for calls to ``number`` (or ``numbers``).

        With no number it is the default flow, for calls to any other number;
        every flow is also usable by name for outbound calls.
        """

        def register(f: Flow) -> Flow:
            self.add_flow(f, numbers=((number,) if number else ()) + tuple(numbers), name=name)
            return f

        return register(func) if func is not None else register

    def add_flow(self, func: Flow, *, numbers: tuple[str, ...] = (), name: str | None = None
                 ) -> FlowSpec:
        flow_name = str(name or getattr(func, "__name__", "flow"))
        check_flow(func, flow_name)
        if flow_name in self._flows:
            raise ConfigurationError(f"a flow named {flow_name!r} is already registered")
        spec = FlowSpec(flow_name, func, tuple(_normalise(n) for n in numbers))
        for n in spec.numbers:
            if not n.startswith("+") or not n[1:].isdigit():
                raise ConfigurationError(f"flow {flow_name!r}: {n!r} is not an E.164 number "
                                         "like +34900000001")
            if n in self._numbers:
                raise ConfigurationError(f"number {n} already belongs to flow "
                                         f"{self._numbers[n]!r}")
            self._numbers[n] = flow_name
        if not spec.numbers:
            if self._default is not None:
                raise ConfigurationError(
                    f"flows {self._default!r} and {flow_name!r} both have no number; only one "
                    "flow can be the default"
                )
            self._default = flow_name
        self._flows[flow_name] = spec
        return spec

    def on_call_end(self, hook: CallEndHook, /) -> CallEndHook:
        """Call ``hook`` (sync or async) with a ``CallRecord`` when each call ends.

        Usable as a decorator; register hooks before the app starts.  A hook that
        raises is logged and never breaks a call (see ``callflow._records``).
        """
        if self._tg is not None:
            raise ConfigurationError("on_call_end() must be called before the app starts")
        self._call_log.hooks.append(hook)
        return hook

    @property
    def services(self) -> Any:
        """What the lifespan yielded, while the app runs (flows: ``call.services``)."""
        if self._services is _NO_SERVICES:
            raise ConfigurationError("app.services: the app has no lifespan, or is not "
                                     "running (App(lifespan=...) yields the services)")
        return self._services

    @property
    def flows(self) -> Mapping[str, FlowSpec]:
        return self._flows

    @property
    def numbers(self) -> Mapping[str, str]:
        """The app's numbers, each with the name of the flow that answers it."""
        return self._numbers

    def get_flow(self, name_or_func: str | Flow | None = None) -> FlowSpec:
        """The flow registered under a name or function (default: the default flow)."""
        if name_or_func is None:
            if self._default is not None:
                return self._flows[self._default]
            if len(self._flows) == 1:
                return next(iter(self._flows.values()))
            raise FlowNotFound("this app has no default flow; name one with flow=...")
        if not isinstance(name_or_func, str):
            for spec in self._flows.values():
                if spec.func is name_or_func:
                    return spec
            raise FlowNotFound(f"{name_or_func!r} is not registered on this app")
        try:
            return self._flows[name_or_func]
        except KeyError:
            known = ", ".join(sorted(self._flows)) or "none"
            raise FlowNotFound(f"no flow named {name_or_func!r} (known: {known})") from None

    def flow_for_number(self, number: str) -> FlowSpec | None:
        name = self._numbers.get(_normalise(number), self._default)
        return None if name is None else self._flows[name]

    # -- settings ----------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env(**self._overrides)
        if not self._settings.secret:
            # Also for App(settings=...): an empty secret would open the webhook to anyone.
            self._settings.secret = secrets.token_urlsafe(24)
            self._secret_generated = True
        return self._settings

    def configure(self, settings: Settings) -> None:
        """Replace the app's settings (before it starts)."""
        if self._tg is not None:
            raise ConfigurationError("configure() must be called before the app starts")
        # A secret this app made up itself (read through ``settings`` before) is no choice:
        # with a store, the store's shared secret replaces it at start.
        self._secret_generated = not settings.secret or (
            self._secret_generated and self._settings is not None
            and settings.secret == self._settings.secret)
        if not settings.secret:
            settings.secret = secrets.token_urlsafe(24)
        self._settings = settings
        self._platform = None

    @property
    def platform(self) -> Platform:
        """The adapter for ``settings.platform``; ``ConfigurationError`` without credentials."""
        if self._platform is None:
            self._platform = get_platform(self.settings)
        return self._platform

    # SessionHost
    @property
    def response_budget(self) -> float | None:
        return self.settings.response_budget

    @property
    def hangup_grace(self) -> float:
        return self.settings.hangup_grace

    @property
    def apology(self) -> str | None:
        return self.settings.apology

    @property
    def recording_grace(self) -> float:
        # Only Twilio reports a call's end ("completed") and the <Record> action that
        # carries the recording independently, in either order; BlueVia sends
        # RecordingStopped before the HangUp.
        return self.settings.recording_grace if self.platform.name == "twilio" else 0.0

    @property
    def stall_timeout(self) -> float | None:
        return self.settings.stall_timeout or None

    @property
    def keepalive(self) -> float | None:
        return self.settings.keepalive if self.platform.keepalive else None

    def check(self, command: Command) -> None:
        self.platform.check(command)

    # RunnerHost
    @property
    def push_retries(self) -> int:
        return self.settings.push_retries

    @property
    def callback_url(self) -> str:
        """The URL the platform posts notifications to (with the secret)."""
        s = self.settings
        return f"{s.public_url}{s.path_prefix}/{s.secret}/events"

    @property
    def fallback_url(self) -> str:
        s = self.settings
        return f"{s.public_url}{s.path_prefix}/{s.secret}/fallback"

    def url_for(self, call_id: str) -> UrlFor:
        """The action URLs of a call's steps."""
        return self._url_for(call_id)

    def action_url(self, call_id: str, step: int) -> str:
        return f"{self.callback_url}?call={quote(call_id, safe='')}&step={step}"

    def check_platform(self) -> list[str]:
        """Warn (and return the warnings) about what the flows use that the platform lacks.

        A static look at the flows' source files for verb calls with options the
        platform does not support (``call.gather(valid_digits=...)`` on Twilio...).
        It cannot see everything a flow does; the verb itself raises
        ``UnsupportedFeature`` when a flow reaches it.
        """
        warnings = _static_check(self.platform, [spec.func for spec in self._flows.values()])
        for warning in warnings:
            logger.warning("%s", warning)
        return warnings

    # -- running -----------------------------------------------------------------------

    async def __aenter__(self) -> App:
        if self._stack is not None:
            raise RuntimeError("the app is already running")
        self.check_platform()  # warnings only: a verb raises when a flow reaches it
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._user_lifespan is not None:
                # First in, last out: the services outlive every call and every task.
                self._services = await stack.enter_async_context(self._user_lifespan(self))
            s = self.settings
            self._client = await stack.enter_async_context(
                httpx.AsyncClient(
                    **self.platform.client_options(),
                    timeout=s.push_timeout,
                    transport=self._transport,
                )
            )
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._spawner = Spawner(self._tg)
            self._call_log.open()
            if self._call_log.active:
                self._tg.start_soon(self._call_log.deliver)
            running.add(self)  # --log-format json finds its calls' flows
            if s.metrics and self.metrics is None:
                self.metrics = Metrics(self.platform.name)
            await self._open_store(stack)
            if self._durable is None:
                self._tg.start_soon(Expiry(self).run)
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._closing = True
        if self._durable is not None:
            # The calls go on: from the store, on another worker or after the restart.
            self._durable.evict_all()
        if self._client is not None:
            with anyio.CancelScope(shield=True):
                await hang_up_all(self, list(self.sessions.values()))
        stack, self._stack = self._stack, None
        spawner, self._spawner = self._spawner, None
        if spawner is not None:
            with anyio.CancelScope(shield=True):
                await spawner.aclose()
        await self._call_log.close()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        self._tg = None
        try:
            if stack is not None:
                return await stack.__aexit__(exc_type, exc, tb)
            return None
        finally:
            self._client = None
            self.sessions.clear()
            self._runners.clear()
            self._durable = None
            self._store = None
            self._services = _NO_SERVICES

    @property
    def store(self) -> Store | None:
        """The store durable calls are kept in (None: calls live in this process)."""
        return self._store

    @property
    def durable(self) -> DurableCalls | None:
        """The durable calls' host (None in memory mode, and on Telnyx)."""
        return self._durable

    async def _open_store(self, stack: AsyncExitStack) -> None:
        s = self.settings
        store = open_store(s.store, timeout=s.store_timeout)
        if store is None:
            return
        if self.metrics is not None:
            store = cast("Store", TimedStore(store, self.metrics))
        await store.open()
        stack.push_async_callback(store.aclose)
        self._store = store
        if self._secret_generated:
            # Every worker and every restart on this store accepts the same callback URLs.
            s.secret = await store.secret(s.secret)
            self._secret_generated = False
        if self.platform.mode == "execute":
            logger.warning("calls on %s are not durable yet: they live in this process "
                           "(the store at %s keeps only the webhook secret)", self.platform.name,
                           store.url)
            return
        self._durable = DurableCalls(self, store)
        assert self._tg is not None
        self._tg.start_soon(self._durable.sweep_forever)

    def runner_of(self, call_id: str) -> Runner | None:
        """The command runner of a live call on an ``execute``-mode platform."""
        return self._runners.get(call_id)

    def spawn(self, func: Callable[[], Coroutine[Any, Any, None]]) -> Cancellable:
        if self._spawner is None:
            raise RuntimeError("the app is not running")
        return self._spawner.spawn(func)

    def finished(self, session: Session) -> None:
        call_id = session.call.id
        if self.metrics is not None:
            self._count_end(session)
        if _logformat.remembering:
            _logformat.remember(session)
        if any(r.result is None for r in session.call.recordings):
            # The platform reports a recording once it is saved, often after the call.
            self._unsaved[call_id] = session.call
            if len(self._unsaved) > UNSAVED_MEMORY:
                self._unsaved.popitem(last=False)
        if self.sessions.get(call_id) is session:
            del self.sessions[call_id]
        if self._durable is not None:
            self._durable.forget(session)
        self._remember_ended(call_id, session)
        if self._call_log.active:
            self._record_end(session)
        waiter = self._end_waiters.pop(call_id, None)
        if waiter is not None:
            waiter.set()
        session.release()

    def _record_end(self, session: Session) -> None:
        for spec in self._flows.values():
            if spec.func is session.flow:
                self._call_log.ended(session, spec.name)
                return
        # Not a flow of this app: the stand-in that ends a call it does not know.
    def _count_end(self, session: Session) -> None:
        assert self.metrics is not None
        try:
            name = self.get_flow(session.flow).name
        except FlowNotFound:
            return  # a stand-in that only apologises: no call of a flow started
        outcome = ("error" if session.failed else
                   "caller_hung_up" if session.ended_by == "caller" else "completed")
        self.metrics.call_ended(name, outcome)

    def runner_finished(self, runner: Runner) -> None:
        call_id = runner.session.call.id
        if self._runners.get(call_id) is runner:
            del self._runners[call_id]
        self._remember_ended(call_id)

    def _remember_ended(self, call_id: str, session: Session | None = None) -> None:
        self._remember(call_id, _Ended.of(session))

    def _remember(self, call_id: str, ended: _Ended) -> None:
        self._ended[call_id] = ended
        if len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    def _mark_hung_up(self, call_id: str) -> None:
        self._hung_up[call_id] = None
        if len(self._hung_up) > ENDED_MEMORY:
            self._hung_up.popitem(last=False)
        waiter = self._hangup_waiters.pop(call_id, None)
        if waiter is not None:
            waiter.set()

    async def wait_hung_up(self, call_id: str) -> None:
        """Wait until the platform reports that the call ``call_id`` has hung up."""
        if call_id in self._hung_up:
            return
        waiter = self._hangup_waiters.setdefault(call_id, anyio.Event())
        await waiter.wait()

    async def wait_ended(self, call_id: str) -> None:
        """Wait until the call ``call_id`` is over and its flow has finished."""
        if call_id not in self.sessions:
            return
        waiter = self._end_waiters.setdefault(call_id, anyio.Event())
        await waiter.wait()

    # -- the platform's REST API ------------------------------------------------------------

    @property
    def http(self) -> httpx.AsyncClient:
        """The client for the platform's REST API (while the app runs)."""
        if self._client is None:
            raise RuntimeError("the app is not running")
        return self._client

    async def push(self, session: Session, commands: list[Command]) -> None:
        call_id = session.call.id
        runner = self._runners.get(call_id)
        if runner is not None:
            runner.push(commands)
            return
        if self.platform.mode == "execute":
            raise PlatformError(f"call {call_id} has no command runner")
        delay = 0.25
        attempts = max(1, self.settings.push_retries)
        what = _PUSH_NAMES.get(self.platform.name, "push")
        for attempt in range(1, attempts + 1):
            try:
                await self.platform.push(self.http, call_id, commands,
                                         url_for=self._url_for(call_id))
            except PlatformError as exc:
                if exc.gone:
                    session.end(by="caller")
                    return
                if exc.status is not None and exc.status < 500:
                    if self.metrics is not None:
                        self.metrics.platform_error("push")
                    raise
                problem = f"HTTP {exc.status}" if exc.status is not None else str(exc)
            else:
                if self.metrics is not None:
                    self.metrics.pushed()
                logger.info("%s → %s by REST", call_id, _summary(commands))
                return
            logger.warning("%s: %s attempt %d/%d failed: %s", call_id, what, attempt, attempts,
                           problem)
            if attempt < attempts:
                if self.metrics is not None:
                    self.metrics.platform_retry("push")
                await anyio.sleep(delay)
                delay *= 2
                if session.ended and session.ended_by != "app":
                    # The caller hung up meanwhile: nobody is left to hear the commands.
                    logger.info("%s: the call ended; no more %s attempts", call_id, what)
                    return
        if self.metrics is not None:
            self.metrics.platform_error("push")
        raise PlatformError(f"{what} failed {attempts} times")

    async def configure_numbers(self) -> dict[str, str]:
        """Point each of the app's numbers at this app; returns number → callback URL."""
        configured: dict[str, str] = {}
        for number in self._numbers:
            try:
                done = await self.platform.configure_number(
                    self.http, number, callback_url=self.callback_url,
                    fallback_url=self.fallback_url,
                )
            except PlatformError as exc:
                if exc.status is None:
                    raise PlatformError(
                        f"could not reach the platform at {self.settings.api_url} to "
                        f"configure {number}: {exc}"
                    ) from exc
                raise
            logger.info("configured %s", done)
            configured[number] = self.callback_url
        return configured

    async def call(
        self,
        to: str,
        *,
        flow: str | Flow | None = None,
        caller_id: str | None = None,
        data: dict[str, Any] | None = None,
        machine_detection: MachineDetection | None = None,
    ) -> OutboundCallResult:
        """Place an outbound call; the flow starts when it is answered.

        Returns once the call is answered (the flow then runs on its own) or has
        failed (busy, no answer...), in which case the flow never starts.
        ``machine_detection`` (``detect`` or ``wait_for_beep``) asks the platform who
        answered: the flow starts once it knows, with ``call.answered_by`` set, and
        with ``wait_for_beep`` after a machine's greeting (see ``callflow._machine``).
        """
        spec = self.get_flow(flow)
        if data is not None and self._durable is not None:
            try:
                json.dumps(data)
            except (TypeError, ValueError) as exc:
                raise TypeError("with a durable store, call(data=...) is kept in the call's "
                                f"history and must be JSON data: {exc}") from exc
        caller = caller_id or self.settings.caller_id or next(iter(self._numbers), "")
        if not caller:
            raise ConfigurationError("no caller id: pass caller_id= or register a flow number")
        token = secrets.token_urlsafe(12)
        pending = _Outbound(spec, e164(to, what="App.call()"),
                            e164(caller, what="App.call(caller_id=...)"), data,
                            machine_detection=machine_detection)
        detection: dict[str, Any] = {}
        if machine_detection is not None:
            if machine_detection not in ("detect", "wait_for_beep"):
                raise ValueError(f"machine_detection must be 'detect' or 'wait_for_beep', "
                                 f"not {machine_detection!r}")
            detection["machine_detection"] = machine_detection
        self._outbound[token] = pending
        try:
            try:
                call_id = await self.platform.create_call(
                    self.http, to=pending.to, caller_id=pending.caller_id,
                    callback_url=f"{self.callback_url}?out={token}",
                    fallback_url=self.fallback_url, **detection,
                )
            except PlatformError as exc:
                if self.metrics is not None:
                    self.metrics.platform_error("create_call")
                message = str(exc) if exc.status is not None else (
                    f"could not reach the platform: {exc}")
                raise OutboundCallError(message, status=exc.status, body=exc.body) from exc
            logger.info("%s: calling %s from %s with flow %s", call_id, pending.to,
                        pending.caller_id, spec.name)
            with anyio.move_on_after(self.settings.outbound_timeout):
                await pending.outcome.wait()
            if pending.status is None:
                pending.status, pending.reason = "failed", "no answer from the platform"
            if pending.status != "answered" and self._call_log.active:
                self._call_log.unanswered(
                    call_id=call_id, caller=pending.caller_id, callee=pending.to,
                    flow=spec.name, outcome=pending.status, placed=pending.placed,
                    data=data, reason=pending.reason)
            return OutboundCallResult(call_id, pending.status, pending.reason,
                                      answered_by=pending.answered_by)
        finally:
            del self._outbound[token]

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message: Message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            await self.__aenter__()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        try:
            while (await receive())["type"] != "lifespan.shutdown":
                pass
        finally:
            await self.__aexit__(None, None, None)
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        s = self.settings
        path: str = scope["path"]
        prefix = s.path_prefix
        if path == f"{prefix}/health":
            # Liveness for anyone; the figures are behind the secret ({prefix}/{secret}/health).
            await send_json(send, 200, {"status": "ok"})
            return
        parts = path[len(prefix) + 1:].split("/") if path.startswith(prefix + "/") else []
        if len(parts) == 1 and parts[0] in ("events", "fallback"):
            parts = ["", parts[0]]  # no secret at all: refused below, like a wrong one
        if len(parts) != 2 or parts[1] not in ("events", "fallback", "health", "metrics"):
            await send_json(send, 404, _error("not_found", f"no such endpoint: {path}"))
            return
        if not hmac.compare_digest(parts[0].encode(), s.secret.encode()):
            logger.warning("refused a notification with a wrong secret from %s",
                           _client(scope))
            await send_json(send, 403, _error("forbidden", "wrong or missing webhook secret"))
            return
        if parts[1] == "health":
            await send_json(send, 200, {"status": "ok", "calls": len(self.sessions)})
            return
        if parts[1] == "metrics":
            await self._scrape(send)
            return
        if scope["method"] != "POST":
            await send_json(send, 405, _error("method_not_allowed", "use POST"),
                            [(b"allow", b"POST")])
            return
        if self._tg is None:
            await send_json(send, 503, _error(
                "not_running", "the callflow app is not running: serve it with lifespan "
                "support (callflow serve) or enter it with 'async with app:'"))
            return
        try:
            body = await read_body(receive, s.max_body, s.body_timeout, drain_of(scope))
        except BodyTimeout:
            logger.warning("refused a notification whose body came too slowly")
            await send_json(send, 408, _error("timeout", "the request body came too slowly"),
                            [(b"connection", b"close")])
            return
        except BodyTooLarge:
            logger.warning("refused a notification over %d bytes", s.max_body)
            await send_json(send, 413, _error("too_large",
                                              f"notifications are limited to {s.max_body} bytes"))
            return
        raw_query: bytes = scope.get("query_string", b"")
        query_text = raw_query.decode("latin-1")
        raw_path: bytes = scope.get("raw_path") or path.encode()
        webhook = Webhook(
            method=scope["method"],
            # Signatures cover the URL the platform was given: the public one.
            url=f"{s.public_url}{raw_path.decode('latin-1')}"
                + (f"?{query_text}" if query_text else ""),
            path=path,
            query=_parse_query(query_text),
            headers=Headers(scope.get("headers", ())),
            body=body,
        )
        started = time.perf_counter() if self.metrics is not None else 0.0
        try:
            reply = await self.handle_webhook(webhook, fallback=parts[1] == "fallback")
        except NotificationError as exc:
            logger.warning("refused a notification: %s", exc.message)
            await send_json(send, exc.status, _error(exc.code, exc.message))
            return
        if self.metrics is not None:  # before it goes: a scrape after the reply counts it
            self.metrics.replied(started)
        await send_reply(send, reply.status, reply.body, reply.content_type)

    async def _scrape(self, send: Send) -> None:
        metrics = self.metrics
        if metrics is None:
            await send_json(send, 404, _error(
                "metrics_off", "metrics are off: serve with --metrics (CALLFLOW_METRICS=1)"))
            return
        # Shared figures are read from every worker's files: not on the event loop.
        body, content_type = await anyio.to_thread.run_sync(metrics.exposition)
        await send_reply(send, 200, body, content_type)

    async def handle_webhook(self, webhook: Webhook, *, fallback: bool = False) -> Reply:
        """One webhook in, one reply out.

        Raises ``NotificationError`` for what the platform should not have sent
        (a bad signature, a malformed body, an unknown call).
        """
        platform = self.platform
        platform.verify(webhook)
        events = platform.parse(webhook)
        for event in events:
            _check_text(event)
            if self.metrics is not None:
                self.metrics.notification(event.kind)
        if platform.mode == "execute":
            for event in events:
                await self._dispatch(event, webhook.query)
            return platform.reply(None, url_for=_no_url, first=False)
        answer: tuple[str, list[Command], bool] | None = None
        for event in events:
            call_id, commands, first = await self._handle_event(event, webhook.query, fallback)
            if commands is not None:
                answer = (call_id, commands, first)
        direct = platform.direct_reply(webhook)
        if direct is not None:
            return direct
        if answer is None:
            return platform.reply(None, url_for=_no_url, first=False)
        call_id, commands, first = answer
        try:
            reply = platform.reply(commands, url_for=self._url_for(call_id), first=first)
        except UnsupportedFeature as exc:  # a command that skipped Session.queue's check
            logger.error("%s: %s; apologising and hanging up", call_id, exc)
            session = self.sessions.get(call_id)
            if session is not None:
                session.end(by="app")
            reply = platform.reply(self._apology(), url_for=_no_url, first=False)
        if logger.isEnabledFor(logging.INFO):  # the summary re-reads the reply: not for nothing
            logger.info("%s → %s", call_id, _wire_summary(reply))
        return reply

    def _url_for(self, call_id: str) -> UrlFor:
        # action_url's text, with the part that is the same for every step built once:
        # a reply with a gather or a dial asks for several.
        prefix = f"{self.callback_url}?call={quote(call_id, safe='')}&step="
        return lambda step: f"{prefix}{step}"

    def _late_recording(self, event: Event) -> None:
        """A background recording saved after its call ended: onto ``call.recordings``."""
        call = self._unsaved.get(event.call_id)
        if call is None or event.step is None:
            return
        Recording.take(call.recordings, event.step, RecordResult(
            url=event.recording_url, duration=event.duration or 0.0))
        if all(r.result is not None for r in call.recordings):
            del self._unsaved[event.call_id]

    def _log_event(self, event: Event) -> None:
        logger.info("%s ← %s%s%s", event.call_id, event.name or event.kind,
                    f" step {event.step}" if event.step is not None else "",
                    f" digits {event.digits!r}" if event.digits is not None else "")

    async def _handle_event(
        self, event: Event, query: Mapping[str, str], fallback: bool
    ) -> tuple[str, list[Command] | None, bool]:
        """Feed one event to its session: ``(call id, commands or None, first batch?)``."""
        if logger.isEnabledFor(logging.INFO):  # every notification passes here
            self._log_event(event)
        call_id = event.call_id
        session = self.sessions.get(call_id)
        if fallback or event.kind == "callback_unavailable":
            if self._durable is not None:
                retried = await self._retry_from_fallback(event, query)
                if retried is not None:
                    return call_id, *retried
                await self._durable.end_call(call_id)
            return call_id, self._fallback(event, session), False
        if session is None and event.kind == "recording_saved" and (
                self._durable is None or call_id in self._unsaved):
            self._late_recording(event)
            return call_id, None, False
        if event.kind == "hangup" and (
            session is None or not event.leg_id or event.leg_id == session.caller_leg
        ):
            self._mark_hung_up(call_id)
        if self._durable is not None:
            commands, first = await self._durable.handle_event(event, query)
            return call_id, commands, first
        if session is None:
            ended = self._ended.get(call_id)
            if ended is not None:
                return call_id, *ended.answer(event)
            if self._closing and event.kind == "incoming":
                logger.warning("%s: a call arrived while shutting down; apologising", call_id)
                return call_id, self._apology(), True
            session = self._new_session(event, query)
            if session is None:
                return call_id, self._answer_unknown(event, query), False
        session.news_at = anyio.current_time()
        commands = await session.handle(event)
        first, session.first_batch = session.first_batch, False
        return call_id, commands, first

    async def _retry_from_fallback(self, event: Event, query: Mapping[str, str]
                                   ) -> tuple[list[Command] | None, bool] | None:
        """A durable call's fallback request, answered as the notification it stands for.

        The platform sends to the fallback URL what it could not deliver (BlueVia: the
        same body, renamed ``CallbackUnavailable`` with ``failedEventName``; Twilio: the
        same parameters).  When the worker that should have answered died, another one
        takes the call over from the store and answers: the caller hears no apology.
        """
        assert self._durable is not None
        original = self.platform.failed_event(event)
        if original is None:
            return None
        try:
            answer = await self._durable.handle_event(original, query)
        except NotificationError as exc:
            logger.warning("%s: could not answer the fallback as %s: %s", event.call_id,
                           original.name or original.kind, exc.message)
            return None
        logger.warning("%s: the platform fell back after %s failed; answered it from the "
                       "store", event.call_id, original.name or original.kind)
        return answer

    async def _dispatch(self, event: Event, query: Mapping[str, str]) -> None:
        """``execute`` mode: hand the event to its call's runner, starting one for a new call."""
        call_id = event.call_id
        runner = self._runners.get(call_id)
        if runner is not None and not (runner.over and event.kind == "recording_saved"):
            runner.session.news_at = anyio.current_time()
            runner.deliver(event)
            return
        if event.kind == "recording_saved":
            self._late_recording(event)
            return
        if call_id in self._ended:
            return
        if logger.isEnabledFor(logging.INFO):
            self._log_event(event)
        session = self._new_session(event, query)
        if session is None:
            if event.kind == "incoming" and self.flow_for_number(event.callee) is None:
                logger.error("%s: no flow answers %s and there is no default flow; rejecting",
                             call_id, event.callee)
                self._remember_ended(call_id)
                try:
                    await cast("ExecutingPlatform", self.platform).reject(self.http, event)
                except PlatformError as exc:
                    logger.warning("%s: could not reject the call: %s", call_id, exc)
            elif query.get("out", "") in self._outbound:
                self._answer_orphan(event, query, strict=False)
            else:
                # Its hang-up overtook its start (never start it), or a call this app does
                # not know (it restarted, or forgot the call): end it for good.
                self._remember_ended(call_id)
                if event.kind != "hangup" and event.kind not in LEG_FAILURES:
                    self._end_unknown_call(event)
            return
        runner = Runner(self, session, cast("ExecutingPlatform", self.platform), self.http,
                        first=event, callback_url=self.callback_url)
        self._runners[call_id] = runner
        self.spawn(runner.run)

    def _new_session(self, event: Event, query: Mapping[str, str]) -> Session | None:
        direction: Direction
        data: dict[str, Any] | None = None
        answered_by: AnsweredBy | None = None
        if event.kind == "incoming":
            spec = self.flow_for_number(event.callee)
            if spec is None:
                return None
            direction = "inbound"
            caller, callee = event.caller, event.callee
        elif event.kind == "answered" and query.get("out") in self._outbound:
            pending = self._outbound[query["out"]]
            if pending.status is not None:
                return None
            pending.status = "answered"
            if pending.machine_detection is not None:
                pending.answered_by = _answered_by(event.answered_by)
            pending.outcome.set()
            spec, direction, data = pending.spec, "outbound", pending.data
            caller, callee = pending.caller_id, pending.to
            answered_by = pending.answered_by
        else:
            return None
        call = Call(event.call_id, caller=caller, callee=callee, direction=direction, data=data,
                    services=self._services, answered_by=answered_by)
        if self._call_log.active:
            now = time.time()
            call._began = (pending.placed if direction == "outbound" else now, now)
        session = Session(self, call, spec.func)
        session.born_at = session.news_at = anyio.current_time()
        self.sessions[event.call_id] = session
        if self.metrics is not None and self._durable is None:  # durable: once it is stored
            self.metrics.call_started(spec.name, direction)
        logger.info("%s: %s call %s → %s runs flow %s", event.call_id, direction, caller,
                    callee, spec.name)
        return session

    def _answer_orphan(self, event: Event, query: Mapping[str, str], *, strict: bool = True
                       ) -> list[Command] | None:
        """An event for no live call: an outbound call's outcome, or a number nobody answers."""
        pending = self._outbound.get(query.get("out", ""))
        if pending is not None:
            if pending.status is None and (event.kind in LEG_FAILURES or event.kind == "hangup"):
                pending.status = _OUTBOUND_STATUS.get(event.kind, "failed")
                pending.reason = event.reason or event.name
                pending.outcome.set()
                # In all-events mode the leg's HangUp follows: answer it as an ended call's.
                self._remember_ended(event.call_id)
                logger.info("%s: outbound call to %s: %s", event.call_id, pending.to,
                            pending.status)
            return None
        if event.kind == "incoming":
            logger.error("%s: no flow answers %s and there is no default flow; hanging up",
                         event.call_id, event.callee)
            return [Hangup()]
        if strict:
            raise NotificationError(404, "unknown_call", f"no live call {event.call_id!r}")
        return None

    def _answer_unknown(self, event: Event, query: Mapping[str, str]) -> list[Command] | None:
        """Memory mode: an event for a call this app does not know (it restarted, or forgot
        the call long ago) ends the call for good, rather than a 404 the platform would
        fall back from (BlueVia) and whose fallback answer's own notifications would 404
        again, round and round."""
        if event.kind == "incoming" or query.get("out", "") in self._outbound:
            return self._answer_orphan(event, query)
        late: list[Command] = [Hangup()]
        if event.kind == "hangup" or event.kind in LEG_FAILURES:
            self._remember(event.call_id, _Ended(None, None, False, late))
            return None
        logger.warning("%s: %s for a call this app does not know (restarted, or forgot it); "
                       "apologising and hanging up", event.call_id, event.name or event.kind)
        commands = self._apology()
        if event.kind in _ANSWERED:
            self._remember(event.call_id, _Ended(event_key(event), commands, False, late))
            return commands
        # The call is busy with something (a prompt, a gather): interrupt it by REST.
        self._remember(event.call_id, _Ended(None, None, False, late))
        call_id = event.call_id

        async def push() -> None:
            try:
                await self.platform.push(self.http, call_id, commands, url_for=_no_url)
            except PlatformError as exc:
                if not exc.gone:
                    logger.warning("%s: could not end the unknown call: %s", call_id, exc)

        self.spawn(push)
        return None

    def _end_unknown_call(self, event: Event) -> None:
        """``execute`` mode's ``_answer_unknown``: a runner that apologises and hangs up."""
        apology = self.settings.apology

        async def apologise(call: Call) -> None:
            if apology:
                await call.say(apology)

        logger.warning("%s: %s for a call this app does not know (restarted, or forgot it); "
                       "apologising and hanging up", event.call_id, event.name or event.kind)
        call = Call(event.call_id, caller=event.caller, callee=event.callee)
        session = Session(self, call, apologise)
        # The call's own leg (its id): its first command is the apology, as if just answered.
        first = Event(kind="answered", call_id=event.call_id, leg_id=event.call_id,
                      name="unknown call")
        runner = Runner(self, session, cast("ExecutingPlatform", self.platform), self.http,
                        first=first, callback_url=self.callback_url)
        self._runners[event.call_id] = runner
        self.spawn(runner.run)

    def _apology(self) -> list[Command]:
        commands: list[Command] = [Hangup()]
        if self.settings.apology:
            commands.insert(0, Say(self.settings.apology))
        return commands

    def _why_fallback(self, event: Event, session: Session | None) -> str:
        """What the log says of a fallback: the platform's own reason where it gives one,
        and whether the app had answered (then the platform refused the answer)."""
        failed = self.platform.failed_event(event)
        name = (failed.name or failed.kind) if failed is not None else (
            event.reason or "a notification")
        # Twilio's fallback request carries ErrorCode and ErrorUrl (docs: "Fallback URLs");
        # BlueVia's carries only failedEventName.
        code = event.raw.get("ErrorCode")
        said = ""
        if isinstance(code, str) and code.isdigit():
            said = (f"; the platform's reason: error {code}, "
                    f"https://www.twilio.com/docs/api/errors/{code}")
        if session is not None and failed is not None:
            key, answer, _ = session.last_answer()
            if answer is not None and same_notification(event_key(failed), key):
                return (f"the platform did not accept the app's answer to {name} "
                        f"({_summary(answer)}){said}")
        return f"the platform could not reach the app with {name}{said}"

    def _fallback(self, event: Event, session: Session | None) -> list[Command]:
        if self._durable is None and session is None:
            ended = self._ended.get(event.call_id)
            if ended is not None and ended.late is not None:
                return ended.late  # apologised already: no second apology
            # Remembered as ended, so the apology's own notifications are answered harmlessly.
            self._remember(event.call_id, _Ended(None, None, False, [Hangup()]))
        logger.error("%s: %s; apologising and hanging up", event.call_id,
                     self._why_fallback(event, session))
        if session is not None:
            session.end(by="app")
        return self._apology()


def _no_url(step: int) -> str:
    raise RuntimeError("this reply has no action URLs")


_VERBS = frozenset({"say", "play", "wait", "gather", "record", "dial", "conference", "hangup",
                    "menu", "send_digits", "call", "transfer", "start_recording", "recording",
                    "enqueue", "take_next"})


def _static_check(platform: Platform, funcs: list[Flow]) -> list[str]:
    """Verb calls in the flows' source files with an option the platform does not support."""
    unsupported = platform.unsupported()
    files: dict[str, None] = {}
    for func in funcs:
        try:
            source_file = inspect.getsourcefile(func)
        except TypeError:
            continue
        if source_file:
            files[source_file] = None
    warnings: list[str] = []
    for file in files:
        try:
            tree = ast.parse(Path(file).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in _VERBS):
                continue
            verb = "gather" if node.func.attr == "menu" else node.func.attr
            found: list[tuple[str, str | None]] = (
                [(verb, None)] if (verb, None) in unsupported else [])
            found += [(verb, kw.arg) for kw in node.keywords if (verb, kw.arg) in unsupported]
            for key in found:
                what = f"{verb}({key[1]}=...)" if key[1] else f"{verb}()"
                warnings.append(f"{file}:{node.lineno}: {platform.name} does not support "
                                f"{what}: {unsupported[key]}")
            for problem in _literal_mistakes(node.func.attr, node, platform):
                warnings.append(f"{file}:{node.lineno}: {problem}")
    return warnings


def _literal_mistakes(verb: str, node: ast.Call, platform: Platform) -> list[str]:
    """What the verb's own checks (``callflow._checks``) or the platform will refuse in its
    literal arguments: a voice the platform does not speak in, a number that is not E.164."""
    keywords = {kw.arg: kw.value for kw in node.keywords if kw.arg}
    checks: list[tuple[ast.expr | None, Callable[[str], object]]] = []
    if verb == "say":
        def voice(v: str) -> None:
            check_voice(v, what="say()")
            platform.check(Say("", voice=v))

        checks.append((keywords.get("voice"), voice))
    if verb == "dial":
        checks.append((node.args[0] if node.args else None, lambda v: e164(v, what="dial()")))
        checks.append((keywords.get("caller_id"),
                       lambda v: e164(v, what="dial(caller_id=...)")))
    problems: list[str] = []
    for arg, check in checks:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            try:
                check(arg.value)
            except (ValueError, UnsupportedFeature) as exc:
                problems.append(str(exc))
    return problems


def _summary(commands: list[Command]) -> str:
    return _names([type(c).__name__.lower() for c in commands])


def _wire_summary(reply: Reply) -> str:
    """The commands of a reply as the platform sees them (BlueVia's JSON, TwiML verbs)."""
    names: list[str] = []
    try:
        if reply.content_type == "application/json":
            payload = reply.json_body()
            commands = payload.get("commands", []) if isinstance(payload, dict) else []
            names = [next(iter(c), "?") for c in commands if isinstance(c, dict)]
        elif reply.body:
            names = [child.tag for child in ElementTree.fromstring(reply.body)]
    except (ValueError, ElementTree.ParseError):
        return f"{len(reply.body)} bytes"
    return _names(names)


def _names(names: list[str]) -> str:
    if not names:
        return "no commands"
    return f"{len(names)} command{'s' if len(names) != 1 else ''}: {', '.join(names)}"


def _check_text(event: Event) -> None:
    """Refuse identifiers that cannot travel back out (JSON allows lone surrogates)."""
    digits = event.digits or ""
    # ASCII always encodes, and isascii() is a flag check: most notifications stop here.
    if (event.call_id.isascii() and event.leg_id.isascii() and event.caller.isascii()
            and event.callee.isascii() and digits.isascii()):
        return
    for value in (event.call_id, event.leg_id, event.caller, event.callee, digits):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise NotificationError(400, "invalid_field",
                                    "the notification holds text that is not valid Unicode"
                                    ) from None


def _parse_query(text: str) -> dict[str, str]:
    """``dict(parse_qsl(text))``: a query string's parameters, the last of a name winning.

    The app's own action URLs (``call=…&step=N``) hold nothing to unquote: those are
    split here, without parse_qsl's per-pair unquoting (a notification's hot path).
    """
    if not text:
        return {}
    if "%" in text or "+" in text:
        return dict(parse_qsl(text))
    query: dict[str, str] = {}
    for pair in text.split("&"):
        name, _, value = pair.partition("=")
        if value:  # parse_qsl drops blank values, and pairs with no "="
            query[name] = value
    return query


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"


_module_flows: list[tuple[Flow, tuple[str, ...], str | None]] = []


@overload
def flow(func: Flow, /) -> Flow: ...
@overload
def flow(*, number: str | None = None, numbers: tuple[str, ...] = (), name: str | None = None
         ) -> Callable[[Flow], Flow]: ...


def flow(
    func: Flow | None = None,
    /,
    *,
    number: str | None = None,
    numbers: tuple[str, ...] = (),
    name: str | None = None,
) -> Flow | Callable[[Flow], Flow]:
    """Register a flow at module level, for flows files without an ``App``.

    ``callflow serve`` collects the flows a file registers this way into an app.
    """

    def register(f: Flow) -> Flow:
        check_flow(f, str(name or getattr(f, "__name__", "flow")))
        _module_flows.append((f, ((number,) if number else ()) + tuple(numbers), name))
        return f

    return register(func) if func is not None else register
