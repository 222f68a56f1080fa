"""Platform-neutral notifications, as the session runtime and ``call.events()`` see them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = ("Event", "EventKind", "HangupBy")

EventKind: TypeAlias = Literal[
    "incoming",
    "answered",
    "ringing",
    "digits",
    "resumed",
    "busy",
    "no_answer",
    "failed",
    "unreachable",
    "hangup",
    "playback_started",
    "playback_stopped",
    "recording_started",
    "recording_stopped",
    "recording_saved",
    "callback_unavailable",
    "other",
]
HangupBy: TypeAlias = Literal["caller", "app"]

LEG_FAILURES: frozenset[str] = frozenset({"busy", "no_answer", "failed", "unreachable"})


@dataclass(frozen=True, slots=True)
class Event:
    """One notification from the platform about a call or one of its legs.

    ``caller`` and ``callee`` are the leg's parties in E.164 (``+34…``);
    ``step`` is set on answers to a blocking verb (digits, resumed).  ``id`` is
    the platform's own id for the notification when it has one (Telnyx), which
    tells a redelivery from a new event.  A ``digits`` event answered by speech has
    ``speech`` (the transcript) and ``confidence`` set.  Kind ``other`` is a notification with
    no neutral meaning (``name`` says which: Telnyx ``call.bridged``...).
    ``recording_saved`` is a background recording saved (``step`` is its id).
    ``answered_by`` is who answered an outbound call placed with machine detection
    (``human``, ``machine``, ``unknown``).
    """

    kind: EventKind
    call_id: str
    leg_id: str = ""
    caller: str = ""
    callee: str = ""
    timestamp: str = ""
    step: int | None = None
    digits: str | None = None
    recording_url: str | None = None
    duration: float | None = None
    reason: str | None = None
    by: HangupBy | None = None
    name: str = ""
    id: str = ""
    speech: str | None = None
    confidence: float | None = None
    answered_by: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
