"""``sqlite:///PATH``: the stdlib's ``sqlite3`` in WAL mode, for one host.

Several processes on one host may share the file (``callflow serve --workers``):
WAL lets readers run beside the one writer, and ``BEGIN IMMEDIATE`` takes the
write lock at the start of each transaction, so two workers never deadlock on
an upgrade from reading to writing; a busy file is waited on up to the timeout.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._exceptions import ConfigurationError
from ._sql import SQLStore

__all__ = ("SQLiteStore", "sqlite_path")


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:`` URL names: ``sqlite:///rel/path`` or ``sqlite:////abs/path``."""
    if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
        raise ConfigurationError(
            f"{url!r} is not a SQLite store URL: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    return Path(url[len("sqlite:///"):])


class SQLiteStore(SQLStore):
    """Calls in one SQLite file."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.path = sqlite_path(url).absolute()
        super().__init__(f"sqlite:///{self.path}", timeout=timeout, threads=1)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create {self.path.parent}: {exc}") from exc
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                               check_same_thread=False)
        # Switching a new file to WAL takes an exclusive lock, and SQLite answers "locked"
        # at once, without its busy wait, to a second process doing the same: retry.
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    conn.close()
                    raise
                time.sleep(0.01)  # in the store's thread, not the event loop
        # NORMAL: a commit survives a crash of the process (the WAL is written before
        # the call goes on); only a power loss may take the last few.
        conn.execute("PRAGMA synchronous=NORMAL")
        self._conn = conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._conn
        if conn is None:
            raise ConfigurationError("the store is not open")
        with self._lock:
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
            finally:
                cur.close()

    def _unavailable(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.OperationalError)
