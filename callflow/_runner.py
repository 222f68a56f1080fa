"""The command runner: one call's neutral command queue, executed through a REST API.

``execute``-mode platforms (Telnyx Call Control) take no commands in webhook
replies: every command is a REST call of its own, and its completion arrives
later as a webhook.  The runner gives such a platform what BlueVia gives a
``respond``-mode one for free: a command queue with BlueVia's semantics
(a batch answering a blocking step replaces the queue; a pushed batch replaces
it and interrupts the command in progress), executed one command at a time.

Per call, the runner is two tasks: the *pump* takes the call's webhooks in
arrival order, drops redeliveries (by event id), notices the caller hanging up,
and hands every other event to whoever ``watch``-es for it; the *executor* pops
commands and has the platform carry each out (``ExecutingPlatform.execute``),
which registers a watch *before* it sends the REST request, so a completion that
overtakes the request's own response is not lost.  Completions of blocking steps
become neutral events (digits, resumed(step), leg events) fed to
``session.handle``, whose answer becomes the queue.

Stale completions (a late ``call.speak.ended`` of an interrupted command) are
told apart by the platform's tags (Telnyx ``client_state``), and repeated
requests are made idempotent by the platform's ``command_id``.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._commands import Command, Hangup
from ._events import LEG_FAILURES, Event
from ._exceptions import CallflowError, PlatformError
from .platforms._base import ApiRequest

if TYPE_CHECKING:
    from ._metrics import Metrics
    from ._session import Session
    from .platforms._base import ExecutingPlatform

__all__ = ("CallControl", "CallGone", "Runner", "RunnerHost")

logger = logging.getLogger("callflow")

SEEN_MEMORY = 512
"""How many event ids a call remembers, to drop redeliveries."""


class CallGone(CallflowError):
    """The platform says the call no longer exists: nothing more can be done on it."""


class RunnerHost(Protocol):
    """What a runner needs from the app."""

    @property
    def push_retries(self) -> int: ...

    metrics: Metrics | None

    def runner_finished(self, runner: Runner) -> None: ...


class Watch:
    """Events matching a predicate, from the moment the watch was registered."""

    __slots__ = ("_receive", "_send", "match")

    def __init__(self, match: Callable[[Event], bool]) -> None:
        self.match = match
        self._send: MemoryObjectSendStream[Event]
        self._receive: MemoryObjectReceiveStream[Event]
        self._send, self._receive = anyio.create_memory_object_stream[Event](math.inf)

    def offer(self, event: Event) -> bool:
        if not self.match(event):
            return False
        self._send.send_nowait(event)
        return True

    async def get(self) -> Event:
        """The next matching event (waits for it)."""
        return await self._receive.receive()

    def close(self) -> None:
        self._send.close()
        self._receive.close()


class CallControl:
    """One call as an executing platform sees it while carrying out a command."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    @property
    def call_id(self) -> str:
        return self._runner.session.call.id

    @property
    def leg(self) -> str:
        """The caller's leg: the one the call's commands act on."""
        return self._runner.leg

    @property
    def http(self) -> httpx.AsyncClient:
        return self._runner.http

    @property
    def callback_url(self) -> str:
        """Where the app takes webhooks (new legs are pointed there)."""
        return self._runner.callback_url

    @property
    def session(self) -> Session:
        return self._runner.session

    @property
    def answered(self) -> bool:
        return self._runner.answered

    @answered.setter
    def answered(self, value: bool) -> None:
        self._runner.answered = value

    def next_seq(self) -> int:
        """A new number for a command's tag, unique within the call."""
        self._runner.seq += 1
        return self._runner.seq

    @contextmanager
    def watch(self, match: Callable[[Event], bool]) -> Iterator[Watch]:
        """Collect the call's events that ``match`` while the block runs."""
        watch = Watch(match)
        self._runner.watches.append(watch)
        try:
            yield watch
        finally:
            self._runner.watches.remove(watch)
            watch.close()

    async def post(self, request: ApiRequest) -> Any:
        """Send a request; retry a 5xx or an unreachable platform; the JSON answer.

        The request carries its ``command_id``, so a retry of a request that did
        arrive is ignored by the platform.  Raises ``CallGone`` when the platform
        says the call is over, ``PlatformError`` for any other refusal.
        """
        platform = self._runner.platform
        metrics = self._runner.host.metrics
        attempts = max(1, self._runner.host.push_retries)
        delay = 0.25
        problem = ""
        for attempt in range(1, attempts + 1):
            try:
                response = await request.send(self.http)
            except PlatformError as exc:
                problem = str(exc)
            else:
                if response.status_code < 300:
                    if metrics is not None:
                        metrics.pushed()
                    try:
                        return response.json() if response.content else None
                    except ValueError:
                        return None
                error = platform.error(response)
                if error.gone:
                    raise CallGone(str(error))
                if response.status_code < 500:
                    if metrics is not None:
                        metrics.platform_error("command")
                    raise error
                problem = f"HTTP {response.status_code}"
            logger.warning("%s: %s %s attempt %d/%d failed: %s", self.call_id, request.method,
                           request.path, attempt, attempts, problem)
            if attempt < attempts:
                if metrics is not None:
                    metrics.platform_retry("command")
                await anyio.sleep(delay)
                delay *= 2
        if metrics is not None:
            metrics.platform_error("command")
        raise PlatformError(f"{request.method} {request.path} failed {attempts} times: {problem}")

    async def feed(self, event: Event) -> list[Command] | None:
        """Give the session a neutral event; its answer (None: leave the queue be)."""
        return await self._runner.session.handle(event)

    def event(self, kind: Any, **fields: Any) -> Event:
        """A neutral event about this call (the caller's leg unless ``leg_id`` is given)."""
        fields.setdefault("leg_id", self.leg)
        return Event(kind=kind, call_id=self.call_id, **fields)


