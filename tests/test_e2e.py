"""End to end: the App under real hypercorn, the simulator under real hypercorn, real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

import callflow
from callflow.simulator import Clock, Phone, Simulator, serve_asgi, serve_simulator

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CALLER = "+34600000001"
NUMBER = "+34900000001"
AGENT = "+34910000001"


@dataclass
class Served:
    app: callflow.App
    sim: Simulator
    app_url: str
    sim_url: str
    log: list[str] = field(default_factory=list)


@asynccontextmanager
async def served(app: callflow.App, *, clock: Clock | None = None,
                 **sim_options: Any) -> AsyncIterator[Served]:
    sim = Simulator(clock=clock, **sim_options)
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=0.2,
                                        **{k: v for k, v in _settings(app).items()}))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            configured = await app.configure_numbers()
            assert sim.account_numbers[NUMBER].callback_url == configured[NUMBER]
            yield Served(app, sim, app_url, sim_url)


def _settings(app: callflow.App) -> dict[str, Any]:
    return dict(getattr(app, "_test_settings", {}))


async def call_in(s: Served, *script: str) -> Any:
    call = await s.sim.place_inbound_call(CALLER, NUMBER, script=list(script))
    transcript = await call.wait_ended()
    with anyio.fail_after(5):
        await s.app.wait_ended(call.call_id)
    assert call.call_id not in s.app.sessions
    return transcript


def make_ivr(seen: dict[str, Any]) -> callflow.App:
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def reception(call: callflow.Call) -> None:
        try:
            await call.say("Welcome to Acme.")
            choice = await call.menu("Press 1 for sales, 2 for support.",
                                     {"1": "sales", "2": "support"}, retries=2)
            seen["choice"] = choice
            if choice == "sales":
                result = await call.dial(AGENT, timeout=20)
                seen["dial"] = result
                if not result.answered:
                    await call.say("Nobody is free.")
            await call.say("Goodbye.")
        finally:
            seen["finally"] = True

    return app


async def test_ivr_menu_choice_and_dial_over_real_http() -> None:
    seen: dict[str, Any] = {}
    app = make_ivr(seen)
    async with served(app) as s:
        s.sim.add_phone(AGENT, Phone.answers(after=2, hang_up_after=12))
        transcript = await call_in(s, "wait:sales", "press:1")
    assert seen["choice"] == "sales"
    dial: callflow.DialResult = seen["dial"]
    assert dial.status == "answered"
    assert dial.number == AGENT
    assert 11 <= dial.duration <= 13
    assert transcript.spoken[:2] == ["Welcome to Acme.", "Press 1 for sales, 2 for support."]
    assert transcript.spoken[-1] == "Goodbye."
    assert transcript.keys == "1"
    assert seen["finally"] is True


async def test_busy_agent_and_no_input_reprompt() -> None:
    seen: dict[str, Any] = {}
    app = make_ivr(seen)
    async with served(app) as s:
        s.sim.add_phone(AGENT, Phone.busy())
        transcript = await call_in(s, "wait:sales", "silence:1", "wait:sales", "press:1")
    assert seen["dial"].status == "busy"
    spoken = transcript.spoken
    assert spoken.count("Press 1 for sales, 2 for support.") >= 2
    assert "Sorry, I didn't hear anything." in spoken
    assert "Nobody is free." in spoken


async def test_caller_hangs_up_mid_prompt_runs_finally() -> None:
    seen: dict[str, Any] = {}
    app = make_ivr(seen)
    async with served(app) as s:
        await call_in(s, "wait:sales", "hangup:0")
    assert seen["finally"] is True
    assert "choice" not in seen


async def test_record_and_fetch_the_recording() -> None:
    results: list[callflow.RecordResult] = []
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def voicemail(call: callflow.Call) -> None:
        result = await call.record(prompt="Leave a message after the beep.", beep=True,
                                   finish_on_key="#", max_length=30)
        results.append(result)
        await call.say("Thank you.")

    async with served(app) as s:
        transcript = await call_in(s, "wait:message", "talk:4", "press:#")
        assert results and results[0].url
        async with httpx.AsyncClient() as client:
            wav = await client.get(results[0].url)
    assert wav.status_code == 200
    assert wav.content[:4] == b"RIFF"
    assert 3 <= results[0].duration <= 6
    assert transcript.spoken[-1] == "Thank you."


async def test_slow_flow_delivers_later_commands_through_setcommands() -> None:
    """A flow that awaits slow I/O with nothing queued: the rest goes by setcommands."""
    hits: list[str] = []

    async def crm(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        hits.append(scope["path"])
        await anyio.sleep(0.6)  # the slow back end a flow might call
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"name": "Ana"}'})

    app = callflow.App()

    @app.flow(number=NUMBER)
    async def greet(call: callflow.Call) -> None:
        async with httpx.AsyncClient() as client:
            customer = (await client.get(f"{crm_url}/customers/{call.caller}")).json()
        await call.say(f"Hello {customer['name']}.")
        answer = await call.gather(prompt="Press 1 to continue.", num_digits=1, timeout=3)
        await call.say(f"You pressed {answer.digits}.")

    async with serve_asgi(crm) as crm_url, served(app, clock=Clock.real()) as s:
        pushed: list[str] = []
        original = s.app.push

        async def spy(session: Any, commands: list[callflow.Command]) -> None:
            pushed.extend(type(c).__name__ for c in commands)
            await original(session, commands)

        s.app.push = spy  # type: ignore[method-assign]
        transcript = await call_in(s, "wait:continue", "press:1")
    assert hits == [f"/customers/{CALLER}"]
    assert pushed == ["Say", "Gather"]
    assert transcript.spoken == ["Hello Ana.", "Press 1 to continue.", "You pressed 1."]


async def test_slow_flow_with_queued_speech_is_not_interrupted() -> None:
    """Queued speech before slow I/O is heard in full; the rest follows the Resume marker."""
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def hold(call: callflow.Call) -> None:
        await call.say("One moment please, I am looking up your account.")
        await anyio.sleep(0.5)
        await call.say("Your balance is ten euros.")

    async with served(app, clock=Clock.scaled(10)) as s:
        transcript = await call_in(s)
    assert transcript.spoken == ["One moment please, I am looking up your account.",
                                 "Your balance is ten euros."]


async def test_outbound_call_answered_and_busy() -> None:
    confirmed: list[str] = []
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def inbound(call: callflow.Call) -> None:
        await call.say("unused")

    @app.flow(name="reminder")
    async def reminder(call: callflow.Call) -> None:
        assert call.direction == "outbound"
        r = await call.gather(prompt=f"Hello {call.data['name']}, press 1 to confirm.",
                              num_digits=1)
        confirmed.append(r.digits)

    async with served(app) as s:
        s.sim.add_phone("+34600000009", Phone.answers(after=3, press="1"))
        s.sim.add_phone("+34600000008", Phone.busy())
        answered = await s.app.call("+34600000009", flow="reminder", data={"name": "Ana"})
        assert answered.status == "answered"
        await s.sim.calls[answered.call_id].wait_ended()
        with anyio.fail_after(5):
            await s.app.wait_ended(answered.call_id)
        busy = await s.app.call("+34600000008", flow=reminder, data={"name": "Bo"})
    assert confirmed == ["1"]
    assert busy.status == "busy"
    assert busy.call_id != answered.call_id


async def test_flow_that_raises_apologises_and_hangs_up() -> None:
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def broken(call: callflow.Call) -> None:
        await call.say("Starting.")
        raise RuntimeError("database down")

    async with served(app) as s:
        transcript = await call_in(s)
    assert transcript.spoken == ["Starting.", callflow.Settings().apology]


