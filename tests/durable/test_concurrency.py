"""One writer per call: the same notification delivered to two workers at once.

Two apps (two workers, as far as the store can tell: each has its own lease owner) share
one store; each notification is handed to both at the same moment. The call must advance
once, both must answer the same, and the history must hold each entry once.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

import callflow
from callflow.platforms import Webhook

pytestmark = pytest.mark.anyio

NUMBER = "+34900000077"


def _app(store: str, runs: list[str]) -> callflow.App:
    app = callflow.App(store=store, secret="s3cret", platform_url="http://127.0.0.1:9",
                       response_budget=None)

    def note(what: str) -> str:
        runs.append(what)
        return what

    @app.flow(number=NUMBER)
    async def survey(call: callflow.Call) -> None:
        await call.step(note, "start")
        first = await call.gather(prompt="Question one.", num_digits=1)
        await call.step(note, f"pressed {first.digits}")
        await call.gather(prompt="Question two.", num_digits=1)

    return app


def _body(event: str, **extra: Any) -> bytes:
    return json.dumps({"eventName": event, "callId": "c1", "legId": "l1",
                       "callerId": "tel:+34600000001", "destination": f"tel:{NUMBER}",
                       "timestamp": "2026-12-03T10:00:00Z", **extra}).encode()


async def _both(apps: list[callflow.App], body: bytes, query: dict[str, str]) -> list[Any]:
    replies: list[Any] = [None, None]

    async def one(index: int) -> None:
        reply = await apps[index].handle_webhook(
            Webhook("POST", "http://app/", "/", query, {}, body))
        replies[index] = (reply.status, reply.json_body())

    async with anyio.create_task_group() as tg:
        for index in range(len(apps)):
            tg.start_soon(one, index)
    return replies


async def test_a_notification_delivered_to_two_workers_at_once_advances_the_call_once(
    store_url: str,
) -> None:
    runs: list[str] = []
    apps = [_app(store_url, runs), _app(store_url, runs)]
    async with apps[0], apps[1]:
        started = await _both(apps, _body("CalledNumber"), {})
        pressed = await _both(apps, _body("DigitsCollected", digits="4"), {"step": "1"})
        store = apps[0].store
        assert store is not None
        history = await store.history("c1")
    assert started[0] == started[1] and started[0][0] == 200
    assert "Question one." in json.dumps(started[0][1])
    assert pressed[0] == pressed[1] and "Question two." in json.dumps(pressed[0][1])
    assert runs == ["start", "pressed 4"]  # each step once, on whichever worker won
    assert history is not None
    kinds = [e["t"] for e in history]
    assert kinds.count("start") == 1 and kinds.count("verb") == 1
    assert kinds.count("answer") == 2


async def test_a_call_the_store_does_not_know_is_ended_for_good(store_url: str) -> None:
    """Not in the store (never seen here, or purged): one apology and a hang-up, then
    its later notifications are answered harmlessly, without a 404 the platform would
    fall back from."""
    app = _app(store_url, [])
    async with app:
        first = await app.handle_webhook(Webhook(
            "POST", "http://app/", "/", {"step": "3"}, {},
            _body("DigitsCollected", digits="1", callId="ghost")))
        again = await app.handle_webhook(Webhook(
            "POST", "http://app/", "/", {"step": "4"}, {},
            _body("DigitsCollected", digits="2", callId="ghost")))
    assert first.status == 200
    commands = first.json_body()["commands"]
    assert commands[-1] == {"hangup": {"reason": "rejected"}}
    assert any("speak" in c for c in commands)
    assert again.status == 200
    assert again.json_body()["commands"] == [{"hangup": {"reason": "rejected"}}]


async def test_the_same_notification_twice_at_once_to_one_worker(store_url: str) -> None:
    """The second delivery waits for the first (one notification of a call at a time in a
    process) and gets the same answer; the step runs once."""
    runs: list[str] = []
    app = _app(store_url, runs)
    async with app:
        started = await _both([app, app], _body("CalledNumber"), {})
        pressed = await _both([app, app], _body("DigitsCollected", digits="7"), {"step": "1"})
        assert app.durable is not None and app.durable._locks == {}
    assert started[0] == started[1] and pressed[0] == pressed[1]
    assert runs == ["start", "pressed 7"]


def _dial_app(store: str) -> callflow.App:
    app = callflow.App(store=store, secret="s3cret", platform_url="http://127.0.0.1:9",
                       response_budget=None)

    @app.flow(number=NUMBER)
    async def forward(call: callflow.Call) -> None:
        result = await call.dial("+34910000001")
        await call.say(f"The line was {result.status}, for {result.duration:.0f} seconds.")

    return app


async def test_a_dials_leg_events_on_alternate_workers_keep_the_result(store_url: str) -> None:
    """Each notification of a dial goes to the other worker: the leg events go in one
    round trip where the worker's copy is current, and a stale copy is dropped and
    rebuilt; the dial's result is the one a single worker gives."""
    leg = {"legId": "l2", "callerId": "tel:+34600000001", "destination": "tel:+34910000001"}
    notifications = [
        (_body("CalledNumber"), {}),
        (_body("Answered", **leg, timestamp="2026-12-03T10:00:02Z"), {}),
        (_body("HangUp", **leg, timestamp="2026-12-03T10:00:09Z"), {}),
        (_body("Redirected"), {"step": "1"}),
    ]

    async def run(apps: list[callflow.App]) -> Any:
        answers = []
        for index, (body, query) in enumerate(notifications):
            app = apps[index % len(apps)]
            reply = await app.handle_webhook(Webhook("POST", "http://app/", "/", query, {},
                                                     body))
            assert reply.status == 200
            answers.append(reply.json_body())
        return answers

    one = _dial_app(store_url)
    async with one:
        alone = await run([one])
    first, second = _dial_app(store_url), _dial_app(store_url)
    async with first, second:
        # Another call id, so the two runs do not meet in the store.
        notifications[:] = [(b.replace(b'"c1"', b'"c2"'), q) for b, q in notifications]
        alternating = await run([first, second])
        second_store = second.store
        assert second_store is not None
        history = await second_store.history("c2")
    assert json.dumps(alternating).replace("c2", "c1") == json.dumps(alone)
    spoken = json.dumps(alternating[-1])
    assert "The line was answered, for 7 seconds." in spoken
    assert history is not None
    assert [e["t"] for e in history].count("event") == 2
