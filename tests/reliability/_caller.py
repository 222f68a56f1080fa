"""``Caller``: a scripted caller and platform for one call, over the App's ASGI interface.

It runs the commands the App answers with the way the BlueVia platform does: speech is
heard, ``getDigits``, ``record`` and ``dial`` wait for the caller or the network (the
*awaits* of the flow), ``redirect`` posts ``Redirected``, ``hangup`` ends the call. At the
``hang_up_at``-th await the caller hangs up instead. Every choice the caller and the network
make comes from ``choices``, so hypothesis can draw them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from ._support import EVENTS, NUMBER, FakePlatform, commands_of, note

KEYS = ("1", "2", "3", "9", None, "#")
"""What the caller does at a getDigits, by choice: a key, or nothing (a timeout)."""
TAKES = (5.0, 0.5, 12.0, 0.0, 3.0, 40.0)
"""How long the caller talks at a record, by choice (0: nothing recorded)."""
LINES = ("answered", "busy", "no_answer", "answered", "failed", "answered")
"""What a dialled number does, by choice."""


@dataclass
class Caller:
    client: httpx.AsyncClient
    call_id: str
    number: str = NUMBER
    hang_up_at: int | None = None
    choices: Sequence[int] = ()
    late_answer: bool = False
    """After hanging up, also deliver the answer to the await the caller left (late)."""
    events: str = EVENTS
    """The App's callback URL, where notifications without an action URL go."""
    speech: float = 0.0
    """Real seconds each spoken or played command takes (0: none)."""
    platform: FakePlatform | None = None
    """Where commands the App pushes by setcommands arrive (None: it must never push)."""
    pushed: int = 0
    heard: list[str] = field(default_factory=list)
    awaits: int = 0
    hung_up: bool = False
    ended_by_app: bool = False
    legs: int = 0

    async def post(self, name: str, url: str | None = None, **fields: Any
                   ) -> list[dict[str, Any]]:
        fields.setdefault("callee", self.number)
        response = await self.client.post(url or self.events,
                                          json=note(name, self.call_id, **fields))
        assert response.status_code == 200, (name, response.status_code, response.text)
        return commands_of(response.content)

    def choose(self) -> int:
        index = self.awaits - 1
        return self.choices[index % len(self.choices)] if self.choices else 0

    async def run(self) -> Caller:
        queue = deque(await self.post("CalledNumber"))
        while True:
            if not queue:
                # The queue ran dry with the call up: the App owes it commands by setcommands.
                if self.platform is None:
                    raise AssertionError(f"{self.call_id}: the app left the call idle")
                queue = deque(await self.platform.next_commands(self.call_id, self.pushed))
                self.pushed += 1
                continue
            command = queue.popleft()
            (kind, body), = command.items()
            replacement: list[dict[str, Any]] | None = None
            if kind in ("speak", "play"):
                self.heard.append(body.get("text") or body.get("url"))
                if self.speech:
                    await anyio.sleep(self.speech)
            elif kind in ("notifications", "wait"):
                pass
            elif kind == "hangup":
                self.ended_by_app = True
                assert await self.post("HangUp", direction="fromApplication") == []
                return self
            elif kind == "redirect":
                replacement = await self.post("Redirected", body["actionUrl"])
            elif kind in ("getDigits", "record", "dial"):
                self.awaits += 1
                if self.hang_up_at is not None and self.awaits >= self.hang_up_at:
                    await self.hang_up(queue)
                    return self
                replacement = await getattr(self, f"_{kind.lower()}")(body, queue)
            else:
                raise AssertionError(f"unexpected command {command}")
            if replacement is not None:
                queue = deque(replacement)

    async def hang_up(self, queue: deque[dict[str, Any]]) -> None:
        self.hung_up = True
        assert await self.post("HangUp", direction="fromParticipant") == []
        if self.late_answer:
            # The answer to the await the caller left, delivered after the hang-up.
            for command in queue:
                if "redirect" in command:
                    assert await self.post("Redirected", command["redirect"]["actionUrl"]) == []
                    break

    async def _getdigits(self, body: dict[str, Any], queue: deque[dict[str, Any]]
                         ) -> list[dict[str, Any]] | None:
        if "speak" in body:
            self.heard.append(body["speak"]["text"])
        key = KEYS[self.choose() % len(KEYS)]
        if key is None:
            return None  # timed out: the platform goes on with the redirect behind it
        return await self.post("DigitsCollected", body["actionUrl"], digits=key)

    async def _record(self, body: dict[str, Any], queue: deque[dict[str, Any]]
                      ) -> list[dict[str, Any]] | None:
        if "speak" in body:
            self.heard.append(body["speak"]["text"])
        seconds = TAKES[self.choose() % len(TAKES)]
        assert await self.post("RecordingStarted") == []
        fields: dict[str, Any] = {"duration": seconds}
        if seconds:
            fields["recordingUrl"] = f"https://platform.example/rec/{self.call_id}-{self.awaits}"
        assert await self.post("RecordingStopped", **fields) == []
        return None

    async def _dial(self, body: dict[str, Any], queue: deque[dict[str, Any]]
                    ) -> list[dict[str, Any]] | None:
        destination = body["number"]["destination"]
        numbers = destination if isinstance(destination, list) else [destination]
        line = LINES[self.choose() % len(LINES)]
        self.legs += 1
        leg = {"leg": f"{self.call_id}-leg-{self.legs}", "caller": self.number,
               "callee": numbers[0].removeprefix("tel:")}
        assert await self.post("Ringing", **leg) == []
        if line == "answered":
            assert await self.post("Answered", timestamp="2013-03-01T10:00:10Z", **leg) == []
            assert await self.post("HangUp", timestamp="2013-03-01T10:00:40Z",
                                   direction="fromParticipant", **leg) == []
        else:
            name = {"busy": "Busy", "no_answer": "NoAnswer", "failed": "Failed"}[line]
            assert await self.post(name, reason=line, **leg) == []
        return None
