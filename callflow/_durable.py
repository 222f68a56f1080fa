"""Durable calls: any worker holding the store answers any call's notification.

``DurableCalls`` sits between the app's HTTP edge and its sessions when the app
has a store (``--store sqlite:///…`` or ``postgresql://…``).  For each
notification that can change a call it takes the call's lease (``Store.begin``),
uses the session it has cached when that copy is current or else rebuilds the
call by replaying its flow against the history, feeds the notification, and
appends what happened (``Store.append``) before the answer leaves, releasing the
lease once the flow waits on a verb again.  A bounded LRU cache of suspended
sessions keeps replay for restarts, crashes, moves between workers and
evictions; memory and GC work grow with the cache, not with the live calls.

A background sweep takes over calls whose worker died while their flow ran its
own code (the lease expired in state ``running``), ends calls that outlived the
maximum duration, and deletes ended histories past their retention.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from ._call import Call
from ._commands import Command, Hangup
from ._events import Event
from ._exceptions import CallflowError, NotificationError, PlatformError
from ._journal import HistoryError, Journal, decode_command
from ._results import RecordResult
from ._session import ANSWERING_KINDS, Session, event_key, same_notification
from ._waiter import Waiter
from .stores import Begin, CallState, Entry, Fenced, Store, StoreError

if TYPE_CHECKING:
    from ._app import App

__all__ = ("DurableCalls", "worker_id")

logger = logging.getLogger("callflow")

_PASSING = frozenset({"playback_started", "playback_stopped", "recording_started", "ringing",
                      "other"})
"""Notifications that answer nothing and that no waiting verb collects."""

_CREATED_ELSEWHERE = object()

SWEEP_BATCH = 100
"""Calls the sweep takes over, expires or purges per round."""


def worker_id() -> str:
    """This process's name as a lease holder: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class DurableCalls:
    """The app's calls, kept in a store and cached in memory (see the module docstring)."""

    def __init__(self, app: App, store: Store) -> None:
        self.app = app
        self.store = store
        self.owner = worker_id()
        self.lru: OrderedDict[str, Session] = OrderedDict()
        self._locks: dict[str, list[Waiter]] = {}
        self._renewing: set[str] = set()

    @property
    def _lease(self) -> float:
        return self.app.settings.lease

    # -- the notification path ------------------------------------------------------------------

    async def handle_event(self, event: Event, query: Mapping[str, str]
                           ) -> tuple[list[Command] | None, bool]:
        """Feed one event to its call: ``(commands or None, first batch?)``."""
        app = self.app
        call_id = event.call_id
        session = app.sessions.get(call_id)
        if session is not None and not session.is_interested(event):
            return await session.handle(event), False  # nothing the history keeps
        ended = app._ended.get(call_id) if session is None else None
        if ended is not None:
            # Ended here, and an ended call never comes back: no need to ask the store.
            return ended.answer(event)
        if session is None and event.kind in _PASSING:
            # Progress reports that change no call: not worth a store round trip, let
            # alone a replay (the cached copy, where there is one, still sees them).
            return None, False
        async with self._serial(call_id):
            try:
                session = app.sessions.get(call_id)
                if session is not None and session.only_collects(event):
                    collected = await self._collect(session, event)
                    if collected:
                        return None, False
                return await self._handle_locked(event, query)
            except StoreError as exc:
                logger.error("%s: the call store failed (%s); answering 503 so the platform "
                             "retries or falls back", call_id, exc)
                raise NotificationError(503, "store_unavailable",
                                        "the call store is unavailable") from None

    async def _handle_locked(self, event: Event, query: Mapping[str, str]
                             ) -> tuple[list[Command] | None, bool]:
        app = self.app
        call_id = event.call_id
        while True:
            session = app.sessions.get(call_id)
            cached = session.journal.version if session and session.journal else None
            begin = await self._begin(call_id, cached)
            if begin.status != "unknown":
                break
            if session is not None:
                self.evict(session)  # the store forgot it (purged): so do we
            started = await self._start(event, query)
            if started is None:  # not a call's start: an outbound call's outcome, or unknown
                # Unknown to the store too (never seen, or purged): ended for good, as in
                # memory mode.
                return app._answer_unknown(event, query), False
            if started is not _CREATED_ELSEWHERE:
                reply: tuple[list[Command] | None, bool] = started
                return reply
            # Another worker created the call in the meantime: take it from the store.
        if begin.status == "ended":
            if session is not None and session.done:
                self.evict(session)
            return self._ended_answer(call_id, event, begin.entries), False
        if session is None or session.journal is None or session.journal.version != begin.version:
            if session is not None:
                self.evict(session)
            rebuilt = await self._rebuild(call_id, begin.entries, begin.fence, event)
            session, answer = rebuilt
            if answer is not None:
                await self._commit(session)
                return answer, False
        assert session.journal is not None
        session.journal.fence = begin.fence
        commands = await session.handle(event)
        first, session.first_batch = session.first_batch, False
        await self._commit(session)
        return commands, first

    async def _collect(self, session: Session, event: Event) -> bool:
        """A notification a waiting dial or record only collects, in one round trip.

        No flow code runs for it, so there is nothing to guard with the lease: the event
        is appended if this copy of the call is still the current one. If it is not
        (another worker moved the call on), this copy is dropped and the caller takes
        the full path. True when the event is in the history.
        """
        journal = session.journal
        if journal is None or journal.new or journal.lock is not None:
            return False
        await session.handle(event)
        entries = journal.take()
        if not entries:
            return True
        version = await self.store.append_if(session.call.id, self.owner, journal.version,
                                             entries)
        if version is None:
            self.evict(session)
            return False
        journal.version = version
        return True

    async def _begin(self, call_id: str, cached: int | None) -> Begin:
        """Take the lease, waiting (boundedly) while another worker holds it."""
        wait = self.app.settings.lease_wait
        deadline = anyio.current_time() + wait
        delay = 0.01
        while True:
            begin = await self.store.begin(call_id, self.owner, self._lease, cached)
            if begin.status != "busy":
                return begin
            left = deadline - anyio.current_time()
            if left <= 0:
                logger.warning("%s: another worker has held the call for over %.1f s; "
                               "answering 503", call_id, wait)
                raise NotificationError(503, "call_busy",
                                        "another worker is handling this call")
            await anyio.sleep(min(delay, left))
            delay = min(delay * 2, 0.25)

    async def _start(self, event: Event, query: Mapping[str, str]) -> Any:
        """A new call: its row and first entry, then the flow: ``(commands, first)``.

        None when the event starts no call; ``_CREATED_ELSEWHERE`` when another worker
        created it first (the same notification delivered to two workers at once).
        """
        app = self.app
        if event.kind not in ("incoming", "answered"):
            return None
        session = app._new_session(event, query)
        if session is None:
            if event.kind == "incoming":
                return app._answer_orphan(event, query), False
            return None
        spec = app.get_flow(session.flow)
        call = session.call
        journal = session.journal = Journal(partial(self._commit, session))
        journal.caught_up.set()
        start: Entry = {
            "t": "start", "flow": spec.name, "caller": call.caller, "callee": call.callee,
            "direction": call.direction, "data": call.data, "leg": event.leg_id,
            "answered_by": call.answered_by,
            "key": list(event_key(event)), "platform": app.platform.name,
            "at": round(time.time(), 3),
        }
        if call._began is not None and call.direction == "outbound":
            start["placed"] = round(call._began[0], 3)  # for its call record
        fence = await self.store.create(call.id, self.owner, self._lease, spec.name,
                                        call.caller, call.callee, [start])
        if fence is None:
            app.sessions.pop(call.id, None)
            return _CREATED_ELSEWHERE
        journal.fence, journal.version = fence, 1
        if app.metrics is not None:  # not above: a call another worker created is not ours
            app.metrics.call_started(spec.name, call.direction)
        commands = await session.handle(event)
        first, session.first_batch = session.first_batch, False
        await self._commit(session)
        return commands, first

    def _ended_answer(self, call_id: str, event: Event, entries: list[Entry]
                      ) -> list[Command] | None:
        """An ended call's notification: a redelivery of its last question gets its answer."""
        last = next((e for e in reversed(entries) if e.get("t") == "answer"), None)
        if last is not None and same_notification(event_key(event), last.get("key")):
            try:
                return [decode_command(c) for c in last.get("cmds", [])]
            except HistoryError:
                return None
        return None

    # -- rebuilding a call from its history --------------------------------------------------

    async def _rebuild(self, call_id: str, entries: list[Entry], fence: int, event: Event | None
                       ) -> tuple[Session, list[Command] | None]:
        """Replay the flow up to its frontier: the session, and an answer if replay gave one."""
        app = self.app
        try:
            session = self._restore(call_id, entries)
        except (HistoryError, KeyError, TypeError, ValueError) as exc:
            logger.error("%s: the call's history cannot be read (%s); apologising and "
                         "hanging up", call_id, exc)
            broken = self._broken(call_id, entries)
            assert broken.journal is not None
            broken.journal.fence = fence
            return broken, app._apology()
        journal = session.journal
        assert journal is not None
        journal.fence = fence
        app.sessions[call_id] = session
        if event is not None and same_notification(event_key(event), journal.unanswered_key):
            # The worker that recorded this notification's verb died before answering it.
            return session, await session.resume_answer(event_key(event))
        session._task = app.spawn(session._run)
        await journal.caught_up.wait()
        if session.done:  # the replay failed (the flow changed): the apology, then the end
            last_words = session.take_outbox()
            if event is not None and event.kind not in ANSWERING_KINDS:
                # An answer to this notification would wait behind what the call is doing:
                # the REST API interrupts it.
                await self._push_quietly(session, last_words)
                return session, []
            return session, last_words
        return session, None

    def _restore(self, call_id: str, entries: list[Entry]) -> Session:
        app = self.app
        if not entries or entries[0].get("t") != "start":
            raise HistoryError("it does not begin with the call's start")
        start = entries[0]
        spec = app.flows.get(start["flow"])
        if spec is None:
            raise HistoryError(f"its flow {start['flow']!r} is not in this app")
        call = Call(call_id, caller=start["caller"], callee=start["callee"],
                    direction=start.get("direction", "inbound"), data=start.get("data"),
                    services=app._services,
                    answered_by=start.get("answered_by"))
        if app._call_log.active and "at" in start:
            call._began = (float(start.get("placed") or start["at"]), float(start["at"]))
        session = Session(app, call, spec.func)
        journal = session.journal = Journal(partial(self._commit, session))
        journal.load(entries[1:])
        journal.version = len(entries)
        session.started = True
        session.caller_leg = str(start.get("leg", ""))
        key = start.get("key")
        session._start_key = tuple(key) if key else None
        session._marker = journal.marker
        session._spent_legs = set(journal.spent_legs) if journal.spent_legs else None
        saved = {int(e["id"]): RecordResult(url=e.get("url"), duration=e.get("duration", 0.0))
                 for e in entries if e.get("t") == "recording"}
        session.saved_recordings = saved or None
        last = journal.last_answer
        if last is not None:
            session._last_key = tuple(last["key"]) if last.get("key") else None
            session._last_response = [decode_command(c) for c in last.get("cmds", [])]
        return session

    def _broken(self, call_id: str, entries: list[Entry]) -> Session:
        """A stand-in session for a call whose history is unreadable: it only ends."""
        app = self.app
        start = entries[0] if entries else {}
        call = Call(call_id, caller=str(start.get("caller", "")),
                    callee=str(start.get("callee", "")))

        async def nothing(call: Call) -> None:
            return None

        session = Session(app, call, nothing)
        session.journal = Journal(partial(self._commit, session))
        session.journal.caught_up.set()
        session.journal.version = len(entries)
        session.started = session.done = True
        session.ended, session.ended_by = True, "app"
        session.journal.add({"t": "end", "by": "app", "why": "unreadable history"})
        return session

    # -- committing -------------------------------------------------------------------------------

    async def _commit(self, session: Session) -> None:
        """Append what the session journalled; keep or release the lease as its state says."""
        journal = session.journal
        if journal is None or session.evicted:
            return
        # The flow's own commits (a step) and a notification's may overlap: one at a time,
        # so that the history keeps their order on a store with several connections. The
        # lock lives only while a commit is on: a suspended call keeps no lock.
        lock = journal.lock
        if lock is None:
            lock = journal.lock = anyio.Lock()
        try:
            async with lock:
                await self._append(session, journal)
        finally:
            if journal.lock is lock and not lock.locked() and not lock.statistics().tasks_waiting:
                journal.lock = None

    async def _append(self, session: Session, journal: Journal) -> None:
        call_id = session.call.id
        if session.evicted:
            return
        entries = journal.take()
        state: CallState
        if session.ended:
            state = "ended"
        elif session.pending is not None or session.done:
            state = "waiting"
        else:
            state = "running"
        try:
            journal.version = await self.store.append(call_id, journal.fence, entries,
                                                      state=state, ttl=self._lease)
        except Fenced:
            logger.warning("%s: another worker took the call over; dropping this worker's "
                           "copy", call_id)
            self.evict(session)
            raise
        if state == "running":
            if call_id not in self._renewing:
                self._renewing.add(call_id)
                self.app.spawn(lambda: self._renew(session))
            return
        if state == "waiting" or session.done:
            self._cache(session)

    async def _renew(self, session: Session) -> None:
        """Keep the lease while the flow runs its own code past its notification."""
        call_id = session.call.id
        journal = session.journal
        assert journal is not None
        try:
            while True:
                await anyio.sleep(self._lease / 3)
                if (session.evicted or session.ended or session.done
                        or session.pending is not None):
                    return
                try:
                    await self.store.renew(call_id, journal.fence, self._lease)
                except Fenced:
                    logger.warning("%s: the lease was taken over while the flow ran; dropping "
                                   "this worker's copy", call_id)
                    self.evict(session)
                    return
                except StoreError as exc:
                    logger.warning("%s: could not renew the call's lease: %s", call_id, exc)
        finally:
            self._renewing.discard(call_id)

    # -- the cache --------------------------------------------------------------------------------

    def _cache(self, session: Session) -> None:
        call_id = session.call.id
        if session.done:
            self.lru.pop(call_id, None)
            return
        self.lru[call_id] = session
        self.lru.move_to_end(call_id)
        limit = self.app.settings.cache_size
        while len(self.lru) > limit:
            _, oldest = self.lru.popitem(last=False)
            self.evict(oldest)

    def evict(self, session: Session) -> None:
        """Forget this worker's copy of a call (its flow task is cancelled, not failed)."""
        call_id = session.call.id
        self.lru.pop(call_id, None)
        if self.app.sessions.get(call_id) is session:
            del self.app.sessions[call_id]
        if session.evicted:
            return
        session.evicted = True
        task = session._task
        if task is not None and not session.done:
            task.cancel()
        # No cycle through the journal's commit closure: the session goes with its last
        # reference, not at the collector's next full pass.
        session.journal = None

    def forget(self, session: Session) -> None:
        """The session finished: it leaves the cache."""
        if self.lru.get(session.call.id) is session:
            del self.lru[session.call.id]

    @asynccontextmanager
    async def _serial(self, call_id: str) -> AsyncIterator[None]:
        """One notification of a call at a time in this process (first come, first served).

        Almost never contended, so no lock object per call: a list of waiters exists only
        while someone holds the call, and ownership passes straight to the next waiter.
        """
        waiters = self._locks.get(call_id)
        if waiters is None:
            self._locks[call_id] = []
        else:
            mine = Waiter()
            waiters.append(mine)
            try:
                await mine.wait()
            except BaseException:
                if mine.is_set():
                    self._pass_on(call_id)  # handed the call, but leaving: hand it on
                else:
                    waiters.remove(mine)
                raise
        try:
            yield
        finally:
            self._pass_on(call_id)

    def _pass_on(self, call_id: str) -> None:
        waiters = self._locks[call_id]
        if waiters:
            waiters.pop(0).set()
        else:
            del self._locks[call_id]

    # -- the sweep ---------------------------------------------------------------------------

    async def sweep_forever(self) -> None:
        """Take over orphaned calls, end overlong ones, purge old histories; until cancelled."""
        interval = max(0.2, self._lease / 2)
        while True:
            await anyio.sleep(interval)
            try:
                await self.sweep()
            except StoreError as exc:
                logger.warning("the call store failed during the sweep: %s", exc)

    async def sweep(self) -> None:
        s = self.app.settings
        # Only this app's flows: another app may share the store.
        flows = list(self.app.flows)
        for call_id in await self.store.orphans(flows, SWEEP_BATCH):
            await self.take_over(call_id)
        if s.max_call_duration > 0:
            for call_id in await self.store.expired(flows, s.max_call_duration, SWEEP_BATCH):
                await self.expire(call_id)
        if s.history_retention > 0:
            await self.store.purge(s.history_retention)

    async def take_over(self, call_id: str) -> None:
        """Continue a call whose worker died while its flow ran its own code."""
        async with self._serial(call_id):
            begin = await self.store.begin(call_id, self.owner, self._lease, None)
            if begin.status != "ok":
                return
            logger.warning("%s: its worker died while the flow was running; replaying and "
                           "continuing it here", call_id)
            old = self.app.sessions.get(call_id)
            if old is not None:
                self.evict(old)
            session, answer = await self._rebuild(call_id, begin.entries, begin.fence, None)
            if answer:
                await self._push_quietly(session, answer)
            try:
                await self._commit(session)
            except Fenced:
                return

    async def expire(self, call_id: str) -> None:
        """End a call that outlived ``max_call_duration`` (its hang-up was lost)."""
        async with self._serial(call_id):
            begin = await self.store.begin(call_id, self.owner, self._lease, None)
            if begin.status != "ok":
                return
            logger.warning("%s: the call outlived the maximum duration (%.0f s); hanging up "
                           "and ending it", call_id, self.app.settings.max_call_duration)
            session = self.app.sessions.get(call_id)
            if session is not None:
                self.evict(session)
            client = self.app._client
            if client is not None:
                try:
                    await self.app.platform.push(client, call_id, [Hangup()],
                                                 url_for=self.app._url_for(call_id))
                except (PlatformError, CallflowError) as exc:
                    logger.info("%s: the expiry hang-up failed: %s", call_id, exc)
            await self._record_end(call_id, begin.fence, why="max_call_duration")

    async def _record_end(self, call_id: str, fence: int, *, why: str | None = None) -> None:
        entry: Entry = {"t": "end", "by": "app"}
        if why is not None:
            entry["why"] = why
        await self.store.append(call_id, fence, [entry], state="ended", ttl=self._lease)

    async def _push_quietly(self, session: Session, commands: list[Command]) -> None:
        try:
            await self.app.push(session, commands)
        except PlatformError as exc:
            logger.warning("%s: could not deliver the replay's last words: %s",
                           session.call.id, exc)

    async def end_call(self, call_id: str) -> None:
        """Mark a call ended in the store (the platform gave up on it); best effort."""
        try:
            async with self._serial(call_id):
                begin = await self.store.begin(call_id, self.owner, self._lease, None)
                if begin.status == "ok":
                    await self._record_end(call_id, begin.fence)
        except StoreError as exc:
            logger.warning("%s: could not mark the call ended in the store: %s", call_id, exc)

    def evict_all(self) -> None:
        """Shutting down: drop every cached call; each goes on from the store elsewhere."""
        for session in list(self.app.sessions.values()):
            self.evict(session)

