"""Voicemail: record a message, play it back, and keep it or record it again.

Callers to +34900000002 leave a message after the beep (pressing # when done),
hear it played back, and press 1 to keep it or 2 to record it again, at most
three times in all.  A message is kept when the caller chooses it, says nothing,
or hangs up after recording it.  Kept messages land in ``MESSAGES`` (a real
service would store them somewhere durable) and in ``call.data["message"]``.

Serve it::

    callflow serve examples/voicemail.py

Try it without a phone, keeping the first recording::

    callflow call examples/voicemail.py --press 1
"""

from __future__ import annotations

import callflow

app = callflow.App()

MAX_TAKES = 3
"""How many times a caller may record their message."""

MESSAGES: list[tuple[str, callflow.RecordResult]] = []
"""Every kept message, with the number of the caller who left it."""

GREETING = "You have reached the voicemail of Acme. Nobody can take your call right now."
RECORD_PROMPT = "Please leave your message after the beep, and press hash when you are done."
EMPTY = "Sorry, I did not hear a message."
PLAYBACK = "You said:"
KEEP_OR_AGAIN = "To keep this message, press 1. To record it again, press 2."
KEEP_ONLY = "To keep this message, press 1."
SAVED = "Your message has been saved. Goodbye."
NOT_SAVED = "No message was saved. Goodbye."


@app.flow(number="+34900000002")
async def voicemail(call: callflow.Call) -> None:
    """Record, play back, and keep or re-record the caller's message."""
    await call.say(GREETING)
    take: callflow.RecordResult | None = None
    try:
        for attempt in range(1, MAX_TAKES + 1):
            recording = await call.record(
                prompt=RECORD_PROMPT, beep=True, finish_on_key="#", max_length=120,
                silence_timeout=5,
            )
            if recording.url is None or recording.duration < 1:
                await call.say(EMPTY)
                continue
            take = recording
            await call.say(PLAYBACK)
            await call.play(recording.url)
            last = attempt == MAX_TAKES
            choice = await call.menu(
                KEEP_ONLY if last else KEEP_OR_AGAIN,
                {"1": "keep"} if last else {"1": "keep", "2": "again"},
                retries=2,
            )
            if choice != "again":  # "keep", or no answer: keep what they said
                break
            take = None
        await call.say(SAVED if take is not None else NOT_SAVED)
    finally:
        # Runs on a hang-up too: a caller who hangs up after recording has left a message.
        if take is not None:
            keep(call, take)


def keep(call: callflow.Call, recording: callflow.RecordResult) -> None:
    """Store a kept message (here in memory, and on the call for whoever ran it)."""
    MESSAGES.append((call.caller, recording))
    call.data["message"] = recording
