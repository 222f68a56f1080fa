"""Call records: what the app tells the user's own systems when a call ends.

``App.on_call_end(hook)`` registers a hook; each call that ends (inbound or outbound,
answered or not, in memory or durable mode, on every platform) makes one
``CallRecord``, handed to every hook in the order they were registered.  Hooks run in
one task of their own, one record after another, so a slow hook delays records, never
a call; a hook that raises is logged and the next one runs.  In durable mode the record
comes from the worker that saw the call end, once.

With no hook registered nothing here runs: the session runtime checks one attribute.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._results import DialStatus

if TYPE_CHECKING:
    from ._call import Direction
    from ._session import Session

__all__ = ("CallEndHook", "CallLog", "CallRecord", "HungUpBy")

logger = logging.getLogger("callflow")

HungUpBy: TypeAlias = Literal["caller", "app"]

CallEndHook: TypeAlias = Callable[["CallRecord"], Awaitable[None] | None]
"""A function (sync or async) called with the record of each call that ends."""

BACKLOG = 10_000
"""Records waiting for slow hooks; past this, new ones are dropped with a warning."""

DRAIN_TIMEOUT = 10.0
"""Seconds the hooks get, when the app stops, to take the records still waiting."""


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call, once it is over: who, which flow, when, how it went.

    ``outcome`` is what the network did: ``answered`` (the flow ran), or for an
    outbound call that never started its flow ``busy``, ``no_answer`` or ``failed``.
    ``error`` is the flow's own failure (the exception it raised, as text), if any.
    Times are UTC; ``duration`` is seconds from the answer to the end (0 unanswered).
    ``data`` is a JSON-able copy of ``call.data`` as the flow left it; ``reason`` is the
    platform's word on an outbound call that was not answered.
    ``platform_call_id`` is the platform's id of the call's own leg where it differs
    from ``call_id`` (BlueVia's ``legId``); None where they are the same.
    """

    call_id: str
    caller: str
    callee: str
    flow: str
    direction: Direction
    outcome: DialStatus
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    duration: float
    hung_up_by: HungUpBy | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None
    reason: str | None = None
    platform_call_id: str | None = None

    @property
    def answered(self) -> bool:
        return self.outcome == "answered"

    def to_json(self) -> dict[str, Any]:
        """The record as JSON data (times as ISO 8601 text), e.g. for one line of a log."""
        record = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        for name in ("started_at", "answered_at", "ended_at"):
            if record[name] is not None:
                record[name] = record[name].isoformat()
        return record


def _utc(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def _plain(value: Any) -> Any:
    """``json.dumps``'s ``default``: results as dicts, times as text, the rest as repr."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` that is JSON data all the way down (see ``_plain``)."""
    try:
        copy: dict[str, Any] = json.loads(json.dumps(data, default=_plain))
    except (TypeError, ValueError, RecursionError) as exc:  # a key that is no string...
        return {"unreadable": f"call.data could not be copied: {exc}"}
    return copy


class CallLog:
    """The app's call-end hooks, and the task that hands them the records."""

    __slots__ = ("_done", "_receive", "_send", "hooks")

    def __init__(self) -> None:
        self.hooks: list[CallEndHook] = []
        self._send: MemoryObjectSendStream[CallRecord] | None = None
        self._receive: MemoryObjectReceiveStream[CallRecord] | None = None
        self._done: anyio.Event | None = None

    @property
    def active(self) -> bool:
        """Whether records are being made (hooks, and the app running)."""
        return self._send is not None

    def open(self) -> None:
        """The app starts: records from now on go to the hooks (if there are any)."""
        if self.hooks:
            self._send, self._receive = anyio.create_memory_object_stream[CallRecord](BACKLOG)
            self._done = anyio.Event()

    async def deliver(self) -> None:
        """Hand every record to the hooks, until ``close``; run in the app's task group."""
        receive, done = self._receive, self._done
        if receive is None or done is None:
            return
        try:
            await self._hand_over(receive)
        finally:
            done.set()

    async def _hand_over(self, receive: MemoryObjectReceiveStream[CallRecord]) -> None:
        async with receive:
            async for record in receive:
                for hook in self.hooks:
                    try:
                        result = hook(record)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        logger.exception("%s: a call-end hook (%s) failed", record.call_id,
                                         getattr(hook, "__qualname__", hook))

    async def close(self) -> None:
        """The app stops: let the hooks take what is waiting (boundedly), then stop."""
        send, self._send = self._send, None
        if send is None:
            return
        send.close()  # the hooks' task ends once it has handed over what is waiting
        if self._done is not None:
            with anyio.move_on_after(DRAIN_TIMEOUT, shield=True):
                await self._done.wait()
        self._receive = self._done = None

    def emit(self, record: CallRecord) -> None:
        if self._send is None:
            return
        try:
            self._send.send_nowait(record)
        except anyio.WouldBlock:
            logger.warning("%s: %d call records wait for the call-end hooks; dropped this "
                           "one", record.call_id, BACKLOG)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    # -- what the app tells it -----------------------------------------------------------

    def ended(self, session: Session, flow: str) -> None:
        """An answered call's flow is over (``App.finished``)."""
        call = session.call
        now = time.time()
        placed, answered = call._began or (now, now)
        error = session.error
        self.emit(CallRecord(
            call_id=call.id, caller=call.caller, callee=call.callee, flow=flow,
            direction=call.direction, outcome="answered",
            started_at=_utc(placed), answered_at=_utc(answered), ended_at=_utc(now),
            duration=round(max(0.0, now - answered), 3),
            hung_up_by="app" if session.ended_by == "app" else "caller",
            data=_jsonable(call.data),
            error=None if error is None else f"{type(error).__name__}: {error}",
            platform_call_id=(session.caller_leg if session.caller_leg
                              and session.caller_leg != call.id else None),
        ))

    def unanswered(self, *, call_id: str, caller: str, callee: str, flow: str,
                   outcome: DialStatus, placed: float, data: dict[str, Any] | None,
                   reason: str | None) -> None:
        """An outbound call that never started its flow (``App.call``)."""
        now = time.time()
        self.emit(CallRecord(
            call_id=call_id, caller=caller, callee=callee, flow=flow, direction="outbound",
            outcome=outcome, started_at=_utc(placed), answered_at=None, ended_at=_utc(now),
            duration=0.0, data=_jsonable(data or {}), reason=reason,
        ))

