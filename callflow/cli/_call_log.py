"""``callflow serve --call-log FILE``: each call's record, one JSON line appended per call."""

from __future__ import annotations

import json
import os

from .._app import App
from .._exceptions import ConfigurationError
from .._records import CallRecord

__all__ = ("log_calls_to",)


def log_calls_to(app: App, path: str) -> None:
    """Append a JSON line to ``path`` for each call the app ends (see ``App.on_call_end``).

    The file is opened once, before any worker is forked, in append mode: each record is
    one ``write`` of one line, so several workers' lines never interleave.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigurationError(f"--call-log: cannot open {path}: {exc.strerror}") from None

    def write(record: CallRecord) -> None:
        line = json.dumps(record.to_json(), ensure_ascii=False) + "\n"
        os.write(fd, line.encode("utf-8"))

    app.on_call_end(write)
