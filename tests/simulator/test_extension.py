"""The `/simulator` HTTP extension, `SimulatorClient`, and virtual time while a call waits
for the application (the idle hold)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest

import callflow
from callflow.simulator import (
    ApiError,
    Phone,
    Press,
    Simulator,
    SimulatorClient,
    SimulatorError,
    Transcript,
    parse_step,
    serve_simulator,
)

from ._app import APP, App

pytestmark = pytest.mark.anyio

CALLER = "+34600000001"
NUMBER = "+34900000001"
BASE = "http://sim.test"


def make_sim(app: Any, **kwargs: Any) -> Simulator:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    sim = Simulator(http_client=client, **kwargs)
    sim.add_account_number(NUMBER, callback_url=f"{APP}/voice", fallback_url=f"{APP}/fallback")
    return sim


def rest(sim: Simulator, auth: Any = ("key", "secret")) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sim), base_url=BASE, auth=auth)


def client_for(sim: Simulator) -> SimulatorClient:
    return SimulatorClient(BASE, http_client=rest(sim, auth=None))


def menu(n: dict[str, Any]) -> Any:
    if n["eventName"] == "CalledNumber":
        return [{"getDigits": {"actionUrl": f"{APP}/digits", "numberOfDigits": 1,
                               "speak": {"text": "Press 1 for sales"}}},
                {"speak": {"text": "No input"}}, {"hangup": {}}]
    return None


# -- the extension, raw ---------------------------------------------------------------------------


async def test_place_a_call_and_long_poll_its_transcript() -> None:
    app = App({"/voice": menu,
               "/digits": lambda n: [{"speak": {"text": f"You pressed {n['digits']}"}},
                                     {"hangup": {}}]})
    async with make_sim(app) as sim, rest(sim) as client:
        response = await client.post("/simulator/calls", json={
            "from": "+34600000002", "to": "tel:+34900000001", "script": ["press-next:1"]})
        assert response.status_code == 201
        call_id = response.json()["callId"]
        assert response.headers["location"] == f"{BASE}/simulator/calls/{call_id}"
        response = await client.get(f"/simulator/calls/{call_id}/transcript",
                                    params={"wait": "true", "timeout": "10"})
    assert response.status_code == 200
    transcript = Transcript.from_dict(response.json())
    assert transcript.ended
    assert transcript.caller == "+34600000002"
    assert transcript.spoken == ["Press 1 for sales", "You pressed 1"]
    assert transcript.keys == "1"
    assert transcript.to_dict() == response.json()


async def test_the_default_caller_and_a_transcript_without_waiting() -> None:
    app = App({"/voice": lambda n: [{"wait": {"length": 5}}, {"hangup": {}}]})
    async with make_sim(app) as sim, rest(sim) as client:
        call_id = (await client.post("/simulator/calls", json={"to": NUMBER})).json()["callId"]
        now = (await client.get(f"/simulator/calls/{call_id}/transcript")).json()
        assert now["caller"] == CALLER
        await sim.calls[call_id].wait_ended()
        after = (await client.get(f"/simulator/calls/{call_id}/transcript")).json()
    assert after["ended"] is True
    assert after["duration"] == pytest.approx(5)


async def test_phones_are_set_over_http() -> None:
    app = App({"/voice": lambda n: [
        {"dial": {"number": {"destination": ["tel:+34610000001", "tel:+34610000002"]}}},
        {"speak": {"text": "nobody"}}, {"hangup": {}}]})
    async with make_sim(app) as sim, rest(sim) as client:
        assert (await client.post("/simulator/phones/+34610000001", json="busy")).status_code \
            == 200
        response = await client.put("/simulator/phones/tel:%2B34610000002",
                                    json={"behaviour": "no-answer"})
        assert response.status_code == 200
        assert sim.phones["+34610000001"] == Phone.busy()
        assert sim.phones["+34610000002"].outcome == "no-answer"
        call = await sim.place_inbound_call(CALLER, NUMBER)
        transcript = await call.wait_ended()
    kinds = [e.kind for e in transcript.entries]
    assert "busy" in kinds and "no-answer" in kinds
    assert transcript.spoken == ["nobody"]


def error(response: httpx.Response) -> tuple[int, str, int]:
    body = response.json()["ClientException"]
    return response.status_code, body["exceptionCategory"], body["exceptionId"]


async def test_extension_errors() -> None:
    async with Simulator() as sim, rest(sim) as client:
        assert error(await client.post("/simulator/calls", json={"to": NUMBER},
                                       auth=("key", "wrong"))) == (401, "SEC", 1)
        # the number exists on no account
        assert error(await client.post("/simulator/calls", json={"to": NUMBER})) == (
            404, "SVC", 4)
        sim.add_account_number(NUMBER, callback_url=f"{APP}/voice")
        bad = [
            {"to": "not a number"},
            {"to": NUMBER, "from": 34600000001},
            {"to": NUMBER, "script": ["press:abc"]},
            {"to": NUMBER, "script": [1, 2]},
        ]
        for body in bad:
            assert error(await client.post("/simulator/calls", json=body)) == (400, "SVC", 1)
        assert error(await client.post("/simulator/calls", json=["not", "an", "object"])) == (
            400, "SVC", 1)
        assert error(await client.get("/simulator/calls")) == (405, "SVC", 3)
        assert error(await client.get("/simulator/calls/nope/transcript")) == (404, "SVC", 4)
        assert error(await client.post("/simulator/phones/+34610000001",
                                       json={"behaviour": "explode"})) == (400, "SVC", 1)
        assert error(await client.post("/simulator/phones/+34610000001", json=[1])) == (
            400, "SVC", 1)
        assert error(await client.get("/simulator/phones/+34610000001")) == (405, "SVC", 3)
        assert error(await client.get("/simulator/nothing")) == (404, "SVC", 4)
        call = await sim.place_inbound_call(CALLER, NUMBER)
        for timeout in ("-1", "soon", "1000"):
            response = await client.get(f"/simulator/calls/{call.call_id}/transcript",
                                        params={"wait": "true", "timeout": timeout})
            assert error(response) == (400, "SVC", 1)


async def test_a_long_poll_does_not_hold_virtual_time() -> None:
    """The poll waits for simulated time to pass: it must not freeze the virtual clock."""
    app = App({"/voice": lambda n: [{"wait": {"length": 3600}}, {"hangup": {}}]})
    async with make_sim(app) as sim, rest(sim) as client:
        call = await sim.place_inbound_call(CALLER, NUMBER)
        start = time.monotonic()
        response = await client.get(f"/simulator/calls/{call.call_id}/transcript",
                                    params={"wait": "true", "timeout": "10"})
    assert time.monotonic() - start < 2
    assert response.json()["ended"] is True
    assert response.json()["duration"] == pytest.approx(3600)


async def test_a_long_poll_times_out_with_the_transcript_so_far() -> None:
    app = App({"/voice": lambda n: [{"wait": {"length": 3600}}, {"hangup": {}}]})
    async with make_sim(app, clock=callflow.simulator.Clock.real()) as sim, rest(sim) as client:
        call = await sim.place_inbound_call(CALLER, NUMBER)
        response = await client.get(f"/simulator/calls/{call.call_id}/transcript",
                                    params={"wait": "true", "timeout": "0.1"})
        assert response.status_code == 200
        assert response.json()["ended"] is False
        call.main.hang_up()


# -- SimulatorClient ------------------------------------------------------------------------------


async def test_client_places_a_call_sets_phones_and_reads_numbers() -> None:
    app = App({"/voice": lambda n: [
        {"dial": {"number": {"destination": "tel:+34610000001"}}},
        {"speak": {"text": "busy line"}}, {"hangup": {}}]})
    async with make_sim(app) as sim, client_for(sim) as client:
        await client.set_phone("+34610000001", "busy")
        await client.configure_number("+34900000002", f"{APP}/voice", f"{APP}/fallback")
        assert await client.number("+34900000002") == {
            "number": "tel:+34900000002", "notificationFormat": "JSON",
            "voiceCallbackUrl": f"{APP}/voice", "voiceFallbackUrl": f"{APP}/fallback"}
        assert await client.number("+34900000009") is None
        call_id = await client.place_call(CALLER, "+34900000002", script=["hangup:100"])
        transcript = await client.wait_ended(call_id, timeout=10)
    assert transcript.callee == "+34900000002"
    assert transcript.spoken == ["busy line"]


async def test_client_errors() -> None:
    async with Simulator() as sim, client_for(sim) as client:
        with pytest.raises(ApiError) as info:
            await client.place_call(CALLER, NUMBER)
        assert info.value.status == 404
        assert str(info.value) == f"Not an account number with a callback URL: {NUMBER}"
        assert isinstance(info.value, callflow.CallflowError)  # the CLI shows it as one line
    async with SimulatorClient("http://127.0.0.1:9") as nowhere:
        with pytest.raises(SimulatorError, match="cannot reach the simulator"):
            await nowhere.place_call(CALLER, NUMBER)
    with pytest.raises(SimulatorError, match="async with"):
        await SimulatorClient(BASE).place_call(CALLER, NUMBER)


async def test_client_wait_ended_times_out() -> None:
    app = App({"/voice": lambda n: [{"wait": {"length": 3600}}, {"hangup": {}}]})
    async with make_sim(app, clock=callflow.simulator.Clock.real()) as sim, \
            client_for(sim) as client:
        call_id = await client.place_call(CALLER, NUMBER)
        with pytest.raises(TimeoutError):
            await client.wait_ended(call_id, timeout=0.2)
        sim.calls[call_id].main.hang_up()


def test_transcript_round_trip_and_bad_data() -> None:
    transcript = Transcript("c", "+1", "+2", "inbound")
    assert Transcript.from_dict(transcript.to_dict()) == transcript
    with pytest.raises(ValueError, match="not a transcript"):
        Transcript.from_dict({"entries": []})


def test_press_next_step() -> None:
    assert parse_step("press-next:1#") == Press("1#", after_prompt=True)


# -- the idle hold: virtual time stands still while a call waits for its app -----------------------


async def test_an_app_acting_late_finds_the_call_where_it_left_it() -> None:
    """The app answers CalledNumber with nothing and pushes commands 0.5 s (real) later:
    under the virtual clock the call neither hangs up idle nor lets the caller run ahead."""
    pushed = anyio.Event()
    app = App({"/voice": lambda n: None})
    async with make_sim(app) as sim, rest(sim) as client:
        call = await sim.place_inbound_call(CALLER, NUMBER, script=["silence:5", "hangup"])

        async def push_later() -> None:
            await anyio.sleep(0.5)
            response = await client.post(f"/comms/v1/calls/{call.call_id}/setcommands",
                                         json={"commands": [{"speak": {"text": "late"}},
                                                            {"hangup": {}}]})
            assert response.status_code == 202
            pushed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(push_later)
            transcript = await call.wait_ended()
    assert pushed.is_set()
    assert transcript.spoken == ["late"]
    speak = next(e for e in transcript.entries if e.kind == "speak")
    assert speak.at == pytest.approx(0)  # the app's 0.5 s took no simulated time
    assert transcript.entries[-1].text == "the application hung up"


async def test_the_idle_hold_ends_and_virtual_time_runs_to_the_idle_hang_up() -> None:
    app = App({"/voice": lambda n: None})
    start = time.monotonic()
    async with make_sim(app, idle_hold=0.3) as sim:
        call = await sim.place_inbound_call(CALLER, NUMBER)
        transcript = await call.wait_ended()
    assert 0.3 <= time.monotonic() - start < 3
    assert transcript.entries[-1].text == "the application hung up (idle)"
    assert transcript.entries[-1].at == pytest.approx(60)


async def test_a_slow_callflow_app_under_the_virtual_clock() -> None:
    """A flow that sleeps 0.5 s with nothing queued, then speaks, completes (real HTTP)."""
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def slow(call: callflow.Call) -> None:
        await anyio.sleep(0.5)  # its own slow I/O, with nothing queued
        await call.say("Here is your balance.")
        result = await call.gather(prompt="Press 1 to hear it again.", num_digits=1)
        await call.say(f"You pressed {result.digits}.")

    sim = Simulator()  # virtual clock
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=0.1))
        from callflow.simulator import serve_asgi

        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            await app.configure_numbers()
            call = await sim.place_inbound_call(CALLER, NUMBER, script=["press-next:1"])
            with anyio.fail_after(10):
                transcript = await call.wait_ended()
    assert transcript.spoken == ["Here is your balance.", "Press 1 to hear it again.",
                                 "You pressed 1."]
    assert "idle" not in transcript.entries[-1].text
