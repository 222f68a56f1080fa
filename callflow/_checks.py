"""What a verb checks about its arguments before anything reaches the platform.

A mistake in a verb's argument (a number written the local way, a voice the platform
does not know, a negative timeout) is a ``ValueError`` raised from the line that made
it, saying how to write it instead: the platform would refuse the command later, far
from the line, with a reason the app's log could not always see.

Pure functions: the verbs in ``callflow._call`` call them, and tests hit them directly.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ("E164", "VOICES", "check_count", "check_keys", "check_seconds", "check_voice",
           "e164")

E164 = re.compile(r"\+[1-9][0-9]{1,14}")
"""An E.164 number: a plus, a country code, at most 15 digits in all."""

VOICES: tuple[str, ...] = ("female", "male")
"""The voices every platform speaks in (each adapter maps them to one of its own)."""

KEYS = "0123456789*#"
_VOICE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,99}")


def e164(number: Any, *, what: str) -> str:
    """``number`` as E.164 (a ``tel:`` prefix dropped), or a ``ValueError`` saying how.

    ``what`` names the argument in the message (``dial()``, ``dial(caller_id=...)``).
    """
    if not isinstance(number, str):
        raise ValueError(f"{what}: a phone number is text like '+34910000001', "
                         f"not {type(number).__name__}")
    text = number.strip()
    if text.startswith("tel:"):
        text = text[4:]
    if E164.fullmatch(text):
        return text
    raise ValueError(f"{what}: {number!r} is not a phone number in E.164 form; "
                     f"{_how_to_write(text)}")


def _how_to_write(text: str) -> str:
    digits = re.sub(r"[\s().\-/]", "", text)
    hint = "write '+', the country code and the number, with no spaces (e.g. +34910000001)"
    if digits.startswith("00") and digits[2:].isdigit() and len(digits) > 4:
        return f"the international prefix 00 is written '+': {'+' + digits[2:]}"
    if digits.startswith("+") and digits[1:].isdigit() and digits != text:
        return f"leave out spaces and punctuation: {digits}"
    if digits.isdigit():
        return f"{hint}; a number without its country code cannot be dialled"
    return hint


def check_voice(voice: Any, *, what: str) -> None:
    """Raise ``ValueError`` unless ``voice`` is a voice's name (``VOICES`` or a provider's).

    Which provider voices a platform speaks in (Twilio's ``Polly.Lucia``, Telnyx's
    ``Azure.*``...) is its adapter's to say (``Platform.check``, at start-up and per
    command); this check refuses what is no voice name on any platform.
    """
    if not isinstance(voice, str) or not _VOICE_NAME.fullmatch(voice):
        names = " or ".join(repr(v) for v in VOICES)
        raise ValueError(f"{what}: voice {voice!r} is not a voice's name; use {names}, or one "
                         "of the platform's own voices (e.g. 'Polly.Lucia' on Twilio)")


def check_seconds(value: Any, *, what: str, minimum: float = 0.0, maximum: float | None = None,
                  above: bool = False) -> float:
    """``value`` as seconds (``float``), within bounds, or a ``ValueError``.

    ``above``: ``minimum`` itself is refused (a timeout of 0 s waits for nothing).
    """
    if type(value) is float or type(value) is int:  # the usual case: no isinstance walk
        seconds = float(value)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of seconds, not {value!r}")
    else:
        seconds = float(value)
    low = seconds <= minimum if above else seconds < minimum
    if not math.isfinite(seconds) or low or (maximum is not None and seconds > maximum):
        bound = f"more than {minimum:g}" if above else f"at least {minimum:g}"
        if maximum is not None:
            bound += f" and at most {maximum:g}"
        raise ValueError(f"{what} must be {bound} seconds, not {value!r}")
    return seconds


def check_count(value: Any, *, what: str, minimum: int, maximum: int) -> int:
    """``value`` as a whole number within bounds, or a ``ValueError``."""
    if type(value) is int and minimum <= value <= maximum:  # the usual case, quickly
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not (
            minimum <= value <= maximum):
        raise ValueError(f"{what} must be a whole number from {minimum} to {maximum}, "
                         f"not {value!r}")
    return value


def check_keys(value: Any, *, what: str, single: bool) -> str:
    """Keypad keys (``single``: one key, or none), or a ``ValueError``."""
    if not isinstance(value, str) or any(key not in KEYS for key in value) or (
            single and len(value) > 1) or (not single and not value):
        kind = "one key of" if single else "keys among"
        raise ValueError(f"{what} must be {kind} {KEYS!r}, not {value!r}")
    return value
