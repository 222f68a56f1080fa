from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest

from callflow.simulator import Clock, Phone, Simulator, Transcript

from ._app import APP, App

pytestmark = pytest.mark.anyio

CALLER = "+34600000001"
NUMBER = "+34900000001"


def make_sim(app: App, **kwargs: Any) -> Simulator:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    sim = Simulator(http_client=client, **kwargs)
    sim.add_account_number(NUMBER, callback_url=f"{APP}/voice", fallback_url=f"{APP}/fallback")
    return sim


async def run_call(app: App, script: list[str] | None = None, **kwargs: Any) -> Transcript:
    async with make_sim(app, **kwargs) as sim:
        call = await sim.place_inbound_call(CALLER, NUMBER, script=script or [])
        with anyio.fail_after(10):
            return await call.wait_ended()


def first(*commands: dict[str, Any]) -> Any:
    """A handler answering CalledNumber with `commands` and other events with nothing."""
    return lambda n: list(commands) if n["eventName"] == "CalledNumber" else None


def digits(**fields: Any) -> dict[str, Any]:
    return {"getDigits": {"actionUrl": f"{APP}/digits", **fields}}


async def test_virtual_clock_runs_long_timeouts_instantly() -> None:
    app = App({"/voice": lambda n: [digits(timeout=30, speak={"text": "Enter"}),
                                    {"speak": {"text": "Nothing"}}, {"hangup": {}}]})
    start = time.monotonic()
    transcript = await run_call(app)
    assert time.monotonic() - start < 1.0
    assert transcript.spoken == ["Enter", "Nothing"]
    # prompt 0.4 s + 30 s of timeout, then "Nothing" (0.4 s)
    hangup = next(e for e in transcript.entries if e.kind == "hangup")
    assert hangup.at == pytest.approx(30.8)
    assert app.events() == ["CalledNumber"]  # no input sends nothing


async def test_get_digits_retries_reprompt_then_fall_through() -> None:
    app = App({"/voice": lambda n: [digits(timeout=5, retries=3, speak={"text": "Menu"}),
                                    {"hangup": {}}]})
    transcript = await run_call(app)
    assert transcript.spoken == ["Menu", "Menu", "Menu"]


async def test_get_digits_finish_key_valid_digits_and_no_barge_in() -> None:
    app = App({"/voice": lambda n: [digits(validDigits="123#", speak={"text": "PIN then hash"})],
               "/digits": lambda n: [{"hangup": {}}]})
    # "9" is not a valid digit; keys pressed during the prompt are ignored
    transcript = await run_call(app, ["press-now:5", "wait:PIN", "press:19234#"])
    assert app.received[-1][1]["digits"] == "123#"
    assert transcript.keys == "519234#"


async def test_get_digits_timeout_restarts_with_each_key() -> None:
    app = App({"/voice": lambda n: [digits(timeout=3, speak={"text": "Go"})],
               "/digits": lambda n: [{"hangup": {}}]})
    await run_call(app, ["wait:Go", "press:1", "silence:2", "press:2", "silence:2", "press:3"])
    assert app.received[-1][1]["digits"] == "123"


async def test_digits_response_replaces_rest_of_queue() -> None:
    app = App({"/voice": lambda n: [digits(numberOfDigits=1), {"speak": {"text": "dropped"}}],
               "/digits": lambda n: [{"speak": {"text": "kept"}}, {"hangup": []}]})
    transcript = await run_call(app, ["press:7"])
    assert transcript.spoken == ["kept"]
    payload = app.received[-1][1]
    assert payload["eventName"] == "DigitsCollected" and payload["digits"] == "7"
    assert payload["callerId"] == "tel:" + CALLER and payload["destination"] == "tel:" + NUMBER
    assert set(payload) == {"timestamp", "eventName", "callId", "legId", "callerId",
                            "destination", "digits"}


async def test_speak_play_wait_durations_and_lenient_input() -> None:
    app = App({"/voice": lambda n: [
        {"speak": {"text": "one two three", "voice": "Male", "repeat": "2"}},
        {"play": {"url": "http://audio.test/x.mp3"}},
        {"wait": {"lenght": "2"}},
        {"hangup": {}},
    ]})
    transcript = await run_call(app)
    times = [(e.kind, e.at) for e in transcript.entries if e.kind in ("speak", "play", "silence",
                                                                     "hangup")]
    assert times == [("speak", 0.0), ("speak", 1.2), ("play", 2.4), ("silence", 5.4),
                     ("hangup", 7.4)]


