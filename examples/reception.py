"""A speech-driven reception: callers say where they want to go, or press a key.

Callers to +34900000005 are asked which department they want.  They may say it
("sales", "support", "billing": the recogniser is given them as hints) or press
1, 2 or 3, and the prompt stops as soon as they start (barge-in).  0 at any
question reaches the operator (a hotkey over the whole conversation).  Prices and
reference numbers are read with ``Speech``: "19 euros 50 cents", "4 7 1 1".

Speech input needs a platform that recognises speech: Twilio or Telnyx (BlueVia collects
keys only, and ``callflow serve`` says so at start-up).

Serve it::

    callflow serve examples/reception.py --platform twilio

Try it without a phone, saying "support" or pressing 1::

    callflow call examples/reception.py --say support --platform twilio
    callflow call examples/reception.py --press 1 --platform twilio
"""

from __future__ import annotations

import callflow
from callflow import Speech

app = callflow.App()

OPERATOR = "+34910000000"
DEPARTMENTS = {"sales": "+34910000001", "support": "+34910000002", "billing": "+34910000003"}
KEYS = {"1": "sales", "2": "support", "3": "billing"}
QUESTION = ("Which department would you like? Say sales, support or billing, "
            "or press 1, 2 or 3. Press 0 at any time for the operator.")
SORRY = "Sorry, I did not get that."
GOODBYE = "Thank you for calling Acme. Goodbye."
MONTHLY_FEE = "19.50"
"""Money as a decimal string (or a Decimal), never a float."""
CONFIDENT = 0.5
"""Below this confidence the flow asks the caller to confirm what it heard."""


@app.flow(number="+34900000005")
async def reception(call: callflow.Call) -> None:
    """Ask where the caller wants to go, by voice or keypad; put them through."""
    await call.say(Speech("Welcome to Acme.", Speech.pause(0.3)))
    async with call.hotkeys({"0": operator}):
        department = await ask(call)
        call.data["department"] = department
        if department is None:
            await call.say(GOODBYE)
            return
        if department == "billing":
            await call.say(Speech("Our monthly plan costs ",
                                  Speech.currency(MONTHLY_FEE, "EUR"), "."))
        await put_through(call, department)


async def ask(call: callflow.Call) -> str | None:
    """The department the caller chose (by voice or key), or None after two tries."""
    for _ in range(2):
        answer = await call.gather(prompt=QUESTION, input="dtmf speech", num_digits=1,
                                   hints=list(DEPARTMENTS), language="en-US", barge_in=True)
        if answer.spoken:
            call.data["heard"] = (answer.transcript, answer.confidence)
            said = (answer.transcript or "").lower()
            if said in DEPARTMENTS and (answer.confidence or 0) >= CONFIDENT:
                return said
        elif answer.digits in KEYS:
            return KEYS[answer.digits]
        await call.say(SORRY)
    return None


async def put_through(call: callflow.Call, department: str) -> None:
    await call.say(f"Putting you through to {department}.")
    result = await call.dial(DEPARTMENTS[department], timeout=20)
    call.data["dial"] = result
    if not result.answered:
        await call.say(Speech("Nobody is free. Your reference is ",
                              Speech.digits("4711"), ". ", GOODBYE))


async def operator(call: callflow.Call) -> None:
    """The hotkey 0: straight to a person."""
    call.data["department"] = "operator"
    await call.say("Connecting you to the operator.")
    call.data["dial"] = await call.dial(OPERATOR, timeout=20)
