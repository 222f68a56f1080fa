"""What a call leaves behind when it ends: no REST retries nobody hears, no reference cycle.

Over real HTTP: the app and a fake platform each under hypercorn, on ports the OS picks.
"""

from __future__ import annotations

import dataclasses
import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
import pytest

from callflow import App, Call, Settings
from callflow._session import Session
from callflow.simulator import serve_asgi

from ._platforms import EVENTS, TWILIO_SID, incoming, platform_app, twilio_headers
from ._support import CALLER, NUMBER, PUBLIC, FakePlatform, note

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def served(platform: FakePlatform, **settings: Any
                 ) -> AsyncIterator[tuple[App, httpx.AsyncClient, str]]:
    """An app whose platform is ``platform``; yields it, a client and its events URL."""
    async with serve_asgi(platform) as platform_url:
        app = App(settings=Settings(platform_url=platform_url, secret="s", **settings))
        yield app, httpx.AsyncClient(timeout=10), "/callflow/s/events"


class Failing:
    """A platform's REST API that answers every request 503, and counts them."""

    def __init__(self) -> None:
        self.requests = 0
        self._arrived = anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        self.requests += 1
        self._arrived.set()
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def wait_request(self) -> None:
        with anyio.fail_after(5):
            while not self.requests:
                self._arrived = anyio.Event()
                await self._arrived.wait()


def hang_up(platform: str, call_id: str) -> tuple[str, bytes, dict[str, str]]:
    """The caller's hang-up, as the platform reports it."""
    if platform == "bluevia":
        return EVENTS, json.dumps(note("HangUp", call_id)).encode(), {
            "content-type": "application/json"}
    params = {"CallSid": call_id, "AccountSid": TWILIO_SID, "From": CALLER, "To": NUMBER,
              "CallStatus": "completed", "Direction": "inbound"}  # Twilio's status callback
    return EVENTS, urlencode(params).encode(), twilio_headers(EVENTS, params)


# BlueVia only: there a slow flow's commands go by REST (setcommands). Twilio holds the
# line with a hold loop instead (keepalive), and Telnyx hands them to the call's runner.
@pytest.mark.parametrize("platform", ["bluevia"])
async def test_a_push_stops_retrying_once_the_caller_hangs_up(platform: str) -> None:
    api = Failing()  # every push fails, and would be retried
    async with serve_asgi(api) as api_url:
        app = platform_app(platform, response_budget=0.05, push_retries=5)
        app.configure(dataclasses.replace(app.settings, platform_url=api_url))
        app._transport = None

        @app.flow
        async def slow(call: Call) -> None:
            await anyio.sleep(0.2)  # past the budget: the gather goes by REST
            await call.gather(prompt="Press a key.", num_digits=1)

        async with serve_asgi(app) as url, httpx.AsyncClient(timeout=10) as client:
            for make in (incoming, hang_up):
                if make is hang_up:
                    await api.wait_request()  # the first push failed: then the caller goes
                events, body, headers = make(platform, "c1")
                response = await client.post(url + events.removeprefix(PUBLIC), content=body,
                                             headers=headers)
                assert response.status_code == 200, response.text
            with anyio.fail_after(10):
                await app.wait_ended("c1")
    # One attempt, and at most the one in flight when the caller hung up: not five.
    assert api.requests <= 2


async def test_a_finished_session_is_freed_without_the_cyclic_gc() -> None:
    async with served(FakePlatform()) as (app, client, path):
        @app.flow
        async def short(call: Call) -> None:
            await call.gather(prompt="Press a key.", num_digits=1)
            await call.say("Bye.")

        async with serve_asgi(app) as url, client:
            app.settings.public_url = url
            gc.collect()
            gc.disable()
            try:
                first = await client.post(url + path, json=note("CalledNumber", "c1"))
                action = first.json()["commands"][-2]["getDigits"]["actionUrl"]
                last = await client.post(action, json=note("DigitsCollected", "c1", digits="1"))
                assert last.json()["commands"][-1] == {"hangup": {"reason": "rejected"}}
                with anyio.fail_after(5):
                    await app.wait_ended("c1")
                left = [o for o in gc.get_objects() if isinstance(o, Session)]
            finally:
                gc.enable()
    assert left == []