async def test_redirect_with_callback_url_alias() -> None:
    app = App({"/voice": lambda n: [{"redirect": {"callbackUrl": f"{APP}/next"}},
                                    {"speak": {"text": "dropped"}}],
               "/next": lambda n: [{"speak": {"text": "redirected"}}, {"hangup": {}}]})
    transcript = await run_call(app)
    assert app.events() == ["CalledNumber", "Redirected"]
    assert app.received[1][0] == "/next"
    assert transcript.spoken == ["redirected"]


async def test_all_events_mode_only_when_first_command_of_first_response() -> None:
    app = App({"/voice": first({"notifications": "true"}, {"speak": {"text": "hi"}},
                               {"hangup": {}})})
    await run_call(app)
    assert app.events() == ["CalledNumber", "PlaybackStarted", "PlaybackStopped", "HangUp"]
    assert app.received[-1][1]["direction"] == "fromApplication"

    app = App({"/voice": lambda n: [{"speak": {"text": "hi"}}, {"notifications": "true"},
                                    {"hangup": {}}]})
    await run_call(app)
    assert app.events() == ["CalledNumber"]


async def test_caller_hangup_notification_from_participant() -> None:
    app = App({"/voice": first({"notifications": "true"}, {"wait": {"length": 100}})})
    transcript = await run_call(app, ["hangup:5"])
    assert app.received[-1][1]["eventName"] == "HangUp"
    assert app.received[-1][1]["direction"] == "fromParticipant"
    assert transcript.entries[-1].at == pytest.approx(5)


async def test_idle_hangup_after_60_seconds() -> None:
    app = App({"/voice": lambda n: None})
    # idle_hold: how long (real time) an idle call waits for the app before virtual time runs
    transcript = await run_call(app, idle_hold=0.1)
    assert transcript.entries[-1].kind == "hangup"
    assert transcript.entries[-1].at == pytest.approx(60)


async def test_failing_callback_goes_to_fallback() -> None:
    app = App({"/voice": lambda n: 500,
               "/fallback": lambda n: [{"speak": {"text": "sorry"}}, {"hangup": {}}]})
    transcript = await run_call(app)
    assert app.events() == ["CalledNumber", "CallbackUnavailable"]
    assert app.received[1][1]["failedEventName"] == "CalledNumber"
    assert transcript.spoken == ["sorry"]


@pytest.mark.parametrize("answer", [503, b"not json", b'{"commands": [{"sms": {}}]}'])
async def test_failing_fallback_hangs_up(answer: Any) -> None:
    app = App({"/voice": lambda n: answer, "/fallback": lambda n: 404})
    transcript = await run_call(app)
    assert app.events() == ["CalledNumber", "CallbackUnavailable"]
    assert transcript.entries[-1].kind == "hangup"


async def test_slow_callback_times_out_in_real_time() -> None:
    app = App({"/voice": lambda n: [{"speak": {"text": "late"}}],
               "/fallback": lambda n: [{"speak": {"text": "fallback"}}, {"hangup": {}}]})
    app.delay["/voice"] = 5
    start = time.monotonic()
    transcript = await run_call(app, notification_timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 3
    assert transcript.spoken == ["fallback"]


async def test_record_serves_wav_and_exports() -> None:
    app = App({"/voice": first(
        {"notifications": "true"},
        {"record": {"playBeep": True, "timeout": 3, "finishOnKey": "#",
                    "export": {"url": f"{APP}/upload"}, "speak": {"text": "After the beep"}}},
        {"hangup": {}},
    )})
    async with make_sim(app, base_url="http://sim.test") as sim:
        call = await sim.place_inbound_call(CALLER, NUMBER, script=["wait:beep", "talk:4"])
        transcript = await call.wait_ended()
        stopped = next(b for _, b in app.received if b["eventName"] == "RecordingStopped")
        assert stopped["duration"] == "7"  # 4 s of talk + 3 s of silence
        assert stopped["recordingUrl"].startswith("http://sim.test/recordings/")
        sim_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim),
                                       base_url="http://sim.test")
        async with sim_client:
            response = await sim_client.get(stopped["recordingUrl"])
    assert response.status_code == 200 and response.content[:4] == b"RIFF"
    assert app.puts and app.puts[0][1] == response.content
    assert "RecordingStarted" in app.events()
    assert [e.kind for e in transcript.entries].count("beep") == 1


async def test_record_stops_on_finish_key() -> None:
    app = App({"/voice": first({"notifications": "true"},
                               {"record": {"finishOnKey": "#", "maximumLength": 30}},
                               {"hangup": {}})})
    await run_call(app, ["talk:1", "press:#"])
    stopped = next(b for _, b in app.received if b["eventName"] == "RecordingStopped")
    assert stopped["duration"] == "1"


