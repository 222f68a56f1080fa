"""``postgresql://…``: psycopg 3 and its connection pool, for several hosts.

Install with ``pip install "callflow[postgresql]"``.  psycopg's synchronous pool
runs in worker threads (as SQLite does), which keeps it off the event loop and
working the same under asyncio and trio.  Row locks (``SELECT … FOR UPDATE``)
serialise the workers that touch one call; leases are timed by each host's
clock, so keep the hosts' clocks in step (NTP).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._exceptions import ConfigurationError
from ._sql import SQLStore

__all__ = ("PostgreSQLStore",)

POOL_SIZE = 4


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class PostgreSQLStore(SQLStore):
    """Calls in a PostgreSQL database that every worker on every host shares."""

    placeholder = "%s"
    lock_row = " FOR UPDATE"
    # CREATE TABLE IF NOT EXISTS races with itself in PostgreSQL (two workers starting at
    # once both create the table's type): one at a time, for this transaction only.
    schema_lock = "SELECT pg_advisory_xact_lock(7472131)"

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        super().__init__(_without_password(url), timeout=timeout, threads=POOL_SIZE)
        self._dsn = url.replace("postgres://", "postgresql://", 1)
        self._pool: Any = None

    def _connect(self) -> None:
        try:
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise ConfigurationError(
                "a postgresql:// store needs psycopg: pip install \"callflow[postgresql]\""
            ) from None
        pool = ConnectionPool(self._dsn, min_size=1, max_size=POOL_SIZE, open=False,
                              timeout=self.timeout,
                              kwargs={"connect_timeout": max(1, int(self.timeout))})
        pool.open(wait=True, timeout=self.timeout)
        self._pool = pool

    def _disconnect(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        if self._pool is None:
            raise ConfigurationError("the store is not open")
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    def _unavailable(self, exc: Exception) -> bool:
        import psycopg
        from psycopg_pool import PoolTimeout

        return isinstance(exc, (psycopg.OperationalError, PoolTimeout))
