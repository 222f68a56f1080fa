"""A support line with a call queue: callers wait with hold music, agents take them in turn.

Callers of the support number hear a welcome and wait in the ``support`` queue with hold
music and, between plays of it, their position and the expected wait. An agent calls the
agents' number to take the caller who waited longest; their conversation is recorded in
the background, each party on a channel of its own. A caller nobody took within five
minutes may leave a message instead.

Call queues are Twilio's (``<Enqueue>``, ``<Dial><Queue>``): on BlueVia and Telnyx the
start-up check says ``enqueue`` and ``take_next`` are not supported there.

Serve it, then call the numbers (the platform must reach the served app)::

    callflow serve examples/support_queue.py --platform twilio

Try it without a phone (nobody takes the caller: after the wait, a message)::

    callflow call examples/support_queue.py --platform twilio --step wait:beep --step talk:3
"""

from __future__ import annotations

import callflow

app = callflow.App()

SUPPORT = "+34900000005"
AGENTS = "+34900000006"
HOLD_MUSIC = "https://assets.example.com/hold-music.mp3"
MAX_WAIT = 300

WELCOME = "Welcome to Acme support. All our agents are busy. Please hold."
LEAVE_A_MESSAGE = "Sorry, nobody could take your call. Please leave a message after the beep."
NOBODY_WAITING = "Nobody is waiting. Goodbye."


@app.flow(number=SUPPORT)
async def support(call: callflow.Call) -> None:
    """A caller waits in the queue; with nobody free in time, they leave a message."""
    await call.say(WELCOME)
    result = await call.enqueue("support", music=HOLD_MUSIC, announce_every=30,
                                max_wait=MAX_WAIT)
    call.data["queue"] = result
    if not result.bridged:
        call.data["message"] = await call.record(prompt=LEAVE_A_MESSAGE, beep=True)


@app.flow(number=AGENTS)
async def agent(call: callflow.Call) -> None:
    """An agent takes the caller who waited longest; the conversation is recorded."""
    async with call.recording(dual=True) as rec:
        result = await call.take_next("support", timeout=60)
    call.data["taken"] = result
    call.data["recording"] = rec
    if not result.answered:
        await call.say(NOBODY_WAITING)
