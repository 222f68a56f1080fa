"""A call the app does not know is ended at once and for good, with one apology.

After a crash and a restart with the memory store, the platform goes on posting about
the calls that were live: the app answers the first such notification with the apology
and a hang-up (BlueVia, Twilio) or hangs up by REST (Telnyx), and every later one
harmlessly.  It once answered 404: on BlueVia the platform fell back, the fallback got
the apology, and the apology's own notifications got 404 again, 84 times in 3.5 minutes.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
import pytest

from callflow import App, Call, _app
from callflow._session import Flow

from ._platforms import EVENTS, TWILIO_SID, incoming, platform_app, telnyx_headers, twilio_headers
from ._restart import APOLOGY, CALLER, NUMBER, PLATFORMS, Restart, restarting
from ._support import PUBLIC, WAIT, note, settle

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ENDS_WITHIN = 15.0
"""Seconds of the platform's time the whole call may last (the apology takes 5)."""


def menu_that_dies(restart: Restart) -> Flow:
    async def menu(call: Call) -> None:
        await call.say("Welcome.")
        restart.restart()  # killed here: the gather below is the last the platform gets
        await call.gather(prompt="Press a key.", num_digits=1, timeout=10)
        await call.say("You pressed a key.")
    return menu


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_live_call_after_a_restart_hears_one_apology_and_ends(platform: str) -> None:
    async with restarting(platform, menu_that_dies) as r:
        call = await r.sim.place_inbound_call(CALLER, NUMBER, script=["press-next:1"])
        with anyio.fail_after(20):
            transcript = await call.wait_ended()
        assert r.after.sessions == {}
    assert transcript.spoken.count(APOLOGY) == 1, transcript.render(notifications=True)
    assert "You pressed a key." not in transcript.spoken
    # Every notification was answered: no 404, no fallback, no idle hang-up.
    assert transcript.texts("error") == [], transcript.render(notifications=True)
    assert transcript.entries[-1].at < ENDS_WITHIN, transcript.render()


# -- a call the app forgot, and a hang-up that overtakes its call ------------------------------


class Recorded:
    """The platform's REST API: answers ``200 {}`` and keeps every request's path."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._arrived = anyio.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        self._arrived.set()
        return httpx.Response(200, json={})

    async def wait_for(self, path: str, *, partial: bool = False) -> None:
        """Until a request to ``path`` (with ``partial``: a path ending so) has come."""
        with anyio.fail_after(WAIT):
            while not any(p == path or (partial and p.endswith(path)) for p in self.paths):
                self._arrived = anyio.Event()
                await self._arrived.wait()


def recorded_app(platform: str, **settings: Any) -> tuple[App, Recorded]:
    api = Recorded()
    app = platform_app(platform, **settings)
    app._transport = httpx.MockTransport(api)
    return app, api


def telnyx_event(name: str, call_id: str, **payload: Any) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"data": {
        "record_type": "event", "event_type": name, "id": f"{name}-{call_id}",
        "occurred_at": "2024-01-01T00:00:00Z",
        "payload": {"call_control_id": call_id, "from": CALLER, "to": NUMBER, **payload}},
    }).encode()
    return body, telnyx_headers(body)


async def late_digits(client: httpx.AsyncClient, platform: str, call_id: str) -> httpx.Response:
    """A key pressed in a gather the app has long forgotten (its step 1)."""
    url = f"{EVENTS}?call={call_id}&step=1"
    if platform == "bluevia":
        return await client.post(url, json=note("DigitsCollected", call_id, digits="1"))
    if platform == "twilio":
        params = {"CallSid": call_id, "AccountSid": TWILIO_SID, "From": CALLER, "To": NUMBER,
                  "CallStatus": "in-progress", "Digits": "1"}
        return await client.post(url, content=urlencode(params),
                                 headers=twilio_headers(url, params))
    body, headers = telnyx_event("call.gather.ended", call_id, digits="1", status="valid")
    return await client.post(EVENTS, content=body, headers=headers)


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_call_forgotten_among_the_ended_is_ended_again(
        platform: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_app, "ENDED_MEMORY", 1)
    app, api = recorded_app(platform)

    @app.flow
    async def short(call: Call) -> None:
        await call.hangup()

    async with app, httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=PUBLIC
                                      ) as client:
        for call_id in ("old", "new"):  # "new" pushes "old" out of the memory of ended calls
            url, body, headers = incoming(platform, call_id)
            assert (await client.post(url, content=body, headers=headers)).status_code == 200
            if platform == "telnyx":  # its runner turns the call away, and is over
                await api.wait_for(f"/v2/calls/{call_id}/actions/reject")
                await settle()
        response = await late_digits(client, platform, "old")
        assert response.status_code == 200, response.text
        if platform == "bluevia":
            assert response.json()["commands"][-1] == {"hangup": {"reason": "rejected"}}
        elif platform == "twilio":
            assert "<Hangup" in response.text
        else:
            speak, hangup = "/v2/calls/old/actions/speak", "/v2/calls/old/actions/hangup"
            await api.wait_for(speak)  # the apology, by REST
            body, headers = telnyx_event("call.speak.ended", "old", status="completed")
            await client.post(EVENTS, content=body, headers=headers)
            await api.wait_for(hangup)
            assert api.paths.count(speak) == 1
        # Answered as ended from now on: a second late notification changes nothing.
        assert (await late_digits(client, platform, "old")).status_code == 200
        assert app.sessions == {}


async def test_a_bluevia_hang_up_before_its_call_keeps_the_call_from_starting() -> None:
    app, _ = recorded_app("bluevia")
    started: list[str] = []

    @app.flow
    async def flow(call: Call) -> None:
        started.append(call.id)
        await call.gather(prompt="Press a key.", num_digits=1)

    async with app, httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=PUBLIC
                                      ) as client:
        hangup = await client.post(EVENTS, json=note("HangUp", "early"))
        assert hangup.status_code == 200, hangup.text
        called = await client.post(EVENTS, json=note("CalledNumber", "early"))
        assert called.status_code == 200
        assert started == [] and app.sessions == {}
        assert not [c for c in called.json()["commands"] if "getDigits" in c]
