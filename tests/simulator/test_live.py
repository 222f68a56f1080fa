"""The live API: subscriptions to transcript entries, `LiveCaller`, `LivePhone`."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from callflow.simulator import (
    Clock,
    ConfigError,
    LiveCaller,
    LiveEvent,
    LivePhone,
    Ring,
    SimCall,
    Simulator,
)

from ._app import APP, App

pytestmark = pytest.mark.anyio

CALLER = "+34600000001"
NUMBER = "+34900000001"
HUMAN = "+34600000077"


def make_sim(app: App, **kwargs: Any) -> Simulator:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    sim = Simulator(http_client=client, **kwargs)
    sim.add_account_number(NUMBER, callback_url=f"{APP}/voice", fallback_url=f"{APP}/fallback")
    return sim


def menu_app(timeout: float = 5) -> App:
    """Welcome, a one-key menu, then "You pressed N" and a hang-up."""
    return App({
        "/voice": lambda n: [
            {"speak": {"text": "Welcome to the live test line."}},
            {"getDigits": {"actionUrl": f"{APP}/digits", "numberOfDigits": 1,
                           "timeout": timeout, "speak": {"text": "Press 1 for sales"}}},
            {"speak": {"text": "Nothing pressed"}},
            {"hangup": {}},
        ],
        "/digits": lambda n: [{"speak": {"text": f"You pressed {n['digits']}"}}, {"hangup": {}}],
    })


async def test_live_caller_reacts_to_what_it_hears() -> None:
    app = menu_app()
    async with make_sim(app) as sim:
        with sim.clock.busy():
            call = await sim.place_inbound_call(CALLER, NUMBER)
            caller = LiveCaller(call.main)
            assert caller.number == CALLER
            assert await caller.wait_for("sales")
            assert caller.heard == ["Welcome to the live test line.", "Press 1 for sales"]
            assert await caller.press("1")
            assert await caller.wait_ended()
        transcript = await call.wait_ended()
    assert transcript.spoken == [
        "Welcome to the live test line.", "Press 1 for sales", "You pressed 1"
    ]
    assert transcript.keys == "1"
    assert app.events() == ["CalledNumber", "DigitsCollected"]
    assert not caller.live


async def test_keys_typed_early_wait_until_the_platform_listens() -> None:
    app = menu_app()
    async with make_sim(app) as sim:
        with sim.clock.busy():
            call = await sim.place_inbound_call(CALLER, NUMBER)
            caller = LiveCaller(call.main)
            assert await caller.press("1")  # typed during the welcome
            assert await caller.wait_ended()
        transcript = await call.wait_ended()
    keys = next(e for e in transcript.entries if e.kind == "keys")
    # welcome (6 words) and menu prompt (4 words) at 0.4 s a word
    assert keys.at == pytest.approx(4.0)
    assert transcript.spoken[-1] == "You pressed 1"


async def test_press_now_while_nobody_listens_is_lost() -> None:
    app = menu_app(timeout=3)
    async with make_sim(app) as sim:
        with sim.clock.busy():
            call = await sim.place_inbound_call(CALLER, NUMBER)
            caller = LiveCaller(call.main)
            assert await caller.wait_for("welcome")
            assert await caller.press("1", now=True)
            assert await caller.wait_ended()
        transcript = await call.wait_ended()
    assert transcript.spoken[-1] == "Nothing pressed"
    assert app.events() == ["CalledNumber"]


async def test_several_keys_are_pressed_in_order_with_a_gap() -> None:
    app = App({
        "/voice": lambda n: [{"getDigits": {"actionUrl": f"{APP}/pin", "finishOnKey": "#",
                                            "timeout": 5}}],
        "/pin": lambda n: [{"speak": {"text": f"PIN {n['digits']}"}}, {"hangup": {}}],
    })
    async with make_sim(app) as sim:
        with sim.clock.busy():
            call = await sim.place_inbound_call(CALLER, NUMBER)
            caller = LiveCaller(call.main)
            assert await caller.press("12", gap=0.5)
            assert await caller.press("3#")
            assert await caller.wait_ended()
        transcript = await call.wait_ended()
    assert transcript.spoken == ["PIN 123#"]
    times = [e.at for e in transcript.entries if e.kind == "keys"]
    assert times == pytest.approx([0.0, 0.5, 0.5, 0.7])


async def test_hang_up_mid_prompt_ends_the_call_from_the_participant() -> None:
    app = App({"/voice": lambda n: [{"speak": {"text": "a b c d e f g h i j"}}, {"hangup": {}}]})
    async with make_sim(app) as sim:
        with sim.clock.busy():
            call = await sim.place_inbound_call(CALLER, NUMBER)
            caller = LiveCaller(call.main)
            await caller.pause(1.0)
            caller.hang_up()
            caller.hang_up()  # a second hang-up does nothing
            assert await caller.wait_ended()
        transcript = await call.wait_ended()
    hangup = next(e for e in transcript.entries if e.kind == "hangup")
    assert hangup.at == pytest.approx(1.0)
    assert hangup.data["direction"] == "fromParticipant"
    assert app.events() == ["CalledNumber"]  # HangUp is sent in all-events mode only
    assert not await caller.press("1")  # the line is down


async def test_invalid_keys_are_refused() -> None:
    async with make_sim(menu_app()) as sim:
        call = await sim.place_inbound_call(CALLER, NUMBER)
        with pytest.raises(ConfigError):
            await LiveCaller(call.main).press("1a")
        call.main.hang_up()
        await call.wait_ended()


async def test_subscription_sees_speech_as_it_starts_and_the_end_last() -> None:
    app = App({"/voice": lambda n: [
        {"speak": {"text": "one two three four five six seven eight nine ten"}},
        {"hangup": {}},
    ]})
    # A scaled clock: the 4 s of speech take 0.2 s of real time, ample to see it start.
    async with make_sim(app, clock=Clock.scaled(20)) as sim:
        with sim.subscribe() as events:
            call = await sim.place_inbound_call(CALLER, NUMBER)
            received: list[LiveEvent] = []
            heard_when_spoken: list[str] | None = None
            with anyio.fail_after(10):
                async for event in events:
                    received.append(event)
                    if event.entry is not None and event.entry.kind == "speak":
                        heard_when_spoken = list(call.main.heard)
                    if event.ended:
                        break
    assert heard_when_spoken == []  # the line appeared when speech started, not ended
    assert all(e.call is call for e in received)
    assert [e.entry for e in received[:-1]] == call.transcript.entries
    assert received[-1].ended and received[-1].entry is None
    assert not sim.observers  # leaving the block unsubscribes


async def test_subscription_to_one_call_ignores_the_others() -> None:
    app = App({"/voice": lambda n: [{"speak": {"text": "Hi"}}, {"hangup": {}}]})
    async with make_sim(app) as sim:
        other = await sim.place_inbound_call("+34600000002", NUMBER)
        call = await sim.place_inbound_call(CALLER, NUMBER)
        with sim.subscribe(call) as events:
            await other.wait_ended()
            await call.wait_ended()
            seen = []
            while True:
                event = events.receive_nowait()
                seen.append(event)
                if event.ended:
                    break
    assert {e.call for e in seen} == {call}


async def test_live_phone_answered_by_a_person_on_an_outbound_call() -> None:
    app = App({"/voice": lambda n: [
        {"getDigits": {"actionUrl": f"{APP}/confirm", "numberOfDigits": 1, "timeout": 10,
                       "speak": {"text": "Press 1 to confirm"}}},
    ] if n["eventName"] == "Answered" else None,
        "/confirm": lambda n: [{"speak": {"text": f"Got {n['digits']}"}}, {"hangup": {}}]})
    rang: list[Ring] = []
    phone = LivePhone(on_ring=rang.append)
    async with make_sim(app) as sim:
        sim.add_phone(HUMAN, phone)
        with sim.clock.busy():
            call = sim.create_call(NUMBER, HUMAN)
            await phone_rings(call, phone)
            ring = phone.rings[0]
            assert rang == [ring] and ring.ringing
            assert ring.caller == NUMBER and ring.call is call
            await LiveCaller(call.main).pause(3.0)  # let it ring a while
            person = ring.answer()
            assert not ring.ringing and phone.rings == []
            with pytest.raises(ConfigError):
                ring.answer()
            assert await person.wait_for("confirm")
            assert await person.press("1")
            assert await person.wait_ended()
        transcript = await call.wait_ended()
    answered = next(e for e in transcript.entries if e.kind == "answered")
    assert answered.at == pytest.approx(3.0)
    assert transcript.spoken == ["Press 1 to confirm", "Got 1"]
    assert app.events() == ["Answered", "DigitsCollected"]


async def phone_rings(call: SimCall, phone: LivePhone) -> None:
    """Wait, on the simulator's clock, until `phone` rings for `call`."""
    await call.changed.wait_for(lambda: bool(phone.rings))


