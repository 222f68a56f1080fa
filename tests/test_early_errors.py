"""Mistakes caught where they are made: a flow that is not a coroutine, a verb left
un-awaited, a verb's argument the platform would refuse."""

from __future__ import annotations

import functools
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
