"""An outbound payment reminder that leaves a voicemail when a machine answers.

The call is placed with answering-machine detection that waits for the beep
(``machine_detection="wait_for_beep"``): the flow starts once the platform knows who
answered.  A person hears the reminder and may press 1 to be put through to the
billing team; an answering machine gets a short message, spoken after its beep so the
whole of it is recorded.  ``call.data["answered_by"]`` keeps who answered.

Machine detection is a Twilio and Telnyx feature: on BlueVia ``App.call`` refuses
``machine_detection`` (``UnsupportedFeature``).

Serve it, then place a call (the platform must reach the served app)::

    callflow serve examples/payment_reminder.py --platform twilio
    callflow dial examples/payment_reminder.py +34600000001 --flow payment_reminder

Try it without a phone, as a person pressing 1 (on BlueVia, whose start-up check warns
that it cannot detect machines), or on Twilio with an answering machine on the line::

    callflow call examples/payment_reminder.py --press 1
    callflow call examples/payment_reminder.py --platform twilio --flow payment_reminder \
        --machine-detection wait_for_beep --phone +34600000001=machine

From Python, in the process that serves the app::

    result = await app.call("+34600000001", flow="payment_reminder",
                            machine_detection="wait_for_beep",
                            data={"name": "Ana", "amount": "forty euros"})
"""

from __future__ import annotations

import callflow

app = callflow.App()

BILLING = "+34910000009"
VOICEMAIL = ("Hello {name}, this is Acme. A payment of {amount} is due. Please call us "
             "back at your convenience. Goodbye.")
REMINDER = ("Hello {name}, this is Acme. A payment of {amount} is due. To speak to our "
            "billing team now, press 1.")
THANKS = "Thank you. Goodbye."


@app.flow
async def payment_reminder(call: callflow.Call) -> None:
    """Remind a person of a payment, or leave the reminder on their answering machine."""
    name = str(call.data.get("name") or "there")
    amount = str(call.data.get("amount") or "your last invoice")
    call.data["answered_by"] = call.answered_by
    if call.answered_by == "machine":
        # Detection waited for the beep: the machine records from here on.
        await call.say(VOICEMAIL.format(name=name, amount=amount))
        return
    result = await call.gather(prompt=REMINDER.format(name=name, amount=amount),
                               num_digits=1, timeout=5)
    if result.digits == "1":
        await call.transfer(BILLING)
        return
    await call.say(THANKS)


async def remind(to: str, **details: str) -> callflow.OutboundCallResult:
    """Call ``to`` about a payment, telling a person from an answering machine."""
    return await app.call(to, flow="payment_reminder", machine_detection="wait_for_beep",
                          data=dict(details))
