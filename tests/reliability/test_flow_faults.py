"""Flow faults: a flow that raises, one that blocks the event loop, one that never reaches a
verb that waits. The caller always gets a fallback (the flow's own commands, or an apology,
and a hang-up) by whatever channel is open at the time (the response, a Resume marker's
callback, setcommands), and the App goes on serving other calls meanwhile.
"""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import httpx
import pytest

from callflow import App, Call, Settings
from callflow.simulator import serve_asgi

from ._caller import KEYS, Caller
from ._support import (
    HANGUP,
    NUMBER,
    FakePlatform,
    commands_of,
    make_app,
    note,
    post,
    running,
    settle,
    speak,
    task_names,
)

pytestmark = pytest.mark.anyio

BROKEN = "+34900000066"
DEFAULT_APOLOGY = Settings().apology


def with_good_flow(app: App, trail: list[str]) -> None:
    """NUMBER answers with a flow that works: a menu and an echo of the key."""

    @app.flow(number=NUMBER)
    async def good(call: Call) -> None:
        await call.say(f"Hello {call.id}.")
        choice = await call.gather(prompt="Press a key.", num_digits=1)
        await call.say(f"{call.id} pressed {choice.digits}.")
        trail.append(call.id)


# -- a flow that raises -----------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["reply", "marker", "setcommands"])
async def test_a_flow_that_raises_apologises_and_hangs_up(channel: str) -> None:
    """Raised while a response waits (reply), after the response carried a Resume marker with
    speech (marker), or after an empty response (setcommands)."""
    platform = FakePlatform()
    app = make_app(platform, response_budget=0.05)
    finished: list[str] = []

    @app.flow(number=BROKEN)
    async def broken(call: Call) -> None:
        try:
            if channel == "marker":
                await call.say("Let me check.")
            if channel != "reply":
                await anyio.sleep(0.2)  # past the response budget
            raise RuntimeError("the CRM is down")
        finally:
            finished.append(call.id)

    async with running(app) as client:
        # Speech takes time: the marker comes back after the flow has failed.
        caller = await Caller(client, "raises-1", number=BROKEN, platform=platform,
                              speech=0.5 if channel == "marker" else 0.0).run()
        with anyio.fail_after(5):
            await app.wait_ended("raises-1")
    expected = (["Let me check."] if channel == "marker" else []) + [DEFAULT_APOLOGY]
    assert caller.heard == expected
    assert caller.ended_by_app
    assert finished == ["raises-1"]
    assert app.sessions == {}
    assert len(platform.delivered) == (1 if channel == "setcommands" else 0)


async def test_flows_that_raise_do_not_disturb_calls_beside_them() -> None:
    """Broken and working calls interleaved through real hypercorn: each gets its own."""
    platform = FakePlatform()
    app = App(settings=Settings(secret="faults", response_budget=2.0),
              transport=httpx.ASGITransport(platform))
    trail: list[str] = []
    with_good_flow(app, trail)

    @app.flow(number=BROKEN)
    async def broken(call: Call) -> None:
        choice = await call.gather(prompt="Press a key.", num_digits=1)
        {"1": "only one option"}[choice.digits]  # KeyError for any other key

    async with serve_asgi(app) as url:
        app.settings.public_url = url
        events = f"{url}/callflow/faults/events"
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            results: dict[str, Caller] = {}

            async def one(i: int) -> None:
                number = BROKEN if i % 2 else NUMBER
                caller = Caller(client, f"mixed-{i}", number=number, choices=[1 + i % 2],
                                platform=platform, events=events)
                results[caller.call_id] = await caller.run()

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for i in range(40):
                        tg.start_soon(one, i)
    for call_id, caller in results.items():
        i = int(call_id.split("-")[1])
        key = KEYS[1 + i % 2]
        if i % 2 and key != "1":
            assert caller.heard == ["Press a key.", DEFAULT_APOLOGY], caller
        else:
            assert caller.heard[-1] in (f"{call_id} pressed {key}.", None), caller
        assert caller.ended_by_app
    assert sorted(trail) == sorted(f"mixed-{i}" for i in range(0, 40, 2))
    assert app.sessions == {}


# -- a flow that blocks the event loop ------------------------------------------------------------


