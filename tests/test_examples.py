"""Every example in ``examples/``, run through ``FakeCall``: happy paths and failures."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import callflow
from callflow import Dial, DialResult, Gather, Hangup, Record, RecordResult, Say
from callflow.testing import FakeCall

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CALLER = "+34600000001"
NO_INPUT = ("Sorry, I didn't hear anything.", "Please press a key on your phone's keypad.")
NO_MATCH = "Sorry, that is not one of the options."


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path, afresh (examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ivr() -> ModuleType:
    return load("ivr")


@pytest.fixture
def voicemail() -> ModuleType:
    return load("voicemail")


@pytest.fixture
def reminder() -> ModuleType:
    return load("reminder")


@pytest.fixture
def forward() -> ModuleType:
    return load("forward")


def kept(voicemail: ModuleType) -> list[tuple[str, RecordResult]]:
    """The messages the voicemail example kept (module state, fresh for every test)."""
    messages: list[tuple[str, RecordResult]] = voicemail.MESSAGES
    return messages


def recording(n: int, seconds: float) -> RecordResult:
    return RecordResult(url=f"https://recordings.invalid/fake-call/{n}.wav", duration=seconds)


@pytest.mark.parametrize("name", ["ivr", "voicemail", "reminder", "forward", "reception"])
def test_every_example_says_how_to_run_it_and_imports_only_callflow(name: str) -> None:
    module = load(name)
    doc = module.__doc__ or ""
    assert f"callflow serve examples/{name}.py" in doc
    assert f"callflow call examples/{name}.py --press 1" in doc
    assert isinstance(module.app, callflow.App)
    source = (EXAMPLES / f"{name}.py").read_text()
    imports = {line.split()[1] for line in source.splitlines()
               if line.startswith(("import ", "from "))}
    assert imports == {"__future__", "callflow"}


# -- ivr.py -----------------------------------------------------------------------------


def test_ivr_answers_its_number(ivr: ModuleType) -> None:
    assert ivr.app.numbers == {"+34900000001": "reception"}
    assert ivr.app.flow_for_number("+34900000001").func is ivr.reception


async def test_ivr_sales_puts_the_caller_through(
    ivr: ModuleType, fake_call: Callable[..., FakeCall]
) -> None:
    fake = fake_call(ivr.reception).press("1").on_dial(ivr.SALES, talk=42)
    await fake.run()
    assert fake.heard == [ivr.WELCOME, ivr.MENU, "Please hold while we put you through.",
                          ivr.GOODBYE]
    dials = [c for c in fake.commands if isinstance(c, Dial)]
    assert dials == [Dial(2, numbers=(ivr.SALES,), timeout=float(ivr.RING_SECONDS),
                          on_answer=Say("A caller for sales."))]
    assert fake.call.data == {
        "choice": "sales",
        "dial": DialResult("answered", number=ivr.SALES, duration=42.0),
    }
    assert fake.commands[-1] == Hangup()
    assert fake.ended_by == "app"
    assert fake.error is None


async def test_ivr_support_rings_every_agent_at_once(ivr: ModuleType) -> None:
    first, second, third = ivr.SUPPORT
    fake = await (FakeCall(ivr.reception).press("2").on_dial(first, "busy")
                  .on_dial(second, "no_answer").on_dial(third, talk=30).run())
    dials = [c for c in fake.commands if isinstance(c, Dial)]
    assert [d.numbers for d in dials] == [ivr.SUPPORT]
    assert fake.call.data["dial"] == DialResult("answered", number=third, duration=30.0)
    assert ivr.NOBODY not in fake.heard
    assert fake.heard[-1] == ivr.GOODBYE


@pytest.mark.parametrize(("key", "status"), [("1", "busy"), ("2", "no_answer"),
                                             ("1", "failed"), ("2", "unreachable")])
async def test_ivr_tells_the_caller_when_nobody_answers(ivr: ModuleType, key: str, status: Any
                                                        ) -> None:
    fake = FakeCall(ivr.reception).press(key)
    for number in (ivr.SALES, *ivr.SUPPORT):
        fake.on_dial(number, status)
    await fake.run()
    assert fake.heard[-2:] == [ivr.NOBODY, ivr.GOODBYE]
    assert not fake.call.data["dial"].answered
    assert fake.ended_by == "app"


async def test_ivr_opening_hours(ivr: ModuleType) -> None:
    fake = await FakeCall(ivr.reception).press("3").run()
    assert fake.heard == [ivr.WELCOME, ivr.MENU, ivr.HOURS, ivr.GOODBYE]
    assert not any(isinstance(c, Dial) for c in fake.commands)
    assert fake.call.data == {"choice": "hours"}


async def test_ivr_wrong_key_then_a_right_one(ivr: ModuleType) -> None:
    fake = await FakeCall(ivr.reception).press("9").press("3").run()
    assert fake.heard == [ivr.WELCOME, ivr.MENU, NO_MATCH, ivr.MENU, ivr.HOURS, ivr.GOODBYE]
    gathers = [c for c in fake.commands if isinstance(c, Gather)]
    assert [g.num_digits for g in gathers] == [1, 1]


async def test_ivr_no_input_is_handled_by_the_menu_then_goodbye(ivr: ModuleType) -> None:
    fake = await FakeCall(ivr.reception).silence().silence().silence().run()
    assert fake.heard == [ivr.WELCOME, ivr.MENU, NO_INPUT[0], ivr.MENU, NO_INPUT[1], ivr.MENU,
                          ivr.GOODBYE]
    assert fake.call.data == {"choice": None}
    assert fake.ended_by == "app"


async def test_ivr_caller_hangs_up_at_the_menu(ivr: ModuleType) -> None:
    fake = await FakeCall(ivr.reception).hang_up().run()
    assert fake.heard == [ivr.WELCOME]
    assert fake.ended_by == "caller"
    assert fake.call.data == {}
    assert not any(isinstance(c, Hangup | Dial) for c in fake.commands)
    assert fake.error is None


async def test_ivr_caller_hangs_up_while_on_hold(ivr: ModuleType) -> None:
    fake = await FakeCall(ivr.reception, hang_up_at=2).press("1").run()
    assert fake.heard == [ivr.WELCOME, ivr.MENU, "Please hold while we put you through."]
    assert fake.call.data == {"choice": "sales"}
    assert fake.ended_by == "caller"


# -- voicemail.py -----------------------------------------------------------------------


def test_voicemail_answers_its_number(voicemail: ModuleType) -> None:
    assert voicemail.app.numbers == {"+34900000002": "voicemail"}


async def test_voicemail_records_plays_back_and_keeps(voicemail: ModuleType) -> None:
    fake = await FakeCall(voicemail.voicemail).speak(12).press("1").run()
    take = recording(1, 12.0)
    assert fake.heard == [voicemail.GREETING, voicemail.RECORD_PROMPT, voicemail.PLAYBACK,
                          f"play:{take.url}", voicemail.KEEP_OR_AGAIN, voicemail.SAVED]
    assert fake.commands[1] == Record(1, prompt=Say(voicemail.RECORD_PROMPT), max_length=120.0,
                                      silence_timeout=5.0, beep=True, finish_on_key="#")
    assert kept(voicemail) == [(CALLER, take)]
    assert fake.call.data == {"message": take}
    assert fake.ended_by == "app"


async def test_voicemail_records_again_when_asked(voicemail: ModuleType) -> None:
    fake = await FakeCall(voicemail.voicemail).speak(4).press("2").speak(9).press("1").run()
    assert kept(voicemail) == [(CALLER, recording(2, 9.0))]
    assert fake.heard.count(voicemail.RECORD_PROMPT) == 2
    assert fake.heard[-1] == voicemail.SAVED


async def test_voicemail_allows_at_most_three_takes(voicemail: ModuleType) -> None:
    fake = await (FakeCall(voicemail.voicemail).speak(4).press("2").speak(5).press("2")
                  .speak(6).press("2").press("1").run())
    # The last take offers only "keep": 2 is then a wrong key.
    assert fake.heard.count(voicemail.RECORD_PROMPT) == voicemail.MAX_TAKES == 3
    assert fake.heard[-4:] == [voicemail.KEEP_ONLY, NO_MATCH, voicemail.KEEP_ONLY,
                               voicemail.SAVED]
    assert kept(voicemail) == [(CALLER, recording(3, 6.0))]


async def test_voicemail_keeps_the_message_when_the_caller_says_nothing(voicemail: ModuleType
                                                                        ) -> None:
    fake = await FakeCall(voicemail.voicemail).speak(8).silence().silence().run()
    assert fake.heard[-4:] == [voicemail.KEEP_OR_AGAIN, NO_INPUT[0], voicemail.KEEP_OR_AGAIN,
                               voicemail.SAVED]
    assert kept(voicemail) == [(CALLER, recording(1, 8.0))]


async def test_voicemail_asks_again_after_an_empty_recording(voicemail: ModuleType) -> None:
    fake = await FakeCall(voicemail.voicemail).speak(0).speak(5).press("1").run()
    assert fake.heard[:4] == [voicemail.GREETING, voicemail.RECORD_PROMPT, voicemail.EMPTY,
                              voicemail.RECORD_PROMPT]
    assert kept(voicemail) == [(CALLER, recording(2, 5.0))]


async def test_voicemail_saves_nothing_after_three_empty_recordings(voicemail: ModuleType
                                                                    ) -> None:
    fake = await FakeCall(voicemail.voicemail).speak(0).speak(0).speak(0).run()
    assert fake.heard == [voicemail.GREETING] + [voicemail.RECORD_PROMPT, voicemail.EMPTY] * 3 + [
        voicemail.NOT_SAVED]
    assert kept(voicemail) == []
    assert fake.call.data == {}


async def test_voicemail_keeps_the_message_of_a_caller_who_hangs_up_after_recording(
    voicemail: ModuleType,
) -> None:
    fake = await FakeCall(voicemail.voicemail).speak(6).hang_up().run()
    assert fake.ended_by == "caller"
    assert voicemail.SAVED not in fake.heard
    assert kept(voicemail) == [(CALLER, recording(1, 6.0))]  # kept by the flow's finally


async def test_voicemail_keeps_nothing_when_the_caller_hangs_up_during_the_prompt(
    voicemail: ModuleType,
) -> None:
    fake = await FakeCall(voicemail.voicemail, hang_up_at=1).run()
    assert fake.heard == [voicemail.GREETING]
    assert fake.ended_by == "caller"
    assert kept(voicemail) == []


async def test_voicemail_hang_up_after_asking_to_record_again_keeps_nothing(
    voicemail: ModuleType,
) -> None:
    fake = await FakeCall(voicemail.voicemail).speak(6).press("2").hang_up().run()
    assert fake.ended_by == "caller"
    assert kept(voicemail) == []


# -- reminder.py ------------------------------------------------------------------------

APPOINTMENT = {"name": "Ana", "when": "on Monday at ten", "where": "the Gran Via clinic"}
ANA_PROMPT = ("Hello Ana. This is a reminder of your appointment on Monday at ten at the "
              "Gran Via clinic. To confirm it, press 1. To cancel it, press 2.")


def outbound(flow: Any, data: dict[str, Any] | None = None, **options: Any) -> FakeCall:
    return FakeCall(flow, caller="+34900000001", callee=CALLER, direction="outbound",
                    data=data, **options)


def test_reminder_is_the_default_flow_with_no_number(reminder: ModuleType) -> None:
    assert reminder.app.numbers == {}
    assert reminder.app.get_flow().name == "reminder"
    assert reminder.app.get_flow("reminder").func is reminder.reminder
    assert "await app.call(\"+34600000001\", flow=\"reminder\"" in reminder.__doc__


async def test_reminder_confirm(reminder: ModuleType) -> None:
    data = dict(APPOINTMENT)
    fake = await outbound(reminder.reminder, data).press("1").run()
    assert fake.heard == [ANA_PROMPT, reminder.CONFIRMED]
    assert data["confirmed"] is True
    assert fake.commands[0] == Gather(1, prompt=Say(ANA_PROMPT), num_digits=1)
    assert fake.ended_by == "app"


async def test_reminder_cancel(reminder: ModuleType) -> None:
    data = dict(APPOINTMENT)
    fake = await outbound(reminder.reminder, data).press("2").run()
    assert fake.heard == [ANA_PROMPT, reminder.CANCELLED]
    assert data["confirmed"] is False


async def test_reminder_uses_defaults_without_data(reminder: ModuleType) -> None:
    fake = await outbound(reminder.reminder).press("1").run()
    assert fake.heard[0] == ("Hello there. This is a reminder of your appointment tomorrow at "
                             "ten in the morning at the Acme clinic. To confirm it, press 1. "
                             "To cancel it, press 2.")
    assert fake.call.data == {"confirmed": True}


async def test_reminder_repeats_on_no_input(reminder: ModuleType) -> None:
    data = dict(APPOINTMENT)
    fake = await outbound(reminder.reminder, data).silence().press("1").run()
    assert fake.heard == [ANA_PROMPT, "Sorry, I did not hear anything.", ANA_PROMPT,
                          reminder.CONFIRMED]
    assert data["confirmed"] is True


async def test_reminder_wrong_key(reminder: ModuleType) -> None:
    data = dict(APPOINTMENT)
    fake = await outbound(reminder.reminder, data).press("7").press("2").run()
    assert fake.heard == [ANA_PROMPT, "Sorry, please press 1 or 2.", ANA_PROMPT,
                          reminder.CANCELLED]
    assert data["confirmed"] is False


async def test_reminder_with_no_answer_at_all(reminder: ModuleType) -> None:
    data = dict(APPOINTMENT)
    fake = await outbound(reminder.reminder, data).silence().silence().silence().run()
    assert fake.heard.count(ANA_PROMPT) == 3
    assert fake.heard[-1] == reminder.NO_ANSWER
    assert data["confirmed"] is None


async def test_reminder_callee_hangs_up_during_the_reminder(reminder: ModuleType) -> None:
    data = dict(APPOINTMENT)
    fake = await outbound(reminder.reminder, data, hang_up_at=1).run()
    assert fake.ended_by == "caller"
    assert "confirmed" not in data
    assert fake.heard == []


async def test_reminder_remind_places_the_call_and_returns_the_answer(
    reminder: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    placed: list[tuple[str, str, dict[str, Any]]] = []

    async def call(to: str, *, flow: str, data: dict[str, Any]) -> callflow.OutboundCallResult:
        placed.append((to, flow, dict(data)))
        await outbound(reminder.app.get_flow(flow).func, data).press("2").run()
        return callflow.OutboundCallResult("out-1", "answered")

    async def wait_ended(call_id: str) -> None:
        assert call_id == "out-1"

    monkeypatch.setattr(reminder.app, "call", call)
    monkeypatch.setattr(reminder.app, "wait_ended", wait_ended)
    assert await reminder.remind(CALLER, name="Ana", when="today") is False
    assert placed == [(CALLER, "reminder", {"name": "Ana", "when": "today"})]


async def test_reminder_remind_when_the_call_is_not_answered(
    reminder: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def call(to: str, *, flow: str, data: dict[str, Any]) -> callflow.OutboundCallResult:
        return callflow.OutboundCallResult("out-2", "busy")

    monkeypatch.setattr(reminder.app, "call", call)
    assert await reminder.remind(CALLER) is None


# -- forward.py -------------------------------------------------------------------------


def test_forward_answers_its_number(forward: ModuleType) -> None:
    assert forward.app.numbers == {"+34900000003": "forward"}


async def test_forward_puts_the_call_through(forward: ModuleType) -> None:
    first, second = forward.FORWARD_TO
    fake = await FakeCall(forward.forward).on_dial(first, "no_answer").on_dial(second, talk=60
                                                                                ).run()
    assert fake.commands == [
        Dial(1, numbers=forward.FORWARD_TO, caller_id=CALLER,
             timeout=float(forward.RING_SECONDS)),
        Hangup(),
    ]
    assert fake.call.data == {"dial": DialResult("answered", number=second, duration=60.0)}
    assert fake.heard == []
    assert fake.ended_by == "app"


@pytest.mark.parametrize(
    ("outcome", "message"),
    [("busy", "The line is busy."), ("no_answer", "Nobody is answering."),
     ("failed", "We could not put your call through."),
     ("unreachable", "We could not put your call through.")],
)
async def test_forward_falls_back_to_voicemail(forward: ModuleType, outcome: Any, message: str
                                               ) -> None:
    fake = FakeCall(forward.forward).speak(14)
    for number in forward.FORWARD_TO:
        fake.on_dial(number, outcome)
    await fake.run()
    assert fake.heard == [message, forward.LEAVE_A_MESSAGE, forward.THANKS]
    assert fake.commands[2] == Record(2, prompt=Say(forward.LEAVE_A_MESSAGE), max_length=120.0,
                                      beep=True, finish_on_key="#")
    assert fake.call.data["dial"].status == ("failed" if outcome == "unreachable" else outcome)
    assert fake.call.data["voicemail"] == recording(1, 14.0)
    assert fake.ended_by == "app"


async def test_forward_caller_hangs_up_before_leaving_a_message(forward: ModuleType) -> None:
    fake = FakeCall(forward.forward, hang_up_at=2)
    for number in forward.FORWARD_TO:
        fake.on_dial(number, "busy")
    await fake.run()
    assert fake.heard == ["The line is busy."]
    assert "voicemail" not in fake.call.data
    assert fake.ended_by == "caller"
