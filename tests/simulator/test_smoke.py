from __future__ import annotations

import time

import httpx
import pytest

from callflow.simulator import Simulator

from ._app import APP, App

pytestmark = pytest.mark.anyio

CALLER = "+34600000001"
NUMBER = "+34900000001"


def make_sim(app: App, **kwargs: object) -> Simulator:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    sim = Simulator(http_client=client, **kwargs)  # type: ignore[arg-type]
    sim.add_account_number(NUMBER, callback_url=f"{APP}/voice", fallback_url=f"{APP}/fallback")
    return sim


async def test_speak_and_digits() -> None:
    app = App({
        "/voice": lambda n: [
            {"getDigits": {"actionUrl": f"{APP}/menu", "numberOfDigits": 1, "timeout": 30,
                           "speak": {"text": "Press 1 for sales"}}},
            {"speak": {"text": "No input"}},
        ],
        "/menu": lambda n: [{"speak": {"text": f"You pressed {n['digits']}"}}, {"hangup": {}}],
    })
    start = time.monotonic()
    async with make_sim(app) as sim:
        call = await sim.place_inbound_call(CALLER, NUMBER, script=["wait:sales", "press:1"])
        transcript = await call.wait_ended()
    print(transcript)
    assert transcript.spoken == ["Press 1 for sales", "You pressed 1"]
    assert app.events() == ["CalledNumber", "DigitsCollected"]
    assert time.monotonic() - start < 2
