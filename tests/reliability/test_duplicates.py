"""Duplicates: a notification delivered more than once advances the flow once, and every copy
gets the same bytes back.

Platforms and the proxies in front of apps re-deliver webhooks (a response lost on the way
back, a retry after a timeout). Each case below sends copies of one answering notification,
one after the other and all at once, and checks the flow's own record of what it saw.
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from typing import Any

import anyio
import httpx
import pytest

from callflow import App, Call

from ._support import (
    EVENTS,
    HANGUP,
    NOTIFY,
    NUMBER,
    FakePlatform,
    commands_of,
    make_app,
    note,
    post,
    running,
    speak,
    url_of,
)

pytestmark = pytest.mark.anyio

COPIES = 4
CALL = "dup-1"


class Flow:
    """A two-question flow that records each step it takes, with optional gates.

    A gate holds the flow at a labelled point (so concurrent copies pile up while the
    first one is answered); the gate ``slow`` stands for slow I/O that makes the response
    miss its budget, so it carries a Resume marker.
    """

    def __init__(self, app: App) -> None:
        self.trail: list[str] = []
        self.gates: dict[str, anyio.Event] = {}
        self.reached: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)

        @app.flow(number=NUMBER)
        async def questions(call: Call) -> None:
            await self.mark("start")
            await call.say("Welcome.")
            first = await call.gather(prompt="First code.", num_digits=1)
            await self.mark(f"first:{first.digits or 'timeout'}")
            await call.say("Checking.")
            await self.mark("slow")
            await call.say("Checked.")
            second = await call.gather(prompt="Second code.", num_digits=1)
            await self.mark(f"second:{second.digits or 'timeout'}")
            await call.say("Goodbye.")

    async def mark(self, label: str) -> None:
        self.trail.append(label)
        self.reached[label].set()
        if label in self.gates:
            await self.gates[label].wait()


async def copies(client: httpx.AsyncClient, n: int, name: str, *, concurrently: bool,
                 flow: Flow, gate: str | None = None, **fields: Any) -> list[bytes]:
    """Deliver ``n`` copies of one notification; returns every response body."""
    if not concurrently:
        return [await post(client, name, CALL, **fields) for _ in range(n)]
    answers: list[bytes] = []

    async def deliver() -> None:
        answers.append(await post(client, name, CALL, **fields))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(deliver)
            if gate is not None:
                await flow.reached[gate].wait()
            # Every copy is inside the app now, waiting on the one the flow is answering.
            await anyio.wait_all_tasks_blocked()
            assert answers == []
            if gate is not None:
                flow.gates[gate].set()
    return answers


async def finish(client: httpx.AsyncClient, second_url: str) -> list[dict[str, Any]]:
    """Answer the second question; the flow says goodbye and hangs up."""
    return commands_of(await post(client, "DigitsCollected", CALL, url=second_url, digits="2"))


@pytest.mark.parametrize("concurrently", [False, True], ids=["sequential", "concurrent"])
async def test_called_number(concurrently: bool) -> None:
    app = make_app(response_budget=5.0)
    flow = Flow(app)
    if concurrently:
        flow.gates["start"] = anyio.Event()
    async with running(app) as client:
        answers = await copies(client, COPIES, "CalledNumber", concurrently=concurrently,
                               flow=flow, gate="start" if concurrently else None)
        assert len(set(answers)) == 1, answers
        commands = commands_of(answers[0])
        assert commands[:2] == [NOTIFY, speak("Welcome.")]
        assert flow.trail == ["start"]
        assert len(app.sessions) == 1
        first = url_of(commands)
        body = await post(client, "DigitsCollected", CALL, url=first, digits="1")
        await finish(client, url_of(commands_of(body)))
    assert flow.trail == ["start", "first:1", "slow", "second:2"]


@pytest.mark.parametrize("concurrently", [False, True], ids=["sequential", "concurrent"])
@pytest.mark.parametrize("answer", ["DigitsCollected", "Redirected"],
                         ids=["digits", "gather-timeout"])
async def test_answer_to_a_gather(answer: str, concurrently: bool) -> None:
    app = make_app(response_budget=5.0)
    flow = Flow(app)
    label = "first:5" if answer == "DigitsCollected" else "first:timeout"
    if concurrently:
        flow.gates[label] = anyio.Event()
    async with running(app) as client:
        welcome = commands_of(await post(client, "CalledNumber", CALL))
        if answer == "DigitsCollected":
            url, fields = url_of(welcome, "getDigits"), {"digits": "5"}
        else:
            url, fields = url_of(welcome, "redirect"), {}
        answers = await copies(client, COPIES, answer, concurrently=concurrently, flow=flow,
                               gate=label if concurrently else None, url=url, **fields)
        assert len(set(answers)) == 1, answers
        commands = commands_of(answers[0])
        assert commands[:3] == [speak("Checking."), speak("Checked."),
                                {"getDigits": commands[2]["getDigits"]}]
        assert flow.trail == ["start", label, "slow"]
        # The next real answer still works, and the flow ran every step once.
        assert await finish(client, url_of(commands)) == [speak("Goodbye."), HANGUP]
    assert flow.trail == ["start", label, "slow", "second:2"]


@pytest.mark.parametrize("concurrently", [False, True], ids=["sequential", "concurrent"])
async def test_resume_marker(concurrently: bool) -> None:
    platform = FakePlatform()
    app = make_app(platform, response_budget=0.5)
    flow = Flow(app)
    flow.gates["slow"] = anyio.Event()
    async with running(app) as client:
        welcome = commands_of(await post(client, "CalledNumber", CALL))
        # The flow is slow after the first answer: the response carries a Resume marker.
        slow = commands_of(await post(client, "DigitsCollected", CALL,
                                      url=url_of(welcome), digits="5"))
        assert slow[0] == speak("Checking.")
        assert list(slow[1]) == ["redirect"]
        marker = url_of(slow, "redirect")
        assert marker != url_of(welcome, "redirect")
        if concurrently:
            # The copies arrive while the flow is still busy; it gets ready within the budget.
            answers = await copies(client, COPIES, "Redirected", concurrently=True, flow=flow,
                                   gate="slow", url=marker)
        else:
            flow.gates["slow"].set()
            await settle_flow(flow)
            answers = await copies(client, COPIES, "Redirected", concurrently=False,
                                   flow=flow, url=marker)
        assert len(set(answers)) == 1, answers
        commands = commands_of(answers[0])
        assert commands[0] == speak("Checked.")
        assert "getDigits" in commands[1]
        assert flow.trail == ["start", "first:5", "slow"]
        await finish(client, url_of(commands))
    assert flow.trail == ["start", "first:5", "slow", "second:2"]
    # Everything travelled in responses: nothing was pushed, so nothing was pushed twice.
    assert platform.requests == []


async def settle_flow(flow: Flow) -> None:
    """Wait until the released flow has queued its next question."""
    with anyio.fail_after(5):
        await anyio.wait_all_tasks_blocked()


# -- the last answer of a call ---------------------------------------------------------------


def one_question(app: App, trail: list[str]) -> None:
    @app.flow(number=NUMBER)
    async def short(call: Call) -> None:
        trail.append("start")
        answer = await call.gather(prompt="Your code.", num_digits=1)
        trail.append(f"code:{answer.digits}")
        await call.say("Thanks, goodbye.")


async def test_concurrent_copies_of_the_calls_last_answer() -> None:
    """The copies in flight while the first is answered all get the goodbye and hang-up."""
    app = make_app()
    trail: list[str] = []
    one_question(app, trail)
    async with running(app) as client:
        url = url_of(commands_of(await post(client, "CalledNumber", CALL)))
        answers: list[bytes] = []

        async def deliver() -> None:
            answers.append(await post(client, "DigitsCollected", CALL, url=url, digits="4"))

        async with anyio.create_task_group() as tg:
            for _ in range(COPIES):
                tg.start_soon(deliver)
    assert len(answers) == COPIES
    assert len(set(answers)) == 1, answers
    assert commands_of(answers[0]) == [speak("Thanks, goodbye."), HANGUP]
    assert trail == ["start", "code:4"]
    assert app.sessions == {}


@pytest.mark.parametrize("name", ["CalledNumber", "DigitsCollected"])
async def test_sequential_copy_of_the_calls_last_answer(name: str) -> None:
    app = make_app()
    trail: list[str] = []
    if name == "CalledNumber":
        @app.flow(number=NUMBER)
        async def closed(call: Call) -> None:
            trail.append("start")
            await call.say("We are closed.")
    else:
        one_question(app, trail)
    async with running(app) as client:
        fields: dict[str, Any] = {}
        if name == "DigitsCollected":
            url = url_of(commands_of(await post(client, "CalledNumber", CALL)))
            fields = {"url": url, "digits": "4"}
        first = await post(client, name, CALL, **fields)
        assert app.sessions == {}
        again = await post(client, name, CALL, **fields)
        assert trail.count("start") == 1
        assert again == first, (first, again)


async def test_a_copy_with_other_digits_is_not_a_duplicate() -> None:
    """Two different answers for one step: the first wins, the second changes nothing."""
    app = make_app()
    flow = Flow(app)
    async with running(app) as client:
        url = url_of(commands_of(await post(client, "CalledNumber", CALL)))
        first = await post(client, "DigitsCollected", CALL, url=url, digits="5")
        other = await post(client, "DigitsCollected", CALL, url=url, digits="6")
        assert commands_of(first)[0] == speak("Checking.")
        assert commands_of(other) == []
        await finish(client, url_of(commands_of(first)))
    assert flow.trail == ["start", "first:5", "slow", "second:2"]


async def test_duplicates_through_the_raw_transport_are_byte_identical() -> None:
    """Byte-for-byte, headers included: what a caching proxy would compare."""
    app = make_app()
    Flow(app)
    async with app, httpx.AsyncClient(transport=httpx.ASGITransport(app)) as client:
        responses = [await client.post(EVENTS, json=note("CalledNumber", CALL))
                     for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 200]
    assert responses[0].content == responses[1].content
    assert responses[0].headers == responses[1].headers


@pytest.mark.parametrize("concurrently", [False, True], ids=["sequential", "concurrent"])
async def test_the_answered_that_starts_an_outbound_call(concurrently: bool) -> None:
    platform = FakePlatform(call_id="out-1")
    app = make_app(platform, response_budget=5.0)
    starts: list[str] = []
    gate = anyio.Event()

    @app.flow(name="reminder")
    async def reminder(call: Call) -> None:
        starts.append(call.id)
        if concurrently:
            await gate.wait()
        await call.gather(prompt="Press 1 to confirm.", num_digits=1)

    async with running(app) as client, anyio.create_task_group() as tg:
        tg.start_soon(partial(app.call, "+34600000002", caller_id=NUMBER))
        [create] = await platform.wait_requests(1)
        callback = create.json["callbackUrl"]
        fields = {"url": callback, "leg": "leg-out", "caller": NUMBER,
                  "callee": "+34600000002"}
        answers: list[bytes] = []

        async def deliver() -> None:
            answers.append(await post(client, "Answered", "out-1", **fields))

        if concurrently:
            for _ in range(COPIES):
                tg.start_soon(deliver)
            await anyio.wait_all_tasks_blocked()
            gate.set()
        else:
            for _ in range(COPIES):
                await deliver()
    assert len(answers) == COPIES
    assert len(set(answers)) == 1, answers
    assert commands_of(answers[0])[0] == NOTIFY
    assert starts == ["out-1"]
