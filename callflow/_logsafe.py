"""Log lines that outside text cannot forge: control characters in logged values are escaped.

Call ids, numbers, digits and reasons come from webhooks, and callflow logs them.  A call id
holding a newline would otherwise start a log line of its own, written by whoever sent the
webhook ("...\\n2026-01-01 INFO callflow: +34... paid").  ``EscapeControl`` is a filter on
callflow's own loggers: it rewrites a record's arguments (and its message, which callflow
always writes on one line) so that every character ``str.isprintable`` refuses appears
escaped the way ``repr`` shows it (``\\n``, ``\\x1b``, ``\\u2028``).  Tracebacks
(``exc_info``) are left as they are: multi-line by nature, and read as one block.

The check costs one ``isprintable()`` per string argument of a record that is emitted at
all (logger filters run after the level check), and nothing more for printable text.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ("LOGGERS", "EscapeControl", "escape", "install")

LOGGERS = ("callflow", "callflow.simulator")
"""callflow's loggers (a logger's filters do not see its children's records)."""

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _char(c: str) -> str:
    named = _NAMED.get(c)
    if named is not None:
        return named
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    """``text`` with every non-printable character escaped; ``text`` itself when there is none."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _char(c) for c in text)


_PLAIN = (int, float, type(None))


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, _PLAIN):
        return value
    # An exception or another object whose text may hold outside data (a platform's error
    # body): kept as it is unless its text needs escaping (it is then logged as that text).
    try:
        text = str(value)
    except Exception:
        return value
    return value if text.isprintable() else escape(text)


class EscapeControl(logging.Filter):
    """Escapes control characters in a record's message and arguments (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = escape(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_safe(arg) for arg in args)
        elif isinstance(args, Mapping):
            record.args = {key: _safe(arg) for key, arg in args.items()}
        return True


_FILTER = EscapeControl()


def install() -> None:
    """Put the filter on callflow's loggers (once: adding it again changes nothing)."""
    for name in LOGGERS:
        logging.getLogger(name).addFilter(_FILTER)
