"""``--log-format json``: one JSON object per log line, for log shippers.

Every line about a call carries its ``call_id`` and ``flow``: lines logged from inside a
flow (the flow's own ``logging`` calls included) through a context variable the session
sets once when the flow starts; callflow's own lines about a call from their first argument
(the house rule: a ``callflow`` logger's message that starts with ``%s`` names a call there,
and no other does). The flow's name is looked up among the running apps'
calls, and remembered (``remember``, called as a call ends) for the call's last lines,
written after the app has forgotten the call.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections import OrderedDict
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import App
    from ._session import Session

__all__ = ("CURRENT", "JsonFormatter", "remember", "running")

CURRENT: ContextVar[tuple[str, object] | None] = ContextVar("callflow_call", default=None)
"""The call id and flow function of the flow that runs in this task (set by the session as
its flow starts). Not the session itself: the task's context would hold it in a reference
cycle, and a finished session must be freed without the cyclic collector."""

running: weakref.WeakSet[App] = weakref.WeakSet()
"""The apps running in this process (an app adds itself as it starts)."""

REMEMBERED = 10_000
"""How many calls' flow names the formatter keeps, for lines written after a call ends."""

_flows: OrderedDict[str, str] = OrderedDict()
remembering = False
"""True once a ``JsonFormatter`` exists: only then do ending calls leave their flow's name."""


def remember(session: Session) -> None:
    """Keep an ending call's flow name for its last lines (its reply's, after it ends)."""
    _flow(session.call.id, session.flow)


def _flow(call_id: str, flow: object | None) -> str:
    name = _flows.get(call_id)
    if name is not None:
        return name
    for app in list(running):
        func: object | None = flow
        if func is None:
            found = app.sessions.get(call_id)
            func = found.flow if found is not None and found.host is app else None
        if func is not None:
            spec = next((s for s in app.flows.values() if s.func is func), None)
            if spec is not None:
                name = spec.name
                break
    if name is None:
        return ""
    _flows[call_id] = name
    if len(_flows) > REMEMBERED:
        _flows.popitem(last=False)
    return name


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "call_id", "flow", "exception"}`` per line.

    ``call_id`` and ``flow`` are there only on lines about a call; ``exception`` only with
    a traceback. ``time`` is UTC, ISO 8601, to the millisecond.
    """

    def __init__(self) -> None:
        global remembering
        super().__init__()
        remembering = True

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_id, flow = self._call_of(record)
        if call_id:
            line["call_id"] = call_id
            if flow:
                line["flow"] = flow
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)

    def _call_of(self, record: logging.LogRecord) -> tuple[str, str]:
        current = CURRENT.get()
        if current is not None:
            call_id, flow = current
            return call_id, _flow(call_id, flow)
        # callflow's own lines about a call start with its id: "%s: ..." or "%s ← ...".
        if (record.name.startswith("callflow") and isinstance(record.msg, str)
                and record.msg.startswith("%s") and isinstance(record.args, tuple)
                and record.args and isinstance(record.args[0], str)):
            call_id = record.args[0]
            return call_id, _flow(call_id, None)
        return "", ""


def _iso(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
