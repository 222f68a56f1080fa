"""The whole flow DSL, driven through ``FakeCall``: verbs, results, hang-ups, errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import callflow
from callflow import (
    CallEnded,
    Conference,
    ConferenceOptions,
    Dial,
    DialResult,
    FlowError,
    Gather,
    GatherResult,
    Hangup,
    Pause,
    Play,
    Record,
    RecordResult,
    Resume,
    Say,
)
from callflow._settings import DEFAULT_APOLOGY
from callflow.testing import FakeCall

pytestmark = pytest.mark.anyio

Flow = Callable[[callflow.Call], Awaitable[None]]

NO_INPUT = ("Sorry, I didn't hear anything.", "Please press a key on your phone's keypad.")
NO_MATCH = (
    "Sorry, that is not one of the options.",
    "Please listen to the options and press one of the keys.",
)


class BatchedFakeCall(FakeCall):
    """A FakeCall that also keeps each response (or setcommands push) as one batch."""

    def __init__(self, flow: Flow, **options: Any) -> None:
        super().__init__(flow, **options)
        self.batches: list[list[callflow.Command]] = []
        self.pushes: list[list[callflow.Command]] = []

    async def _deliver(self, kind: Any, **fields: Any) -> list[callflow.Command] | None:
        commands = await super()._deliver(kind, **fields)
        if commands:
            self.batches.append(list(commands))
        return commands

    async def push(self, session: Any, commands: list[callflow.Command]) -> None:
        self.pushes.append(list(commands))
        self.batches.append(list(commands))
        await super().push(session, commands)


def app_lines(fake: FakeCall) -> list[str]:
    return [line.what for line in fake.transcript if line.who == "app"]


# -- the Call object ------------------------------------------------------------------


async def test_call_attributes_are_e164_and_data_is_the_flows_own_dict() -> None:
    seen: dict[str, Any] = {}

    async def flow(call: callflow.Call) -> None:
        seen.update(id=call.id, caller=call.caller, callee=call.callee,
                    direction=call.direction, ended=call.ended)
        call.data["touched"] = True

    data: dict[str, Any] = {"given": 1}
    fake = await FakeCall(flow, caller="tel:+34600000009", callee="tel:+34900000007",
                          direction="outbound", data=data, call_id="c-42").run()
    assert seen == {"id": "c-42", "caller": "+34600000009", "callee": "+34900000007",
                    "direction": "outbound", "ended": False}
    assert fake.call.data is data
    assert data == {"given": 1, "touched": True}
    assert fake.call.ended
    assert "ended" in repr(fake.call)


# -- verbs that queue -------------------------------------------------------------------


async def test_say_play_wait_reach_the_commands_with_their_options() -> None:
    async def flow(call: callflow.Call) -> None:
        await call.say("Hola", voice="male", repeat=2)
        await call.play("https://example.com/jingle.mp3", repeat=3)
        await call.wait(2)
        await call.say("Adios")

    fake = await FakeCall(flow).run()
    assert fake.commands == [
        Say("Hola", voice="male", repeat=2),
        Play("https://example.com/jingle.mp3", repeat=3),
        Pause(2.0),
        Say("Adios"),
        Hangup(),
    ]
    pause = fake.commands[2]
    assert isinstance(pause, Pause) and isinstance(pause.seconds, float)
    assert fake.heard == ["Hola", "Hola"] + ["play:https://example.com/jingle.mp3"] * 3 + ["Adios"]
    assert fake.said == "Hola Hola Adios"
    # The pause is virtual time: the goodbye comes 2 s after the end of the jingle.
    times = {line.what: line.time for line in fake.transcript if line.who == "app"}
    assert times["says Adios"] == pytest.approx(times["waits 2s"] + 2.0)


async def test_queued_verbs_travel_in_the_same_batch_as_the_blocking_verb() -> None:
    async def flow(call: callflow.Call) -> None:
        await call.say("Welcome.")
        await call.play("https://example.com/a.wav")
        await call.wait(0.5)
        await call.gather(prompt="Press a key.", num_digits=1)
        await call.say("Thanks.")
        await call.say("Bye.")

    fake = BatchedFakeCall(flow).press("5")
    await fake.run()
    assert fake.batches == [
        [Say("Welcome."), Play("https://example.com/a.wav"), Pause(0.5),
         Gather(1, prompt=Say("Press a key."), num_digits=1)],
        [Say("Thanks."), Say("Bye."), Hangup()],
    ]
    assert fake.pushes == []


# -- gather -----------------------------------------------------------------------------


async def test_gather_options_reach_the_gather_command() -> None:
    results: list[GatherResult] = []

    async def flow(call: callflow.Call) -> None:
        results.append(await call.gather(prompt="Enter your PIN.", num_digits=4,
                                          finish_on_key="*", valid_digits="0123456789*",
                                          timeout=3, retries=2))

    fake = await FakeCall(flow).press("1234").run()
    gather = fake.commands[0]
    assert gather == Gather(1, prompt=Say("Enter your PIN."), num_digits=4, finish_on_key="*",
                            valid_digits="0123456789*", timeout=3.0, retries=2)
    assert isinstance(gather, Gather) and isinstance(gather.timeout, float)
    assert results == [GatherResult(digits="1234", finish_key=None, timed_out=False)]
    assert fake.heard == ["Enter your PIN."]


async def test_gather_strips_the_finish_key() -> None:
    results: list[GatherResult] = []

    async def flow(call: callflow.Call) -> None:
        results.append(await call.gather(prompt="Amount, then hash."))
        results.append(await call.gather(finish_on_key="*"))

    await FakeCall(flow).press("42#").press("7*").run()
    assert results == [GatherResult("42", finish_key="#"), GatherResult("7", finish_key="*")]


async def test_gather_stops_at_num_digits() -> None:
    results: list[GatherResult] = []

    async def flow(call: callflow.Call) -> None:
        results.append(await call.gather(num_digits=4))

    await FakeCall(flow).press("123456").run()
    assert results == [GatherResult("1234")]


async def test_gather_with_no_input_times_out_after_every_retry() -> None:
    results: list[GatherResult] = []

    async def flow(call: callflow.Call) -> None:
        results.append(await call.gather(prompt="Press a key.", timeout=4, retries=3))

    fake = await FakeCall(flow).silence().run()
    assert results == [GatherResult(digits="", finish_key=None, timed_out=True)]
    assert fake.heard == ["Press a key."] * 3
    # Three prompts of 3 words (0.4 s each) and three 4 s timeouts in virtual time.
    silent = next(line for line in fake.transcript if line.what == "says nothing")
    assert silent.time == pytest.approx(3 * (1.2 + 4.0))


async def test_gather_prompt_may_be_a_play() -> None:
    async def flow(call: callflow.Call) -> None:
        await call.gather(prompt=Play("https://example.com/menu.mp3"), num_digits=1)

    fake = await FakeCall(flow).press("1").run()
    assert fake.commands[0] == Gather(1, prompt=Play("https://example.com/menu.mp3"),
                                      num_digits=1)
    assert fake.heard == ["play:https://example.com/menu.mp3"]


# -- record -----------------------------------------------------------------------------


async def test_record_options_reach_the_record_command_and_the_result_has_url_and_duration(
) -> None:
    results: list[RecordResult] = []

    async def flow(call: callflow.Call) -> None:
        results.append(await call.record(prompt="Speak after the beep.", max_length=30,
                                         silence_timeout=4, beep=True, finish_on_key="#"))
        results.append(await call.record(max_length=30))

    fake = await FakeCall(flow, call_id="rec-1").speak(7.5).speak(100).run()
    assert fake.commands[0] == Record(1, prompt=Say("Speak after the beep."), max_length=30.0,
                                      silence_timeout=4.0, beep=True, finish_on_key="#")
    assert fake.commands[1] == Record(2, max_length=30.0)
    assert results == [
        RecordResult(url="https://recordings.invalid/rec-1/1.wav", duration=7.5),
        RecordResult(url="https://recordings.invalid/rec-1/2.wav", duration=30.0),  # capped
    ]
    assert fake.heard == ["Speak after the beep."]


# -- dial -------------------------------------------------------------------------------


async def test_dial_options_reach_the_dial_command_and_answered_reports_number_and_talk(
) -> None:
    results: list[DialResult] = []

    async def flow(call: callflow.Call) -> None:
        results.append(await call.dial("tel:+34910000001", caller_id="tel:+34900000001",
                                       timeout=12, on_answer="A call from the IVR."))

    fake = await FakeCall(flow).on_dial("+34910000001", talk=42).run()
    dial = fake.commands[0]
    assert dial == Dial(1, numbers=("+34910000001",), caller_id="+34900000001", timeout=12.0,
                        on_answer=Say("A call from the IVR."))
    assert isinstance(dial, Dial) and isinstance(dial.timeout, float)
    assert results == [DialResult("answered", number="+34910000001", duration=42.0)]
    assert results[0].answered
    assert fake.commands[-1] == Hangup()
    assert "whispers to +34910000001" in app_lines(fake)


@pytest.mark.parametrize(
    ("outcome", "status"),
    [("busy", "busy"), ("no_answer", "no_answer"), ("failed", "failed"),
     ("unreachable", "failed")],
)
async def test_dial_failures_are_statuses_not_exceptions(outcome: Any, status: str) -> None:
    results: list[DialResult] = []

    async def flow(call: callflow.Call) -> None:
        results.append(await call.dial("+34910000001"))
        await call.say("Still here.")

    fake = await FakeCall(flow).on_dial("+34910000001", outcome, reason="why-not").run()
    assert results == [DialResult(status, number=None, duration=0.0, reason="why-not")]  # type: ignore[arg-type]
    assert not results[0].answered
    assert fake.heard == ["Still here."]
    assert fake.error is None


async def test_dial_several_numbers_rings_them_together_and_reports_who_answered() -> None:
    numbers = ["+34910000001", "+34910000002", "+34910000003"]
    results: list[DialResult] = []

    async def flow(call: callflow.Call) -> None:
        results.append(await call.dial(numbers, timeout=20))

    fake = await (FakeCall(flow).on_dial(numbers[0], "busy").on_dial(numbers[1], "no_answer")
                  .on_dial(numbers[2], talk=5).run())
    assert fake.commands[0] == Dial(1, numbers=tuple(numbers), timeout=20.0)
    assert results == [DialResult("answered", number=numbers[2], duration=5.0)]
    assert f"dials {', '.join(numbers)}" in app_lines(fake)


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [(("busy", "no_answer"), "busy"), (("failed", "no_answer"), "no_answer"),
     (("unreachable", "failed"), "failed")],
)
async def test_dial_several_numbers_that_all_fail(outcomes: tuple[Any, Any], status: str
                                                  ) -> None:
    results: list[DialResult] = []

    async def flow(call: callflow.Call) -> None:
        results.append(await call.dial(("+34910000001", "+34910000002")))

    await (FakeCall(flow).on_dial("+34910000001", outcomes[0])
           .on_dial("+34910000002", outcomes[1]).run())
    assert [r.status for r in results] == [status]
    assert results[0].number is None


async def test_dial_with_no_number_is_a_flow_bug() -> None:
    async def flow(call: callflow.Call) -> None:
        await call.dial([])

    fake = await FakeCall(flow).run()
    assert isinstance(fake.error, ValueError)
    assert fake.heard == [DEFAULT_APOLOGY]


# -- conference -------------------------------------------------------------------------


async def test_conference_options_reach_the_command_and_it_returns_when_the_caller_leaves(
) -> None:
    returned: list[object] = []

    async def flow(call: callflow.Call) -> None:
        returned.append(await call.conference(
            "team", beeps_on_enter=1, speak_on_enter="Welcome to the team call.",
            beeps_on_exit=2, speak_on_exit="Bye.", play_on_exit="https://example.com/x.wav",
            end_on_exit=True, start_on_enter=False, mute=True, max_members=5, time_limit=600,
        ))
        await call.say("You left the conference.")

    fake = await FakeCall(flow).on_conference("team", stay=120).run()
    assert fake.commands[0] == Conference(1, name="team", options=ConferenceOptions(
        beeps_on_enter=1, speak_on_enter="Welcome to the team call.", beeps_on_exit=2,
        speak_on_exit="Bye.", play_on_exit="https://example.com/x.wav", end_on_exit=True,
        start_on_enter=False, mute=True, max_members=5, time_limit=600.0,
    ))
    assert returned == [None]
    left = next(line for line in fake.transcript if line.what == "says You left the conference.")
    assert left.time == pytest.approx(120.0)


async def test_conference_defaults() -> None:
    async def flow(call: callflow.Call) -> None:
        await call.conference("lobby")

    fake = await FakeCall(flow).run()
    assert fake.commands == [Conference(1, name="lobby", options=ConferenceOptions()), Hangup()]


# -- ending a call ----------------------------------------------------------------------


async def test_returning_from_the_flow_hangs_up() -> None:
    async def flow(call: callflow.Call) -> None:
        await call.say("Bye.")

    fake = await FakeCall(flow).run()
    assert fake.commands == [Say("Bye."), Hangup()]
    assert fake.ended_by == "app"
    assert fake.error is None
    assert app_lines(fake) == ["says Bye.", "hangs up"]


async def test_after_hangup_every_verb_raises_call_ended() -> None:
    raised: list[str] = []
    finished: list[bool] = []

    async def flow(call: callflow.Call) -> None:
        await call.say("Goodbye.")
        await call.hangup(reason="busy")
        assert call.ended
        verbs: dict[str, Callable[[], Awaitable[object]]] = {
            "say": lambda: call.say("x"),
            "play": lambda: call.play("https://example.com/x.wav"),
            "wait": lambda: call.wait(1),
            "gather": lambda: call.gather(),
            "record": lambda: call.record(),
            "dial": lambda: call.dial("+34910000001"),
            "conference": lambda: call.conference("room"),
            "hangup": lambda: call.hangup(),
            "menu": lambda: call.menu("Press 1.", {"1": 1}),
        }
        for name, verb in verbs.items():
            try:
                await verb()
            except CallEnded as exc:
                assert exc.by == "app"
                raised.append(name)
        finished.append(True)

    with anyio.fail_after(5):  # a flow that hung up leaves no timer behind to wait out
        fake = await FakeCall(flow).run()
    assert raised == ["say", "play", "wait", "gather", "record", "dial", "conference",
                      "hangup", "menu"]
    assert finished == [True]
    # The goodbye queued before the hang-up is still delivered, then exactly one hang-up.
    assert fake.commands == [Say("Goodbye."), Hangup("busy")]
    assert fake.heard == ["Goodbye."]
    assert fake.ended_by == "app"
    assert fake.error is None


async def test_a_flow_that_raises_apologises_and_hangs_up() -> None:
    async def flow(call: callflow.Call) -> None:
        await call.say("Let me look that up.")
        raise RuntimeError("the CRM is down")

    fake = await FakeCall(flow).run()
    assert isinstance(fake.error, RuntimeError)
    assert str(fake.error) == "the CRM is down"
    assert app_lines(fake) == ["says Let me look that up.", f"says {DEFAULT_APOLOGY}", "hangs up"]
    assert fake.commands[-1] == Hangup()
    assert fake.ended_by == "app"


async def test_the_apology_is_configurable_and_optional() -> None:
    async def flow(call: callflow.Call) -> None:
        await call.gather(num_digits=1)
        raise KeyError("oops")

    custom = await FakeCall(flow, apology="Oops, sorry.").press("1").run()
    assert custom.heard == ["Oops, sorry."]
    silent = await FakeCall(flow, apology=None).press("1").run()
    assert silent.heard == []
    assert isinstance(silent.error, KeyError)
    assert silent.commands[-1] == Hangup()


async def test_a_flow_looping_on_say_is_stopped_and_the_caller_gets_the_apology() -> None:
    async def flow(call: callflow.Call) -> None:
        while True:
            await call.say("Are you there?")

    fake = await FakeCall(flow).run()
    assert isinstance(fake.error, FlowError)
    assert "without waiting" in str(fake.error)
    assert fake.heard == [DEFAULT_APOLOGY]  # the runaway queue is dropped, not played
    assert fake.commands[-1] == Hangup()
    assert fake.ended_by == "app"


# -- the caller hangs up ----------------------------------------------------------------

BLOCKING_VERBS = ("gather", "record", "dial", "conference", "menu")


async def five_waits(call: callflow.Call) -> None:
    """Reaches each blocking verb in turn; notes how far it got and how it ended."""
    call.data["reached"] = []
    try:
        call.data["reached"].append("gather")
        await call.gather(prompt="One.", num_digits=1)
        call.data["reached"].append("record")
        await call.record(prompt="Two.")
        call.data["reached"].append("dial")
        await call.dial("+34910000001")
        call.data["reached"].append("conference")
        await call.conference("room")
        call.data["reached"].append("menu")
        await call.menu("Five.", {"1": 1})
        call.data["completed"] = True
    except CallEnded as exc:
        call.data["ended_by"] = exc.by
        raise
    finally:
        call.data["finally"] = True
        try:
            await call.say("Too late.")
        except CallEnded:
            call.data["again"] = True


@pytest.mark.parametrize("k", range(1, len(BLOCKING_VERBS) + 1))
async def test_call_ended_is_raised_from_whatever_the_flow_awaits(k: int) -> None:
    fake = await FakeCall(five_waits, hang_up_at=k).press("1").run()
    assert fake.call.data == {
        "reached": list(BLOCKING_VERBS[:k]),
        "ended_by": "caller",
        "finally": True,
        "again": True,
    }
    assert fake.ended_by == "caller"
    assert fake.error is None
    assert "Too late." not in fake.heard
    assert not any(isinstance(c, Hangup) for c in fake.commands)
    assert [line.what for line in fake.transcript if line.who == "caller"][-1] == "hangs up"


async def test_without_a_hang_up_the_five_waits_complete() -> None:
    fake = await FakeCall(five_waits).press("1").speak(3).press("1").run()
    assert fake.call.data["reached"] == list(BLOCKING_VERBS)
    assert fake.call.data["completed"] is True
    assert "ended_by" not in fake.call.data
    # finally ran while the call was alive: its say went out before the hang-up.
    assert fake.heard[-1] == "Too late."
    assert fake.commands[-2:] == [Say("Too late."), Hangup()]


async def test_a_scripted_hang_up_ends_the_call_at_the_next_wait() -> None:
    fake = await FakeCall(five_waits).press("1").hang_up().run()
    assert fake.call.data["reached"] == ["gather", "record"]
    assert fake.call.data["ended_by"] == "caller"
    assert fake.ended_by == "caller"


async def test_a_flow_may_catch_call_ended_and_finish_its_own_work(fake_call: Any) -> None:
    notes: list[str] = []

    async def flow(call: callflow.Call) -> None:
        try:
            await call.gather(prompt="Hello?")
        except CallEnded:
            await anyio.lowlevel.checkpoint()  # e.g. write the call to a CRM
            notes.append("saved")

    fake: FakeCall = fake_call(flow, hang_up_at=1)
    await fake.run()
    assert notes == ["saved"]
    assert fake.ended_by == "caller"
    assert fake.error is None


# -- menu -------------------------------------------------------------------------------


async def test_menu_returns_the_chosen_options_value() -> None:
    chosen: list[object] = []

    async def flow(call: callflow.Call) -> None:
        chosen.append(await call.menu("Press 1 or 2.", {"1": "sales", "2": "support"},
                                      timeout=7))

    fake = await FakeCall(flow).press("2").run()
    assert chosen == ["support"]
    assert fake.commands[0] == Gather(1, prompt=Say("Press 1 or 2."), num_digits=1,
                                      timeout=7.0)
    assert fake.heard == ["Press 1 or 2."]


async def test_menu_escalates_no_input_messages_and_gives_up_with_none() -> None:
    chosen: list[object] = []

    async def flow(call: callflow.Call) -> None:
        chosen.append(await call.menu("Menu.", {"1": "a"}))

    fake = await FakeCall(flow).silence().silence().silence().run()
    assert chosen == [None]
    assert fake.heard == ["Menu.", NO_INPUT[0], "Menu.", NO_INPUT[1], "Menu."]
    assert sum(isinstance(c, Gather) for c in fake.commands) == 3


async def test_menu_escalates_no_match_messages() -> None:
    chosen: list[object] = []

    async def flow(call: callflow.Call) -> None:
        chosen.append(await call.menu("Menu.", {"1": "a"}))

    fake = await FakeCall(flow).press("9").press("8").press("7").run()
    assert chosen == [None]
    assert fake.heard == ["Menu.", NO_MATCH[0], "Menu.", NO_MATCH[1], "Menu."]


async def test_menu_mixes_no_input_and_no_match_and_recovers() -> None:
    chosen: list[object] = []

    async def flow(call: callflow.Call) -> None:
        chosen.append(await call.menu(
            "Menu.", {"1": "a", "2": "b"}, retries=5,
            no_input=("Hello?", "Still there?"), no_match="Wrong key.",
        ))

    fake = await FakeCall(flow).press("5").silence().silence().silence().press("2").run()
    assert chosen == ["b"]
    # no_input escalates with the no-inputs alone (the no-match before it does not count),
    # and its last message repeats.
    assert fake.heard == ["Menu.", "Wrong key.", "Menu.", "Hello?", "Menu.",
                          "Still there?", "Menu.", "Still there?", "Menu."]


async def test_menu_counts_no_input_and_no_match_apart() -> None:
    chosen: list[object] = []

    async def flow(call: callflow.Call) -> None:
        chosen.append(await call.menu(
            "Menu.", {"1": "a"}, retries=5,
            no_input=("Hello?", "Still there?", "Last chance."),
            no_match=("Wrong key.", "Listen to the options.", "Really wrong."),
        ))

    fake = await FakeCall(flow).silence().press("9").press("8").silence().press("1").run()
    assert chosen == ["a"]
    # The second no-match, after one no-input, is no_match[1] (not no_match[2], the
    # attempt number); the second no-input is no_input[1].
    assert fake.heard == ["Menu.", "Hello?", "Menu.", "Wrong key.", "Menu.",
                          "Listen to the options.", "Menu.", "Still there?", "Menu."]


async def test_menu_with_multi_digit_or_mixed_keys() -> None:
    chosen: list[object] = []

    async def flow(call: callflow.Call) -> None:
        chosen.append(await call.menu("Extension?", {"10": 10, "20": 20}))
        chosen.append(await call.menu("Option?", {"1": 1, "10": 10}))

    fake = await FakeCall(flow).press("20").press("10#").run()
    assert chosen == [20, 10]
    gathers = [c for c in fake.commands if isinstance(c, Gather)]
    assert [g.num_digits for g in gathers] == [2, 0]


@pytest.mark.parametrize("retries", [0, 1])
async def test_menu_with_one_attempt_says_no_escalation_message(retries: int) -> None:
    chosen: list[object] = []

    async def flow(call: callflow.Call) -> None:
        chosen.append(await call.menu("Menu.", {"1": "a"}, retries=retries))

    fake = await FakeCall(flow).silence().run()
    assert chosen == [None]
    assert fake.heard == ["Menu."]


async def test_menu_needs_options() -> None:
    async def flow(call: callflow.Call) -> None:
        await call.menu("Menu.", {})

    fake = await FakeCall(flow).run()
    assert isinstance(fake.error, ValueError)


# -- events -----------------------------------------------------------------------------


async def test_events_yields_the_leg_events_of_a_dial() -> None:
    numbers = ("+34910000001", "+34910000002")
    seen: list[tuple[str, str]] = []
    results: list[DialResult] = []

    async def flow(call: callflow.Call) -> None:
        async def watch() -> None:
            async for event in call.events():
                seen.append((event.kind, event.callee))

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            results.append(await call.dial(numbers))
            tg.cancel_scope.cancel()

    await FakeCall(flow).on_dial(numbers[0], "busy").on_dial(numbers[1], talk=8).run()
    assert results == [DialResult("answered", number=numbers[1], duration=8.0)]
    assert seen[:4] == [("ringing", numbers[0]), ("ringing", numbers[1]),
                        ("answered", numbers[1]), ("hangup", numbers[1])]
    # The only event that may follow is the one that answered the dial.
    assert [kind for kind, _ in seen[4:]] in ([], ["resumed"])


async def test_events_ends_when_the_caller_hangs_up() -> None:
    seen: list[str] = []
    notes: list[str] = []

    async def flow(call: callflow.Call) -> None:
        async def watch() -> None:
            async for event in call.events():
                seen.append(event.kind)
            notes.append("events ended")

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            try:
                await call.gather(prompt="Hello?")
            except CallEnded:
                notes.append("gather ended")
        notes.append("watcher done")
        with pytest.raises(CallEnded):
            async for _ in call.events():
                pass  # pragma: no cover

    fake = await FakeCall(flow, hang_up_at=1).run()
    # Both wake on the hang-up, in either order; the task group then finishes by itself.
    assert sorted(notes[:2]) == ["events ended", "gather ended"]
    assert notes[2:] == ["watcher done"]
    assert seen == ["hangup"]
    assert fake.error is None


# -- slow flows -------------------------------------------------------------------------


async def test_a_slow_flow_gets_its_later_commands_out_through_setcommands() -> None:
    heard: list[GatherResult] = []

    async def flow(call: callflow.Call) -> None:
        await call.say("One moment.")
        await anyio.sleep(0.3)  # the flow's own slow I/O, past the response budget
        await call.say("Found it.")
        heard.append(await call.gather(prompt="Press a key.", num_digits=1))
        await call.say("Thanks.")

    fake = BatchedFakeCall(flow, response_budget=0.05).press("5")
    await fake.run()
    assert heard == [GatherResult("5")]
    # Each command exactly once, in order: the Resume marker keeps the line busy
    # while the flow works; what it queues afterwards is pushed.
    assert fake.commands == [
        Say("One moment."), Resume(1),
        Say("Found it."), Gather(2, prompt=Say("Press a key."), num_digits=1),
        Say("Thanks."), Hangup(),
    ]
    assert fake.pushes == [[Say("Found it."), Gather(2, prompt=Say("Press a key."),
                                                     num_digits=1)]]
    assert fake.heard == ["One moment.", "Found it.", "Press a key.", "Thanks."]
    assert any(line.what == "setcommands with 2 command(s)" for line in fake.transcript)
    assert fake.ended_by == "app"


async def test_a_slow_flow_with_nothing_queued_pushes_everything() -> None:
    async def flow(call: callflow.Call) -> None:
        await anyio.sleep(0.3)
        await call.say("Sorry for the wait.")
        await call.gather(num_digits=1)

    fake = BatchedFakeCall(flow, response_budget=0.05).press("1")
    await fake.run()
    assert fake.pushes == [[Say("Sorry for the wait."), Gather(1, num_digits=1)]]
    assert fake.commands == [Say("Sorry for the wait."), Gather(1, num_digits=1), Hangup()]


async def test_a_flow_busy_after_hanging_up_is_cancelled_after_the_grace_period() -> None:
    notes: list[str] = []

    async def flow(call: callflow.Call) -> None:
        await call.say("Bye.")
        await call.hangup()
        try:
            await anyio.sleep(30)  # its own I/O, far past the grace period
            notes.append("slept")  # pragma: no cover
        finally:
            notes.append("finally")

    with anyio.fail_after(5):
        fake = await FakeCall(flow, hangup_grace=0.1).run()
    assert notes == ["finally"]
    assert fake.commands == [Say("Bye."), Hangup()]
    assert fake.error is None


# -- FakeCall: recordings with nothing in them, hang-ups while the flow is busy ----------------


async def test_record_nothing_gives_a_result_without_a_recording() -> None:
    results: list[RecordResult] = []

    async def flow(call: callflow.Call) -> None:
        results.append(await call.record(prompt="Speak after the tone.", silence_timeout=4))
        await call.say("Nothing recorded." if results[-1].url is None else "Thanks.")
        results.append(await call.record())

    fake = await FakeCall(flow).record_nothing().speak(2).run()
    assert results == [RecordResult(url=None, duration=0.0),
                       RecordResult(url="https://recordings.invalid/fake-call/1.wav",
                                    duration=2.0)]
    assert fake.heard == ["Speak after the tone.", "Nothing recorded."]
    caller = [line.what for line in fake.transcript if line.who == "caller"]
    assert caller == ["records nothing", "records 2s"]
    assert fake.error is None


async def test_record_nothing_at_a_gather_is_silence() -> None:
    results: list[GatherResult] = []

    async def flow(call: callflow.Call) -> None:
        results.append(await call.gather(num_digits=1))

    await FakeCall(flow).record_nothing().run()
    assert results == [GatherResult(timed_out=True)]


def busy_flow(trail: list[str], *, first_io: bool = False) -> Flow:
    """A flow that looks the caller up (its own I/O, in steps) between two verbs."""

    async def lookup(what: str) -> str:
        trail.append(f"{what} started")
        await anyio.sleep(0.01)  # the CRM
        trail.append(f"{what} done")
        return what

    async def flow(call: callflow.Call) -> None:
        try:
            if first_io:
                await anyio.sleep(0.01)
                trail.append("first io done")
            code = await call.gather(prompt="Your code?", num_digits=1)
            await call.say("One moment.")
            await call.step(lookup, f"account {code.digits}")
            await call.step(lookup, "balance")
            await call.say("Your balance is 10 euros.")
            await call.gather(prompt="Anything else?", num_digits=1)
            trail.append("completed")
        except CallEnded as exc:
            trail.append(f"ended by {exc.by}")
            raise
        finally:
            trail.append("finally")

    return flow


async def test_hang_up_while_busy_inside_a_step() -> None:
    trail: list[str] = []
    with anyio.fail_after(5):
        fake = await FakeCall(busy_flow(trail)).press("4").hang_up_while_busy().run()
    # The step the caller hung up in runs to its end; the next step is not started.
    assert trail == ["account 4 started", "account 4 done", "ended by caller", "finally"]
    assert fake.ended_by == "caller"
    assert fake.error is None
    assert fake.heard == ["Your code?"]  # "One moment." was queued, never sent
    assert [line.what for line in fake.transcript if line.who == "caller"] == [
        "presses 4", "hangs up while the flow is busy"]
    assert fake.blocking == 1


async def test_hang_up_while_busy_before_the_first_verb() -> None:
    trail: list[str] = []
    with anyio.fail_after(5):
        fake = await FakeCall(busy_flow(trail, first_io=True)).hang_up_while_busy().run()
    assert trail == ["first io done", "ended by caller", "finally"]
    assert fake.ended_by == "caller"
    assert fake.heard == []
    assert fake.blocking == 0


async def test_hang_up_while_busy_past_the_response_budget() -> None:
    """The hang-up comes while the platform holds a Resume marker for the busy flow."""
    trail: list[str] = []
    with anyio.fail_after(5):
        fake = await FakeCall(busy_flow(trail), response_budget=0.001).press("4") \
            .hang_up_while_busy().run()
    assert trail[-2:] == ["ended by caller", "finally"]
    assert "balance done" not in trail
    assert fake.ended_by == "caller"
    assert fake.error is None


async def test_hang_up_while_busy_with_a_flow_that_never_pauses_hangs_up_at_the_next_verb(
) -> None:
    trail: list[str] = []

    async def quick(call: callflow.Call) -> None:
        try:
            await call.gather(num_digits=1)
            await call.say("Next.")
            await call.gather(num_digits=1)
        except CallEnded:
            trail.append("ended")
            raise

    fake = await FakeCall(quick).press("1").hang_up_while_busy().run()
    assert trail == ["ended"]
    assert fake.blocking == 2
    assert [line.what for line in fake.transcript if line.who == "caller"][-1] == "hangs up"
