"""Call forwarding that falls back to voicemail when nobody answers.

Calls to +34900000003 ring the numbers in ``FORWARD_TO`` at once for
``RING_SECONDS``; whoever answers first takes the call.  When every line is
busy, nobody answers or the call cannot be put through, the caller hears why
and can leave a message; its recording lands in ``call.data["voicemail"]``.

Serve it::

    callflow serve examples/forward.py

Try it without a phone (the forwarded numbers' behaviour is up to the simulator)::

    callflow call examples/forward.py --press 1
"""

from __future__ import annotations

import callflow

app = callflow.App()

FORWARD_TO = ("+34610000001", "+34610000002")
RING_SECONDS = 20

UNAVAILABLE: dict[callflow.DialStatus, str] = {
    "busy": "The line is busy.",
    "no_answer": "Nobody is answering.",
    "failed": "We could not put your call through.",
}
LEAVE_A_MESSAGE = "Please leave a message after the beep, and press hash when you are done."
THANKS = "Thank you for your message. We will call you back. Goodbye."


@app.flow(number="+34900000003")
async def forward(call: callflow.Call) -> None:
    """Forward the call; on busy, no answer or failure, take a voicemail instead."""
    # Show the original caller's number, so whoever answers knows who is calling.
    result = await call.dial(FORWARD_TO, timeout=RING_SECONDS, caller_id=call.caller)
    call.data["dial"] = result
    if result.answered:
        return
    await call.say(UNAVAILABLE.get(result.status, UNAVAILABLE["failed"]))
    recording = await call.record(
        prompt=LEAVE_A_MESSAGE, beep=True, finish_on_key="#", max_length=120
    )
    call.data["voicemail"] = recording
    await call.say(THANKS)
