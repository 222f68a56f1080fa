"""What the reliability tests share: notifications, a fake platform, and ways to drive an App.

Everything here talks to the App through its public faces: the ASGI interface (over
``httpx.ASGITransport``, or called directly where 10,000 calls must stay fast), the REST
requests it makes to its platform (answered by ``FakePlatform``), and ``App.sessions``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from hypothesis import HealthCheck, Phase, settings

from callflow import App, Settings

PUBLIC = "https://app.example"
SECRET = "reliability-secret"
PREFIX = f"/callflow/{SECRET}"
EVENTS = f"{PUBLIC}{PREFIX}/events"
FALLBACK = f"{PUBLIC}{PREFIX}/fallback"
NUMBER = "+34900000001"
CALLER = "+34600000001"
LEG = "leg-caller"

NOTIFY = {"notifications": "true"}
HANGUP = {"hangup": {"reason": "rejected"}}
NOTHING: dict[str, Any] = {"commands": []}

FUZZ = settings(
    # Bounded and reproducible in CI: every run tries the same examples, and nothing is
    # written to a .hypothesis/ database in the work tree.
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    # anyio_backend is a function-scoped fixture; it is the same for every example.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NO_SHRINK = settings(FUZZ, phases=[Phase.explicit, Phase.reuse, Phase.generate])
"""For properties whose likely failure is a timeout: shrinking would rerun it a hundred times.
The examples are short lists already; the unshrunk one is readable."""
WAIT = 2.0
"""Seconds to wait for what happens at once in-process (a call ending after a hang-up)."""


def speak(text: str) -> dict[str, Any]:
    return {"speak": {"text": text, "voice": "female", "repeat": 1}}


def action(step: int, call_id: str) -> str:
    return f"{EVENTS}?call={call_id}&step={step}"


def redirect(step: int, call_id: str) -> dict[str, Any]:
    return {"redirect": {"actionUrl": action(step, call_id)}}


def note(
    name: str,
    call_id: str,
    *,
    leg: str = LEG,
    caller: str = CALLER,
    callee: str = NUMBER,
    timestamp: str = "2013-03-01T10:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    """A BlueVia notification body, as the platform posts it."""
    return {"timestamp": timestamp, "eventName": name, "callId": call_id, "legId": leg,
            "callerId": f"tel:{caller}", "destination": f"tel:{callee}", **extra}


# -- the platform side of the App's REST calls ----------------------------------------------------

HANG = "hang"
"""A FakePlatform answer that never comes: the request hangs until the client gives up (serve
the FakePlatform over real HTTP for that: httpx enforces no timeout on an ASGITransport)."""


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    json: Any
    at: float
    answer: int | str


@dataclass
class FakePlatform:
    """An ASGI stand-in for the platform's REST API: records every request, answers as scripted.

    ``setcommands`` lists the answers to successive setcommands requests: an HTTP status or
    ``HANG``; once it is used up every setcommands gets ``forever`` (default 202).
    """

    setcommands: list[int | str] = field(default_factory=list)
    forever: int | str = 202
    call_id: str = "out-1"
    """The id a ``POST /calls`` (an outbound call) gets."""
    requests: list[Seen] = field(default_factory=list)
    _arrived: anyio.Event | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        path = scope["path"]
        answer: int | str = 200
        reply = b""
        if path.endswith("/setcommands"):
            answer = self.setcommands.pop(0) if self.setcommands else self.forever
        elif path == "/comms/v1/calls":
            answer, reply = 201, json.dumps({"callId": self.call_id}).encode()
        self.requests.append(Seen(scope["method"], path, json.loads(body) if body else None,
                                  anyio.current_time(), answer))
        if self._arrived is not None:
            self._arrived.set()
        if answer == HANG:
            # No answer, and nothing applied: wait until the client gives up and goes.
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        assert isinstance(answer, int)
        await send({"type": "http.response.start", "status": answer,
                    "headers": [(b"content-length", str(len(reply)).encode())]})
        await send({"type": "http.response.body", "body": reply})

    async def wait_requests(self, count: int, timeout: float = 5.0) -> list[Seen]:
        with anyio.fail_after(timeout):
            while len(self.requests) < count:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        return self.requests

    async def next_commands(self, call_id: str, seen: int, timeout: float = 5.0
                            ) -> list[dict[str, Any]]:
        """The commands of the accepted setcommands for ``call_id`` after the first ``seen``."""
        path = f"/comms/v1/calls/{call_id}/setcommands"
        with anyio.fail_after(timeout):
            while True:
                accepted = [r.json for r in self.requests if r.path == path
                            and isinstance(r.answer, int) and r.answer < 300]
                if len(accepted) > seen:
                    commands: list[dict[str, Any]] = accepted[seen]["commands"]
                    return commands
                self._arrived = anyio.Event()
                await self._arrived.wait()

    @property
    def delivered(self) -> list[Any]:
        """The setcommands bodies the platform accepted (answered 2xx): what the caller gets."""
        return [r.json for r in self.requests if r.path.endswith("/setcommands")
                and isinstance(r.answer, int) and r.answer < 300]

    @property
    def attempts(self) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith("/setcommands")]


def make_app(platform: FakePlatform | None = None, **settings: Any) -> App:
    return App(
        settings=Settings(public_url=PUBLIC, platform_url="https://platform.example",
                          secret=SECRET, **settings),
        transport=httpx.ASGITransport(platform or FakePlatform()),
    )


@asynccontextmanager
async def running(app: App) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app`` in-process; yields a client that posts to it as the platform would."""
    async with app, httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=PUBLIC,
                                      timeout=30) as client:
        yield client


