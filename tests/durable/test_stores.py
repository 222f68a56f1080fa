"""The stores themselves: schema, secret, leases with fencing, history, the sweep's queries."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from callflow import ConfigurationError
from callflow.stores import (
    SCHEMA_VERSION,
    Fenced,
    SchemaTooNew,
    Store,
    StoreUnavailable,
    open_store,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """Each durable store, open, with its tables."""
    opened = open_store(store_url)
    assert opened is not None
    await opened.open()
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_a_new_store_creates_its_tables_and_shares_one_secret(store_url: str) -> None:
    first, second = open_store(store_url), open_store(store_url)
    assert first is not None and second is not None
    await first.open()
    await second.open()  # the tables exist: opening again changes nothing
    try:
        assert await first.secret("s3cret-one") == "s3cret-one"
        assert await second.secret("s3cret-two") == "s3cret-one"
        assert await first.calls(10) == []
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_history_is_appended_under_its_lease_and_read_back(store: Store) -> None:
    fence = await store.create("c1", "w1", 5, "ivr", "+34600000001", "+34900000001",
                               [{"t": "start", "flow": "ivr"}])
    assert fence == 1
    assert await store.create("c1", "w2", 5, "ivr", "", "", []) is None  # exists already
    version = await store.append("c1", 1, [{"t": "answer", "cmds": []}, {"t": "x"}],
                                 state="waiting", ttl=5)
    assert version == 3
    assert [e["t"] for e in await store.history("c1") or []] == ["start", "answer", "x"]
    assert await store.history("nope") is None
    [summary] = await store.calls(5)
    assert (summary.call_id, summary.flow, summary.state, summary.entries) == (
        "c1", "ivr", "waiting", 3)


async def test_a_lease_keeps_other_workers_out_and_fences_the_one_that_lost_it(
    store: Store,
) -> None:
    await store.create("c1", "w1", 30, "ivr", "", "", [{"t": "start"}])
    busy = await store.begin("c1", "w2", 30, None)
    assert busy.status == "busy" and busy.until > 0
    again = await store.begin("c1", "w1", 30, 1)  # the holder itself: same fence
    assert (again.status, again.fence, again.entries) == ("ok", 1, [])
    # w1 stops renewing; its lease runs out and w2 takes the call: a new fence.
    await store.append("c1", 1, [], state="running", ttl=0.05)
    await anyio.sleep(0.1)  # the lease's own time running out: nothing else to wait on
    taken = await store.begin("c1", "w2", 30, None)
    assert taken.status == "ok" and taken.fence == 2
    assert [e["t"] for e in taken.entries] == ["start"]  # w2 had no copy: the history
    with pytest.raises(Fenced):
        await store.append("c1", 1, [{"t": "late"}], state="waiting", ttl=5)
    with pytest.raises(Fenced):
        await store.renew("c1", 1, 5)
    assert await store.append("c1", 2, [{"t": "end"}], state="ended", ttl=5) == 2
    assert [e["t"] for e in await store.history("c1") or []] == ["start", "end"]
    assert (await store.begin("c1", "w3", 5, None)).status == "ended"
    assert (await store.begin("nope", "w3", 5, None)).status == "unknown"


async def test_the_sweep_finds_orphans_and_old_calls_and_purges_ended_ones(
    store: Store,
) -> None:
    await store.create("running", "w1", 0.01, "ivr", "", "", [{"t": "start"}])
    await store.create("other-app", "w1", 0.01, "billing", "", "", [{"t": "start"}])
    await store.create("ended", "w1", 5, "ivr", "", "", [{"t": "start"}])
    await store.append("ended", 1, [{"t": "end"}], state="ended", ttl=5)
    await anyio.sleep(0.1)  # the leases (0.01 s) run out
    assert await store.orphans(["ivr"], 10) == ["running"]  # not another app's flow
    assert sorted(await store.expired(["ivr", "billing"], 0, 10)) == [
        "other-app", "running"]
    assert await store.purge(0) == 1
    assert await store.history("ended") is None
    assert await store.history("running") is not None


async def test_a_store_written_by_a_newer_callflow_is_refused(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    assert store is not None
    await store.open()
    await store.aclose()
    path = sqlite_url[len("sqlite:///"):]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE callflow_meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))
    newer = open_store(sqlite_url)
    assert newer is not None
    with pytest.raises(SchemaTooNew, match="written by a newer callflow"):
        await newer.open()
    await newer.aclose()


async def test_an_unreachable_postgresql_is_a_clear_error() -> None:
    with anyio.CancelScope() as scope:
        # A port nothing listens on: refused at once (psycopg says so).
        store = open_store("postgresql://postgres@127.0.0.1:1/none", timeout=2)
        assert store is not None
        with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1"):
            await store.open()
        await store.aclose()
    assert not scope.cancelled_caught


def test_store_urls_are_checked(tmp_path: Path) -> None:
    assert open_store("memory") is None
    with pytest.raises(ConfigurationError, match="unknown store"):
        open_store("mysql://x")
    with pytest.raises(ConfigurationError, match="not a SQLite store URL"):
        open_store("sqlite:relative.db")
    store = open_store(f"sqlite:///{tmp_path}/x.db")
    assert store is not None and store.url == f"sqlite:///{tmp_path}/x.db"
    pg = open_store("postgresql://user:hunter2@db.example/calls")
    assert pg is not None and "hunter2" not in pg.url
