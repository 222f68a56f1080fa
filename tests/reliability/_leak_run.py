"""The leak scenario, as a script: ``python _leak_run.py asyncio|trio`` prints one JSON line.

10,000 completed calls straight through an App's ASGI interface, in waves of 100 concurrent
calls, after a warm-up, all traced by tracemalloc. The tests run it once per backend, in
processes of its own (see conftest.py): traced allocation makes a call about five times as
costly, so the runs go in the background while the rest of the suite runs; and a fresh
interpreter keeps the measurement free of the test session's own allocations.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import NUMBER, PREFIX, asgi_post, make_app

import callflow._app
from callflow import App, Call

CALLS = 10_000
WARM_UP = 1_000
WAVE = 100
ENDED = 500
"""The App remembers ended call ids (``ENDED_MEMORY``, 10,000 by default) to answer their late
notifications; that memory fills up by design. Shrinking it lets the warm-up fill it, so the
measurement sees only what a finished call should not leave behind."""

EVENTS = f"{PREFIX}/events"
CALLED = (b'{"timestamp":"2013-03-01T10:00:00Z","eventName":"CalledNumber","callId":"%s",'
          b'"legId":"leg-%s","callerId":"tel:+34600000001","destination":"tel:'
          + NUMBER.encode() + b'"}')
DIGITS = (b'{"timestamp":"2013-03-01T10:00:09Z","eventName":"DigitsCollected","callId":"%s",'
          b'"legId":"leg-%s","callerId":"tel:+34600000001","destination":"tel:'
          + NUMBER.encode() + b'","digits":"%s"}')


def leak_app() -> App:
    # No response budget: this run goes in the background, at a low priority, where a
    # budget could run out for want of CPU and send a call down the slow path. (And an
    # unlimited budget sets no timer whose expired entry trio would keep until it is due.)
    app = make_app(response_budget=None)

    @app.flow(number=NUMBER)
    async def menu(call: Call) -> None:
        await call.say("Welcome.")
        choice = await call.gather(prompt="Press a key.", num_digits=1)
        await call.say(f"You pressed {choice.digits}.")

    return app


async def calls(app: App, first: int, count: int) -> None:
    """``count`` complete calls: CalledNumber, then the digits that end them."""

    async def one(n: int) -> None:
        call_id = b"leak-%d" % n
        status, body = await asgi_post(app, EVENTS, b"", CALLED % (call_id, call_id))
        assert status == 200 and b"getDigits" in body, body
        key = b"%d" % (n % 10)
        status, body = await asgi_post(app, EVENTS, b"call=%s&step=1" % call_id,
                                       DIGITS % (call_id, call_id, key))
        assert status == 200 and b"You pressed %s." % key in body, body

    for wave in range(first, first + count, WAVE):
        async with anyio.create_task_group() as tg:
            for n in range(wave, min(wave + WAVE, first + count)):
                tg.start_soon(one, n)
        # A finished call is a reference cycle (Call <-> Session <-> task), freed by the
        # cyclic collector; collecting after each wave keeps the number of dead calls
        # awaiting collection, and so the event loop's own tables sized by it, the same
        # in both phases.
        gc.collect()


async def quiesce() -> int:
    """Let every task that can finish finish, collect, and return the traced memory in use."""
    await anyio.wait_all_tasks_blocked()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def scenario() -> dict[str, Any]:
    callflow._app.ENDED_MEMORY = ENDED  # type: ignore[attr-defined]
    app = leak_app()
    async with app:
        await calls(app, 0, WARM_UP)
        before = await quiesce()
        snapshot = tracemalloc.take_snapshot()
        began = time.monotonic()
        await calls(app, WARM_UP, CALLS)
        elapsed = time.monotonic() - began
        after = await quiesce()
        growth = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")
        sessions = len(app.sessions)
    return {"calls": CALLS, "sessions": sessions, "before": before, "after": after,
            "seconds": round(elapsed, 2),
            "growth": [str(stat) for stat in growth[:8] if stat.size_diff > 0]}


def main() -> None:
    backend = sys.argv[1]
    # Behind the tests that measure time (response budgets, backoff), not beside them.
    os.nice(10)
    tracemalloc.start()
    result = anyio.run(scenario, backend=backend)
    tracemalloc.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
