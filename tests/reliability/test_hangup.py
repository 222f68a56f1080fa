"""Hang-up at every await: whichever await a caller hangs up at, the flow's ``finally`` runs
and the App keeps nothing of the call: no session, no task, no timer.

The example flows (``examples/ivr.py``, ``examples/voicemail.py``) run inside an App, over
its ASGI interface, against ``Caller`` (a scripted caller and platform). hypothesis draws
what the caller and the network do; for each such script the call is first run to its end
to count its awaits (k), then once more for every hang-up point 1..k.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from callflow import App, Call, CallEnded
from callflow.testing import FakeCall

from ._caller import Caller
from ._support import (
    NO_SHRINK,
    NUMBER,
    SECRET,
    WAIT,
    commands_of,
    make_app,
    post,
    running,
    settle,
    task_names,
    url_of,
)

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

scripts = st.lists(st.integers(0, 5), min_size=1, max_size=8)


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path (examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_reliability_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


IVR, VOICEMAIL = load("ivr"), load("voicemail")


Trail = list[tuple[str, str, str | None]]


def traced(flow: Callable[[Call], Awaitable[None]], trail: Trail
           ) -> Callable[[Call], Awaitable[None]]:
    """``flow``, recording how it ended and that its ``finally`` ran."""

    async def run(call: Call) -> None:
        try:
            await flow(call)
        except CallEnded as exc:
            trail.append(("ended", call.id, exc.by))
            raise
        except BaseException as exc:
            trail.append(("raised", call.id, repr(exc)))
            raise
        else:
            trail.append(("returned", call.id, None))
        finally:
            trail.append(("finally", call.id, None))

    return run


def app_with(example: ModuleType, trail: Trail, **settings: Any) -> App:
    """A test App serving the example's flows (the example's own App has no test platform)."""
    app = make_app(**settings)
    for spec in example.app.flows.values():
        app.add_flow(traced(spec.func, trail), numbers=spec.numbers, name=spec.name)
    return app


@pytest.mark.parametrize("example", [IVR, VOICEMAIL], ids=["ivr", "voicemail"])
@NO_SHRINK
@given(choices=scripts, late_answer=st.booleans())
async def test_hang_up_at_every_await_of_an_example(
    example: ModuleType, choices: list[int], late_answer: bool
) -> None:
    number = next(iter(example.app.numbers))
    trail: Trail = []
    app = app_with(example, trail)
    async with running(app) as client:
        await settle()
        before = task_names()
        whole = await Caller(client, "whole", number=number, choices=choices).run()
        k = whole.awaits
        event(f"{k} awaits")
        assert k >= 1 and whole.ended_by_app and not whole.hung_up
        assert trail == [("returned", "whole", None), ("finally", "whole", None)]
        for step in range(1, k + 1):
            trail.clear()
            call_id = f"hang-up-at-{step}"
            caller = await Caller(client, call_id, number=number, hang_up_at=step,
                                  choices=choices, late_answer=late_answer).run()
            assert caller.hung_up and caller.awaits == step
            with anyio.fail_after(WAIT):
                await app.wait_ended(call_id)
            assert trail == [("ended", call_id, "caller"), ("finally", call_id, None)]
            assert app.sessions == {}
            await settle()
            assert task_names() == before, f"left behind after a hang-up at await {step}"
            health = await client.get(f"/callflow/{SECRET}/health")
            assert health.json() == {"status": "ok", "calls": 0}


@pytest.mark.parametrize("example", [IVR, VOICEMAIL], ids=["ivr", "voicemail"])
@NO_SHRINK
@given(choices=scripts)
async def test_hang_up_at_every_await_with_fake_call(example: ModuleType, choices: list[int]
                                                     ) -> None:
    """The same property one layer down, in FakeCall's virtual time."""
    flow = next(iter(example.app.flows.values())).func
    trail: Trail = []

    def scripted(fake: FakeCall) -> FakeCall:
        for choice in choices:  # each feeds one gather (a key, or silence) or one recording
            if choice == 4:
                fake.silence()
            else:
                fake.press("1239#"[choice % 5])
        return fake

    with anyio.fail_after(WAIT):
        whole = await scripted(FakeCall(traced(flow, trail), call_id="whole")).run()
    assert whole.error is None
    assert trail == [("returned", "whole", None), ("finally", "whole", None)]
    k = whole.blocking
    assert k >= 1
    for step in range(1, k + 1):
        trail.clear()
        with anyio.fail_after(WAIT):
            fake = await scripted(FakeCall(traced(flow, trail), call_id=f"at-{step}",
                                           hang_up_at=step)).run()
        assert fake.ended_by == "caller"
        assert fake.error is None
        assert trail == [("ended", f"at-{step}", "caller"), ("finally", f"at-{step}", None)]


