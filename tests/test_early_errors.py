"""Mistakes caught where they are made: a flow that is not a coroutine, a verb left
un-awaited, a verb's argument the platform would refuse."""

from __future__ import annotations

import dataclasses
import functools
import logging
import traceback
from typing import Any

import pytest

import callflow
from callflow import App, Call, ConfigurationError, FlowError
from callflow.testing import FakeCall

pytestmark = pytest.mark.anyio

HERE = __file__


def line_of(text: str) -> int:
    """The line of this file that holds ``text`` (once)."""
    with open(HERE, encoding="utf-8") as file:
        [number] = [n for n, line in enumerate(file, 1)
                     if line.startswith(text) or line.rstrip().endswith(text)]
    return number


# -- a plain def is refused at registration ------------------------------------------------


def plain_flow(call: Call) -> None:
    pass


def test_a_plain_def_flow_is_refused_where_it_is_registered() -> None:
    app = App()
    with pytest.raises(ConfigurationError) as caught:
        app.flow(plain_flow)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "'plain_flow'" in message
    assert f"{HERE}:{line_of('def plain_flow(')}" in message
    assert "async def plain_flow(call)" in message
    assert app.flows == {}


def test_the_module_level_decorator_and_fakecall_refuse_it_too() -> None:
    with pytest.raises(ConfigurationError, match="plain_flow"):
        callflow.flow(number="+34900000001")(plain_flow)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="plain_flow"):
        FakeCall(plain_flow)  # type: ignore[arg-type]


async def test_coroutine_callables_of_every_shape_are_accepted() -> None:
    async def greet(call: Call, text: str) -> None:
        await call.say(text)

    class Greeter:
        async def __call__(self, call: Call) -> None:
            await call.say("object")

    @functools.wraps(greet)
    async def wrapped(call: Call) -> None:
        await greet(call, "wrapped")

    app = App()
    app.add_flow(functools.partial(greet, text="partial"), name="partial",
                 numbers=("+34900000001",))
    app.add_flow(Greeter(), name="object", numbers=("+34900000002",))
    app.add_flow(wrapped, name="wrapped")
    heard = [(await FakeCall(spec.func).run()).heard for spec in app.flows.values()]
    assert heard == [["partial"], ["object"], ["wrapped"]]


# -- a verb without await ------------------------------------------------------------------


async def forgets_before_a_verb(call: Call) -> None:
    call.say("You will not hear this.")  # type: ignore[unused-coroutine]  # forgot
    await call.gather(prompt="Press a key.", num_digits=1)


async def forgets_at_the_end(call: Call) -> None:
    await call.say("Hello.")
    call.say("Goodbye.")  # type: ignore[unused-coroutine]  # forgot at the end


async def forgets_a_gather(call: Call) -> None:
    call.gather(prompt="Press a key.")  # type: ignore[unused-coroutine]  # forgot the gather
    await call.say("Bye.")


@pytest.mark.parametrize(("flow", "verb", "marker"), [
    (forgets_before_a_verb, "say", "# forgot"),
    (forgets_at_the_end, "say", "# forgot at the end"),
    (forgets_a_gather, "gather", "# forgot the gather"),
])
async def test_a_verb_without_await_is_an_error_naming_its_line(
        flow: Any, verb: str, marker: str, recwarn: pytest.WarningsRecorder) -> None:
    fake = await FakeCall(flow).press("1").run()
    assert isinstance(fake.error, FlowError)
    assert str(fake.error).startswith(f"{HERE}:{line_of(marker)}: call.{verb}() was called "
                                      "without 'await'")
    assert f"await call.{verb}(...)" in str(fake.error)
    # The caller hears the apology, not half the flow; Python adds no warning of its own.
    assert fake.heard == [callflow._settings.DEFAULT_APOLOGY]
    assert fake.ended_by == "app"
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


