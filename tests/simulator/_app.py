"""A tiny scripted ASGI application for the simulator's tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio

Handler = Callable[[dict[str, Any]], Any]

APP = "http://app.test"


class App:
    """Answers notifications by path: `routes[path](notification)` returns the response.

    A returned dict/list is sent as JSON (a list is wrapped as {"commands": [...]}); an int
    is sent as that status; None is an empty 200. Every request is recorded.
    """

    def __init__(self, routes: dict[str, Handler] | None = None) -> None:
        self.routes: dict[str, Handler] = routes or {}
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.delay: dict[str, float] = {}
        self.puts: list[tuple[str, bytes]] = []

    def events(self) -> list[str]:
        return [body.get("eventName", "?") for _, body in self.received]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].replace("lifespan.", "")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if scope["method"] == "PUT":
            self.puts.append((path, body))
            await self._send(send, 200, b"")
            return
        data = json.loads(body) if body else {}
        self.received.append((path, data))
        if path in self.delay:
            await anyio.sleep(self.delay[path])
        handler = self.routes.get(path)
        result = handler(data) if handler else None
        if isinstance(result, int):
            await self._send(send, result, b"")
        elif isinstance(result, bytes):
            await self._send(send, 200, result)
        elif result is None:
            await self._send(send, 200, b"")
        else:
            if isinstance(result, list):
                result = {"commands": result}
            await self._send(send, 200, json.dumps(result).encode())

    async def _send(self, send: Any, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
