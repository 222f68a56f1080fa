"""Shutting down with many calls in progress: every caller is hung up, a bounded number at once.

Without a bound, thousands of hang-ups queued on the HTTP client at once cost minutes of CPU
(httpx's pool scans its whole queue for every request) and the app would not stop in time.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from callflow import App, Call, Settings
from callflow._shutdown import SHUTDOWN_CONCURRENCY

from ._support import EVENTS, PUBLIC, SECRET, note

pytestmark = pytest.mark.anyio

CALLS = 300


class CountingPlatform:
    """The platform's REST API, noting how many setcommands are in flight at most."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.hung_up: set[str] = set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        while (await receive()).get("more_body", False):
            pass
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await anyio.sleep(0.001)  # the platform's own latency, so requests overlap
            self.hung_up.add(scope["path"].split("/")[-2])
        finally:
            self.in_flight -= 1
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def test_many_live_calls_are_all_hung_up_a_bounded_number_at_a_time() -> None:
    platform = CountingPlatform()
    app = App(settings=Settings(public_url=PUBLIC, platform_url="https://platform.example",
                                secret=SECRET, push_timeout=30),
              transport=httpx.ASGITransport(platform))

    @app.flow
    async def waits(call: Call) -> None:
        await call.gather(prompt="Press a key.", num_digits=1, timeout=60)

    async with app, httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=PUBLIC,
                                      timeout=30) as client:
        for i in range(CALLS):
            response = await client.post(EVENTS, json=note("CalledNumber", f"call-{i}"))
            assert response.status_code == 200
        assert len(app.sessions) == CALLS
    assert platform.hung_up == {f"call-{i}" for i in range(CALLS)}
    assert 1 < platform.most <= SHUTDOWN_CONCURRENCY
