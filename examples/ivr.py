"""An IVR menu: a welcome, a keypad menu, and calls put through to sales or support.

Callers to +34900000001 hear a welcome and a menu: 1 puts them through to sales,
2 rings every support agent at once (the first to answer takes the call), and 3
tells them the opening hours.  When nobody answers they hear a fallback message;
when they press nothing or a wrong key, ``call.menu`` asks again and finally says
goodbye.

Serve it (the platform then posts calls to +34900000001 here)::

    callflow serve examples/ivr.py

Try it without a phone, pressing 1 at the menu::

    callflow call examples/ivr.py --press 1
"""

from __future__ import annotations

import callflow

app = callflow.App()

SALES = "+34910000001"
SUPPORT = ("+34910000002", "+34910000003", "+34910000004")
"""Support agents: all of them ring at once."""

RING_SECONDS = 25

WELCOME = "Welcome to Acme."
MENU = "For sales, press 1. For support, press 2. For our opening hours, press 3."
HOURS = "We are open Monday to Friday, from nine in the morning to six in the evening."
NOBODY = "Sorry, all our agents are busy right now. Please call again later."
GOODBYE = "Thank you for calling Acme. Goodbye."


@app.flow(number="+34900000001")
async def reception(call: callflow.Call) -> None:
    """Greet the caller, offer the menu and act on the choice."""
    await call.say(WELCOME)
    choice = await call.menu(MENU, {"1": "sales", "2": "support", "3": "hours"})
    call.data["choice"] = choice
    if choice == "sales":
        await put_through(call, SALES, whisper="A caller for sales.")
    elif choice == "support":
        await put_through(call, SUPPORT, whisper="A caller for support.")
    elif choice == "hours":
        await call.say(HOURS)
    await call.say(GOODBYE)


async def put_through(call: callflow.Call, agents: str | tuple[str, ...], *, whisper: str) -> None:
    """Bridge the caller to an agent; tell them when nobody could take the call."""
    await call.say("Please hold while we put you through.")
    result = await call.dial(agents, timeout=RING_SECONDS, on_answer=whisper)
    call.data["dial"] = result
    if not result.answered:
        await call.say(NOBODY)