async def test_dial_parallel_first_answer_wins() -> None:
    app = App({"/voice": first(
        {"notifications": "true"},
        {"dial": {"number": {"destination": ["tel:+34600000010", "tel:+34600000011",
                                             "tel:+34600000012"]}}},
        {"speak": {"text": "after the bridge"}}, {"hangup": {}},
    )})
    async with make_sim(app) as sim:
        sim.add_phone("+34600000010", Phone.answers(after=5))
        sim.add_phone("+34600000011", Phone.answers(after=2, hang_up_after=10))
        sim.add_phone("+34600000012", Phone.busy(after=1))
        call = await sim.place_inbound_call(CALLER, NUMBER)
        transcript = await call.wait_ended()
        obj = call.to_object()
    events = [(b["eventName"], b["destination"]) for _, b in app.received[1:]]
    assert ("Answered", "tel:+34600000011") in events
    assert ("Busy", "tel:+34600000012") in events
    assert ("HangUp", "tel:+34600000010") in events  # the loser is hung up
    assert transcript.spoken == ["after the bridge"]
    after = next(e for e in transcript.entries if e.kind == "speak")
    assert after.at == pytest.approx(12)
    assert obj["numberOfLegs"] == "4"
    leg_ids = {b["legId"] for _, b in app.received[1:] if b["eventName"] == "Ringing"}
    assert len(leg_ids) == 3


async def test_dial_no_answer_continues_queue() -> None:
    app = App({"/voice": lambda n: [
        {"dial": {"number": {"destination": "tel:+34600000010", "timeout": "10"}}},
        {"speak": {"text": "nobody"}}, {"hangup": {}}]})
    async with make_sim(app) as sim:
        sim.add_phone("+34600000010", Phone.no_answer())
        call = await sim.place_inbound_call(CALLER, NUMBER)
        transcript = await call.wait_ended()
    entries = [e for e in transcript.entries if e.kind != "notification"]
    assert [e.kind for e in entries][:3] == ["call", "ringing", "no-answer"]
    assert entries[2].at == pytest.approx(10)


async def test_conference_two_callers_and_end_on_exit() -> None:
    app = App({"/voice": lambda n: [
        {"dial": {"conferenceName": "room", "conferenceProperties": {
            "beepsOnEnter": "1", "speakOnEnter": "someone joined", "endOnExit": "true"}}},
        {"speak": {"text": "conference over"}}, {"hangup": {}}]})
    async with make_sim(app) as sim:
        first = await sim.place_inbound_call(CALLER, NUMBER, script=["silence:20", "hangup"])
        second = await sim.place_inbound_call("+34600000002", NUMBER)
        t1 = await first.wait_ended()
        t2 = await second.wait_ended()
    assert "music" in [e.kind for e in t1.entries] or "music" in [e.kind for e in t2.entries]
    assert "someone joined" in t1.spoken
    assert t2.spoken[-1] == "conference over"


async def test_setcommands_interrupts_running_command() -> None:
    app = App({"/voice": lambda n: [{"wait": {"length": 1000}}, {"speak": {"text": "never"}}]})
    # real time: under a virtual clock the wait would be over before the request arrives
    async with make_sim(app, clock=Clock.real()) as sim:
        call = await sim.place_inbound_call(CALLER, NUMBER)
        rest = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim),
                                 base_url="http://sim.test", auth=("key", "secret"))
        async with rest:
            await anyio.sleep(0.05)
            response = await rest.post(f"/comms/v1/calls/{call.call_id}/setcommands",
                                       json={"commands": [{"speak": {"text": "now"}},
                                                          {"hangup": {}}]})
            assert response.status_code == 202
            transcript = await call.wait_ended()
            late = await rest.post(f"/comms/v1/calls/{call.call_id}/setcommands",
                                   json={"commands": []})
    assert transcript.spoken == ["now"]
    assert transcript.entries[-1].at < 1000
    assert late.status_code == 409
    assert late.json()["ClientException"]["exceptionId"] == 5


async def test_scaled_clock_waits_really() -> None:
    app = App({"/voice": lambda n: [{"wait": {"length": 2}}, {"hangup": {}}]})
    start = time.monotonic()
    transcript = await run_call(app, clock=Clock.scaled(20))
    elapsed = time.monotonic() - start
    assert 0.09 <= elapsed < 5  # really waited (2 s / 20), and did not wait 2 s unscaled...
    # 2 s of simulated wait; a loaded machine can only make the scaled clock late, never early
    assert 1.9 <= transcript.entries[-1].at < 6