@pytest.mark.parametrize("decision", ["reject", "ignore"])
async def test_live_phone_dialled_by_the_app_rejected_or_not_answered(decision: str) -> None:
    app = App({
        "/voice": lambda n: [{"dial": {"number": {"destination": [f"tel:{HUMAN}"],
                                                  "timeout": 20}}},
                             {"speak": {"text": "Nobody"}}, {"hangup": {}}],
    })
    phone = LivePhone()
    async with make_sim(app) as sim:
        sim.add_phone(HUMAN, phone)
        with sim.clock.busy():
            call = await sim.place_inbound_call(CALLER, NUMBER)
            await phone_rings(call, phone)
            if decision == "reject":
                phone.rings[0].reject()
            assert await LiveCaller(call.main).wait_ended()
        transcript = await call.wait_ended()
    kind = "busy" if decision == "reject" else "no-answer"
    outcome = next(e for e in transcript.entries if e.kind == kind)
    assert outcome.at == pytest.approx(0.0 if decision == "reject" else 20.0)
    assert transcript.spoken == ["Nobody"]
    assert phone.rings == []


async def test_live_phone_as_an_agent_hangs_up_and_the_flow_goes_on() -> None:
    app = App({
        "/voice": lambda n: [{"dial": {"number": {"destination": f"tel:{HUMAN}",
                                                  "timeout": 20}}},
                             {"speak": {"text": "The agent left"}}, {"hangup": {}}],
    })
    phone = LivePhone()
    async with make_sim(app) as sim:
        sim.add_phone(HUMAN, phone)
        with sim.clock.busy():
            call = await sim.place_inbound_call(CALLER, NUMBER)
            await phone_rings(call, phone)
            agent = phone.rings[0].answer()
            assert agent.number == HUMAN
            await agent.pause(5.0)
            agent.hang_up()
            assert await agent.wait_ended()
            assert call.main.live
            assert await LiveCaller(call.main).wait_ended()
        transcript = await call.wait_ended()
    assert transcript.spoken == ["The agent left"]
    assert any(e.kind == "bridged" for e in transcript.entries)
