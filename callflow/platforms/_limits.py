"""Bounds on what a webhook may carry: every adapter's ``parse`` passes its events through here.

A webhook comes from outside, and what it carries is kept (a session per call id), logged,
and sent back (the ids in action URLs).  Providers' identifiers are short (a Twilio
``CallSid`` is 34 characters, a Telnyx ``call_control_id`` some 80), so the bounds below
are generous for them and still keep a hostile value from costing anything: a field over
its bound is a ``400 invalid_field``, like any other malformed field.

Numbers are parsed only once their text is known to be short: ``int()`` of 5,000 digits
raises (Python limits integer conversion to 4,300 digits) and costs quadratic time below
that.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._events import Event
from .._exceptions import NotificationError

__all__ = ("MAX_DIGITS", "MAX_ID", "MAX_STEP", "MAX_TEXT", "checked", "parse_step")

MAX_ID = 256
"""Characters in a call, leg or event id, and in a caller or callee address."""
MAX_DIGITS = 128
"""Keys in one notification's digits."""
MAX_TEXT = 2048
"""Characters in any other text an event carries (a reason, a recording URL, a timestamp)."""
MAX_STEP = 999_999_999
"""The largest step an action URL can name: nine digits, far more than any call takes."""


def _bad(message: str) -> NotificationError:
    return NotificationError(400, "invalid_field", message)


def parse_step(query: Mapping[str, str]) -> int | None:
    """The ``step`` query parameter as a number (None when absent); ``400`` unless it is one."""
    text = query.get("step")
    if text is None:
        return None
    # isdigit() alone accepts "²" and other digits int() refuses; the length bounds int().
    if not (0 < len(text) <= 9 and text.isascii() and text.isdigit()):
        raise _bad("the 'step' query parameter must be a number of at most 9 digits")
    return int(text)


def checked(events: list[Event]) -> list[Event]:
    """``events``, once every field is known to be within its bound (else a 400)."""
    for event in events:
        if (len(event.call_id) > MAX_ID or len(event.leg_id) > MAX_ID or len(event.id) > MAX_ID
                or len(event.caller) > MAX_ID or len(event.callee) > MAX_ID):
            raise _bad(f"an id or a number in the notification is over {MAX_ID} characters")
        if event.digits is not None and len(event.digits) > MAX_DIGITS:
            raise _bad(f"the notification's digits are over {MAX_DIGITS} keys")
        if (len(event.timestamp) > MAX_TEXT or len(event.name) > MAX_TEXT
                or len(event.reason or "") > MAX_TEXT
                or len(event.recording_url or "") > MAX_TEXT):
            raise _bad(f"a field of the notification is over {MAX_TEXT} characters")
        if event.step is not None and not 0 <= event.step <= MAX_STEP:
            raise _bad("the notification's step is out of range")
    return events
