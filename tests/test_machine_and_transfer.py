"""Answering-machine detection and blind transfers: FakeCall, the adapters' wire formats,
and end to end through the simulator on every platform that carries them."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

import callflow
from callflow import Hangup, Say, Transfer, UnsupportedFeature
from callflow.platforms import BlueVia, Telnyx, Twilio
from callflow.simulator import (
    ConfigError,
    Phone,
    Simulator,
    Transcript,
    parse_config,
    serve_asgi,
    serve_simulator,
)
from callflow.testing import FakeCall

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PERSON = "+34600000001"
CALLER_ID = "+34900000000"
BILLING = "+34910000009"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_says_how_to_run_it_and_imports_only_callflow() -> None:
    module = load("payment_reminder")
    doc = module.__doc__ or ""
    assert "callflow serve examples/payment_reminder.py" in doc
    assert "callflow call examples/payment_reminder.py --press 1" in doc
    assert isinstance(module.app, callflow.App)
    source = (EXAMPLES / "payment_reminder.py").read_text()
    imports = {line.split()[1] for line in source.splitlines()
               if line.startswith(("import ", "from "))}
    assert imports == {"__future__", "callflow"}


def test_the_start_up_check_on_bluevia_names_machine_detection() -> None:
    app = load("payment_reminder").app
    warnings = app.check_platform()
    assert len(warnings) == 1
    assert "payment_reminder.py" in warnings[0]
    assert "bluevia does not support call(machine_detection=...)" in warnings[0]


# -- FakeCall --------------------------------------------------------------------------------


async def test_the_reminder_leaves_a_voicemail_on_a_machine() -> None:
    example = load("payment_reminder")
    fake = await FakeCall(example.payment_reminder, direction="outbound",
                          answered_by="machine", data={"name": "Ana",
                                                       "amount": "forty euros"}).run()
    assert fake.heard == [example.VOICEMAIL.format(name="Ana", amount="forty euros")]
    assert fake.call.data["answered_by"] == "machine"
    assert fake.ended_by == "app" and fake.error is None


async def test_the_reminder_puts_a_person_through_to_billing() -> None:
    example = load("payment_reminder")
    fake = await FakeCall(example.payment_reminder, direction="outbound",
                          answered_by="human").press("1").run()
    assert fake.heard == [example.REMINDER.format(name="there", amount="your last invoice")]
    assert [c for c in fake.commands if isinstance(c, Transfer)] == [
        Transfer(example.BILLING, None, 30.0)]
    assert not any(isinstance(c, Hangup) for c in fake.commands)
    assert fake.error is None


async def test_the_reminder_says_goodbye_to_a_person_who_presses_nothing() -> None:
    example = load("payment_reminder")
    fake = await FakeCall(example.payment_reminder, direction="outbound",
                          answered_by="human").silence().run()
    assert fake.heard[-1] == example.THANKS
    assert not any(isinstance(c, Transfer) for c in fake.commands)


async def test_a_verb_after_a_transfer_raises_call_ended() -> None:
    after: list[BaseException] = []

    async def flow(call: callflow.Call) -> None:
        await call.say("Putting you through.")
        await call.transfer("tel:+34910000001", caller_id="+34900000001", timeout=12)
        try:
            await call.say("never")
        except callflow.CallEnded as exc:
            after.append(exc)

    fake = await FakeCall(flow).run()
    assert fake.commands == [Say("Putting you through."),
                             Transfer("+34910000001", "+34900000001", 12.0)]
    assert len(after) == 1
    assert fake.call.answered_by is None  # no detection was asked


# -- the adapters' wire formats --------------------------------------------------------------


def test_twilio_renders_a_transfer_as_a_dial_without_action_then_a_hangup() -> None:
    body = Twilio(account_sid="AC1", auth_token="t").render(
        [Say("Bye."), Transfer("+34910000001", "+34900000001", 12.0)])
    root = ET.fromstring(body)
    assert [v.tag for v in root] == ["Say", "Dial", "Hangup"]
    dial = root[1]
    assert dial.get("action") is None and dial.get("timeout") == "12"
    assert dial.get("callerId") == "+34900000001"
    assert [(n.tag, n.text) for n in dial] == [("Number", "+34910000001")]


def test_bluevia_renders_a_transfer_as_a_dial_then_a_hangup() -> None:
    wire = BlueVia().render_commands([Transfer("+34910000001", None, 20.0)],
                                     url_for=lambda step: f"u{step}", first=False)
    assert wire == {"commands": [
        {"dial": {"number": {"destination": "tel:+34910000001", "timeout": 20}}},
        {"hangup": {}}]}


@pytest.mark.parametrize(("mode", "wire"), [("detect", "Enable"),
                                            ("wait_for_beep", "DetectMessageEnd")])
def test_twilio_asks_for_machine_detection_when_creating_the_call(mode: Any, wire: str
                                                                  ) -> None:
    request = Twilio(account_sid="AC1").create_call_request(
        to=PERSON, caller_id=CALLER_ID, callback_url="https://app.example/e",
        fallback_url=None, machine_detection=mode)
    assert request.form is not None and request.form["MachineDetection"] == wire
    plain = Twilio(account_sid="AC1").create_call_request(
        to=PERSON, caller_id=CALLER_ID, callback_url="https://app.example/e",
        fallback_url=None)
    assert plain.form is not None and "MachineDetection" not in plain.form


def test_bluevia_refuses_machine_detection_in_the_static_check() -> None:
    assert ("call", "machine_detection") in BlueVia().unsupported()
    assert ("call", "machine_detection") not in Twilio().unsupported()
    assert ("call", "machine_detection") not in Telnyx().unsupported()


# -- the simulator's answering machines --------------------------------------------------------


def test_a_phone_configured_as_a_machine() -> None:
    config = parse_config({"phones": {
        "+34600000001": "machine",
        "+34600000002": {"behaviour": "machine", "greeting": 8, "beep": False,
                         "record": 10}}})
    first = config.phones["+34600000001"].machine
    second = config.phones["+34600000002"].machine
    assert first is not None and first.greeting == 5 and first.beep
    assert second is not None and (second.greeting, second.beep, second.record) == (
        8, False, 10)
    assert second.ready_after == 8
    with pytest.raises(ConfigError):
        parse_config({"phones": {"+34600000003": {"behaviour": "machine",
                                                  "greeting": "long"}}})


def test_the_command_lines_phone_option_makes_a_machine() -> None:
    from callflow.cli._simulator import phone_option

    number, spec = phone_option("+34600000001=machine,greeting=8,beep=no,record=20")
    assert number == "+34600000001"
    machine = Phone.from_config(spec).machine
    assert machine is not None and (machine.greeting, machine.beep, machine.record) == (
        8, False, 20)


# -- end to end on the simulator ---------------------------------------------------------------


@asynccontextmanager
async def served(platform: str) -> AsyncIterator[tuple[callflow.App, Simulator, ModuleType]]:
    example = load("payment_reminder")
    app = example.app
    sim = Simulator(platform=platform)
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                        **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            sim.add_account_number(CALLER_ID, callback_url=app.callback_url)
            yield app, sim, example


def keep_calls(app: callflow.App) -> list[callflow.Call]:
    calls: list[callflow.Call] = []
    original = app._new_session

    def new_session(*args: Any) -> Any:
        session = original(*args)
        if session is not None:
            calls.append(session.call)
        return session

    app._new_session = new_session  # type: ignore[method-assign]
    return calls


async def remind(platform: str, phone: Phone, billing: Phone | None = None,
                 mode: Any = "wait_for_beep"
                 ) -> tuple[callflow.OutboundCallResult, Transcript, list[callflow.Call],
                            ModuleType]:
    async with served(platform) as (app, sim, example):
        calls = keep_calls(app)
        sim.add_phone(PERSON, phone)
        if billing is not None:
            sim.add_phone(BILLING, billing)
        result = await app.call(PERSON, flow="payment_reminder", caller_id=CALLER_ID,
                                machine_detection=mode, data={"name": "Ana",
                                                              "amount": "forty euros"})
        [call] = [c for c in sim.calls.values()
                  if c.direction == "outbound" and c.main.destination == PERSON]
        with anyio.fail_after(20):
            transcript = await call.wait_ended()
            for flow_call in calls:
                await app.wait_ended(flow_call.id)
            for other in list(sim.calls.values()):  # the transfer's leg too
                await other.wait_ended()
            if platform == "telnyx":
                await sim.frontend.wait_delivered(call)  # type: ignore[attr-defined]
        return result, transcript, calls, example


def at(transcript: Transcript, kind: str, contains: str = "") -> float:
    return next(e.at for e in transcript.entries if e.kind == kind and contains in e.text)


@pytest.mark.parametrize("platform", ["twilio", "telnyx"])
async def test_a_message_is_left_after_the_machines_beep(platform: str) -> None:
    result, transcript, calls, example = await remind(
        platform, Phone.answering_machine(after=1, greeting=6, record=20))
    assert result.answered and result.answered_by == "machine"
    [call] = calls
    assert call.answered_by == "machine" and call.data["answered_by"] == "machine"
    message = example.VOICEMAIL.format(name="Ana", amount="forty euros")
    assert transcript.spoken == [message]
    # Spoken after the beep, so the machine records all of it.
    assert at(transcript, "speak", "Hello Ana") >= at(transcript, "beep")
    assert transcript.texts("error") == []


@pytest.mark.parametrize("platform", ["twilio", "telnyx"])
async def test_detect_alone_starts_the_flow_during_the_greeting(platform: str) -> None:
    result, transcript, _, _ = await remind(
        platform, Phone.answering_machine(after=1, greeting=10), mode="detect")
    assert result.answered_by == "machine"
    assert at(transcript, "speak", "Hello Ana") < at(transcript, "beep")


@pytest.mark.parametrize("platform", ["twilio", "telnyx"])
async def test_a_person_is_detected_and_transferred(platform: str) -> None:
    result, transcript, calls, example = await remind(
        platform, Phone.answers(after=1, script=["press-next:1"]),
        Phone.answers(after=2, hang_up_after=5))
    assert result.answered_by == "human"
    assert calls[0].answered_by == "human"
    spoken = example.REMINDER.format(name="Ana", amount="forty euros")
    assert transcript.spoken == [spoken]
    answered = [e.text for e in transcript.entries if e.kind == "answered"]
    assert any(text.startswith(BILLING) for text in answered), transcript
    assert transcript.texts("error") == []


async def test_a_transfer_on_bluevia() -> None:
    async def flow(call: callflow.Call) -> None:
        await call.say("Putting you through.")
        await call.transfer(BILLING)

    app = callflow.App()
    app.flow(number="+34900000001")(flow)
    sim = Simulator()
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                        **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            sim.add_account_number("+34900000001")
            await app.configure_numbers()
            sim.add_phone(BILLING, Phone.answers(after=2, hang_up_after=4))
            call = await sim.place_inbound_call(PERSON, "+34900000001")
            with anyio.fail_after(20):
                transcript = await call.wait_ended()
    assert transcript.spoken == ["Putting you through."]
    assert any(e.kind == "answered" and e.text.startswith(BILLING)
               for e in transcript.entries)
    assert transcript.texts("error") == []


async def test_bluevia_refuses_machine_detection() -> None:
    async with served("bluevia") as (app, _, _):
        with pytest.raises(UnsupportedFeature, match="bluevia does not support "
                                                     r"call\(machine_detection=...\)"):
            await app.call(PERSON, flow="payment_reminder", caller_id=CALLER_ID,
                           machine_detection="detect")
