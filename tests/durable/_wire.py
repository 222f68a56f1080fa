"""Recording what an app answers, to compare two runs of the same call byte for byte."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from callflow._types import ASGIApp, Message, Receive, Scope, Send

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|CA[0-9a-f]{32}")


_URL = re.compile(r"http://127\.0\.0\.1:\d+")


def normalise(text: str) -> str:
    """``text`` without what differs between two runs by nature: ports, ids."""
    ids: dict[str, str] = {}
    text = _URL.sub("<url>", text)
    return _ID.sub(lambda m: ids.setdefault(m[0], f"<id{len(ids)}>"), text)


class WireRecorder:
    """An ASGI wrapper that keeps every (notification, status, answer) the app saw."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.exchanges: list[tuple[str, int, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = bytearray()
        answer = bytearray()
        status = [0]

        async def receive_() -> Message:
            message = await receive()
            body.extend(message.get("body", b""))
            return message

        async def send_(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif message["type"] == "http.response.body":
                answer.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, receive_, send_)
        self.exchanges.append((_what(bytes(body)), status[0], bytes(answer)))

    def normalised(self, *prefixes: str) -> list[tuple[str, int, str]]:
        """The exchanges with what differs between runs by nature (URLs, ids) replaced."""
        ids: dict[str, str] = {}

        def name(match: re.Match[str]) -> str:
            return ids.setdefault(match[0], f"<id{len(ids)}>")

        out = []
        for what, status, answer in self.exchanges:
            text = answer.decode()
            for prefix in prefixes:
                text = text.replace(prefix, "<app>")
            out.append((_ID.sub(name, what), status, _URL.sub("<url>", _ID.sub(name, text))))
        return out


def _what(body: bytes) -> str:
    """A notification in a few words: its name and the ids it is about."""
    try:
        payload: Any = json.loads(body)
        if isinstance(payload, dict):
            return f"{payload.get('eventName')} {payload.get('callId')} {payload.get('legId')}"
    except ValueError:
        pass
    form = dict(parse_qsl(body.decode("latin-1")))
    return " ".join(form.get(k, "") for k in ("CallSid", "CallStatus", "Digits",
                                                "DialCallStatus"))
