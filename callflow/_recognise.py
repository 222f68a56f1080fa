"""What the simulated speech recogniser (the simulator's and FakeCall's) makes of words said.

A real recogniser hears audio; the simulator's callers speak text (``say:`` script
steps, ``Leg.say``), so recognising is matching text.  Like Twilio's ``hints`` (docs:
TwiML ``<Gather>``, "hints": words and phrases that "improve recognition"), the hints
pull a near miss onto the phrase the flow expects: the closest hint wins when it is
close enough, and its likeness is the confidence.  Without a close hint the caller's
words come through as said, with a middling confidence, as a recogniser would
transcribe an unexpected answer.  A pure function: tests hit it directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher

__all__ = ("recognise",)

CLOSE_ENOUGH = 0.75
"""How alike (0-1, difflib's ratio) an utterance and a hint must be for the hint to win."""
UNHINTED = 0.8
"""The confidence of words that match no hint: heard, but nothing confirms them."""


def _words(text: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def recognise(said: str, hints: Sequence[str] = ()) -> tuple[str, float]:
    """The transcript of ``said`` and the confidence (0 to 1), given the flow's hints."""
    heard = _words(said)
    if not heard:
        return "", 0.0
    best, likeness = "", 0.0
    for hint in hints:
        wanted = _words(hint)
        if not wanted:
            continue
        ratio = SequenceMatcher(None, heard, wanted).ratio()
        # A hint said inside a longer answer ("sales please") is heard as that hint.
        if f" {wanted} " in f" {heard} ":
            ratio = max(ratio, 0.9)
        if ratio > likeness:
            best, likeness = hint, ratio
    if best and likeness >= CLOSE_ENOUGH:
        return best, round(likeness, 2)
    return " ".join(said.split()), UNHINTED if not hints else round(min(UNHINTED, 0.5), 2)