class Runner:
    """Executes one call's commands on an ``execute``-mode platform."""

    def __init__(self, host: RunnerHost, session: Session, platform: ExecutingPlatform,
                 http: httpx.AsyncClient, *, first: Event, callback_url: str) -> None:
        self.host = host
        self.session = session
        self.platform = platform
        self.http = http
        self.first = first
        self.leg = first.leg_id
        self.callback_url = callback_url
        self.answered = first.kind == "answered"
        self.seq = 0
        self.watches: list[Watch] = []
        self.over = False
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._send, self._receive = anyio.create_memory_object_stream[Event](math.inf)
        self._pushed: list[Command] | None = None
        self._wake = anyio.Event()
        self._current: Command | None = None
        self._scope: anyio.CancelScope | None = None
        self._tg_scope: anyio.CancelScope | None = None
        self.control = CallControl(self)
        self.remember(first)

    def remember(self, event: Event) -> bool:
        """Note the event's id; false when it was seen before (a redelivery)."""
        if not event.id:
            return True
        if event.id in self._seen:
            return False
        self._seen[event.id] = None
        if len(self._seen) > SEEN_MEMORY:
            self._seen.popitem(last=False)
        return True

    # -- from the app -------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        """Take one of the call's webhooks (never blocks)."""
        if self.over or not self.remember(event):
            return
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._send.send_nowait(event)  # unless the runner is just winding up

    def push(self, commands: list[Command]) -> None:
        """Replace the queue with ``commands``, interrupting the command in progress."""
        self._pushed = list(commands)
        if self._scope is not None:
            self._scope.cancel()
        self._wake.set()

    # -- the two tasks ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg_scope = tg.cancel_scope
                tg.start_soon(self._pump)
                await self._execute()
                tg.cancel_scope.cancel()
        except Exception:
            logger.exception("%s: the command runner failed; ending the call",
                             self.session.call.id)
            self.session.end(by="app")
        finally:
            self.over = True
            self._send.close()
            for watch in list(self.watches):
                watch.close()
            self.host.runner_finished(self)

    async def _pump(self) -> None:
        async with self._receive:
            async for event in self._receive:
                if event.leg_id == self.leg and (event.kind == "hangup"
                                                 or event.kind in LEG_FAILURES):
                    await self._caller_gone(event)
                    return
                if event.kind == "recording_saved":  # a background recording's file
                    await self.session.handle(event)
                    continue
                for watch in list(self.watches):
                    watch.offer(event)

    async def _caller_gone(self, event: Event) -> None:
        if event.kind != "hangup":
            event = Event(kind="hangup", call_id=event.call_id, leg_id=event.leg_id,
                          caller=event.caller, callee=event.callee, timestamp=event.timestamp,
                          reason=event.reason, by="caller", name=event.name, id=event.id,
                          raw=event.raw)
        await self.session.handle(event)
        self.stop()

    async def interrupt(self) -> None:
        """Stop executing the call's commands, and the one in progress on the platform
        (the call is about to be ended some other way: the app shuts down)."""
        current = self._current
        self.stop()
        if current is not None:
            with suppress(CallflowError):
                await self.platform.stop(self.control, current)

    def stop(self) -> None:
        """Stop executing the call's commands (it is over, or ended some other way)."""
        self.over = True
        if self._tg_scope is not None:
            self._tg_scope.cancel()

    async def _execute(self) -> None:
        ctl = self.control
        try:
            commands = await ctl.feed(self.first)
            queue = deque(await self.platform.start(ctl, self.first, commands or []) or [])
            if not queue and self.session.done:
                return
            while True:
                if self._pushed is not None:
                    queue, self._pushed = deque(self._pushed), None
                if not queue:
                    if self.session.done or self.session.ended:
                        return
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                command = queue.popleft()
                replacement = await self._run_one(command)
                if isinstance(command, Hangup):
                    return
                if replacement is not None:
                    queue = deque(replacement)
        except CallGone as exc:
            logger.info("%s: the call is gone (%s)", ctl.call_id, exc)
            await self.session.handle(ctl.event("hangup", by="caller", reason="gone"))
        except PlatformError as exc:
            # Refused, or its completion never came (a command_timeout).
            logger.error("%s: %s; ending the call", ctl.call_id, exc)
            self.session.end(by="app")
            with anyio.CancelScope(shield=True), anyio.move_on_after(5), suppress(CallflowError):
                await self.platform.execute(ctl, Hangup())

    async def _run_one(self, command: Command) -> list[Command] | None:
        self._current = command
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                return await self.platform.execute(self.control, command)
            finally:
                self._scope = None
                self._current = None
        # Interrupted by a push: stop what was running (its late completion is stale).
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self.platform.stop(self.control, command)
            except CallflowError as exc:
                logger.warning("%s: could not interrupt %s: %s", self.session.call.id,
                               type(command).__name__, exc)
        return None
