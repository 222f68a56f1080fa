"""``App``: the registry of flows, and the ASGI application the platform posts to."""

from __future__ import annotations

import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, overload
from urllib.parse import parse_qsl, quote

import anyio
import httpx
from anyio.abc import TaskGroup

from ._asgi import BodyTooLarge, read_body, send_json
from ._call import Call, Direction
from ._commands import Command, Hangup, Say
from ._events import LEG_FAILURES, Event
from ._exceptions import (
    ConfigurationError,
    FlowNotFound,
    NotificationError,
    OutboundCallError,
    PlatformError,
)
from ._results import DialStatus
from ._session import Flow, Session
from ._settings import Settings
from ._spawner import Cancellable, Spawner
from ._types import Message, Receive, Scope, Send
from .platforms import ApiRequest, Platform, get_platform

__all__ = ("App", "FlowSpec", "OutboundCallResult", "flow")

logger = logging.getLogger("callflow")

_OUTBOUND_STATUS: dict[str, DialStatus] = {"busy": "busy", "no_answer": "no_answer"}

ENDED_MEMORY = 10_000
"""How many ended call ids are remembered, to answer their late notifications harmlessly."""


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
    status: DialStatus | None = None
    reason: str | None = None


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
        **overrides: Any,
    ) -> None:
        """``transport`` replaces the network under the platform client (tests: no sockets)."""
        self._settings = settings
        self._transport = transport
        self._overrides = overrides
        self._flows: dict[str, FlowSpec] = {}
        self._numbers: dict[str, str] = {}
        self._default: str | None = None
        self.sessions: dict[str, Session] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._end_waiters: dict[str, anyio.Event] = {}
        self._outbound: dict[str, _Outbound] = {}
        self._tg: TaskGroup | None = None
        self._spawner: Spawner | None = None
        self._client: httpx.AsyncClient | None = None
        self._stack: AsyncExitStack | None = None
        self._platform: Platform | None = None

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
        return self._settings

    def configure(self, settings: Settings) -> None:
        """Replace the app's settings (before it starts)."""
        if self._tg is not None:
            raise ConfigurationError("configure() must be called before the app starts")
        if not settings.secret:
            settings.secret = secrets.token_urlsafe(24)
        self._settings = settings
        self._platform = None

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            self._platform = get_platform(self.settings.platform)
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
    def callback_url(self) -> str:
        """The URL the platform posts notifications to (with the secret)."""
        s = self.settings
        return f"{s.public_url}{s.path_prefix}/{s.secret}/events"

    @property
    def fallback_url(self) -> str:
        s = self.settings
        return f"{s.public_url}{s.path_prefix}/{s.secret}/fallback"

    def action_url(self, call_id: str, step: int) -> str:
        return f"{self.callback_url}?call={quote(call_id, safe='')}&step={step}"

    # -- running -----------------------------------------------------------------------

    async def __aenter__(self) -> App:
        if self._stack is not None:
            raise RuntimeError("the app is already running")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            s = self.settings
            self._client = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=s.platform_url,
                    auth=(s.api_key, s.api_secret),
                    timeout=s.push_timeout,
                    transport=self._transport,
                )
            )
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._spawner = Spawner(self._tg)
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
        stack, self._stack = self._stack, None
        spawner, self._spawner = self._spawner, None
        if spawner is not None:
            with anyio.CancelScope(shield=True):
                await spawner.aclose()
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

    def spawn(self, func: Callable[[], Coroutine[Any, Any, None]]) -> Cancellable:
        if self._spawner is None:
            raise RuntimeError("the app is not running")
        return self._spawner.spawn(func)

    def finished(self, session: Session) -> None:
        call_id = session.call.id
        if self.sessions.get(call_id) is session:
            del self.sessions[call_id]
        self._remember_ended(call_id)
        waiter = self._end_waiters.pop(call_id, None)
        if waiter is not None:
            waiter.set()

    def _remember_ended(self, call_id: str) -> None:
        self._ended[call_id] = None
        if len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    async def wait_ended(self, call_id: str) -> None:
        """Wait until the call ``call_id`` is over and its flow has finished."""
        if call_id not in self.sessions:
            return
        waiter = self._end_waiters.setdefault(call_id, anyio.Event())
        await waiter.wait()

    # -- the platform's REST API ------------------------------------------------------------

    async def _request(self, request: ApiRequest) -> httpx.Response:
        if self._client is None:
            raise RuntimeError("the app is not running")
        return await self._client.request(
            request.method, request.path, json=request.json, headers=dict(request.headers)
        )

    async def push(self, session: Session, commands: list[Command]) -> None:
        call_id = session.call.id
        body = self._render(session, commands)
        request = self.platform.set_commands_request(call_id, body)
        delay = 0.25
        attempts = max(1, self.settings.push_retries)
        for attempt in range(1, attempts + 1):
            try:
                response = await self._request(request)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 300:
                    logger.info("%s → %s via setcommands", call_id, _summary(body))
                    return
                if response.status_code in (404, 409):
                    session.end(by="caller")
                    return
                if response.status_code < 500:
                    raise PlatformError(
                        f"setcommands refused ({response.status_code}): {response.text[:200]}",
                        status=response.status_code, body=response.text,
                    )
                problem = f"HTTP {response.status_code}"
            logger.warning("%s: setcommands attempt %d/%d failed: %s", call_id, attempt,
                           attempts, problem)
            if attempt < attempts:
                await anyio.sleep(delay)
                delay *= 2
        raise PlatformError(f"setcommands failed {attempts} times")

    async def configure_numbers(self) -> dict[str, str]:
        """Point each of the app's numbers at this app; returns number → callback URL."""
        configured: dict[str, str] = {}
        for number in self._numbers:
            request = self.platform.configure_number_request(
                number, callback_url=self.callback_url, fallback_url=self.fallback_url
            )
            try:
                response = await self._request(request)
            except httpx.HTTPError as exc:
                raise PlatformError(
                    f"could not reach the platform at {self.settings.platform_url} to configure "
                    f"{number}: {exc}"
                ) from exc
            if response.status_code >= 300:
                raise PlatformError(
                    f"the platform refused to configure {number} ({response.status_code}): "
                    f"{response.text[:200]}",
                    status=response.status_code, body=response.text,
                )
            configured[number] = self.callback_url
        return configured

    async def call(
        self,
        to: str,
        *,
        flow: str | Flow | None = None,
        caller_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> OutboundCallResult:
        """Place an outbound call; the flow starts when it is answered.

        Returns once the call is answered (the flow then runs on its own) or has
        failed (busy, no answer...), in which case the flow never starts.
        """
        spec = self.get_flow(flow)
        caller = caller_id or self.settings.caller_id or next(iter(self._numbers), "")
        if not caller:
            raise ConfigurationError("no caller id: pass caller_id= or register a flow number")
        token = secrets.token_urlsafe(12)
        pending = _Outbound(spec, _normalise(to), _normalise(caller), data)
        self._outbound[token] = pending
        try:
            request = self.platform.create_call_request(
                to=pending.to, caller_id=pending.caller_id,
                callback_url=f"{self.callback_url}?out={token}", fallback_url=self.fallback_url,
            )
            try:
                response = await self._request(request)
            except httpx.HTTPError as exc:
                raise OutboundCallError(f"could not reach the platform: {exc}") from exc
            try:
                call_id = self.platform.call_id_from_create_response(
                    response.status_code, response.content
                )
            except PlatformError as exc:
                raise OutboundCallError(str(exc), status=exc.status, body=exc.body) from exc
            logger.info("%s: calling %s from %s with flow %s", call_id, pending.to,
                        pending.caller_id, spec.name)
            with anyio.move_on_after(self.settings.outbound_timeout):
                await pending.outcome.wait()
            if pending.status is None:
                return OutboundCallResult(call_id, "failed", "no answer from the platform")
            return OutboundCallResult(call_id, pending.status, pending.reason)
        finally:
            del self._outbound[token]

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

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
            await send_json(send, 200, {"status": "ok", "calls": len(self.sessions)})
            return
        parts = path[len(prefix) + 1:].split("/") if path.startswith(prefix + "/") else []
        if len(parts) == 1 and parts[0] in ("events", "fallback"):
            parts = ["", parts[0]]  # no secret at all: refused below, like a wrong one
        if len(parts) != 2 or parts[1] not in ("events", "fallback"):
            await send_json(send, 404, _error("not_found", f"no such endpoint: {path}"))
            return
        if not hmac.compare_digest(parts[0].encode(), s.secret.encode()):
            logger.warning("refused a notification with a wrong secret from %s",
                           _client(scope))
            await send_json(send, 403, _error("forbidden", "wrong or missing webhook secret"))
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
            body = await read_body(receive, s.max_body)
        except BodyTooLarge:
            logger.warning("refused a notification over %d bytes", s.max_body)
            await send_json(send, 413, _error("too_large",
                                              f"notifications are limited to {s.max_body} bytes"))
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        try:
            status, payload = await self.handle_notification(
                body, query, fallback=parts[1] == "fallback"
            )
        except NotificationError as exc:
            logger.warning("refused a notification: %s", exc.message)
            await send_json(send, exc.status, _error(exc.code, exc.message))
            return
        await send_json(send, status, payload)

    async def handle_notification(
        self, body: bytes, query: Mapping[str, str], *, fallback: bool = False
    ) -> tuple[int, Any]:
        """One notification in, one response out: ``(status, JSON body)``.

        Raises ``NotificationError`` for what the platform should not have sent.
        """
        event = self.platform.parse_notification(body, query)
        call_id = event.call_id
        logger.info("%s ← %s%s%s", call_id, event.name or event.kind,
                    f" step {event.step}" if event.step is not None else "",
                    f" digits {event.digits!r}" if event.digits is not None else "")
        session = self.sessions.get(call_id)
        if fallback or event.kind == "callback_unavailable":
            return 200, self._fallback(event, session)
        if session is None:
            if call_id in self._ended:
                return 200, {"commands": []}
            session = self._new_session(event, query)
            if session is None:
                return 200, self._answer_orphan(event, query)
        commands = await session.handle(event)
        if commands is None:
            return 200, {"commands": []}
        payload = self._render(session, commands)
        logger.info("%s → %s", call_id, _summary(payload))
        return 200, payload

    def _render(self, session: Session, commands: list[Command]) -> Any:
        first, session.first_batch = session.first_batch, False
        call_id = session.call.id
        return self.platform.render_commands(
            commands, url_for=lambda step: self.action_url(call_id, step), first=first
        )

    def _new_session(self, event: Event, query: Mapping[str, str]) -> Session | None:
        direction: Direction
        data: dict[str, Any] | None = None
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
            pending.outcome.set()
            spec, direction, data = pending.spec, "outbound", pending.data
            caller, callee = pending.caller_id, pending.to
        else:
            return None
        call = Call(event.call_id, caller=caller, callee=callee, direction=direction, data=data)
        session = Session(self, call, spec.func)
        self.sessions[event.call_id] = session
        logger.info("%s: %s call %s → %s runs flow %s", event.call_id, direction, caller,
                    callee, spec.name)
        return session

    def _answer_orphan(self, event: Event, query: Mapping[str, str]) -> Any:
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
            return {"commands": []}
        if event.kind == "incoming":
            logger.error("%s: no flow answers %s and there is no default flow; hanging up",
                         event.call_id, event.callee)
            return self.platform.render_commands([Hangup()], url_for=lambda s: "", first=False)
        raise NotificationError(404, "unknown_call", f"no live call {event.call_id!r}")

    def _fallback(self, event: Event, session: Session | None) -> Any:
        logger.error("%s: the platform could not reach the app (%s); apologising and hanging up",
                     event.call_id, event.reason or "callback unavailable")
        if session is not None:
            session.end(by="app")
        commands: list[Command] = [Hangup()]
        if self.settings.apology:
            commands.insert(0, Say(self.settings.apology))
        return self.platform.render_commands(commands, url_for=lambda s: "", first=False)


def _summary(payload: Any) -> str:
    commands = payload.get("commands", []) if isinstance(payload, dict) else []
    names = [next(iter(c), "?") for c in commands if isinstance(c, dict)]
    if not names:
        return "no commands"
    return f"{len(names)} command{'s' if len(names) != 1 else ''}: {', '.join(names)}"


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
        _module_flows.append((f, ((number,) if number else ()) + tuple(numbers), name))
        return f

    return register(func) if func is not None else register
