"""The peer: examples/ivr.py written the way webhook apps are written today.

A plain ASGI handler (no framework), a dict of call state keyed by call id, and a state
machine spread over the handler: every notification looks up its call, works out where
the call is, and answers with the next batch of BlueVia commands. It speaks exactly what
callflow speaks for the same call (same commands, same action URLs with ``call`` and
``step``, the secret in the path, the ``notifications`` switch on the first batch), and
checks what callflow checks (the secret, POST, a JSON object with a known event), so
``bench/compare.py`` compares like with like; tests/test_bench_apps.py holds it to that.

What it leaves out is what callflow gives on top: redelivered notifications, slow-flow
markers, the REST fallback, logging.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qsl, quote

__all__ = ("create_app",)

SALES = "+34910000001"
SUPPORT = ("+34910000002", "+34910000003", "+34910000004")
RING_SECONDS = 25
WELCOME = "Welcome to Acme."
MENU = "For sales, press 1. For support, press 2. For our opening hours, press 3."
HOURS = "We are open Monday to Friday, from nine in the morning to six in the evening."
NOBODY = "Sorry, all our agents are busy right now. Please call again later."
GOODBYE = "Thank you for calling Acme. Goodbye."
HOLD = "Please hold while we put you through."
NO_INPUT = ("Sorry, I didn't hear anything.", "Please press a key on your phone's keypad.")
NO_MATCH = ("Sorry, that is not one of the options.",
            "Please listen to the options and press one of the keys.")
OPTIONS = {"1": "sales", "2": "support", "3": "hours"}
ATTEMPTS = 3
MAX_BODY = 64 * 1024


def _speak(text: str) -> dict[str, Any]:
    return {"speak": {"text": text, "voice": "female", "repeat": 1}}


class _Call:
    """Where one call is: the step it waits on and what that step is."""

    __slots__ = ("agent", "attempt", "leg", "stage", "step")

    def __init__(self, leg: str) -> None:
        self.leg = leg  # the caller's leg: its hang-up ends the call
        self.step = 0
        self.stage = "menu"  # "menu" (a getDigits is out), "dial", or "done"
        self.attempt = 0
        self.agent: str | None = None  # the leg that answered the dial


def create_app(base_url: str, secret: str) -> Any:
    """The peer IVR, reachable at ``{base_url}/callflow/{secret}/events``."""
    events_path = f"/callflow/{secret}/events"
    events_url = base_url + events_path
    calls: dict[str, _Call] = {}

    def url(call_id: str, step: int) -> str:
        return f"{events_url}?call={quote(call_id, safe='')}&step={step}"

    def menu(call_id: str, call: _Call) -> list[dict[str, Any]]:
        call.step += 1
        call.stage = "menu"
        action = url(call_id, call.step)
        return [
            {"getDigits": {"actionUrl": action, "timeout": 5, "finishOnKey": "#",
                           "numberOfDigits": 1, "validDigits": "0123456789*#", "retries": 1,
                           **_speak(MENU)}},
            {"redirect": {"actionUrl": action}},
        ]

    def dial(call_id: str, call: _Call, numbers: tuple[str, ...], whisper: str
             ) -> list[dict[str, Any]]:
        call.step += 1
        call.stage = "dial"
        call.agent = None
        destinations = [f"tel:{n}" for n in numbers]
        return [
            _speak(HOLD),
            {"dial": {"number": {"destination": destinations[0] if len(destinations) == 1
                                 else destinations, "timeout": RING_SECONDS},
                      "behaviorOnAnswer": _speak(whisper)}},
            {"redirect": {"actionUrl": url(call_id, call.step)}},
        ]

    def goodbye(call: _Call, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
        call.stage = "done"
        return [*before, _speak(GOODBYE), {"hangup": {"reason": "rejected"}}]

    def chose(call_id: str, call: _Call, digits: str | None) -> list[dict[str, Any]]:
        """The menu's answer: digits, or None when it timed out."""
        if digits is not None and digits.endswith("#"):
            digits = digits[:-1]
        choice = OPTIONS.get(digits) if digits is not None else None
        if choice == "sales":
            return dial(call_id, call, (SALES,), "A caller for sales.")
        if choice == "support":
            return dial(call_id, call, SUPPORT, "A caller for support.")
        if choice == "hours":
            return goodbye(call, [_speak(HOURS)])
        call.attempt += 1
        if call.attempt >= ATTEMPTS:
            return goodbye(call, [])
        messages = NO_INPUT if digits is None else NO_MATCH
        return [_speak(messages[min(call.attempt - 1, len(messages) - 1)]),
                *menu(call_id, call)]

    def handle(event: dict[str, Any], step: int | None) -> list[dict[str, Any]]:
        name = event.get("eventName")
        call_id = event.get("callId")
        leg = event.get("legId", "")
        if not isinstance(call_id, str) or not call_id:
            raise ValueError("no callId")
        call = calls.get(call_id)
        if name == "CalledNumber":
            if call is not None:
                return []
            call = calls[call_id] = _Call(leg)
            return [{"notifications": "true"}, _speak(WELCOME), *menu(call_id, call)]
        if call is None:
            return []
        if name == "HangUp" and leg == call.leg:
            del calls[call_id]
            return []
        if call.stage == "menu" and step == call.step:
            if name == "DigitsCollected":
                digits = event.get("digits")
                if not isinstance(digits, str):
                    raise ValueError("DigitsCollected without digits")
                return chose(call_id, call, digits)
            if name == "Redirected":  # getDigits fell through: nothing pressed
                return chose(call_id, call, None)
            return []
        if call.stage == "dial":
            if name == "Answered" and leg != call.leg and call.agent is None:
                call.agent = leg
            elif name == "Redirected" and step == call.step:
                return goodbye(call, [] if call.agent is not None else [_speak(NOBODY)])
        return []

    async def reply(send: Any, status: int, payload: Any) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan: the server answers it for us
        path: str = scope["path"]
        secret_given = path.removeprefix("/callflow/").partition("/")[0]
        if not (path.startswith("/callflow/") and path.endswith("/events")):
            await reply(send, 404, {"error": "not found"})
            return
        if not hmac.compare_digest(secret_given.encode(), secret.encode()):
            await reply(send, 403, {"error": "forbidden"})
            return
        if scope["method"] != "POST":
            await reply(send, 405, {"error": "use POST"})
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                await reply(send, 413, {"error": "too large"})
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        step_text = query.get("step")
        try:
            event = json.loads(b"".join(chunks))
            if not isinstance(event, dict):
                raise ValueError("not an object")
            step = int(step_text) if step_text is not None else None
            commands = handle(event, step)
        except ValueError as exc:
            await reply(send, 400, {"error": str(exc)})
            return
        await reply(send, 200, {"commands": commands})

    return app
