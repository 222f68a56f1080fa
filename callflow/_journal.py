"""A durable call's history, and replaying a flow against it.

The history is a list of JSON entries, appended as the call goes on:

- ``start``: the flow, the call's parties and data, the caller's leg, the first key;
- ``verb``: a blocking verb that was answered: its step, the command, the result,
  and the key of the notification that answered it;
- ``step`` / ``value``: what ``call.step`` returned or raised, and the values of
  ``call.now()``, ``call.random()`` and ``call.uuid()``;
- ``answer`` / ``push`` / ``held``: a batch of commands answered to a notification,
  pushed through the REST API, or held for a ``Resume`` marker's callback;
- ``event``: a notification a waiting ``dial`` or ``record`` collected (legs
  answering, a recording that stopped) before the one that answered it;
- ``end``: the call is over.

Replaying re-runs the flow from the start: each verb, step and value with a
recorded outcome returns it at once and sends nothing, until the flow reaches
the point where the history ends (the *frontier*).  A flow that asks for something
else than its history holds at that point has changed (or depends on data that
was not recorded): ``NonDeterminismError``.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._commands import (
    Command,
    Conference,
    ConferenceOptions,
    Dequeue,
    Dial,
    Enqueue,
    Gather,
    Hangup,
    Pause,
    Play,
    Record,
    Resume,
    Say,
    SendDigits,
    StartRecording,
    StopRecording,
    Transfer,
)
from ._events import Event
from ._exceptions import HistoryError, NonDeterminismError, StepError
from ._results import DialResult, GatherResult, QueueResult, RecordResult
from ._waiter import Waiter
from .stores import Entry

__all__ = (
    "HistoryError",
    "Journal",
    "NonDeterminismError",
    "StepError",
    "decode_command",
    "decode_event",
    "decode_result",
    "encode_command",
    "encode_event",
    "encode_result",
)

_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in (
    Say, Play, Pause, SendDigits, Gather, Record, Dial, Conference, ConferenceOptions, Hangup,
    Resume, Transfer, StartRecording, StopRecording, Enqueue, Dequeue,
    GatherResult, RecordResult, DialResult, QueueResult,
)}


# -- encoding ----------------------------------------------------------------------------------


_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _TYPES.values()}
"""Each known type's field names (``dataclasses.fields`` is slow on a notification's path)."""
_PLAIN = (str, int, float, bool, type(None))


def _encode(value: Any) -> Any:
    if isinstance(value, _PLAIN):
        return value
    names = _FIELDS.get(type(value))
    if names is not None:
        out: dict[str, Any] = {"type": type(value).__name__}
        for name in names:
            out[name] = _encode(getattr(value, name))
        return out
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        raise HistoryError(f"{type(value).__name__} cannot be kept in a call's history")
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        cls = _TYPES.get(value.get("type", ""))
        if cls is None:
            raise HistoryError(f"unknown type in history: {value.get('type')!r}")
        fields = {k: _decode(v) for k, v in value.items() if k != "type"}
        if cls is Dial:
            fields["numbers"] = tuple(fields["numbers"])
        elif cls is Gather and "hints" in fields:
            fields["hints"] = tuple(fields["hints"])
        try:
            return cls(**fields)
        except TypeError as exc:
            raise HistoryError(f"cannot rebuild {cls.__name__}: {exc}") from exc
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def encode_command(command: Command) -> dict[str, Any]:
    encoded: dict[str, Any] = _encode(command)
    return encoded


def decode_command(data: Any) -> Command:
    command: Command = _decode(data)
    return command


encode_result = _encode
decode_result = _decode

_EVENT_FIELDS = ("kind", "call_id", "leg_id", "caller", "callee", "timestamp", "step", "digits",
                 "recording_url", "duration", "reason", "by", "name", "id", "speech",
                 "confidence")


def encode_event(event: Event) -> dict[str, Any]:
    return {name: getattr(event, name) for name in _EVENT_FIELDS
            if getattr(event, name) not in (None, "")}


def decode_event(data: dict[str, Any]) -> Event:
    try:
        return Event(**{k: v for k, v in data.items() if k in _EVENT_FIELDS})
    except TypeError as exc:
        raise HistoryError(f"cannot rebuild an event: {exc}") from exc


def encode_exception(exc: BaseException) -> dict[str, Any]:
    args = [a for a in exc.args if isinstance(a, str | int | float | bool) or a is None]
    return {"module": type(exc).__module__, "name": type(exc).__qualname__,
            "message": str(exc), "args": args if len(args) == len(exc.args) else None}


def decode_exception(data: dict[str, Any]) -> BaseException:
    """The exception a step raised, as near to the original as can be rebuilt."""
    module, name, message = data.get("module", ""), data.get("name", ""), data.get("message", "")
    args = data.get("args")
    try:
        cls: Any = importlib.import_module(module)
        for part in name.split("."):
            cls = getattr(cls, part)
        if isinstance(cls, type) and issubclass(cls, Exception) and args is not None:
            exc: BaseException = cls(*args)
            return exc
    except Exception:
        pass
    return StepError(name or "Exception", message)


# -- the journal ---------------------------------------------------------------------------------


Commit = Callable[[], Awaitable[None]]


class Journal:
    """One call's history as a session sees it: what to replay, and what to append next."""

    __slots__ = (
        "caught_up",
        "commit",
        "fence",
        "frontier_events",
        "held",
        "last_answer",
        "lock",
        "marker",
        "new",
        "pending_command",
        "pending_step",
        "position",
        "replay",
        "spent_legs",
        "step_counter",
        "unanswered_key",
        "version",
    )

    def __init__(self, commit: Commit) -> None:
        self.commit = commit
        self.new: list[Entry] = []
        self.replay: list[Entry] = []
        """The verb, step and value entries, in the order the flow made them."""
        self.position = 0
        self.caught_up = Waiter()
        """Set once the replayed flow has reached the frontier (or ended)."""
        self.pending_step: int | None = None
        """The step of a blocking verb that was sent but not answered yet."""
        self.pending_command: dict[str, Any] | None = None
        self.held: list[Command] | None = None
        self.frontier_events: list[Event] = []
        self.step_counter = 0
        self.unanswered_key: list[Any] | None = None
        self.marker: int | None = None
        self.last_answer: Entry | None = None
        self.spent_legs: set[str] = set()
        self.version = 0
        """How many entries the store holds (what this copy of the call has seen)."""
        self.fence = 0
        """The lease this worker holds on the call (its fencing number)."""
        self.lock: Any = None
        """Serialises this call's appends (made when first needed: most calls never wait)."""

    @property
    def replaying(self) -> bool:
        return not self.caught_up.is_set()

    def add(self, entry: Entry) -> None:
        entry["at"] = round(time.time(), 3)  # for people reading the history; never compared
        self.new.append(entry)

    def take(self) -> list[Entry]:
        entries, self.new = self.new, []
        return entries

    def next(self) -> Entry | None:
        """The next recorded verb, step or value (None: the frontier is reached)."""
        if self.position < len(self.replay):
            entry = self.replay[self.position]
            self.position += 1
            return entry
        return None

    def load(self, entries: list[Entry]) -> None:
        """Read a history (after its ``start`` entry) into this new journal, for replay."""
        for entry in entries:
            kind = entry.get("t")
            if kind in ("verb", "step", "value"):
                self.replay.append(entry)
                if kind == "verb":
                    if entry.get("step") == self.pending_step:
                        self.pending_step = self.pending_command = None
                    self.frontier_events = []
                    self.unanswered_key = entry.get("key")
                    self.spent_legs.update(entry.get("legs") or ())
            elif kind in ("answer", "push", "held"):
                self.step_counter = max(self.step_counter, int(entry.get("counter", 0)))
                block = entry.get("block")
                if block is not None:
                    self.pending_command = block
                    self.pending_step = int(block["step"])
                self.held = ([decode_command(c) for c in entry.get("cmds", [])]
                             if kind == "held" else None)
                self.marker = entry.get("marker")
                if kind == "answer":
                    self.unanswered_key = None
                    self.last_answer = entry
            elif kind == "event":
                self.frontier_events.append(decode_event(entry.get("event", {})))
            elif kind not in ("start", "end", "note", "recording"):
                raise HistoryError(f"unknown history entry {kind!r}")
        self.position = 0
