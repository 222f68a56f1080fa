"""What happened on a call, for people (`str(transcript)`) and for machines (`to_json()`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ("EntryKind", "Transcript", "TranscriptEntry")

EntryKind = Literal[
    "call",  # a call starts (inbound or outbound)
    "ringing",
    "answered",
    "busy",
    "no-answer",
    "failed",
    "not-reachable",
    "speak",  # text to speech
    "play",  # an audio URL
    "beep",
    "music",  # a lone conference member's hold music
    "silence",  # a `wait`
    "keys",  # a key pressed by a party
    "listen",  # the platform starts collecting digits
    "talk",  # a party speaks (heard by a recording)
    "said",  # a party says words (heard by a gather listening for speech)
    "recognised",  # what the platform's speech recogniser made of them
    "recording-started",
    "recording-stopped",
    "bridged",
    "unbridged",
    "conference-joined",
    "conference-left",
    "notification",  # a notification POSTed to the application
    "error",  # the application misbehaved (bad response, unreachable, ...)
    "hangup",
]

_ICONS: dict[str, str] = {
    "call": "☎ ",
    "ringing": "🔔",
    "answered": "✆ ",
    "busy": "⛔",
    "no-answer": "⌛",
    "failed": "✖ ",
    "not-reachable": "✖ ",
    "speak": "🔊",
    "play": "🎵",
    "beep": "🔔",
    "music": "🎶",
    "silence": "… ",
    "keys": "⌨ ",
    "listen": "👂",
    "talk": "🗣 ",
    "said": "🗣 ",
    "recognised": "📝",
    "recording-started": "⏺ ",
    "recording-stopped": "⏹ ",
    "bridged": "🔗",
    "unbridged": "⛓ ",
    "conference-joined": "👥",
    "conference-left": "👥",
    "notification": "→ ",
    "error": "⚠ ",
    "hangup": "📴",
}


@dataclass(frozen=True)
class TranscriptEntry:
    """One thing that happened, `at` seconds after the call started."""

    at: float
    kind: EntryKind
    text: str
    leg_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        """One human-readable line, e.g. `  2.3s  ⌨  1`."""
        icon = _ICONS.get(self.kind, "• ")
        text = f'"{self.text}"' if self.kind in ("speak", "said") else self.text
        return f"{self.at:6.1f}s  {icon} {text}"


@dataclass
class Transcript:
    """Everything that happened on one call, in order."""

    call_id: str
    caller: str
    callee: str
    direction: Literal["inbound", "outbound"]
    entries: list[TranscriptEntry] = field(default_factory=list)
    ended: bool = False
    duration: float | None = None

    def texts(self, kind: EntryKind) -> list[str]:
        """The texts of every entry of one kind, e.g. `texts("speak")`."""
        return [entry.text for entry in self.entries if entry.kind == kind]

    @property
    def spoken(self) -> list[str]:
        """Everything said by text to speech, in order."""
        return self.texts("speak")

    @property
    def keys(self) -> str:
        """Every key pressed by the caller, concatenated."""
        return "".join(
            entry.text for entry in self.entries if entry.kind == "keys" and entry.data.get("main")
        )

    def events(self) -> list[str]:
        """The event names of every notification sent, in order."""
        return [str(e.data["eventName"]) for e in self.entries if e.kind == "notification"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transcript:
        """The transcript of `to_dict()` (e.g. fetched from a simulator's HTTP extension)."""
        try:
            entries = [
                TranscriptEntry(
                    float(e["at"]), e["kind"], str(e["text"]), e.get("leg_id"),
                    dict(e.get("data") or {}),
                )
                for e in data["entries"]
            ]
            duration = data.get("duration")
            return cls(
                str(data["call_id"]), str(data["caller"]), str(data["callee"]),
                data["direction"], entries, bool(data.get("ended", False)),
                None if duration is None else float(duration),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a transcript: {exc!r}") from None

    def to_json(self, *, indent: int | None = 2) -> str:
        """The transcript as JSON (see the reference docs for the shape)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def render(self, *, notifications: bool = False) -> str:
        """Readable text; notification lines only when `notifications` is true."""
        lines = [
            entry.render()
            for entry in self.entries
            if notifications or entry.kind != "notification"
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()