# -- hang-ups that find the flow away from its awaits ------------------------------------------


async def test_hang_up_while_the_flow_is_busy_in_its_own_io() -> None:
    """The flow learns of the hang-up at its next verb; the grace timer goes with it."""
    trail: Trail = []
    io_started, io_done = anyio.Event(), anyio.Event()

    async def lookup(call: Call) -> None:
        await call.say("One moment.")
        io_started.set()
        await io_done.wait()  # the CRM
        await call.gather(num_digits=1)

    app = make_app(response_budget=0.05, hangup_grace=30)
    app.add_flow(traced(lookup, trail), numbers=(NUMBER,))
    async with running(app) as client:
        await settle()
        before = task_names()
        first = commands_of(await post(client, "CalledNumber", "busy-1"))
        assert "redirect" in first[-1]  # slow: a Resume marker
        assert commands_of(await post(client, "HangUp", "busy-1",
                                      direction="fromParticipant")) == []
        io_done.set()
        with anyio.fail_after(5):
            await app.wait_ended("busy-1")
        await settle()
        assert task_names() == before
    assert trail == [("ended", "busy-1", "caller"), ("finally", "busy-1", None)]


async def test_a_flow_that_ignores_the_hang_up_is_cancelled_after_the_grace() -> None:
    trail: Trail = []

    async def stubborn(call: Call) -> None:
        await call.say("Please hold.")
        while True:  # noqa: ASYNC110 - never reaches another verb: only the grace timer stops it
            await anyio.sleep(0.01)

    app = make_app(response_budget=0.05, hangup_grace=0.2)
    app.add_flow(traced(stubborn, trail), numbers=(NUMBER,))
    async with running(app) as client:
        await settle()
        before = task_names()
        await post(client, "CalledNumber", "stubborn-1")
        await post(client, "HangUp", "stubborn-1", direction="fromParticipant")
        with anyio.fail_after(5):
            await app.wait_ended("stubborn-1")
        assert app.sessions == {}
        await settle()
        assert task_names() == before
    assert trail[-1] == ("finally", "stubborn-1", None)
    assert trail[0][0] == "raised"  # cancelled, not CallEnded: it never awaited a verb


async def test_hang_up_while_the_response_is_being_prepared() -> None:
    """The caller hangs up while the flow works on the answer: nothing is sent, all is gone."""
    trail: Trail = []
    working = anyio.Event()
    go_on = anyio.Event()

    async def menu(call: Call) -> None:
        first = await call.gather(num_digits=1)
        working.set()
        await go_on.wait()
        await call.say(f"You chose {first.digits}.")
        await call.gather(num_digits=1)

    app = make_app(response_budget=5)
    app.add_flow(traced(menu, trail), numbers=(NUMBER,))
    async with running(app) as client:
        await settle()
        before = task_names()
        url = url_of(commands_of(await post(client, "CalledNumber", "mid-1")))
        answers: list[Any] = []

        async def answer() -> None:
            answers.append(commands_of(await post(client, "DigitsCollected", "mid-1", url=url,
                                                  digits="1")))

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer)
            await working.wait()
            await post(client, "HangUp", "mid-1", direction="fromParticipant")
            go_on.set()
        with anyio.fail_after(5):
            await app.wait_ended("mid-1")
        await settle()
        assert task_names() == before
    # What the flow queued after the caller left is not sent to a dead call.
    assert answers == [[]]
    assert trail == [("ended", "mid-1", "caller"), ("finally", "mid-1", None)]
