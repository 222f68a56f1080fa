"""Small ASGI helpers: read a bounded body, send a JSON response, read headers lazily."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ._types import Receive, Send

__all__ = ("BodyTooLarge", "Headers", "read_body", "send_json", "send_reply")


class Headers(Mapping[str, str]):
    """An ASGI scope's raw headers as a mapping of lower-case names, decoded on first use.

    Most platforms never look at a webhook's headers (BlueVia has no signature), so
    decoding them all for every notification would be work for nothing.
    """

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._decoded: dict[str, str] | None = None

    def _dict(self) -> dict[str, str]:
        if self._decoded is None:
            self._decoded = {k.decode("latin-1").lower(): v.decode("latin-1")
                             for k, v in self._raw}
        return self._decoded

    def __getitem__(self, name: str) -> str:
        return self._dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"Headers({self._dict()!r})"


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
        chunk: bytes = message.get("body", b"")  # ASGI: always bytes
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if not chunks and not message.get("more_body", False):
            return chunk  # all in one message, as a notification's small body comes
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