async def test_a_flow_that_blocks_the_event_loop_still_answers_and_others_are_served() -> None:
    """A synchronous 0.5 s sleep in a flow, with a 0.1 s response budget, under hypercorn.

    The blocked flow's caller gets everything it queued (in the late response, or after a
    Resume marker); calls that arrived while the loop was blocked are answered as soon as it
    is free again, each correctly.
    """
    platform = FakePlatform()
    app = App(settings=Settings(secret="faults", response_budget=0.1),
              transport=httpx.ASGITransport(platform))
    trail: list[str] = []
    with_good_flow(app, trail)
    blocking = anyio.Event()

    @app.flow(number=BROKEN)
    async def hog(call: Call) -> None:
        await call.say("Computing.")
        blocking.set()
        await anyio.lowlevel.checkpoint()  # let the response wait begin
        time.sleep(0.5)  # noqa: ASYNC251 - the fault under test: a blocking call in a flow
        await call.say("Computed.")
        choice = await call.gather(prompt="Press a key.", num_digits=1)
        await call.say(f"You pressed {choice.digits}.")

    async with serve_asgi(app) as url:
        app.settings.public_url = url
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            results: dict[str, Caller] = {}

            async def one(call_id: str, number: str) -> None:
                caller = Caller(client, call_id, number=number, choices=[0],
                                platform=platform, events=f"{url}/callflow/faults/events")
                results[call_id] = await caller.run()

            began = time.monotonic()
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(one, "hog", BROKEN)
                    await blocking.wait()
                    for i in range(10):
                        tg.start_soon(one, f"beside-{i}", NUMBER)
            elapsed = time.monotonic() - began
    assert results["hog"].heard == ["Computing.", "Computed.", "Press a key.", "You pressed 1."]
    for i in range(10):
        assert results[f"beside-{i}"].heard == [f"Hello beside-{i}.", "Press a key.",
                                                f"beside-{i} pressed 1."]
    assert sorted(trail) == sorted(f"beside-{i}" for i in range(10))
    assert elapsed < 5
    assert app.sessions == {}


# -- a flow that never reaches a verb that waits ------------------------------------------------


async def test_a_flow_that_only_queues_is_stopped_with_an_apology() -> None:
    """Say in a loop, never awaiting the caller: stopped at the outbox limit, apologised for."""
    app = make_app()

    @app.flow(number=BROKEN)
    async def chatter(call: Call) -> None:
        while True:
            await call.say("Still here.")

    async with running(app) as client:
        commands = commands_of(await post(client, "CalledNumber", "chatter", callee=BROKEN))
    assert commands[1:] == [speak(DEFAULT_APOLOGY), HANGUP]
    assert app.sessions == {}


@pytest.mark.parametrize("with_speech", [False, True], ids=["silent", "after-speech"])
async def test_a_flow_that_never_reaches_a_verb_is_stopped_with_an_apology(
    with_speech: bool,
) -> None:
    platform = FakePlatform()
    app = make_app(platform, response_budget=0.05, **{"stall_timeout": 0.3})
    finished: list[str] = []

    @app.flow(number=BROKEN)
    async def spinner(call: Call) -> None:
        try:
            if with_speech:
                await call.say("One moment.")
            while True:  # noqa: ASYNC110 - the fault under test: it never reaches a verb
                await anyio.sleep(0.02)
        finally:
            finished.append(call.id)

    async with running(app) as client:
        with anyio.fail_after(5):
            caller = await Caller(client, "spin", number=BROKEN, platform=platform).run()
            await app.wait_ended("spin")
    assert caller.heard == (["One moment."] if with_speech else []) + [DEFAULT_APOLOGY]
    assert finished == ["spin"]
    assert app.sessions == {}


async def test_other_calls_are_served_while_a_flow_spins() -> None:
    """What holds today: a spinning flow costs its own call, not the App's other calls."""
    platform = FakePlatform()
    app = make_app(platform, response_budget=0.05, hangup_grace=0.2)
    trail: list[str] = []
    with_good_flow(app, trail)

    @app.flow(number=BROKEN)
    async def spinner(call: Call) -> None:
        while True:  # noqa: ASYNC110 - the fault under test: it never reaches a verb
            await anyio.sleep(0.01)

    async with running(app) as client:
        await settle()
        before = task_names()
        first = commands_of(await post(client, "CalledNumber", "spin", callee=BROKEN))
        assert first == [{"notifications": "true"}]
        results = [await Caller(client, f"ok-{i}", choices=[i]).run() for i in range(4)]
        assert [r.heard[-1] for r in results] == [f"ok-{i} pressed {KEYS[i]}."
                                                  for i in range(4)]
        # The platform hangs the silent call up (its idle timeout); the grace then ends it.
        response = await client.post("/callflow/reliability-secret/events",
                                     json=note("HangUp", "spin", callee=BROKEN,
                                               direction="fromParticipant"))
        assert response.json() == {"commands": []}
        with anyio.fail_after(5):
            await app.wait_ended("spin")
        await settle()
        assert task_names() == before
    assert app.sessions == {}
    assert platform.requests == []
