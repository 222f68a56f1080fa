"""Recording a call in the background: FakeCall, the wire formats, the simulator (Twilio),
and the refusal on BlueVia."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import anyio
import httpx
import pytest

import callflow
from callflow import RecordResult, StartRecording, StopRecording, UnsupportedFeature
from callflow._journal import decode_command, encode_command
from callflow.platforms import BlueVia, Telnyx, Twilio, Webhook
from callflow.simulator import Phone, Simulator, serve_asgi, serve_simulator
from callflow.testing import FakeCall

pytestmark = pytest.mark.anyio

NUMBER = "+34900000001"


async def support(call: callflow.Call) -> None:
    """Record the conversation with an agent, dual channel, and keep the recording."""
    await call.say("This call is recorded.")
    async with call.recording(dual=True) as rec:
        await call.dial("+34910000001", timeout=20)
    call.data["recording"] = rec
    await call.say("Goodbye.")


async def test_fakecall_records_in_the_background() -> None:
    fake = await FakeCall(support).on_dial("+34910000001", talk=12).run()
    rec = fake.call.data["recording"]
    assert fake.call.recordings == [rec] and rec.dual and rec.stopped
    assert rec.result is not None and rec.result.url is not None
    assert rec.result.duration >= 12
    assert [c for c in fake.commands if isinstance(c, StartRecording | StopRecording)] == [
        StartRecording(rec.id, dual=True), StopRecording(rec.id)]
    assert fake.heard == ["This call is recorded.", "Goodbye."]


async def test_a_recording_left_running_is_saved_when_the_app_hangs_up() -> None:
    async def flow(call: callflow.Call) -> None:
        await call.start_recording()
        await call.say("Hello.")
        await call.hangup()

    fake = await FakeCall(flow).run()
    [rec] = fake.call.recordings
    assert not rec.stopped and rec.result is not None


async def test_stopping_twice_stops_once() -> None:
    async def flow(call: callflow.Call) -> None:
        rec = await call.start_recording()
        await rec.stop()
        await rec.stop()

    fake = await FakeCall(flow).run()
    assert sum(isinstance(c, StopRecording) for c in fake.commands) == 1


async def test_bluevia_refuses_background_recording() -> None:
    async def flow(call: callflow.Call) -> None:
        with pytest.raises(UnsupportedFeature, match="bluevia does not support "
                                                     r"start_recording\(\)"):
            await call.start_recording()
        assert call.recordings == []
        await call.say("No recording here.")

    fake = await FakeCall(flow, platform=BlueVia()).run()
    assert fake.error is None and fake.heard == ["No recording here."]
    assert ("start_recording", None) in BlueVia().unsupported()
    assert ("recording", None) in BlueVia().unsupported()


def test_the_commands_can_be_kept_in_a_calls_history() -> None:
    for command in (StartRecording(3, dual=True), StopRecording(3)):
        assert decode_command(encode_command(command)) == command


def test_twilio_renders_start_and_stop_recording() -> None:
    body = Twilio(account_sid="AC1").render(
        [StartRecording(4, dual=True), StopRecording(4)],
        url_for=lambda step: f"https://app.example/e?call=CA1&step={step}")
    root = ET.fromstring(body)
    assert [v.tag for v in root] == ["Start", "Stop"]
    start = root[0][0]
    assert start.tag == "Recording" and start.get("channels") == "dual"
    assert start.get("name") == "callflow-4" and root[1][0].get("name") == "callflow-4"
    assert start.get("recordingStatusCallback") == "https://app.example/e?call=CA1&step=4&rec=1"
    assert start.get("recordingStatusCallbackEvent") == "completed"


def test_twilio_parses_the_recording_status_callback() -> None:
    body = (b"CallSid=CA1&RecordingStatus=completed&RecordingDuration=7"
            b"&RecordingUrl=https%3A%2F%2Fapi.twilio.com%2Frec%2FRE1")
    [event] = Twilio().parse(Webhook("POST", "https://app.example/e", query={
        "call": "CA1", "step": "4", "rec": "1"}, body=body))
    assert (event.kind, event.step, event.duration) == ("recording_saved", 4, 7.0)
    assert event.recording_url == "https://api.twilio.com/rec/RE1"


def test_telnyx_tells_a_background_recording_from_a_record() -> None:
    state = base64.b64encode(json.dumps({"c": "v3:1", "n": 5, "s": 4, "bg": 1}).encode())
    payload = {"call_control_id": "v3:1", "client_state": state.decode(),
               "recording_urls": {"wav": "https://s3.example/r.wav"},
               "recording_started_at": "2026-01-01T10:00:00Z",
               "recording_ended_at": "2026-01-01T10:00:09Z"}
    body = json.dumps({"data": {"event_type": "call.recording.saved", "id": "e1",
                                "payload": payload}}).encode()
    [event] = Telnyx()._parse(Webhook("POST", "https://app.example/e", body=body))
    assert (event.kind, event.step, event.duration) == ("recording_saved", 4, 9.0)
    assert event.recording_url == "https://s3.example/r.wav"


@pytest.mark.parametrize("platform", ["twilio", "telnyx"])
async def test_on_the_simulator_the_recording_reaches_the_flow(platform: str) -> None:
    app = callflow.App()
    app.flow(number=NUMBER)(support)
    calls: list[callflow.Call] = []
    original = app._new_session

    def keep(*args: object) -> object:
        session = original(*args)  # type: ignore[arg-type]
        if session is not None:
            calls.append(session.call)
        return session

    app._new_session = keep  # type: ignore[assignment,method-assign]
    sim = Simulator(platform=platform)
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                        **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            sim.add_account_number(NUMBER)
            await app.configure_numbers()
            sim.add_phone("+34910000001", Phone.answers(after=2, script=["talk:4"],
                                                        hang_up_after=6))
            call = await sim.place_inbound_call("+34600000001", NUMBER,
                                                script=["wait:goodbye", "hangup:1"])
            with anyio.fail_after(20):
                transcript = await call.wait_ended()
                await app.wait_ended(calls[0].id)
                if platform == "telnyx":
                    await sim.frontend.wait_delivered(call)  # type: ignore[attr-defined]
            rec = calls[0].data["recording"]
            assert isinstance(rec.result, RecordResult) and rec.result.url is not None
            async with httpx.AsyncClient() as http:
                wav = await http.get(rec.result.url)
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
    assert rec.result.duration >= 6
    assert [e.kind for e in transcript.entries if e.kind.startswith("recording")] == [
        "recording-started", "recording-stopped"]
    assert transcript.texts("error") == []


@pytest.mark.parametrize("platform", ["twilio", "telnyx"])
async def test_a_recording_the_caller_hung_up_on_reaches_the_ended_call(platform: str
                                                                       ) -> None:
    """The platform reports the recording after the call's own end: the app, which
    has forgotten the call by then, still puts it on ``call.recordings``."""
    async def flow(call: callflow.Call) -> None:
        await call.start_recording()
        await call.gather(prompt="Tell us everything, then press a key.", timeout=30)

    app = callflow.App()
    app.flow(number=NUMBER)(flow)
    calls: list[callflow.Call] = []
    original = app._new_session

    def keep(*args: object) -> object:
        session = original(*args)  # type: ignore[arg-type]
        if session is not None:
            calls.append(session.call)
        return session

    app._new_session = keep  # type: ignore[assignment,method-assign]
    sim = Simulator(platform=platform)
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                        **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            sim.add_account_number(NUMBER)
            await app.configure_numbers()
            call = await sim.place_inbound_call("+34600000001", NUMBER,
                                                script=["talk:5", "hangup:6"])
            with anyio.fail_after(20):
                await call.wait_ended()
                await app.wait_ended(calls[0].id)
                if platform == "telnyx":
                    await sim.frontend.wait_delivered(call)  # type: ignore[attr-defined]
    [rec] = calls[0].recordings
    assert rec.result is not None and rec.result.url is not None
    assert rec.result.duration >= 5
