"""Small ASGI helpers: read a bounded body, send a JSON response, read headers lazily."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import anyio

from ._types import Receive, Send

__all__ = (
    "DRAIN",
    "DRAIN_GRACE",
    "BodyTimeout",
    "BodyTooLarge",
    "Drain",
    "Headers",
    "drain_of",
    "read_body",
    "send_json",
    "send_reply",
)


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


class BodyTimeout(Exception):
    """The request body did not arrive in full in time (or the server is shutting down)."""


DRAIN = "callflow.drain"
"""The ASGI scope extension under which ``callflow.serving`` hands the app its ``Drain``."""


DRAIN_GRACE = 1.0
"""Seconds a body still arriving when shutdown starts may take, at most, to arrive."""


class Drain:
    """The body reads in flight on a server, cut short when it starts to shut down.

    A server waits (its graceful timeout) for requests in flight; one whose body trickles
    in would hold it that long, and then be cancelled mid-read, which hypercorn logs as a
    traceback per connection.  Once shutdown starts, a body has ``DRAIN_GRACE`` seconds at
    most to arrive (a platform's webhook takes milliseconds): a slower one is answered
    ``408`` and its connection closes, and the server stops as soon as the others are done.
    """

    __slots__ = ("_reads", "deadline")

    def __init__(self) -> None:
        self._reads: set[anyio.CancelScope] = set()
        self.deadline = math.inf
        """When every body read must be over (``inf`` until shutdown starts)."""

    def start(self, grace: float = DRAIN_GRACE) -> None:
        """Shutting down: every body read, in flight or to come, ends within ``grace`` s."""
        self.deadline = min(self.deadline, anyio.current_time() + grace)
        for scope in self._reads:
            scope.deadline = min(scope.deadline, self.deadline)


def drain_of(scope: Mapping[str, Any]) -> Drain | None:
    """The ``Drain`` a server handed the app in this request's scope, if any."""
    extensions = scope.get("extensions")
    drain = extensions.get(DRAIN) if extensions else None
    return drain if isinstance(drain, Drain) else None


async def read_body(receive: Receive, limit: int, timeout: float | None = None,
                    drain: Drain | None = None) -> bytes:
    """The whole request body, refusing to buffer more than ``limit`` bytes.

    Raises ``BodyTimeout`` unless all of it has arrived within ``timeout`` seconds (None or
    0: no limit; the server's own timeouts do not cover a body that trickles in), or by the
    deadline of ``drain`` once it has started.
    """
    deadline = anyio.current_time() + timeout if timeout else math.inf
    with anyio.CancelScope(deadline=deadline) as scope:
        if drain is None:
            return await _read_body(receive, limit)
        scope.deadline = min(deadline, drain.deadline)
        drain._reads.add(scope)
        try:
            return await _read_body(receive, limit)
        finally:
            drain._reads.discard(scope)
    raise BodyTimeout


async def _read_body(receive: Receive, limit: int) -> bytes:
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
