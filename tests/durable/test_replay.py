"""Replay: a call rebuilt from its history on every notification answers as the cached one.

The app runs under hypercorn with a durable store, the simulator under another, over real
sockets (as in ``tests/test_platforms_e2e.py``). With ``cache_size=0`` every notification
that can change a call rebuilds it by replaying its flow against the history: the wire
answers must be the same bytes as in memory mode and in the cached durable mode.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import callflow
from callflow._loader import load_app
from callflow.simulator import (
    Clock,
    Phone,
    Simulator,
    Transcript,
    serve_asgi,
    serve_simulator,
)
from callflow.simulator._engine import SimCall

from ._wire import WireRecorder, normalise

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CALLER = "+34600000001"


@dataclass(frozen=True)
class Scenario:
    example: str
    number: str
    script: tuple[str, ...]
    phones: tuple[tuple[str, Phone], ...] = ()


SCENARIOS = {
    "ivr-sales-answers": Scenario(
        "ivr", "+34900000001", ("press-next:9", "press-next:1"),
        (("+34910000001", Phone.answers(after=2, hang_up_after=5)),)),
    "ivr-support-all-busy": Scenario(
        "ivr", "+34900000001", ("press-next:2",),
        tuple((n, Phone.busy()) for n in ("+34910000002", "+34910000003", "+34910000004"))),
    "ivr-silence": Scenario("ivr", "+34900000001", ()),
    "voicemail-again": Scenario(
        "voicemail", "+34900000002",
        ("wait:beep", "talk:2", "press:#", "press-next:2", "wait:beep", "talk:4", "press:#",
         "press-next:1")),
    "forward-busy-voicemail": Scenario(
        "forward", "+34900000003", ("wait:beep", "talk:2", "press:#"),
        (("+34610000001", Phone.busy()), ("+34610000002", Phone.busy()))),
    "forward-answered": Scenario(
        "forward", "+34900000003", (),
        (("+34610000001", Phone.no_answer()),
         ("+34610000002", Phone.answers(after=3, hang_up_after=4)))),
}


@asynccontextmanager
async def served(app: callflow.App, platform: str, *, clock: Clock | None = None,
                 **settings: Any) -> AsyncIterator[tuple[Simulator, WireRecorder]]:
    sim = Simulator(platform=platform, clock=clock)
    wire = WireRecorder(app)
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                        secret="s3cret", **sim.app_settings(), **settings))
        async with serve_asgi(wire) as app_url:
            app.settings.public_url = app_url
            for number in app.numbers:
                sim.add_account_number(number)
            await app.configure_numbers()
            yield sim, wire


async def run(scenario: Scenario, platform: str, **settings: Any
              ) -> tuple[Transcript, list[tuple[str, int, str]]]:
    app = load_app(EXAMPLES / f"{scenario.example}.py")
    async with served(app, platform, **settings) as (sim, wire):
        for number, phone in scenario.phones:
            sim.add_phone(number, phone)
        call = await sim.place_inbound_call(CALLER, scenario.number,
                                            script=list(scenario.script))
        with anyio.fail_after(15):
            transcript = await call.wait_ended()
        prefix = app.settings.public_url
    return transcript, wire.normalised(prefix)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_replaying_every_notification_answers_byte_for_byte_as_memory_mode(
    name: str, platform: str, sqlite_url: str,
) -> None:
    scenario = SCENARIOS[name]
    memory, memory_wire = await run(scenario, platform)
    replayed, replayed_wire = await run(scenario, platform, store=sqlite_url, cache_size=0)
    assert normalise(replayed.render()) == normalise(memory.render())
    assert replayed.texts("error") == []
    assert [status for _, status, _ in replayed_wire] == [200] * len(replayed_wire)
    assert replayed_wire == memory_wire


@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
async def test_cached_and_replayed_runs_agree_under_both_event_loops(
    platform: str, store_url: str,
) -> None:
    scenario = SCENARIOS["ivr-sales-answers"]
    cached, cached_wire = await run(scenario, platform, store=store_url)
    replayed, replayed_wire = await run(scenario, platform, store=store_url, cache_size=0)
    assert normalise(replayed.render()) == normalise(cached.render())
    assert replayed_wire == cached_wire


# -- steps, values and determinism ------------------------------------------------------------


async def survey_until_question_two(sim: Simulator) -> SimCall:
    """A call into the survey that presses 1 then 2, once it hears question two."""
    with sim.subscribe() as events:
        call = await sim.place_inbound_call(CALLER, "+34900000077",
                                            script=["press-next:1", "press-next:2"])
        async for event in events:
            if event.entry is not None and event.entry.text == "Question two.":
                break
    return call


def survey_app(runs: list[str]) -> callflow.App:
    app = callflow.App()

    def remember(what: str) -> str:
        runs.append(what)
        return what.upper()

    async def slowly(what: str) -> dict[str, str]:
        await anyio.lowlevel.checkpoint()
        runs.append(what)
        return {"saved": what}

    def refuse() -> None:
        runs.append("refused")
        raise ValueError("the CRM said no")

    @app.flow(number="+34900000077")
    async def survey(call: callflow.Call) -> None:
        opened = await call.step(remember, "opened")
        ticket = call.uuid()
        started = call.now()
        answers = []
        for question in ("one", "two", "three"):
            result = await call.gather(prompt=f"Question {question}.", num_digits=1)
            answers.append(result.digits)
            await call.step(slowly, f"after {question}")
        try:
            await call.step(refuse)
        except ValueError as exc:
            await call.say(f"The CRM said: {exc}.")
        await call.say(f"{opened} {ticket} {started.isoformat()} {''.join(answers)}")
        call.data["ticket"] = str(ticket)

    return app


@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
async def test_each_step_runs_once_and_values_stay_the_same_across_replays(
    platform: str, store_url: str,
) -> None:
    runs: list[str] = []
    app = survey_app(runs)
    async with served(app, platform, store=store_url, cache_size=0) as (sim, wire):
        call = await sim.place_inbound_call(CALLER, "+34900000077",
                                            script=["press-next:1", "press-next:2",
                                                    "press-next:3"])
        with anyio.fail_after(15):
            transcript = await call.wait_ended()
        assert app.store is not None
        [summary] = await app.store.calls(5)
        history = await app.store.history(summary.call_id)
    assert runs == ["opened", "after one", "after two", "after three", "refused"]
    spoken = transcript.spoken
    assert spoken[-2] == "The CRM said: the CRM said no."
    opened, ticket, _started, keys = spoken[-1].split(" ")
    assert (opened, keys) == ("OPENED", "123")
    assert history is not None
    [uuid_entry] = [e for e in history if e["t"] == "value" and e["k"] == "uuid"]
    assert uuid_entry["v"] == ticket  # said at the end, after three replays: the first value
    assert len([e for e in history if e["t"] == "step"]) == 5
    assert [s for _, s, _ in wire.exchanges] == [200] * len(wire.exchanges)


@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
async def test_a_flow_changed_under_a_live_call_ends_that_call_with_the_apology(
    platform: str, sqlite_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[str] = []
    app = survey_app(runs)

    async def changed(call: callflow.Call) -> None:
        await call.step(lambda: "not the same step")
        await call.gather(prompt="Something else.", num_digits=1)

    async with served(app, platform, store=sqlite_url, cache_size=0) as (sim, wire):
        call = await survey_until_question_two(sim)
        # A deploy of a different flow while the call is waiting.
        spec = app.flows["survey"]
        app._flows["survey"] = callflow.FlowSpec(spec.name, changed, spec.numbers)
        with anyio.fail_after(15):
            transcript = await call.wait_ended()
    assert transcript.spoken[-1] == app.settings.apology
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("no longer matches its history at entry 1" in e and "step" in e
               for e in errors), errors
    assert not [s for _, s, _ in wire.exchanges if s >= 500]


async def test_every_app_on_a_store_shares_its_secret(sqlite_url: str) -> None:
    first, second = callflow.App(store=sqlite_url), callflow.App(store=sqlite_url)
    for app in (first, second):
        app.flow(number="+34900000001")(_nothing)
    async with first, second:
        assert first.callback_url == second.callback_url
    chosen = callflow.App(store=sqlite_url, secret="mine")
    chosen.flow(number="+34900000001")(_nothing)
    async with chosen:
        assert chosen.settings.secret == "mine"


async def _nothing(call: callflow.Call) -> None:
    await call.say("Hello.")


@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
async def test_a_store_outage_mid_call_is_a_503_and_the_caller_hears_the_apology(
    platform: str, sqlite_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    from callflow.stores import StoreUnavailable

    app = survey_app([])
    async with served(app, platform, store=sqlite_url) as (sim, wire):
        call = await survey_until_question_two(sim)
        assert app.store is not None

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable("the store at test did not answer within 5 s")

        app.store.begin = down  # type: ignore[method-assign]
        with anyio.fail_after(15):
            transcript = await call.wait_ended()
    assert 503 in [s for _, s, _ in wire.exchanges]
    assert 500 not in [s for _, s, _ in wire.exchanges]
    assert transcript.spoken[-1] == app.settings.apology
    assert any("store" in r.getMessage() and r.levelno >= logging.ERROR
               for r in caplog.records)


@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
@pytest.mark.parametrize("phone", ["busy", "answers"])
async def test_outbound_calls_with_a_durable_store(platform: str, phone: str,
                                                   sqlite_url: str) -> None:
    """An outbound call's outcome (busy: the flow never starts) and its flow (answered)."""
    app = load_app(EXAMPLES / "reminder.py")
    async with served(app, platform, store=sqlite_url) as (sim, wire):
        sim.add_account_number("+34900000000", callback_url=app.callback_url)
        sim.add_phone(CALLER, Phone.busy() if phone == "busy"
                      else Phone.answers(after=1, script=["press-next:1"]))
        with anyio.fail_after(15):
            result = await app.call(CALLER, flow="reminder", caller_id="+34900000000")
            if result.answered:
                await app.wait_ended(result.call_id)
        with pytest.raises(TypeError, match="JSON data"):
            await app.call(CALLER, flow="reminder", caller_id="+34900000000",
                           data={"when": object()})
    assert result.status == ("busy" if phone == "busy" else "answered")
    assert not [s for _, s, _ in wire.exchanges if s >= 500]