async def test_awaited_verbs_and_a_verb_awaited_a_little_later_are_fine() -> None:
    async def flow(call: Call) -> None:
        pending = call.say("One.")
        await pending
        result = await call.gather(prompt="Press a key.", num_digits=1)
        await call.say(f"You pressed {result.digits}.")
        await call.menu("Choose.", {"1": "one"})

    fake = await FakeCall(flow).press("5").press("1").run()
    assert fake.error is None
    assert fake.heard == ["One.", "Press a key.", "You pressed 5.", "Choose."]


# -- verb arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "advice"), [
    ("0034 910 000 001", "the international prefix 00 is written '+': +34910000001"),
    ("+34 910-000-001", "leave out spaces and punctuation: +34910000001"),
    ("910000001", "a number without its country code cannot be dialled"),
    ("sales desk", "write '+', the country code and the number"),
    ("+0034910000001", "write '+', the country code and the number"),
])
async def test_dial_refuses_a_number_that_is_not_e164_and_says_how_to_write_it(
        number: str, advice: str) -> None:
    async def flow(call: Call) -> None:
        await call.dial(number)  # the line of the mistake

    fake = await FakeCall(flow).run()
    assert isinstance(fake.error, ValueError)
    assert str(fake.error).startswith(f"dial(): {number!r} is not a phone number in E.164 "
                                      "form; ")
    assert advice in str(fake.error)
    frames = traceback.extract_tb(fake.error.__traceback__)
    assert any(frame.line and "# the line of the mistake" in frame.line for frame in frames)
    assert not [c for c in fake.commands if isinstance(c, callflow.Dial)]


async def test_well_written_numbers_pass_as_they_are() -> None:
    async def flow(call: Call) -> None:
        await call.dial(["tel:+34910000001", " +34910000002 "], caller_id="+34900000001")

    fake = await FakeCall(flow).run()
    assert fake.error is None
    [dial] = [c for c in fake.commands if isinstance(c, callflow.Dial)]
    assert dial.numbers == ("+34910000001", "+34910000002")


@pytest.mark.parametrize(("verb", "message"), [
    (lambda c: c.say("Hola", voice="Polly Lucia"),
     "say(): voice 'Polly Lucia' is not a voice's name; use 'female' or 'male', or one of "
     "the platform's own voices (e.g. 'Polly.Lucia' on Twilio)"),
    (lambda c: c.gather(prompt=callflow.Say("Hi", voice="")),
     "gather(prompt=Say(...)): voice '' is not a voice's name"),
    (lambda c: c.say("Hi", repeat=0), "say(repeat=...) must be a whole number from 1 to 100"),
    (lambda c: c.wait(-1), "wait() must be at least 0 and at most 3600 seconds, not -1"),
    (lambda c: c.wait(float("nan")), "wait() must be at least 0 and at most 3600 seconds"),
    (lambda c: c.gather(timeout=0), "gather(timeout=...) must be more than 0"),
    (lambda c: c.gather(num_digits=-1), "gather(num_digits=...) must be a whole number "
                                        "from 0 to 128, not -1"),
    (lambda c: c.gather(num_digits=True), "gather(num_digits=...) must be a whole number"),
    (lambda c: c.gather(finish_on_key="##"), "gather(finish_on_key=...) must be one key"),
    (lambda c: c.gather(valid_digits="abc"), "gather(valid_digits=...) must be keys among"),
    (lambda c: c.gather(retries=0), "gather(retries=...) must be a whole number from 1"),
    (lambda c: c.record(max_length=0), "record(max_length=...) must be more than 0"),
    (lambda c: c.record(silence_timeout=-2), "record(silence_timeout=...) must be at least 0"),
    (lambda c: c.dial("+34910000001", timeout=0), "dial(timeout=...) must be more than 0 "
                                                  "and at most 600 seconds"),
    (lambda c: c.dial("+34910000001", caller_id="sales"), "dial(caller_id=...): 'sales'"),
    (lambda c: c.dial([]), "dial() needs at least one number"),
    (lambda c: c.conference(""), "conference() needs a room name"),
    (lambda c: c.conference("room", max_members=0), "conference(max_members=...)"),
    (lambda c: c.menu("Choose.", {"1": 1}, timeout=-1), "menu(timeout=...) must be more"),
])
async def test_verb_arguments_are_checked_where_they_are_given(verb: Any, message: str) -> None:
    async def flow(call: Call) -> None:
        await verb(call)

    fake = await FakeCall(flow).press("1").run()
    assert isinstance(fake.error, ValueError), fake.error
    assert str(fake.error).startswith(message), str(fake.error)
    assert fake.heard == [callflow._settings.DEFAULT_APOLOGY]


