"""Scripted Twilio and Telnyx for one call, over the App's ASGI interface: ``Caller``'s peers.

``Caller`` (``_caller.py``) plays BlueVia; ``TwilioLine`` plays Twilio (it runs the TwiML the
App answers with and posts form-encoded webhooks signed with the ``twilio`` SDK's
``RequestValidator``), ``TelnyxLine`` plays Telnyx Call Control (it takes the App's REST
actions and answers with JSON webhooks signed with Ed25519). All three make the same choices
from the same ``choices`` (``KEYS``, ``TAKES``, ``LINES``), count the flow's awaits the same
way (one per gather, record or dial the caller reaches) and hang up at the ``hang_up_at``-th.

The network's faults are knobs of their own, drawn by hypothesis as lists of small integers
read in turn (``pick``):

- ``copies``: how many times each webhook is delivered (1 + the pick, at most 3);
  Twilio's copies of one webhook must all get the same TwiML, byte for byte;
- ``concurrent``: copies are delivered all at once, not one after the other;
- ``stale``: after each answered await, an answer to an earlier await is delivered late
  (Twilio: the old action URL again, other digits; Telnyx: an old completion under a new
  webhook id); it must change nothing (Twilio: answered with no verbs that would run);
- ``reorder`` (Telnyx): an action's webhooks arrive in reverse order, before its response.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree as ET

import anyio
import httpx
from anyio.abc import TaskGroup

from ._caller import KEYS, LINES, TAKES
from ._platforms import EVENTS, TWILIO_SID, VALIDATOR, telnyx_headers
from ._support import CALLER

MAX_COPIES = 3


@dataclass
class _Line:
    """What both scripted platforms share: the choices, the faults, what happened."""

    client: httpx.AsyncClient
    call_id: str
    number: str
    hang_up_at: int | None = None
    choices: Sequence[int] = ()
    copies: Sequence[int] = ()
    concurrent: bool = False
    stale: bool = False
    heard: list[str] = field(default_factory=list)
    awaits: int = 0
    hung_up: bool = False
    ended_by_app: bool = False
    delivered: int = 0
    """Webhooks delivered, copies included."""
    _picks: itertools.count[int] = field(default_factory=itertools.count)

    def choose(self) -> int:
        index = self.awaits - 1
        return self.choices[index % len(self.choices)] if self.choices else 0

    def how_many(self) -> int:
        """Copies of the next webhook: 1 + the next pick (none drawn: 1)."""
        if not self.copies:
            return 1
        return 1 + self.copies[next(self._picks) % len(self.copies)] % MAX_COPIES

    async def deliver_copies(self, send: Any) -> list[httpx.Response]:
        """``send()`` once per copy, in turn or all at once; every response, in order sent."""
        n = self.how_many()
        self.delivered += n
        if n == 1 or not self.concurrent:
            return [await send() for _ in range(n)]
        answers: list[httpx.Response | None] = [None] * n

        async def one(i: int) -> None:
            answers[i] = await send()

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        return [a for a in answers if a is not None]

    def reaches_an_await(self) -> bool:
        """Count an await; True when the caller hangs up at it."""
        self.awaits += 1
        return self.hang_up_at is not None and self.awaits >= self.hang_up_at


# -- Twilio ----------------------------------------------------------------------------------


@dataclass
class TwilioLine(_Line):
    """Twilio and the phone network for one inbound call, from TwiML to webhooks."""

    legs: int = 0
    answered: list[str] = field(default_factory=list)
    """Action URLs already answered (with the digits sent), for the stale re-deliveries."""
    _old: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    _closed: bool = False

    def params(self, **extra: str) -> dict[str, str]:
        return {"CallSid": self.call_id, "AccountSid": TWILIO_SID, "From": CALLER,
                "To": self.number, "CallStatus": "in-progress", "Direction": "inbound",
                "ApiVersion": "2010-04-01", **extra}

    async def post(self, url: str, **extra: str) -> ET.Element:
        """Deliver one webhook (as many copies as drawn): every copy gets the same TwiML."""
        params = self.params(**extra)
        body = urlencode(params).encode()
        headers = {"x-twilio-signature": VALIDATOR.compute_signature(url, params),
                   "content-type": "application/x-www-form-urlencoded"}

        async def send() -> httpx.Response:
            return await self.client.post(url, content=body, headers=headers)

        responses = await self.deliver_copies(send)
        for response in responses:
            assert response.status_code == 200, (url, extra, response.text)
            assert response.headers["content-type"] == "text/xml"
        contents = {response.content for response in responses}
        assert len(contents) == 1, (url, extra, contents)
        return ET.fromstring(responses[0].content)

    async def run(self) -> TwilioLine:
        doc: ET.Element | None = await self.post(EVENTS, CallStatus="ringing")
        while doc is not None:
            doc = await self.execute(doc)
        if not self.hung_up:
            self.ended_by_app = True
        if not self._closed:
            await self.close()
        return self

    async def close(self) -> None:
        """The status callback that ends every call (the caller's hang-up, or after the app's)."""
        self._closed = True
        await self.post(EVENTS, CallStatus="completed", CallDuration="60")

    async def answer(self, url: str, **extra: str) -> ET.Element:
        """An action webhook that answers an await; then, if asked, a stale one."""
        doc = await self.post(url, **extra)
        if self.stale and self._old:
            old_url, old = self._old[len(self._old) // 2]
            late = await self.post(old_url, **{**old, "Digits": "7"} if "Digits" in old else old)
            # Twilio runs what it gets: a stale answer must not steer the call.
            assert [verb.tag for verb in late] == [], ET.tostring(late)
            assert not self.hung_up
        self._old.append((url, extra))
        return doc

    def hear(self, node: ET.Element) -> None:
        text = (node.text or "").strip()
        self.heard.extend([text] * int(node.get("loop", "1")))

    async def execute(self, doc: ET.Element) -> ET.Element | None:
        for verb in doc:
            if verb.tag in ("Say", "Play"):
                self.hear(verb)
            elif verb.tag == "Pause":
                continue
            elif verb.tag == "Hangup":
                return None
            elif verb.tag == "Redirect":
                return await self.post((verb.text or "").strip())
            elif verb.tag in ("Gather", "Record", "Dial"):
                if self.reaches_an_await():
                    self.hung_up = True
                    if verb.tag == "Record":
                        # Hanging up ends a message: Twilio reports the hang-up, then posts
                        # the recording to the action (Digits=hangup), unless it is empty.
                        await self.close()
                        seconds = TAKES[self.choose() % len(TAKES)]
                        if seconds:
                            await self.post(verb.get("action", ""), Digits="hangup",
                                            RecordingUrl=self.recording_url(),
                                            RecordingDuration=str(int(seconds)))
                    return None  # the status callback in run() tells the app
                following = await getattr(self, f"_{verb.tag.lower()}")(verb)
                if following is not None:
                    return following
                # None: a gather that timed out or an empty recording; Twilio goes on with
                # the next verb (the App always puts a Redirect there).
            else:
                raise AssertionError(f"unexpected TwiML {ET.tostring(verb)!r}")
        return None  # the document ran out: Twilio hangs up

    async def _gather(self, verb: ET.Element) -> ET.Element | None:
        for prompt in verb:
            self.hear(prompt)
        key = KEYS[self.choose() % len(KEYS)]
        if key is None:
            return None
        return await self.answer(verb.get("action", ""), Digits=key)

    async def _record(self, verb: ET.Element) -> ET.Element | None:
        seconds = TAKES[self.choose() % len(TAKES)]
        if not seconds:
            return None  # Twilio drops an empty recording and skips the action
        return await self.answer(verb.get("action", ""), Digits="#",
                                 RecordingUrl=self.recording_url(),
                                 RecordingDuration=str(int(seconds)))

    def recording_url(self) -> str:
        return f"https://api.twilio.com/rec/{self.call_id}-{self.awaits}"

    async def _dial(self, verb: ET.Element) -> ET.Element | None:
        numbers = [n for n in verb if n.tag == "Number"]
        line = LINES[self.choose() % len(LINES)]
        action = verb.get("action", "")
        if line != "answered":
            status = {"busy": "busy", "no_answer": "no-answer", "failed": "failed"}[line]
            return await self.answer(action, DialCallStatus=status)
        self.legs += 1
        leg = f"{self.call_id}-leg-{self.legs}"
        first = numbers[0]
        url = first.get("url")
        if url:  # the whisper, fetched on the answering leg
            whisper = await self.post(url, CallSid=leg, ParentCallSid=self.call_id,
                                      To=(first.text or "").strip(), From=self.number,
                                      Direction="outbound-dial")
            assert all(node.tag in ("Say", "Play") for node in whisper)
        return await self.answer(action, DialCallStatus="completed", DialCallSid=leg,
                                 DialCallDuration="30")



# -- Telnyx ----------------------------------------------------------------------------------

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_ids = itertools.count(1)

AWAITING = ("gather_using_speak", "gather_using_audio", "gather", "record_start")
"""The actions that wait for the caller (a dial is ``POST /v2/calls``)."""


@dataclass
class TelnyxApi:
    """The Call Control REST API the App talks to: hands each action to its call's line."""

    lines: dict[str, TelnyxLine] = field(default_factory=dict)
    """By call_control_id: the caller's leg and every leg dialled from it."""

    async def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer KEY"
        body = json.loads(request.content) if request.content else {}
        path = request.url.path
        if path == "/v2/calls":
            line = self.lines[body["link_to"]]
            return await line.dial_out(body)
        _, _, _, leg, _, name = path.split("/", 5)
        return await self.lines[leg].act(name, leg, body)


