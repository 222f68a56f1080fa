"""Platform faults: the App's setcommands requests failing (5xx), timing out, or never
answered at all. Failures are retried with growing pauses, the caller gets each batch of
commands once, and a platform that never answers ends the call cleanly and loudly (logged).

The fake platform is served over real HTTP here, because the App's timeouts are httpx's,
which it does not enforce on an in-process transport.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from callflow import App, Call, CallEnded, Settings
from callflow.simulator import serve_asgi

from ._caller import Caller
from ._support import (
    HANG,
    NUMBER,
    PUBLIC,
    SECRET,
    FakePlatform,
    app_tasks,
    commands_of,
    post,
    running,
    settle,
    speak,
)

pytestmark = pytest.mark.anyio

PUSH_TIMEOUT = 0.2


@asynccontextmanager
async def platform_app(platform: FakePlatform, **settings: Any) -> AsyncIterator[App]:
    """An App whose platform is ``platform`` over HTTP, with a flow that is slow to start."""
    async with serve_asgi(platform) as platform_url:
        app = App(settings=Settings(public_url=PUBLIC, platform_url=platform_url,
                                    secret=SECRET, response_budget=0.05,
                                    push_timeout=PUSH_TIMEOUT, **settings))
        yield app


def slow_flow(app: App, trail: list[Any]) -> None:
    @app.flow(number=NUMBER)
    async def lookup(call: Call) -> None:
        try:
            await anyio.sleep(0.1)  # past the budget with nothing queued: setcommands
            await call.say("Thanks for waiting.")
            choice = await call.gather(prompt="Press a key.", num_digits=1)
            await call.say(f"You pressed {choice.digits}.")
            trail.append("done")
        except CallEnded as exc:
            trail.append(("ended", exc.by))
            raise
        finally:
            trail.append("finally")


@pytest.mark.parametrize("failures", [[500, HANG], [HANG]], ids=["5xx-timeout", "timeout"])
async def test_setcommands_failures_are_retried_with_backoff_and_delivered_once(
    failures: list[int | str], caplog: pytest.LogCaptureFixture,
) -> None:
    platform = FakePlatform(setcommands=list(failures))
    trail: list[Any] = []
    with caplog.at_level(logging.WARNING, logger="callflow"):
        async with platform_app(platform) as app:
            slow_flow(app, trail)
            async with running(app) as client:
                caller = await Caller(client, "retry-1", platform=platform).run()
    attempts = platform.attempts
    assert [a.answer for a in attempts] == [*failures, 202]
    # Same commands every time, and accepted once: the caller heard each thing once.
    assert all(a.json == attempts[0].json for a in attempts)
    assert len(platform.delivered) == 1
    assert caller.heard == ["Thanks for waiting.", "Press a key.", "You pressed 1."]
    assert trail == ["done", "finally"]
    # Backoff: each pause longer than the one before (0.25 s, then 0.5 s).
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    waits = [gap - (PUSH_TIMEOUT if a.answer == HANG else 0)
             for gap, a in zip(gaps, attempts, strict=False)]
    assert waits[0] >= 0.2, gaps
    if len(waits) > 1:
        assert waits[1] >= 0.45 and waits[1] > waits[0], gaps
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("retry-1" in w and "setcommands attempt" in w for w in warnings) == len(failures)


async def test_a_platform_that_never_answers_ends_the_call_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every setcommands times out (tests/test_app.py covers a platform failing with 5xx)."""
    platform = FakePlatform(forever=HANG)
    trail: list[Any] = []
    with caplog.at_level(logging.WARNING, logger="callflow"):
        async with platform_app(platform, push_retries=2) as app:
            slow_flow(app, trail)
            async with running(app) as client:
                await settle()
                before = app_tasks()
                assert commands_of(await post(client, "CalledNumber", "lost-1")) == [
                    {"notifications": "true"}]
                with anyio.fail_after(10):
                    await app.wait_ended("lost-1")
                assert app.sessions == {}
                await settle()
                assert app_tasks() == before
                # The platform's late notifications for the call find it gone, harmlessly.
                assert commands_of(await post(client, "HangUp", "lost-1",
                                              direction="fromApplication")) == []
    assert len(platform.attempts) == 2
    assert platform.delivered == []
    assert trail == [("ended", "app"), "finally"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("lost-1" in e and "could not deliver" in e for e in errors), errors


async def test_retries_do_not_reorder_or_merge_batches() -> None:
    """Two pushes in a row, the first retried: the platform accepts them in order, once each."""
    platform = FakePlatform(setcommands=[500])
    async with platform_app(platform) as app:
        @app.flow(number=NUMBER)
        async def two_steps(call: Call) -> None:
            await anyio.sleep(0.1)
            await call.say("First.")
            await call.gather(num_digits=1)
            await anyio.sleep(0.1)
            await call.say("Second.")
            await call.gather(num_digits=1)

        async with running(app) as client:
            caller = await Caller(client, "order-1", platform=platform, choices=[0]).run()
    assert [body["commands"][0] for body in platform.delivered] == [speak("First."),
                                                                    speak("Second.")]
    assert caller.heard == ["First.", "Second."]