@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
async def test_a_call_whose_history_cannot_be_read_ends_with_the_apology(
    platform: str, sqlite_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    import sqlite3

    app = survey_app([])
    async with served(app, platform, store=sqlite_url, cache_size=0) as (sim, wire):
        call = await survey_until_question_two(sim)
        with sqlite3.connect(sqlite_url[len("sqlite:///"):]) as db:
            db.execute("UPDATE callflow_history SET entry = ? WHERE seq = 1",
                       ('{"t": "start", "flow": 7}',))
        with anyio.fail_after(15):
            transcript = await call.wait_ended()
    assert transcript.spoken[-1] == app.settings.apology
    assert any("history cannot be read" in r.getMessage() for r in caplog.records)
    assert not [s for _, s, _ in wire.exchanges if s >= 500]


@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
async def test_a_call_past_its_maximum_duration_is_hung_up_and_ended(
    platform: str, sqlite_url: str,
) -> None:
    """Its hang-up was lost, say: the sweep hangs the call up through the REST API."""
    app = callflow.App()

    @app.flow(number="+34900000077")
    async def waits(call: callflow.Call) -> None:
        await call.gather(prompt="Take your time.", num_digits=1, timeout=60)

    # A real clock: the sweep runs on the app's time, which a virtual clock cannot see.
    async with served(app, platform, store=sqlite_url, lease=0.2, max_call_duration=1.0,
                      clock=Clock.real()) as (sim, _):
        call = await sim.place_inbound_call(CALLER, "+34900000077", script=[])
        with anyio.fail_after(15):
            transcript = await call.wait_ended()
        assert app.store is not None
        [summary] = await app.store.calls(1)
    assert summary.state == "ended"
    assert transcript.duration < 10  # not the gather's 60 s
    assert "hung up" in transcript.render().splitlines()[-1]


@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
async def test_a_slow_flow_replayed_on_every_notification_keeps_its_place(
    platform: str, sqlite_url: str,
) -> None:
    """A step past the response budget: Twilio holds the caller (Pause, Redirect), BlueVia
    gets the rest by setcommands or with the marker's callback; with a replay on every
    notification the held batch and the marker come back from the history."""
    runs: list[str] = []
    app = callflow.App()

    async def slow_lookup(who: str) -> str:
        await anyio.sleep(1.5)
        runs.append(who)
        return f"Hello {who}."

    @app.flow(number="+34900000077")
    async def greets(call: callflow.Call) -> None:
        await call.say("One moment please.")
        greeting = await call.step(slow_lookup, "friend")
        result = await call.gather(prompt=greeting, num_digits=1)
        await call.say(f"You pressed {result.digits}. Goodbye.")

    async with served(app, platform, store=sqlite_url, cache_size=0,
                      clock=Clock.real()) as (sim, wire):
        call = await sim.place_inbound_call(CALLER, "+34900000077", script=["press-next:5"])
        with anyio.fail_after(20):
            transcript = await call.wait_ended()
    assert transcript.spoken == ["One moment please.", "Hello friend.",
                                 "You pressed 5. Goodbye."], transcript.render()
    assert runs == ["friend"]
    assert not [s for _, s, _ in wire.exchanges if s >= 500]