@dataclass
class TelnyxLine(_Line):
    """Telnyx Call Control and the phone network for one inbound call.

    Every action is answered ``200`` and its webhooks are sent by a task of their own
    (or, with ``reorder``, reversed and before the response). ``actions`` keeps what the
    App asked for, without the ids that are fresh on every run.
    """

    api: TelnyxApi = field(default_factory=TelnyxApi)
    tg: TaskGroup | None = None
    reorder: bool = False
    actions: list[tuple[str, str]] = field(default_factory=list)
    over: anyio.Event = field(default_factory=anyio.Event)
    clock: datetime = EPOCH
    _states: dict[str, str] = field(default_factory=dict)
    _steps: set[Any] = field(default_factory=set)
    _sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _dialled: int = 0
    _ended: set[str] = field(default_factory=set)

    async def run(self) -> TelnyxLine:
        self.api.lines[self.call_id] = self
        async with anyio.create_task_group() as tg:
            self.tg = tg
            await self.emit([self.event("call.initiated", self.call_id, direction="incoming",
                                        state="")])
            with anyio.fail_after(WAIT_CALL):
                await self.over.wait()
            # What the caller or the app hung up is over; late webhooks may still be in flight.
        if not self.hung_up:
            self.ended_by_app = True
        return self

    def event(self, name: str, leg: str, *, state: str | None = None, **payload: Any
              ) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"call_control_id": leg, "call_leg_id": f"uuid-{leg}",
                                "call_session_id": f"session-{self.call_id}",
                                "connection_id": "conn",
                                "from": CALLER if leg == self.call_id else self.number,
                                "to": self.number if leg == self.call_id else "+34910000000",
                                **payload}
        client_state = self._states.get(leg) if state is None else state
        if client_state:
            body["client_state"] = client_state
        document = {"data": {"record_type": "event", "event_type": name,
                             "id": f"ev-{next(_ids)}",
                             "occurred_at": self.clock.isoformat().replace("+00:00", "Z"),
                             "payload": body}}
        return EVENTS, document

    async def emit(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        if self.reorder:
            events = events[::-1]
        for url, document in events:
            await self.deliver(url, document)
            self._sent.append((url, document))

    async def deliver(self, url: str, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()

        async def send() -> httpx.Response:
            return await self.client.post(url, content=body, headers=telnyx_headers(body))

        for response in await self.deliver_copies(send):
            assert response.status_code == 200, response.text
            assert response.json() == {}

    async def late(self) -> None:
        """An old completion of this call, re-delivered under a new id (a retry, late)."""
        old = [d for _, d in self._sent if d["data"]["event_type"] in _COMPLETIONS]
        if old:
            copy = json.loads(json.dumps(old[len(old) // 2]))
            copy["data"]["id"] = f"ev-late-{next(_ids)}"
            await self.deliver(EVENTS, copy)

    def send_later(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        assert self.tg is not None
        self.tg.start_soon(self.emit, events)

    async def act(self, name: str, leg: str, body: dict[str, Any]) -> httpx.Response:
        assert body.get("command_id"), (name, body)
        if not (name == "hangup" and leg != self.call_id):
            # Which dialled legs the App hangs up itself (rather than see them end) depends on
            # when their own webhooks arrive: no part of what the call did.
            self.actions.append((name, _visible(body, self.call_id)))
        if body.get("client_state"):
            self._states[leg] = body["client_state"]
        events = self.outcome(name, leg, body)
        if self.reorder:
            await self.emit(events)  # the completion overtakes the response
        else:
            self.send_later(events)
        return httpx.Response(200, json={"data": {"result": "ok"}})

    def reaches(self, body: dict[str, Any]) -> bool | None:
        """An await the flow reached (None: a re-issue of one already counted)."""
        step = body.get("client_state")
        step = _step_of(step)
        if step in self._steps:
            return None
        self._steps.add(step)
        return self.reaches_an_await()

    def outcome(self, name: str, leg: str, body: dict[str, Any]
                ) -> list[tuple[str, dict[str, Any]]]:
        if name == "answer":
            return [self.event("call.answered", leg)]
        if name == "speak":
            self.heard.append(body["payload"])
            return [self.event("call.speak.started", leg),
                    self.event("call.speak.ended", leg, status="completed")]
        if name == "playback_start":
            self.heard.extend([body["audio_url"]] * int(body.get("loop", 1)))
            return [self.event("call.playback.ended", leg, status="completed")]
        if name in AWAITING:
            if "payload" in body:
                self.heard.append(body["payload"])
            elif "audio_url" in body:
                self.heard.append(body["audio_url"])
            reached = self.reaches(body)
            if reached:
                return self.hang_up(self.call_id, by_caller=True)
            if name == "record_start":
                return self.recording(leg)
            key = KEYS[self.choose() % len(KEYS)]
            events = [self.event("call.gather.ended", leg, digits=key or "",
                                 status="valid" if key else "timeout")]
            self.after_answer()
            return events
        if name in ("hangup", "reject"):
            return self.hang_up(leg, by_caller=False)
        if name == "bridge":
            other = body["call_control_id"]
            self.clock += timedelta(seconds=30)
            return [self.event("call.bridged", leg), self.event("call.bridged", other),
                    *self.hang_up(other, by_caller=False, cause="normal_clearing")]
        return []  # record_stop, gather_stop, playback_stop

    def recording(self, leg: str) -> list[tuple[str, dict[str, Any]]]:
        seconds = TAKES[self.choose() % len(TAKES)]
        start = self.clock
        self.clock += timedelta(seconds=seconds)
        self.after_answer()
        if not seconds:
            return [self.event("call.recording.error", leg, reason="no_audio")]
        return [self.event("call.recording.saved", leg, channels="single",
                           recording_urls={"wav": f"https://telnyx.example/{self.call_id}/"
                                                  f"{self.awaits}.wav"},
                           recording_started_at=start.isoformat(),
                           recording_ended_at=self.clock.isoformat())]

    def after_answer(self) -> None:
        if self.stale:
            self.send_later_late()

    def send_later_late(self) -> None:
        assert self.tg is not None
        self.tg.start_soon(self.late)

    async def dial_out(self, body: dict[str, Any]) -> httpx.Response:
        self._dialled += 1
        leg = f"{self.call_id}-leg-{self._dialled}"
        self.api.lines[leg] = self
        self.actions.append(("dial", _visible(body, self.call_id)))
        self._states[leg] = body.get("client_state", "")
        reached = self.reaches(body)
        events: list[tuple[str, dict[str, Any]]] = []
        if reached:
            events = self.hang_up(self.call_id, by_caller=True)
        else:
            # Only the first number of a dial is drawn for; the others do not answer.
            first = _index_of(body.get("client_state")) == 0
            line = LINES[self.choose() % len(LINES)] if first else "no_answer"
            events = [self.event("call.initiated", leg, direction="outgoing")]
            if line == "answered":
                events.append(self.event("call.answered", leg))
            else:
                cause = {"busy": "user_busy", "no_answer": "timeout",
                         "failed": "unallocated_number"}[line]
                self._ended.add(leg)
                events.append(self.event("call.hangup", leg, hangup_cause=cause))
            if first:
                self.after_answer()
        self.send_later(events)
        return httpx.Response(200, json={"data": {"call_control_id": leg,
                                                  "call_leg_id": f"uuid-{leg}"}})

    def hang_up(self, leg: str, *, by_caller: bool, cause: str = "normal_clearing"
                ) -> list[tuple[str, dict[str, Any]]]:
        if leg in self._ended:
            return []
        self._ended.add(leg)
        if leg == self.call_id:
            self.hung_up = self.hung_up or by_caller
            self.over.set()
        return [self.event("call.hangup", leg, hangup_cause=cause,
                           hangup_source="caller" if by_caller else "callee")]


WAIT_CALL = 10.0
_COMPLETIONS = ("call.speak.ended", "call.gather.ended", "call.playback.ended",
                "call.recording.saved", "call.answered", "call.bridged")


def _state(encoded: str | None) -> dict[str, Any]:
    if not encoded:
        return {}
    value: dict[str, Any] = json.loads(base64.b64decode(encoded))
    return value


def _step_of(encoded: str | None) -> Any:
    """Which await an action is for: a gather's or record's step, a dial's command."""
    state = _state(encoded)
    return ("s", state["s"]) if "s" in state else ("n", state.get("n"))


def _index_of(encoded: str | None) -> Any:
    return _state(encoded).get("i", 0)


def _visible(body: dict[str, Any], call_id: str) -> str:
    """An action's body as any call would send it: without what is fresh on each run (its
    command_id), its client_state decoded, the call's own id replaced."""
    shown = {k: v for k, v in body.items() if k != "command_id"}
    if "client_state" in shown:
        shown["client_state"] = _state(shown["client_state"])
    return json.dumps(shown, sort_keys=True).replace(call_id, "<call>")
