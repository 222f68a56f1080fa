"""Small ASGI helpers: read a bounded body, send a JSON response."""

from __future__ import annotations

import json
from typing import Any

from ._types import Receive, Send

__all__ = ("BodyTooLarge", "read_body", "send_json", "send_reply")


class BodyTooLarge(Exception):
    """The request body is over the limit."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing to buffer more than ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def send_json(send: Send, status: int, payload: Any,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    raw_headers = [(b"content-length", str(len(body)).encode())]
    if payload is not None:
        raw_headers.append((b"content-type", b"application/json"))
    raw_headers.extend(headers or [])
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def send_reply(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", content_type.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
