"""Transfers, background recordings and machine detection in durable mode: a call rebuilt
from its history at every notification (``cache_size=0``) answers as in memory mode, and
keeps who answered and the recordings saved."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest

import callflow
from callflow._loader import load_app
from callflow.simulator import Phone, Transcript

from ._wire import normalise
from .test_replay import EXAMPLES, served

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

NUMBER = "+34900000088"
CALLER = "+34600000001"
AGENT = "+34910000001"
CALLER_ID = "+34900000000"


def support_app(seen: list[Any]) -> callflow.App:
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def support(call: callflow.Call) -> None:
        rec = await call.start_recording(dual=True)
        await call.gather(prompt="Tell us your account number.", num_digits=3)
        await rec.stop()
        await call.gather(prompt="Press 1 for an agent.", num_digits=1)
        seen.append([r.result for r in call.recordings])
        await call.transfer(AGENT)

    return app


async def run_support(**settings: Any) -> tuple[Transcript, list[Any], list[Any]]:
    seen: list[Any] = []
    app = support_app(seen)
    async with served(app, "twilio", **settings) as (sim, wire):
        sim.add_phone(AGENT, Phone.answers(after=2, hang_up_after=3))
        call = await sim.place_inbound_call(CALLER, NUMBER, script=[
            "talk:2", "press:123", "press-next:1"])
        with anyio.fail_after(15):
            transcript = await call.wait_ended()
            for other in list(sim.calls.values()):
                await other.wait_ended()
        prefix = app.settings.public_url
    return transcript, wire.normalised(prefix), seen


def same(transcript: Transcript) -> str:
    """The transcript without random names (recordings, the rooms of queue bridges)."""
    text = re.sub(r"recordings/[0-9a-f]+\.wav", "recordings/R.wav",
                  normalise(transcript.render()))
    return re.sub(r"queue-[0-9a-f]+", "queue-Q", text)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_recorded_and_transferred_call_replays_as_in_memory(sqlite_url: str) -> None:
    memory, memory_wire, memory_seen = await run_support()
    replayed, replayed_wire, replayed_seen = await run_support(store=sqlite_url,
                                                               cache_size=0)
    assert same(replayed) == same(memory)
    assert replayed.texts("error") == []
    assert [status for _, status, _ in replayed_wire] == [200] * len(replayed_wire)
    assert len(replayed_wire) == len(memory_wire)
    assert any(e.kind == "answered" and e.text.startswith(AGENT) for e in replayed.entries)
    # The recording reached the flow in both modes: from memory, and from the history.
    [[saved]] = memory_seen
    assert saved is not None and saved.duration > 0
    assert replayed_seen and all(r is not None for r in replayed_seen[-1])


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_rebuilt_call_keeps_who_answered(sqlite_url: str) -> None:
    app = callflow.App()

    @app.flow
    async def notice(call: callflow.Call) -> None:
        await call.gather(prompt="Please hold on.", num_digits=1, timeout=2)
        await call.say("for a machine" if call.answered_by == "machine" else "for a person")

    async with served(app, "twilio", store=sqlite_url, cache_size=0) as (sim, _):
        sim.add_account_number(CALLER_ID, callback_url=app.callback_url)
        sim.add_phone(CALLER, Phone.answering_machine(greeting=4, record=15))
        result = await app.call(CALLER, flow="notice", caller_id=CALLER_ID,
                                machine_detection="wait_for_beep")
        assert result.answered_by == "machine"
        [call] = [c for c in sim.calls.values() if c.direction == "outbound"]
        with anyio.fail_after(15):
            transcript = await call.wait_ended()
    assert "for a machine" in transcript.spoken
    assert transcript.texts("error") == []


async def run_queue(**settings: Any) -> tuple[Transcript, Transcript, list[Any]]:
    app = load_app(EXAMPLES / "support_queue.py")
    results: list[Any] = []
    original = app._new_session

    def keep(*args: Any) -> Any:
        session = original(*args)
        if session is not None:
            results.append(session.call.data)
        return session

    app._new_session = keep  # type: ignore[method-assign]
    async with served(app, "twilio", **settings) as (sim, _):
        with sim.subscribe() as events:
            caller = await sim.place_inbound_call(CALLER, "+34900000005",
                                                  script=["wait:number 1 in the queue"])
            async for event in events:
                if (event.entry is not None and event.call is caller
                        and caller.transcript.spoken.count(
                            "You are number 1 in the queue.") == 2):
                    break
        agent = await sim.place_inbound_call("+34610000001", "+34900000006",
                                             script=["talk:3", "hangup:10"])
        with anyio.fail_after(15):
            heard = await caller.wait_ended()
            spoke = await agent.wait_ended()
    return heard, spoke, results


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_queued_call_replays_as_in_memory(sqlite_url: str) -> None:
    memory, memory_agent, _ = await run_queue()
    replayed, replayed_agent, _ = await run_queue(store=sqlite_url, cache_size=0)
    assert same(replayed) == same(memory)
    assert same(replayed_agent) == same(memory_agent)
    assert replayed.texts("error") == [] and replayed_agent.texts("error") == []
