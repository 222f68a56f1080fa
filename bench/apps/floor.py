"""The floor: a bare ASGI app that answers every notification from a fixed table.

The answer depends only on the notification's ``eventName`` and the ``step`` in its query
string, never on the call: the command lists (the IVR's menu, the dial to sales, the
goodbye) are rendered to bytes once, at start-up. What is left per request is what no
webhook app can avoid: hypercorn's HTTP/1.1 handling, reading the body, one
``json.loads`` to find the event, and sending the response. Its throughput is the limit of
the server itself; ``bench/compare.py`` measures the other apps against it.

Its action URLs carry the step but no call id (the body names the call), so its responses
are a few bytes shorter than callflow's; the simulator plays them the same way.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ("create_app",)

MENU = "For sales, press 1. For support, press 2. For our opening hours, press 3."


def _speak(text: str) -> dict[str, Any]:
    return {"speak": {"text": text, "voice": "female", "repeat": 1}}


def create_app(base_url: str, secret: str) -> Any:
    """The floor app, its action URLs under ``base_url`` (``secret`` is not checked)."""
    events = f"{base_url}/callflow/{secret}/events"

    def url(step: int) -> str:
        return f"{events}?step={step}"

    def render(commands: list[dict[str, Any]]) -> bytes:
        return json.dumps({"commands": commands}, separators=(",", ":")).encode()

    table: dict[tuple[str, str | None], bytes] = {
        ("CalledNumber", None): render([
            {"notifications": "true"},
            _speak("Welcome to Acme."),
            {"getDigits": {"actionUrl": url(1), "timeout": 5, "finishOnKey": "#",
                           "numberOfDigits": 1, "validDigits": "0123456789*#", "retries": 1,
                           **_speak(MENU)}},
            {"redirect": {"actionUrl": url(1)}},
        ]),
        ("DigitsCollected", "1"): render([
            _speak("Please hold while we put you through."),
            {"dial": {"number": {"destination": "tel:+34910000001", "timeout": 25},
                      "behaviorOnAnswer": _speak("A caller for sales.")}},
            {"redirect": {"actionUrl": url(2)}},
        ]),
        ("Redirected", "2"): render([
            _speak("Thank you for calling Acme. Goodbye."),
            {"hangup": {"reason": "rejected"}},
        ]),
    }
    empty = render([])
    headers_for = {
        body: [(b"content-length", str(len(body)).encode()),
               (b"content-type", b"application/json")]
        for body in [*table.values(), empty]
    }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan: the server answers it for us
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        name = json.loads(b"".join(chunks)).get("eventName")
        query: bytes = scope["query_string"]
        step = query.rpartition(b"step=")[2].decode() if b"step=" in query else None
        body = table.get((name, step), empty)
        await send({"type": "http.response.start", "status": 200, "headers": headers_for[body]})
        await send({"type": "http.response.body", "body": body})

    return app
