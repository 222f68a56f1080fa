"""The reliability properties on Twilio and Telnyx, as on BlueVia.

``test_duplicates.py``, ``test_order.py`` and ``test_hangup.py`` state them on BlueVia in
detail; here hypothesis draws a call of an example (``examples/ivr.py``,
``examples/voicemail.py``) and the network's faults, and each property is checked over
each platform's own wire (``_wire.TwilioLine``, ``_wire.TelnyxLine``), parametrized by
platform:

- duplicates: a call whose webhooks arrive up to three times (in turn or all at once)
  goes exactly as the same call without copies (same trail, same words heard, on Telnyx
  the same REST actions), and on Twilio every copy gets the same TwiML, byte for byte;
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
from hypothesis import event, given, settings
from hypothesis import strategies as st

from callflow import App, Settings

from ._platforms import TELNYX_PUBLIC, TWILIO_SID, TWILIO_TOKEN
from ._support import (
    NO_SHRINK,
    PUBLIC,
    SECRET,
    WAIT,
    running,
    settle,
    task_names,
)
from ._wire import TelnyxApi, TelnyxLine, TwilioLine
from .test_hangup import IVR, VOICEMAIL, Trail, traced

pytestmark = pytest.mark.anyio

scripts = st.lists(st.integers(0, 5), min_size=1, max_size=8)
FEW = settings(NO_SHRINK, max_examples=15)
"""Fewer examples than on BlueVia (test_hangup.py draws 40): each is a few whole calls per
platform and backend, and the suite's time is shared."""


class Network:
    """One platform's side of an App's calls: starts each call's scripted line."""

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self.telnyx = TelnyxApi()

    def app(self, example: Any, trail: Trail) -> App:
        transport: httpx.AsyncBaseTransport
        if self.platform == "telnyx":
            transport = httpx.MockTransport(self.telnyx.handler)
        else:  # Twilio: the App needs no REST call on these calls
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
        if self.platform == "twilio":
            options.pop("reorder", None)
            return await TwilioLine(client, call_id, number, **options).run()
        return await TelnyxLine(client, call_id, number, api=self.telnyx, **options).run()


@pytest.mark.parametrize("platform", ["twilio", "telnyx"])
@pytest.mark.parametrize("example", [IVR, VOICEMAIL], ids=["ivr", "voicemail"])
@FEW
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


def outcome(line: Any) -> tuple[Any, ...]:
    """What a call did, for comparing one run with another: words heard, awaits, actions."""
    heard = [text.replace(line.call_id, "<call>") for text in line.heard]  # recording URLs
    return (heard, line.awaits, line.hung_up, getattr(line, "actions", None))


async def undisturbed_and_disturbed(platform: str, example: Any, choices: list[int],
                                    **faults: Any) -> None:
    number = next(iter(example.app.numbers))
    trail: Trail = []
    network = Network(platform)
    app = network.app(example, trail)
    async with running(app) as client:
        await settle()
        before = task_names()
        # Ids that no spoken text contains: the Telnyx actions are compared with them masked.
        calm = await network.call(client, "v3:calm", number, choices=choices)
        with anyio.fail_after(WAIT):
            await app.wait_ended("v3:calm")
        calm_trail = [(what, how) for what, _, how in trail]
        trail.clear()
        rough = await network.call(client, "v3:rough", number, choices=choices, **faults)
        with anyio.fail_after(WAIT):
            await app.wait_ended("v3:rough")
        await settle()
        event(f"{rough.delivered - calm.delivered} extra webhooks")
        # The copies and the late answers advanced nothing: the call went exactly as without.
        assert [(what, how) for what, _, how in trail] == calm_trail
        assert outcome(rough) == outcome(calm)
        assert app.sessions == {}
        assert task_names() == before


@pytest.mark.parametrize("platform", ["twilio", "telnyx"])
@pytest.mark.parametrize("example", [IVR, VOICEMAIL], ids=["ivr", "voicemail"])
@FEW
@given(choices=scripts, copies=st.lists(st.integers(0, 2), min_size=1, max_size=6),
       concurrent=st.booleans())
async def test_duplicated_webhooks_advance_the_call_once(
    platform: str, example: Any, choices: list[int], copies: list[int], concurrent: bool
) -> None:
    """Every webhook delivered 1 to 3 times, in turn or at once (Twilio: same TwiML each)."""
    await undisturbed_and_disturbed(platform, example, choices, copies=copies,
                                    concurrent=concurrent)


@pytest.mark.parametrize("platform", ["twilio", "telnyx"])
@pytest.mark.parametrize("example", [IVR, VOICEMAIL], ids=["ivr", "voicemail"])
@FEW
@given(choices=scripts, reorder=st.booleans(), copies=st.lists(st.integers(0, 2), max_size=4))
async def test_late_and_reordered_webhooks_change_nothing(
    platform: str, example: Any, choices: list[int], reorder: bool, copies: list[int]
) -> None:
    """After each answer, a late answer to an earlier await (Twilio: its action URL again,
    with other digits; Telnyx: an old completion under a new id); on Telnyx, every action's
    webhooks reversed and ahead of its response too, if drawn."""
    await undisturbed_and_disturbed(platform, example, choices, stale=True, reorder=reorder,
                                    copies=copies)
