"""An outbound appointment reminder that asks the patient to confirm or cancel.

The ``reminder`` flow has no number: it is the app's default flow, placed by name
for outbound calls.  It reads the appointment from ``call.data`` (``name``,
``when``, ``where``; each has a default), asks the patient to press 1 to confirm
or 2 to cancel, repeats the reminder when they press nothing, and leaves the
answer in ``call.data["confirmed"]``: True, False, or None when there was none.

Serve it, then place a call (the platform must reach the served app)::

    callflow serve examples/reminder.py
    callflow dial examples/reminder.py +34600000001 --from +34900000001

Try it without a phone, confirming the appointment::

    callflow call examples/reminder.py --press 1

From Python, in the process that serves the app (a scheduler task, a web handler)::

    result = await app.call("+34600000001", flow="reminder",
                            data={"name": "Ana", "when": "on Monday at ten"})
"""

from __future__ import annotations

import callflow

app = callflow.App()

DEFAULTS = {
    "name": "there",
    "when": "tomorrow at ten in the morning",
    "where": "the Acme clinic",
}

CONFIRM_OR_CANCEL = "To confirm it, press 1. To cancel it, press 2."
CONFIRMED = "Thank you. Your appointment is confirmed. See you soon. Goodbye."
CANCELLED = "Your appointment has been cancelled. Call us when you want a new one. Goodbye."
NO_ANSWER = "We could not get your answer, so we will call you again later. Goodbye."


@app.flow
async def reminder(call: callflow.Call) -> None:
    """Remind the callee of their appointment and record whether they confirm it."""
    details = {key: str(call.data.get(key) or default) for key, default in DEFAULTS.items()}
    reminder_text = (
        f"Hello {details['name']}. This is a reminder of your appointment "
        f"{details['when']} at {details['where']}."
    )
    # The reminder is part of the prompt, so a patient who said nothing hears it again.
    answer = await call.menu(
        f"{reminder_text} {CONFIRM_OR_CANCEL}",
        {"1": True, "2": False},
        retries=3,
        no_input="Sorry, I did not hear anything.",
        no_match="Sorry, please press 1 or 2.",
    )
    call.data["confirmed"] = answer
    if answer is None:
        await call.say(NO_ANSWER)
    else:
        await call.say(CONFIRMED if answer else CANCELLED)


async def remind(to: str, **appointment: str) -> bool | None:
    """Call ``to`` about an appointment; return their answer (None: no answer or no call)."""
    data: dict[str, object] = dict(appointment)
    result = await app.call(to, flow="reminder", data=data)
    if not result.answered:
        return None
    await app.wait_ended(result.call_id)
    confirmed = data.get("confirmed")
    return confirmed if isinstance(confirmed, bool) else None


async def main() -> None:
    """Remind one patient (run it where the app is served, so the platform reaches it)."""
    answer = await remind("+34600000001", name="Ana", when="on Monday at ten in the morning")
    print({True: "confirmed", False: "cancelled", None: "no answer"}[answer])
