"""What a call leaves behind when it ends: no REST retries nobody hears, no reference cycle.

Over real HTTP: the app and a fake platform each under hypercorn, on ports the OS picks.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from callflow import App, Call, Settings
from callflow._session import Session
from callflow.simulator import serve_asgi

from ._support import FakePlatform, note

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def served(platform: FakePlatform, **settings: Any
                 ) -> AsyncIterator[tuple[App, httpx.AsyncClient, str]]:
    """An app whose platform is ``platform``; yields it, a client and its events URL."""
    async with serve_asgi(platform) as platform_url:
        app = App(settings=Settings(platform_url=platform_url, secret="s", **settings))
        yield app, httpx.AsyncClient(timeout=10), "/callflow/s/events"


async def test_a_push_stops_retrying_once_the_caller_hangs_up() -> None:
    platform = FakePlatform(forever=503)  # every setcommands fails, and would be retried

    async with served(platform, response_budget=0.05, push_retries=5) as (app, client, path):
        @app.flow
        async def slow(call: Call) -> None:
            await anyio.sleep(0.2)  # past the budget: the gather goes by REST
            await call.gather(prompt="Press a key.", num_digits=1)

        async with serve_asgi(app) as url, client:
            response = await client.post(url + path, json=note("CalledNumber", "c1"))
            assert response.status_code == 200
            await platform.wait_requests(1)  # the first setcommands failed...
            hangup = await client.post(url + path, json=note("HangUp", "c1"))  # ...caller goes
            assert hangup.status_code == 200
            with anyio.fail_after(10):
                await app.wait_ended("c1")
            attempts = len(platform.attempts)
    # One attempt, and at most the one in flight when the caller hung up: not five.
    assert attempts <= 2, platform.attempts


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
