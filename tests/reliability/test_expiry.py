"""Memory mode: a call whose hang-up was lost does not stay forever.

A call that waits on the platform without a single notification for ``idle_timeout``, or
that outlives ``max_call_duration``, is logged, hung up by REST and forgotten.  Once, 4,440
sessions were left after an overload, and Telnyx runners waited for ``call.answered`` with
no limit.  The app is served by hypercorn on a port the OS picks; its REST requests go to
a recording stand-in for each platform.
"""

from __future__ import annotations

import logging

import anyio
import httpx
import pytest

from callflow import Call
from callflow.simulator import serve_asgi

from ._platforms import PLATFORMS, incoming
from .test_unknown_calls import recorded_app

pytestmark = pytest.mark.anyio

HANG_UP = {
    "bluevia": "/comms/v1/calls/lost/setcommands",
    "twilio": "/Calls/lost.json",
    "telnyx": "/v2/calls/lost/actions/hangup",
}
LIMITS = {"idle": {"idle_timeout": 0.3, "max_call_duration": 0.0},
          "max-duration": {"idle_timeout": 0.0, "max_call_duration": 0.3}}


@pytest.mark.parametrize("limit", sorted(LIMITS))
@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_call_whose_hang_up_was_lost_is_hung_up_and_forgotten(
        platform: str, limit: str, caplog: pytest.LogCaptureFixture) -> None:
    app, api = recorded_app(platform, **LIMITS[limit])

    @app.flow
    async def menu(call: Call) -> None:
        await call.gather(prompt="Press a key.", num_digits=1, timeout=60)

    async with serve_asgi(app) as url, httpx.AsyncClient() as client:
        events, body, headers = incoming(platform, "lost")
        response = await client.post(url + events.split(".example", 1)[1], content=body,
                                     headers=headers)
        assert response.status_code == 200
        assert "lost" in app.sessions
        # No notification ever again: the caller hung up, and the news was lost.
        with anyio.fail_after(5):
            await app.wait_ended("lost")
            await api.wait_for(HANG_UP[platform], partial=True)
        assert app.sessions == {}
    assert any("lost" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records), caplog.text
