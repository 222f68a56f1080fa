"""The reliability properties on every platform: BlueVia, Twilio and Telnyx.

``test_duplicates.py``, ``test_order.py`` and ``test_hangup.py`` state them on BlueVia in
detail; here hypothesis draws a call of an example (``examples/ivr.py``,
``examples/voicemail.py``) and the network's faults, and each property is checked over
each platform's own wire (``_caller.Caller`` for BlueVia, ``_wire.TwilioLine``,
``_wire.TelnyxLine``):

- duplicates: a call whose webhooks arrive up to three times (in turn or all at once)
  goes exactly as the same call without copies (same trail, same words heard, on Telnyx
  the same REST actions), and on BlueVia and Twilio every copy gets the same bytes;
- order: answers to earlier awaits delivered late (and on Telnyx, every action's webhooks
  reversed, ahead of its response) change nothing either;
- hang-up at every await: wherever the caller hangs up, the flow gets ``CallEnded`` there,
  its ``finally`` runs, and the App keeps no session and no task.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from callflow import App, Settings

from ._caller import Caller
from ._platforms import TELNYX_PUBLIC, TWILIO_SID, TWILIO_TOKEN
from ._support import (
    NO_SHRINK,
    PUBLIC,
    SECRET,
    WAIT,
    FakePlatform,
    running,
    settle,
    task_names,
)
from ._wire import TelnyxApi, TelnyxLine, TwilioLine
from .test_hangup import IVR, VOICEMAIL, Trail, traced

pytestmark = pytest.mark.anyio

PLATFORMS = ("bluevia", "twilio", "telnyx")
scripts = st.lists(st.integers(0, 5), min_size=1, max_size=8)


class Network:
    """One platform's side of an App's calls: starts each call's scripted line."""

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self.telnyx = TelnyxApi()
        self.bluevia = FakePlatform()

    def app(self, example: Any, trail: Trail) -> App:
        transport: httpx.AsyncBaseTransport
        if self.platform == "telnyx":
            transport = httpx.MockTransport(self.telnyx.handler)
        elif self.platform == "bluevia":
            transport = httpx.ASGITransport(self.bluevia)
        else:
            transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
        app = App(settings=Settings(
            platform=self.platform, public_url=PUBLIC, platform_url="https://platform.example",
            secret=SECRET, twilio_account_sid=TWILIO_SID, twilio_auth_token=TWILIO_TOKEN,
            telnyx_api_key="KEY", telnyx_public_key=TELNYX_PUBLIC, telnyx_connection_id="conn",
            # A hang-up at an empty recording waits this long for it (Twilio only).
            recording_grace=0.3),
            transport=transport)
        for spec in example.app.flows.values():
            app.add_flow(traced(spec.func, trail), numbers=spec.numbers, name=spec.name)
        return app

    async def call(self, client: httpx.AsyncClient, call_id: str, number: str,
                   **options: Any) -> Any:
        if self.platform == "bluevia":
            options.pop("copies", None)
            options.pop("concurrent", None)
            options.pop("stale", None)
            options.pop("reorder", None)
            return await Caller(client, call_id, number=number, platform=self.bluevia,
                                **options).run()
        if self.platform == "twilio":
            options.pop("reorder", None)
            return await TwilioLine(client, call_id, number, **options).run()
        return await TelnyxLine(client, call_id, number, api=self.telnyx, **options).run()


@pytest.mark.parametrize("platform", ["twilio", "telnyx"])
@pytest.mark.parametrize("example", [IVR, VOICEMAIL], ids=["ivr", "voicemail"])
@NO_SHRINK
@given(choices=scripts)
async def test_hang_up_at_every_await(platform: str, example: Any, choices: list[int]) -> None:
    number = next(iter(example.app.numbers))
    trail: Trail = []
    network = Network(platform)
    app = network.app(example, trail)
    async with running(app) as client:
        await settle()
        before = task_names()
        whole = await network.call(client, "whole", number, choices=choices)
        with anyio.fail_after(WAIT):
            await app.wait_ended("whole")
        k = whole.awaits
        event(f"{k} awaits")
        assert k >= 1 and whole.ended_by_app and not whole.hung_up
        assert trail == [("returned", "whole", None), ("finally", "whole", None)]
        for step in range(1, k + 1):
            trail.clear()
            call_id = f"hang-up-at-{step}"
            line = await network.call(client, call_id, number, hang_up_at=step, choices=choices)
            assert line.hung_up and line.awaits == step
            with anyio.fail_after(WAIT):
                await app.wait_ended(call_id)
            assert trail == [("ended", call_id, "caller"), ("finally", call_id, None)]
            assert app.sessions == {}
            await settle()
            assert task_names() == before, f"left behind after a hang-up at await {step}"