async def test_app_call_checks_its_numbers_before_asking_the_platform() -> None:
    app = App(platform_url="http://127.0.0.1:9", caller_id="+34900000001")

    @app.flow
    async def reminder(call: Call) -> None:
        pass

    async with app:
        with pytest.raises(ValueError, match=r"App.call\(\): '0034 600 000 001' .* \+34600000001"):
            await app.call("0034 600 000 001")
        with pytest.raises(ValueError, match=r"App.call\(caller_id=...\)"):
            await app.call("+34600000001", caller_id="reception")


# -- what the platform refused, in the log --------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
async def test_a_refused_answer_is_logged_as_refused_not_as_unreachable(
        platform: str, caplog: pytest.LogCaptureFixture) -> None:
    """A command that slipped past the verbs' checks (built by hand here) and that the
    platform refuses: the log says the platform did not take the app's answer."""
    from callflow.simulator import Simulator, serve_asgi, serve_simulator

    app = App()

    @app.flow(number="+34900000001")
    async def flow(call: Call) -> None:
        dial = callflow.Dial(1, numbers=("sales desk",))
        await call._session.block(lambda step: dataclasses.replace(dial, step=step))

    sim = Simulator(platform=platform)
    with caplog.at_level(logging.ERROR, logger="callflow"):
        async with serve_simulator(sim) as sim_url:
            app.configure(callflow.Settings(platform_url=sim_url, **sim.app_settings()))
            async with serve_asgi(app) as app_url:
                app.settings.public_url = app_url
                await app.configure_numbers()
                call = await sim.place_inbound_call("+34600000001", "+34900000001")
                transcript = await call.wait_ended()
    assert transcript.texts("error")  # the platform did refuse it
    if platform == "bluevia":
        assert ("the platform did not accept the app's answer to CalledNumber "
                "(1 command: dial)") in caplog.text
    else:  # Twilio's simulator takes the TwiML, and fails the dial itself
        assert "could not reach" not in caplog.text
    assert "could not reach the app" not in caplog.text


def test_the_start_up_check_names_literal_mistakes_before_any_call(tmp_path: Any) -> None:
    from callflow._loader import load_app

    flows = tmp_path / "flows.py"
    flows.write_text(
        "import callflow\n"
        "app = callflow.App()\n"
        "@app.flow(number='+34900000001')\n"
        "async def reception(call):\n"
        "    await call.say('Hola', voice='Polly.Lucia')\n"
        "    await call.dial('0034 910 000 001', caller_id='+34900000001')\n"
        "    await call.dial('+34910000002', caller_id='reception')\n")
    app = load_app(flows)
    app.configure(callflow.Settings(platform_url="http://127.0.0.1:9"))
    assert app.check_platform() == [
        f"{flows}:5: bluevia does not support say(voice=...); 'Polly.Lucia': BlueVia speaks "
        "with a female or a male voice",
        f"{flows}:6: dial(): '0034 910 000 001' is not a phone number in E.164 form; the "
        "international prefix 00 is written '+': +34910000001",
        f"{flows}:7: dial(caller_id=...): 'reception' is not a phone number in E.164 form; "
        "write '+', the country code and the number, with no spaces (e.g. +34910000001)",
    ]
