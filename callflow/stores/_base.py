"""What every store keeps, and the one small interface they share.

A store holds, per call, a row (its flow, state, lease and version) and an
append-only history of entries (JSON objects, see ``callflow._journal``).  The
runtime asks these of it on a notification's path:

- ``begin``: take the call's lease (or learn who holds it) and, when the caller's
  cached copy is behind, the history to rebuild it from;
- ``create``: a new call's row and first entries, under a new lease;
- ``append``: entries, conditional on the lease's fencing number, which also says
  whether the lease is kept (the flow is running its own code) or released;
- ``renew``: keep a lease while the flow runs past its notification;
- ``append_if``: an event a waiting verb only collects, appended in one round trip if the
  caller's copy is current (no flow code runs for it, so no lease is needed).

Every lease taken by another owner bumps the call's *fence*; an append or a
renewal that carries an older fence is refused (``Fenced``), so a worker paused
past its lease (a long GC pause, SIGSTOP) cannot write over its successor.

Stores are synchronous inside (stdlib ``sqlite3``, psycopg's pool) and run off the
event loop in a worker thread, so they work the same under asyncio and trio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

from .._exceptions import (
    ConfigurationError,
    Fenced,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)

__all__ = (
    "SCHEMA_VERSION",
    "Begin",
    "CallState",
    "CallSummary",
    "Entry",
    "Fenced",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "StoreUnavailable",
)

SCHEMA_VERSION = 1
"""The layout of the tables this version of callflow writes and reads."""

Entry: TypeAlias = dict[str, Any]
"""One history entry: a JSON object with its kind in ``"t"``."""

CallState: TypeAlias = Literal["running", "waiting", "ended"]
"""``running``: the flow runs its own code (the lease is held); ``waiting``: suspended on a
verb (no lease); ``ended``: over, kept for ``callflow history`` until the retention passes."""


@dataclass(slots=True)
class Begin:
    """What ``Store.begin`` found.

    ``status``: ``ok`` (the lease is ours, fence ``fence``), ``busy`` (another owner
    holds it until ``until``), ``ended`` or ``unknown``.  ``entries`` is the whole
    history when the caller's cached version is not the stored one (else empty).
    """

    status: Literal["ok", "busy", "ended", "unknown"]
    fence: int = 0
    version: int = 0
    until: float = 0.0
    entries: list[Entry] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CallSummary:
    """One call as ``callflow history`` lists it."""

    call_id: str
    flow: str
    state: CallState
    created: float
    updated: float
    entries: int
    caller: str = ""
    callee: str = ""


class Store(Protocol):
    """Where durable calls live: SQLite on one host, PostgreSQL across hosts."""

    url: str
    """The store's URL, without any password (for banners and logs)."""

    async def open(self) -> None:
        """Connect, create the tables on first use, refuse a newer schema (``SchemaTooNew``)."""

    async def aclose(self) -> None:
        """Close every connection."""

    async def secret(self, proposed: str) -> str:
        """The webhook secret every worker on this store shares (``proposed`` if none yet)."""

    async def begin(self, call_id: str, owner: str, ttl: float, cached: int | None) -> Begin:
        """Take the call's lease for ``ttl`` seconds; the history if ``cached`` is stale."""

    async def create(self, call_id: str, owner: str, ttl: float, flow: str, caller: str,
                     callee: str, entries: list[Entry]) -> int | None:
        """A new call under a lease held by ``owner``: its fence, or None if it exists."""

    async def append(self, call_id: str, fence: int, entries: list[Entry], *,
                     state: CallState, ttl: float) -> int:
        """Append ``entries`` under lease ``fence``; the new version.

        ``state`` ``running`` keeps the lease for ``ttl`` more seconds; ``waiting`` and
        ``ended`` release it.  Raises ``Fenced`` when the lease is no longer ``fence``.
        """

    async def append_if(self, call_id: str, owner: str, version: int,
                        entries: list[Entry]) -> int | None:
        """Append ``entries`` if the history is still ``version`` long and no other owner
        holds the lease; the new version, or None (nothing written).

        For notifications that run no flow code: no lease is taken, one round trip.
        """

    async def renew(self, call_id: str, fence: int, ttl: float) -> None:
        """Keep the lease ``ttl`` more seconds; ``Fenced`` when it was taken over."""

    async def orphans(self, flows: list[str], limit: int) -> list[str]:
        """Calls of these flows whose flow ran when its worker's lease expired."""

    async def expired(self, flows: list[str], max_age: float, limit: int) -> list[str]:
        """Live calls of these flows (not ended) that started over ``max_age`` seconds ago."""

    async def purge(self, retention: float) -> int:
        """Delete ended calls older than ``retention`` seconds; how many."""

    async def calls(self, limit: int) -> list[CallSummary]:
        """The most recently updated calls, newest first."""

    async def history(self, call_id: str) -> list[Entry] | None:
        """One call's whole history (None: no such call)."""


def open_store(url: str, *, timeout: float = 5.0) -> Store | None:
    """The store for ``url`` (None for ``memory``: calls live in the process).

    ``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``postgresql://…``.
    Nothing is connected until ``open()``.
    """
    text = url.strip()
    if text in ("", "memory", "memory://"):
        return None
    if text.startswith("sqlite:"):
        from ._sqlite import SQLiteStore

        return SQLiteStore(text, timeout=timeout)
    if text.startswith(("postgresql:", "postgres:")):
        from ._postgresql import PostgreSQLStore

        return PostgreSQLStore(text, timeout=timeout)
    raise ConfigurationError(
        f"unknown store {url!r}: use memory, sqlite:///PATH or postgresql://USER@HOST/DB"
    )
