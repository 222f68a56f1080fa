"""What the blocking verbs return.

Expected outcomes (no input, a busy line) are values here, not exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = ("DialResult", "DialStatus", "GatherResult", "QueueResult", "QueueStatus",
           "RecordResult")

DialStatus: TypeAlias = Literal["answered", "busy", "no_answer", "failed"]
QueueStatus: TypeAlias = Literal["bridged", "left", "failed"]


@dataclass(frozen=True, slots=True)
class GatherResult:
    """The keys a caller pressed, or what they said.

    ``digits`` excludes the finish key, which is in ``finish_key`` if it was
    pressed; ``timed_out`` is true when every attempt ended with no input.  For
    speech, ``transcript`` is what the platform recognised and ``confidence`` how
    sure it is (0 to 1; None when the platform does not say).
    """

    digits: str = ""
    finish_key: str | None = None
    timed_out: bool = False
    transcript: str | None = None
    confidence: float | None = None

    @property
    def spoken(self) -> bool:
        """True when the caller answered by speaking."""
        return self.transcript is not None


@dataclass(frozen=True, slots=True)
class RecordResult:
    """A recording: where to fetch it, and how long it lasts in seconds.

    How long ``url`` works is the platform's call: on Telnyx it is a presigned URL good
    for 10 minutes after the recording is saved, so fetch (or copy) it at once; on
    Twilio it lasts until the recording is deleted from the account (fetching it takes
    the account's credentials unless the account makes recordings public); on BlueVia
    (the simulator) for as long as the simulator runs.  ``url`` is None when there is
    no recording: Twilio skips an empty one (nobody spoke).
    """

    url: str | None = None
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class DialResult:
    """How a dial ended: who answered, and how long they talked (seconds)."""

    status: DialStatus
    number: str | None = None
    duration: float = 0.0
    reason: str | None = None

    @property
    def answered(self) -> bool:
        return self.status == "answered"


@dataclass(frozen=True, slots=True)
class QueueResult:
    """How a caller's wait in a queue ended, and how long they waited (seconds).

    ``bridged``: an agent took them (``enqueue`` returns when that conversation is over);
    ``left``: they waited ``max_wait`` seconds; ``failed``: the platform could not queue
    them (the queue is full...), ``reason`` says why.
    """

    status: QueueStatus
    waited: float = 0.0
    reason: str | None = None

    @property
    def bridged(self) -> bool:
        return self.status == "bridged"
