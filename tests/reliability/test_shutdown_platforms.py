"""Shutdown in memory mode, on every platform and against a slow one.

Every live call hears the shutdown message and is hung up: on Telnyx too, whose commands
go by REST one at a time (the app once pushed there, which Telnyx refuses, and hung up
nobody).  With a platform that hangs or is slow, every live call is still attempted within
``shutdown_grace``, and the calls not confirmed are logged.

The app, the simulator and the fake platform are each served by hypercorn on a port the
OS picks; leaving ``serve_asgi`` stops the server as SIGTERM does (no more requests, then
the app's lifespan shutdown).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest

import callflow
from callflow import App, Call, Settings
from callflow.simulator import Clock, Simulator, serve_asgi, serve_simulator

from ._support import HANG, FakePlatform, note

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

NUMBER = "+34900000001"
CALLER = "+34600000001"
GOODBYE = "We are closing. Goodbye."


@pytest.mark.parametrize("platform", ["bluevia", "twilio", "telnyx"])
async def test_a_live_call_hears_the_shutdown_message_and_is_hung_up(platform: str) -> None:
    # Real time: the caller must still be in the gather when the app goes.
    sim = Simulator(platform=platform, clock=Clock.real())
    app = App()

    @app.flow(number=NUMBER)
    async def menu(call: Call) -> None:
        await call.say("Welcome.")
        await call.gather(prompt="Press a key.", num_digits=1, timeout=30)

    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                        shutdown_message=GOODBYE, **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            sim.add_account_number(NUMBER)
            await app.configure_numbers()
            with sim.subscribe() as events:
                call = await sim.place_inbound_call(CALLER, NUMBER)
                with anyio.fail_after(10):
                    async for event in events:  # the caller hears the gather's prompt
                        entry = event.entry
                        if entry is not None and "Press a key." in entry.text:
                            break
        # The app has shut down (as on SIGTERM): the call must be over, or end at once.
        with anyio.fail_after(10):
            transcript = await call.wait_ended()
    assert GOODBYE in transcript.spoken, transcript.render(notifications=True)
    hangups = transcript.texts("hangup")
    assert hangups and "application" in hangups[-1], transcript.render(notifications=True)


class SlowPlatform:
    """The platform's REST API, answering every request after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.answered: set[str] = set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        await anyio.sleep(self.delay)
        self.answered.add(scope["path"].split("/")[-2])
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def waiting_app(platform_url: str, **settings: Any) -> App:
    app = App(settings=Settings(platform_url=platform_url, secret="s", **settings))

    @app.flow
    async def waits(call: Call) -> None:
        await call.gather(prompt="Press a key.", num_digits=1, timeout=60)

    return app


async def start_calls(app: App, count: int) -> None:
    """``count`` calls, each left waiting in a gather."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                 base_url="http://app") as client:
        for i in range(count):
            response = await client.post("/callflow/s/events",
                                         json=note("CalledNumber", f"call-{i}"))
            assert response.status_code == 200


async def test_a_hanging_platform_still_gets_every_call_within_the_grace(
        caplog: pytest.LogCaptureFixture) -> None:
    platform = FakePlatform(forever=HANG)
    caplog.set_level(logging.DEBUG, logger="callflow")
    with anyio.fail_after(20):
        async with serve_asgi(platform) as url:
            async with waiting_app(url, shutdown_grace=2.0, push_timeout=5.0) as app:
                await start_calls(app, 200)
                started = anyio.current_time()
            took = anyio.current_time() - started
    attempted = {r.path.split("/")[-2] for r in platform.attempts}
    assert attempted == {f"call-{i}" for i in range(200)}
    assert took < 2.0 + 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "not confirmed" in r.getMessage()]
    assert warnings and "200 of 200" in warnings[0], warnings
    ids = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG
           and r.getMessage().startswith("not confirmed hung up:")]
    assert ids and "call-0" in ids[0] and "call-199" in ids[0]


async def test_a_slow_platform_confirms_every_call_within_the_grace() -> None:
    # 300 calls, 64 at a time, each answered after 0.5 s: five rounds, 2.5 s; more than
    # push_timeout, which once bounded the whole shutdown, but within the grace.
    platform = SlowPlatform(0.5)
    with anyio.fail_after(20):
        async with serve_asgi(platform) as url:
            app = waiting_app(url, shutdown_grace=5.0, push_timeout=2.0)
            async with app:
                await start_calls(app, 300)
    assert platform.answered == {f"call-{i}" for i in range(300)}