async def post(client: httpx.AsyncClient, name: str, call_id: str, *, url: str = EVENTS,
               **fields: Any) -> bytes:
    """Deliver a notification; returns the raw 200 response body (for byte comparisons)."""
    response = await client.post(url, json=note(name, call_id, **fields))
    assert response.status_code == 200, response.text
    return response.content


async def post_json(client: httpx.AsyncClient, name: str, call_id: str, *, url: str = EVENTS,
                    **fields: Any) -> Any:
    return json.loads(await post(client, name, call_id, url=url, **fields))


async def asgi_post(app: App, path: str, query: bytes, body: bytes) -> tuple[int, bytes]:
    """One POST straight through the App's ASGI interface: no HTTP client in the way.

    For the 10,000-call leak test, where httpx's own cost would dominate the run.
    """
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await anyio.sleep_forever()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "https", "path": path, "raw_path": path.encode(),
             "query_string": query, "headers": [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 9), "server": ("app.example", 443), "root_path": ""}
    await app(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


# -- leftovers ---------------------------------------------------------------------------------


def task_names() -> list[str]:
    """Every task alive in the event loop (asyncio or trio), by name."""
    return sorted(task.name or "?" for task in anyio.get_running_tasks())


def app_tasks() -> list[str]:
    """The tasks callflow itself started (flows, grace timers), by what they run.

    For tests with servers in the same event loop, whose connection tasks come and go.
    """
    found = []
    for task in anyio.get_running_tasks():
        code = getattr(task.coro, "cr_code", None)
        filename = getattr(code, "co_filename", "")
        if (task.name or "").startswith("callflow.") or "/callflow/" in filename:
            found.append(getattr(task.coro, "__qualname__", task.name or "?"))
    return sorted(found)


async def settle() -> None:
    """Let every task that can run, run, until all are blocked."""
    for _ in range(3):
        await anyio.wait_all_tasks_blocked()


def commands_of(body: bytes) -> list[dict[str, Any]]:
    payload = json.loads(body)
    assert isinstance(payload, dict) and isinstance(payload.get("commands"), list), payload
    return payload["commands"]


def url_of(commands: list[dict[str, Any]], kind: str = "getDigits") -> str:
    """The actionUrl of the first ``kind`` command (``getDigits`` or ``redirect``)."""
    for command in commands:
        if kind in command:
            url: str = command[kind]["actionUrl"]
            return url
    raise AssertionError(f"no {kind} in {commands}")


def spoken(commands: list[dict[str, Any]]) -> Iterator[str]:
    for command in commands:
        if "speak" in command:
            yield command["speak"]["text"]
        elif "getDigits" in command and "speak" in command["getDigits"]:
            yield command["getDigits"]["speak"]["text"]
