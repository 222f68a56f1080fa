"""Isolation: 1,000 calls live at once in one App behind real hypercorn, each with its own
caller, digits and choices, and every one of them hears only its own flow.

The flow repeats back what is specific to its call (id, caller, digits), so any mix-up
between sessions shows in some call's responses. All 1,000 calls are started before any is
answered (so 1,000 sessions are suspended together), then answered in a shuffled order.
"""

from __future__ import annotations

import random
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx
import pytest

from callflow import App, Call, Settings
from callflow.simulator import serve_asgi

from ._support import HANGUP, NUMBER, note, speak

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CALLS = 1_000
CONNECTIONS = 16
SECRET = "isolation"


def make_app() -> App:
    app = App(settings=Settings(secret=SECRET, response_budget=5.0),
              transport=httpx.MockTransport(lambda request: httpx.Response(500)))

    @app.flow(number=NUMBER)
    async def echo(call: Call) -> None:
        await call.say(f"Hello {call.caller}, this is call {call.id}.")
        code = await call.gather(prompt="Your code.", num_digits=4)
        await call.say(f"Call {call.id} entered {code.digits}.")
        again = await call.gather(prompt="Again.", num_digits=4, timeout=3)
        if again.timed_out:
            await call.say(f"Call {call.id}: no second code.")
        else:
            await call.say(f"Call {call.id}: {code.digits} then {again.digits}.")

    return app


def script(i: int) -> tuple[str, str, str | None]:
    """Call i's caller number, first code and second code (None: the caller stays silent)."""
    second = None if i % 5 == 0 else f"{(i * 7919) % 10_000:04d}"
    return f"+34600{i:06d}", f"{i:04d}", second


async def test_a_thousand_concurrent_calls_each_get_their_own_responses() -> None:
    app = make_app()
    started = anyio.Event()
    live = 0
    rng = random.Random(5)
    problems: list[str] = []

    async with serve_asgi(app) as url:
        app.settings.public_url = url
        events = f"{url}/callflow/{SECRET}/events"
        # One connection per client, and a request waits for a free client here: httpx's
        # own pool spends time per waiting request and per connection, and with 1,000
        # waiters this test would measure the client rather than the server.
        pool, idle = anyio.create_memory_object_stream[httpx.AsyncClient](CONNECTIONS)
        async with AsyncExitStack() as stack:
            for _ in range(CONNECTIONS):
                pool.send_nowait(await stack.enter_async_context(httpx.AsyncClient(
                    limits=httpx.Limits(max_connections=1), timeout=30)))
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=30))

            async def deliver(name: str, call_id: str, caller: str, target: str = events,
                              **fields: Any) -> list[dict[str, Any]]:
                connection = await idle.receive()
                try:
                    response = await connection.post(target, json=note(
                        name, call_id, leg=f"leg-{call_id}", caller=caller, **fields))
                finally:
                    pool.send_nowait(connection)
                assert response.status_code == 200, response.text
                commands: list[dict[str, Any]] = response.json()["commands"]
                return commands

            async def one_call(i: int) -> None:
                nonlocal live
                call_id = f"iso-{i}-{rng.getrandbits(32):08x}"
                caller, code, second = script(i)
                step = f"{url}/callflow/{SECRET}/events?call={call_id}&step="
                welcome = await deliver("CalledNumber", call_id, caller)
                expect(welcome[1:], [
                    speak(f"Hello {caller}, this is call {call_id}."),
                    get_digits(step + "1", "Your code.", 5),
                    {"redirect": {"actionUrl": step + "1"}},
                ], call_id)
                live += 1
                if live == CALLS:
                    started.set()
                await started.wait()
                await anyio.sleep(rng.random() / 20)  # answer in a shuffled order
                answer = await deliver("DigitsCollected", call_id, caller, step + "1",
                                       digits=code)
                expect(answer, [
                    speak(f"Call {call_id} entered {code}."),
                    get_digits(step + "2", "Again.", 3),
                    {"redirect": {"actionUrl": step + "2"}},
                ], call_id)
                if second is None:
                    last = await deliver("Redirected", call_id, caller, step + "2")
                    said = f"Call {call_id}: no second code."
                else:
                    last = await deliver("DigitsCollected", call_id, caller, step + "2",
                                         digits=second)
                    said = f"Call {call_id}: {code} then {second}."
                expect(last, [speak(said), HANGUP], call_id)

            def expect(got: list[dict[str, Any]], want: list[dict[str, Any]], call_id: str
                       ) -> None:
                if got != want:
                    problems.append(f"{call_id}: got {got}, expected {want}")

            began = time.monotonic()
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for i in range(CALLS):
                        tg.start_soon(one_call, i)

                    await started.wait()
                    # Every call is suspended in its first gather, all at the same time.
                    health = (await client.get(f"{url}/callflow/{SECRET}/health")).json()
                    assert health == {"status": "ok", "calls": CALLS}
            elapsed = time.monotonic() - began
            health = (await client.get(f"{url}/callflow/{SECRET}/health")).json()
    assert problems == []
    assert health == {"status": "ok", "calls": 0}
    assert app.sessions == {}
    print(f"{CALLS} calls, {CALLS * 3} notifications in {elapsed:.1f} s")


def get_digits(url: str, prompt: str, timeout: int) -> dict[str, Any]:
    return {"getDigits": {"actionUrl": url, "timeout": timeout, "finishOnKey": "#",
                          "numberOfDigits": 4, "validDigits": "0123456789*#", "retries": 1,
                          **speak(prompt)}}
