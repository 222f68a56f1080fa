"""The SQL both stores share: tables, leases with fencing, history.

Written once with ``?`` placeholders; each store's module says how it connects
and how a transaction starts.  Every method here is synchronous and runs in a
worker thread (``SQLStore._run``), so the event loop never waits on the disk or
the network, under asyncio or trio alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ._base import (
    SCHEMA_VERSION,
    Begin,
    CallState,
    CallSummary,
    Entry,
    Fenced,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from ._threads import StoreThreads

__all__ = ("SQLStore",)

T = TypeVar("T")

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS callflow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS callflow_calls ("
    " call_id TEXT PRIMARY KEY, flow TEXT NOT NULL, caller TEXT NOT NULL,"
    " callee TEXT NOT NULL, state TEXT NOT NULL, owner TEXT,"
    " lease_until DOUBLE PRECISION NOT NULL, fence BIGINT NOT NULL, version BIGINT NOT NULL,"
    " created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS callflow_calls_state ON callflow_calls (state, lease_until)",
    "CREATE INDEX IF NOT EXISTS callflow_calls_updated ON callflow_calls (updated)",
    "CREATE TABLE IF NOT EXISTS callflow_history ("
    " call_id TEXT NOT NULL, seq BIGINT NOT NULL, entry TEXT NOT NULL,"
    " PRIMARY KEY (call_id, seq))",
)

Cursor = Any
"""A DB-API cursor (sqlite3's or psycopg's)."""


class SQLStore:
    """A ``Store`` over a DB-API database; subclasses connect and open transactions."""

    url: str
    placeholder = "?"
    lock_row = ""
    """What makes a ``SELECT`` lock the row it reads (PostgreSQL: ``FOR UPDATE``)."""
    schema_lock: str | None = None
    """A statement that keeps two workers from creating the tables at once (PostgreSQL)."""

    def __init__(self, url: str, *, timeout: float, threads: int) -> None:
        self.url = url
        self.timeout = timeout
        self._threads = StoreThreads(threads, type(self).__name__)
        self._sql_cache: dict[str, str] = {}

    # -- what a database's module provides -------------------------------------------------

    def _connect(self) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _unavailable(self, exc: Exception) -> bool:
        """True when ``exc`` means the database cannot be reached (not a bug of ours)."""
        raise NotImplementedError

    # -- running off the event loop ------------------------------------------------------------

    def _sql(self, text: str) -> str:
        sql = self._sql_cache.get(text)
        if sql is None:
            sql = self._sql_cache[text] = (
                text if self.placeholder == "?" else text.replace("?", self.placeholder))
        return sql

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        try:
            return await self._threads.run(func, *args, timeout=self.timeout)
        except TimeoutError:
            raise StoreUnavailable(f"the store at {self.url} did not answer within "
                                   f"{self.timeout:g} s") from None
        except (StoreError, SchemaTooNew):
            raise
        except Exception as exc:
            if self._unavailable(exc):
                raise StoreUnavailable(f"the store at {self.url} failed: {exc}") from exc
            raise StoreError(f"the store at {self.url} failed: "
                             f"{type(exc).__name__}: {exc}") from exc

    # -- Store -----------------------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self._connect()
        with self._transaction() as cur:
            if self.schema_lock:
                cur.execute(self.schema_lock)
            for statement in SCHEMA:
                cur.execute(statement)
            cur.execute(self._sql("SELECT value FROM callflow_meta WHERE key = ?"),
                        ("schema_version",))
            row = cur.fetchone()
            if row is None:
                cur.execute(self._sql("INSERT INTO callflow_meta (key, value) VALUES (?, ?)"),
                            ("schema_version", str(SCHEMA_VERSION)))
            elif int(row[0]) > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"the store at {self.url} was written by a newer callflow (schema "
                    f"{row[0]}; this callflow knows schema {SCHEMA_VERSION}): upgrade "
                    "callflow, or use another store"
                )

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._threads.run(self._disconnect)
            await anyio.to_thread.run_sync(self._threads.stop)

    async def secret(self, proposed: str) -> str:
        return await self._run(self._secret, proposed)

    def _secret(self, proposed: str) -> str:
        with self._transaction() as cur:
            cur.execute(self._sql("INSERT INTO callflow_meta (key, value) VALUES (?, ?) "
                                  "ON CONFLICT (key) DO NOTHING"), ("secret", proposed))
            cur.execute(self._sql("SELECT value FROM callflow_meta WHERE key = ?"),
                        ("secret",))
            return str(cur.fetchone()[0])

    async def begin(self, call_id: str, owner: str, ttl: float, cached: int | None) -> Begin:
        return await self._run(self._begin, call_id, owner, ttl, cached)

    def _begin(self, call_id: str, owner: str, ttl: float, cached: int | None) -> Begin:
        now = time.time()
        with self._transaction() as cur:
            cur.execute(self._sql("SELECT state, owner, lease_until, fence, version FROM "
                                  f"callflow_calls WHERE call_id = ?{self.lock_row}"),
                        (call_id,))
            row = cur.fetchone()
            if row is None:
                return Begin("unknown")
            state, holder, until, fence, version = row
            if state == "ended":
                return Begin("ended", fence=fence, version=version,
                             entries=self._entries(cur, call_id) if cached != version else [])
            if holder is not None and holder != owner and until > now:
                return Begin("busy", until=until)
            if holder != owner or until <= now:
                fence += 1  # a new holder: whatever an earlier one still writes is refused
            cur.execute(self._sql("UPDATE callflow_calls SET owner = ?, lease_until = ?, "
                                  "fence = ? WHERE call_id = ?"),
                        (owner, now + ttl, fence, call_id))
            entries = self._entries(cur, call_id) if cached != version else []
            return Begin("ok", fence=fence, version=version, until=now + ttl, entries=entries)

    def _entries(self, cur: Cursor, call_id: str) -> list[Entry]:
        cur.execute(self._sql("SELECT entry FROM callflow_history WHERE call_id = ? "
                              "ORDER BY seq"), (call_id,))
        return [json.loads(text) for (text,) in cur.fetchall()]

    async def create(self, call_id: str, owner: str, ttl: float, flow: str, caller: str,
                     callee: str, entries: list[Entry]) -> int | None:
        return await self._run(self._create, call_id, owner, ttl, flow, caller, callee,
                               [_dumps(e) for e in entries])

    def _create(self, call_id: str, owner: str, ttl: float, flow: str, caller: str,
                callee: str, texts: list[str]) -> int | None:
        now = time.time()
        with self._transaction() as cur:
            cur.execute(self._sql(
                "INSERT INTO callflow_calls (call_id, flow, caller, callee, state, owner, "
                "lease_until, fence, version, created, updated) "
                "VALUES (?, ?, ?, ?, 'running', ?, ?, 1, ?, ?, ?) "
                "ON CONFLICT (call_id) DO NOTHING"),
                (call_id, flow, caller, callee, owner, now + ttl, len(texts), now, now))
            if cur.rowcount != 1:
                return None
            self._insert(cur, call_id, 0, texts)
            return 1

    def _insert(self, cur: Cursor, call_id: str, version: int, texts: list[str]) -> None:
        if texts:
            cur.executemany(
                self._sql("INSERT INTO callflow_history (call_id, seq, entry) VALUES (?, ?, ?)"),
                [(call_id, version + i, text) for i, text in enumerate(texts, 1)])

    async def append(self, call_id: str, fence: int, entries: list[Entry], *,
                     state: CallState, ttl: float) -> int:
        return await self._run(self._append, call_id, fence, [_dumps(e) for e in entries],
                               state, ttl)

    def _append(self, call_id: str, fence: int, texts: list[str], state: CallState,
                ttl: float) -> int:
        now = time.time()
        with self._transaction() as cur:
            cur.execute(self._sql("SELECT fence, version FROM callflow_calls WHERE call_id = ?"
                                  f"{self.lock_row}"), (call_id,))
            row = cur.fetchone()
            if row is None or row[0] != fence:
                raise Fenced(f"call {call_id}: lease {fence} was taken over")
            version = int(row[1])
            self._insert(cur, call_id, version, texts)
            version += len(texts)
            if state == "running":
                cur.execute(self._sql("UPDATE callflow_calls SET version = ?, state = ?, "
                                      "lease_until = ?, updated = ? WHERE call_id = ?"),
                            (version, state, now + ttl, now, call_id))
            else:
                cur.execute(self._sql("UPDATE callflow_calls SET version = ?, state = ?, "
                                      "owner = NULL, lease_until = 0, updated = ? "
                                      "WHERE call_id = ?"), (version, state, now, call_id))
            return version

    async def append_if(self, call_id: str, owner: str, version: int,
                        entries: list[Entry]) -> int | None:
        return await self._run(self._append_if, call_id, owner, version,
                               [_dumps(e) for e in entries])

    def _append_if(self, call_id: str, owner: str, version: int, texts: list[str]
                   ) -> int | None:
        now = time.time()
        with self._transaction() as cur:
            cur.execute(self._sql("SELECT state, owner, lease_until, version FROM "
                                  f"callflow_calls WHERE call_id = ?{self.lock_row}"),
                        (call_id,))
            row = cur.fetchone()
            if row is None:
                return None
            state, holder, until, stored = row
            if (state == "ended" or int(stored) != version
                    or (holder is not None and holder != owner and until > now)):
                return None
            self._insert(cur, call_id, version, texts)
            cur.execute(self._sql("UPDATE callflow_calls SET version = ?, updated = ? "
                                  "WHERE call_id = ?"), (version + len(texts), now, call_id))
            return version + len(texts)

    async def renew(self, call_id: str, fence: int, ttl: float) -> None:
        await self._run(self._renew, call_id, fence, ttl)

    def _renew(self, call_id: str, fence: int, ttl: float) -> None:
        with self._transaction() as cur:
            cur.execute(self._sql("UPDATE callflow_calls SET lease_until = ? "
                                  "WHERE call_id = ? AND fence = ? AND state = 'running'"),
                        (time.time() + ttl, call_id, fence))
            if cur.rowcount != 1:
                raise Fenced(f"call {call_id}: lease {fence} was taken over")

    async def orphans(self, flows: list[str], limit: int) -> list[str]:
        if not flows:
            return []
        marks = ", ".join("?" * len(flows))
        return await self._run(self._ids, "SELECT call_id FROM callflow_calls WHERE "
                               f"state = 'running' AND lease_until < ? AND flow IN ({marks}) "
                               "LIMIT ?", (time.time(), *flows, limit))

    async def expired(self, flows: list[str], max_age: float, limit: int) -> list[str]:
        if not flows:
            return []
        marks = ", ".join("?" * len(flows))
        return await self._run(self._ids, "SELECT call_id FROM callflow_calls WHERE "
                               f"state <> 'ended' AND created < ? AND flow IN ({marks}) "
                               "LIMIT ?", (time.time() - max_age, *flows, limit))

    def _ids(self, sql: str, params: tuple[Any, ...]) -> list[str]:
        with self._transaction() as cur:
            cur.execute(self._sql(sql), params)
            return [str(call_id) for (call_id,) in cur.fetchall()]

    async def purge(self, retention: float) -> int:
        return await self._run(self._purge, time.time() - retention)

    def _purge(self, before: float) -> int:
        with self._transaction() as cur:
            cur.execute(self._sql(
                "DELETE FROM callflow_history WHERE call_id IN (SELECT call_id FROM "
                "callflow_calls WHERE state = 'ended' AND updated < ?)"), (before,))
            cur.execute(self._sql("DELETE FROM callflow_calls WHERE state = 'ended' AND "
                                  "updated < ?"), (before,))
            return int(cur.rowcount)

    async def calls(self, limit: int) -> list[CallSummary]:
        return await self._run(self._calls, limit)

    def _calls(self, limit: int) -> list[CallSummary]:
        with self._transaction() as cur:
            cur.execute(self._sql("SELECT call_id, flow, state, created, updated, version, "
                                  "caller, callee FROM callflow_calls "
                                  "ORDER BY updated DESC LIMIT ?"), (limit,))
            return [CallSummary(str(r[0]), str(r[1]), r[2], float(r[3]), float(r[4]), int(r[5]),
                                str(r[6]), str(r[7])) for r in cur.fetchall()]

    async def history(self, call_id: str) -> list[Entry] | None:
        return await self._run(self._history, call_id)

    def _history(self, call_id: str) -> list[Entry] | None:
        with self._transaction() as cur:
            cur.execute(self._sql("SELECT 1 FROM callflow_calls WHERE call_id = ?"), (call_id,))
            if cur.fetchone() is None:
                return None
            return self._entries(cur, call_id)

