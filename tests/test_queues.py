"""Call queues: FakeCall, Twilio's wire format, the Twilio simulator end to end, and the
refusal on the platforms without them."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

import callflow
from callflow import Dequeue, Enqueue, QueueResult, UnsupportedFeature
from callflow._journal import decode_command, decode_result, encode_command, encode_result
from callflow.platforms import BlueVia, Telnyx, Twilio, Webhook
from callflow.simulator import Simulator, serve_asgi, serve_simulator
from callflow.testing import FakeCall

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_example_support_queue",
                                                  EXAMPLES / "support_queue.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- FakeCall --------------------------------------------------------------------------------


async def test_a_caller_an_agent_takes() -> None:
    example = load()
    fake = await FakeCall(example.support).on_queue("support", wait=40, talk=90).run()
    assert fake.call.data["queue"] == QueueResult("bridged", waited=40)
    assert "message" not in fake.call.data
    assert fake.heard == [example.WELCOME]
    [enqueue] = [c for c in fake.commands if isinstance(c, Enqueue)]
    assert (enqueue.name, enqueue.music, enqueue.max_wait) == (
        "support", example.HOLD_MUSIC, example.MAX_WAIT)


async def test_a_caller_nobody_takes_leaves_a_message() -> None:
    example = load()
    fake = await FakeCall(example.support).on_queue("support", wait=1000, left=True).run()
    assert fake.call.data["queue"] == QueueResult("left", waited=example.MAX_WAIT)
    assert fake.call.data["message"].url is not None
    assert fake.heard == [example.WELCOME, example.LEAVE_A_MESSAGE]


async def test_an_agent_takes_the_next_caller_and_records_it() -> None:
    example = load()
    fake = await FakeCall(example.agent).on_take_next("support", talk=42).run()
    taken = fake.call.data["taken"]
    assert taken.answered and taken.duration == 42
    assert fake.call.data["recording"].result is not None
    fake = await FakeCall(example.agent).on_take_next("support", waiting=False).run()
    assert fake.call.data["taken"].status == "no_answer"
    assert fake.heard == [example.NOBODY_WAITING]
    assert [c for c in fake.commands if isinstance(c, Dequeue)] == [
        Dequeue(1 + 1, "support", 60.0)]  # step 1 is the recording's id


def test_queue_commands_and_results_can_be_kept_in_a_calls_history() -> None:
    for command in (Enqueue(3, "support", "https://a.example/m.mp3", 20.0, 60.0),
                    Dequeue(4, "support", 30.0)):
        assert decode_command(encode_command(command)) == command
    result = QueueResult("left", waited=12.0)
    assert decode_result(encode_result(result)) == result


def test_bluevia_and_telnyx_refuse_queues() -> None:
    for platform in (BlueVia(), Telnyx()):
        assert ("enqueue", None) in platform.unsupported()
        assert ("take_next", None) in platform.unsupported()
        with pytest.raises(UnsupportedFeature, match=f"{platform.name} does not support "
                                                     r"enqueue\(\)"):
            platform.check(Enqueue(1, "support"))
        with pytest.raises(UnsupportedFeature, match="take_next"):
            platform.check(Dequeue(1, "support"))


def test_the_start_up_check_names_the_queue_verbs_on_bluevia() -> None:
    app = load().app
    warnings = app.check_platform()  # BlueVia, the default
    assert any("enqueue()" in w for w in warnings)
    assert any("take_next()" in w for w in warnings)


# -- Twilio's wire format -------------------------------------------------------------------


def url_for(step: int) -> str:
    return f"https://app.example/e?call=CA1&step={step}"


def test_twilio_renders_enqueue_and_dial_queue() -> None:
    twilio = Twilio(account_sid="AC1")
    root = ET.fromstring(twilio.render(
        [Enqueue(2, "support", "https://a.example/m.mp3", 20.0, 90.0)], url_for=url_for))
    enqueue = root[0]
    assert (enqueue.tag, enqueue.text, enqueue.get("action")) == (
        "Enqueue", "support", url_for(2))
    assert enqueue.get("waitUrl") == (url_for(2) + "&wait=1&every=20"
                                      "&music=https%3A%2F%2Fa.example%2Fm.mp3&max=90")
    root = ET.fromstring(twilio.render([Dequeue(3, "support", 45.0)], url_for=url_for))
    assert root[0].tag == "Dial" and root[0].get("timeout") == "45"
    assert [(n.tag, n.text) for n in root[0]] == [("Queue", "support")]


def wait_request(query: dict[str, str], **form: str) -> Webhook:
    body = "&".join(f"{k}={v}" for k, v in {"CallSid": "CA1", **form}.items()).encode()
    return Webhook("POST", "https://app.example/e", query=query, body=body)


def test_the_wait_url_announces_the_position_and_the_wait() -> None:
    twilio = Twilio(account_sid="AC1")
    query = {"call": "CA1", "step": "2", "wait": "1", "every": "20",
             "music": "https://a.example/m.mp3", "max": "90"}
    request = wait_request(query, QueuePosition="3", AvgQueueTime="150", QueueTime="10")
    assert twilio.parse(request) == []
    reply = twilio.direct_reply(request)
    assert reply is not None
    root = ET.fromstring(reply.body)
    assert [(n.tag, n.text) for n in root] == [
        ("Say", "You are number 3 in the queue."),
        ("Say", "The expected wait is about 2 minutes."),
        ("Play", "https://a.example/m.mp3")]
    late = twilio.direct_reply(wait_request(query, QueuePosition="1", QueueTime="95"))
    assert late is not None and [n.tag for n in ET.fromstring(late.body)] == ["Leave"]
    silent = twilio.direct_reply(wait_request({**query, "music": ""}, QueuePosition="x"))
    assert silent is not None
    assert [(n.tag, n.get("length")) for n in ET.fromstring(silent.body)] == [("Pause", "20")]


def test_twilio_parses_the_enqueue_action() -> None:
    [event] = Twilio().parse(wait_request({"call": "CA1", "step": "2"},
                                          QueueResult="bridged", QueueTime="33"))
    assert (event.kind, event.step, event.reason, event.duration) == (
        "resumed", 2, "bridged", 33.0)


# -- end to end on the Twilio simulator --------------------------------------------------------


@pytest.mark.parametrize("who", ["agent", "caller"])
async def test_a_queued_caller_hears_the_announcements_and_an_agent_takes_them(who: str
                                                                              ) -> None:
    """Whoever hangs up first, the other's flow learns how it went: the caller's
    ``enqueue`` returns ``bridged``, the agent's ``take_next`` returns ``answered``."""
    example = load()
    app = example.app
    calls: list[callflow.Call] = []
    original = app._new_session

    def keep(*args: Any) -> Any:
        session = original(*args)
        if session is not None:
            calls.append(session.call)
        return session

    app._new_session = keep
    sim = Simulator(platform="twilio")
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                        **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            for number in app.numbers:
                sim.add_account_number(number)
            await app.configure_numbers()
            with sim.subscribe() as events:
                # (An announcement cut short by the agent is never heard to its end: the
                # script waits for the first one only.)
                ends = ["talk:4", "hangup:30"] if who == "caller" else []
                caller = await sim.place_inbound_call(
                    "+34600000001", example.SUPPORT, script=["wait:number 1 in the queue",
                                                             *ends])
                async for event in events:  # the agent calls once the caller heard twice
                    if (event.entry is not None and event.call is caller
                            and event.entry.text == "You are number 1 in the queue."
                            and caller.transcript.spoken.count(event.entry.text) == 2):
                        break
            ends = ["talk:3", "hangup:10"] if who == "agent" else []
            agent = await sim.place_inbound_call("+34610000001", example.AGENTS, script=ends)
            with anyio.fail_after(30):
                heard = await caller.wait_ended()
                await agent.wait_ended()
                for call in calls:
                    await app.wait_ended(call.id)
    by_number = {call.callee: call for call in calls}
    if who == "agent":
        queued = by_number[example.SUPPORT].data["queue"]
        assert queued.status == "bridged" and queued.waited > 0
        assert by_number[example.AGENTS].recordings[0].result is not None
    else:
        taken = by_number[example.AGENTS].data["taken"]
        assert taken.answered and taken.duration >= 10
        rec = by_number[example.AGENTS].data["recording"]
        assert rec.result is not None and rec.result.duration >= 10
    assert heard.spoken[:3] == [example.WELCOME, "You are number 1 in the queue.",
                                "You are number 1 in the queue."]
    assert heard.texts("error") == []


async def test_a_caller_nobody_takes_leaves_the_queue_and_a_message() -> None:
    example = load()
    app = example.app
    calls: list[callflow.Call] = []
    original = app._new_session

    def keep(*args: Any) -> Any:
        session = original(*args)
        if session is not None:
            calls.append(session.call)
        return session

    app._new_session = keep
    sim = Simulator(platform="twilio")
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                        **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            for number in app.numbers:
                sim.add_account_number(number)
            await app.configure_numbers()
            caller = await sim.place_inbound_call(
                "+34600000001", example.SUPPORT, script=["wait:after the beep", "talk:3",
                                                         "hangup:2"])
            with anyio.fail_after(30):
                heard = await caller.wait_ended()
                await app.wait_ended(calls[0].id)
    queued = calls[0].data["queue"]
    assert queued.status == "left" and queued.waited >= example.MAX_WAIT
    assert calls[0].data["message"].url is not None
    assert heard.spoken[-1] == example.LEAVE_A_MESSAGE
    assert "The expected wait" not in " ".join(heard.spoken)  # nobody was ever taken
    assert heard.texts("error") == []
