"""The Telnyx Call Control platform: the adapter as pure functions, then whole calls.

Webhooks are signed with a real Ed25519 key pair (``cryptography``).  Whole calls run
the App over ``httpx.ASGITransport`` against ``FakeTelnyx``, a scripted Call Control
API that takes the app's REST actions and answers with signed webhooks, which it can
duplicate, reorder and re-deliver late, as the real one does.  Outcomes are compared
with ``FakeCall``'s, the neutral reference.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskGroup
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from callflow import (
    App,
    Call,
    CallEnded,
    Conference,
    ConferenceOptions,
    ConfigurationError,
    DialResult,
    Hangup,
    NotificationError,
    OutboundCallResult,
    Say,
    Settings,
    UnsupportedFeature,
)
from callflow._loader import load_app
from callflow.platforms import Telnyx, Webhook, get_platform
from callflow.platforms._telnyx import _decode_state, _encode_state
from callflow.testing import FakeCall

PUBLIC = "https://app.example"
SECRET = "s3cret"
EVENTS = f"{PUBLIC}/callflow/{SECRET}/events"
FALLBACK = f"{PUBLIC}/callflow/{SECRET}/fallback"
NUMBER = "+34900000001"
CALLER = "+34600000001"
CALL = "v3:caller-leg"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

KEY = Ed25519PrivateKey.generate()
PUBLIC_KEY = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                              ).decode()
ADAPTER = Telnyx(api_key="KEY", public_key=PUBLIC_KEY, connection_id="conn-1")


def sign(body: bytes, *, at: int | None = None, key: Ed25519PrivateKey = KEY) -> dict[str, str]:
    stamp = int(time.time()) if at is None else at
    signature = key.sign(f"{stamp}|".encode() + body)
    return {"telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "telnyx-timestamp": str(stamp)}


def event(name: str, *, leg: str = CALL, state: dict[str, Any] | None = None,
          id: str | None = None, at: datetime = EPOCH, **payload: Any) -> dict[str, Any]:
    """A Telnyx v2 webhook body, shaped as the callback reference shows it."""
    body: dict[str, Any] = {"call_control_id": leg, "call_leg_id": f"uuid-{leg}",
                            "call_session_id": "session-1", "connection_id": "conn-1",
                            "from": CALLER, "to": NUMBER, **payload}
    if state is not None:
        body["client_state"] = _encode_state(state)
    return {"data": {"record_type": "event", "event_type": name,
                     "id": id or f"ev-{next(_ids)}",
                     "occurred_at": at.isoformat().replace("+00:00", "Z"),
                     "payload": body}}


_ids = itertools.count(1)


def hook(document: dict[str, Any], *, headers: dict[str, str] | None = None,
         received_at: float | None = None) -> Webhook:
    body = json.dumps(document).encode()
    now = time.time() if received_at is None else received_at
    return Webhook("POST", EVENTS, "/callflow/s3cret/events", {},
                   sign(body, at=int(now)) if headers is None else headers, body, now)


# -- signatures -------------------------------------------------------------------------------


def test_a_signed_webhook_is_accepted() -> None:
    ADAPTER.verify(hook(event("call.initiated", direction="incoming")))


def test_a_pem_public_key_works_too() -> None:
    pem = KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    Telnyx(public_key=pem.decode()).verify(hook(event("call.answered")))


@pytest.mark.parametrize("forgery", ["missing", "other_key", "altered", "stale", "future",
                                     "garbage"])
def test_forged_stale_or_missing_signatures_are_403(forgery: str) -> None:
    document = event("call.initiated", direction="incoming")
    body = json.dumps(document).encode()
    now = time.time()
    headers = {
        "missing": {},
        "other_key": sign(body, key=Ed25519PrivateKey.generate()),
        "altered": sign(body.replace(b"incoming", b"outgoing")),
        "stale": sign(body, at=int(now) - 301),
        "future": sign(body, at=int(now) + 301),
        "garbage": {"telnyx-signature-ed25519": "%%%", "telnyx-timestamp": "soon"},
    }[forgery]
    with pytest.raises(NotificationError) as info:
        ADAPTER.verify(Webhook("POST", EVENTS, "/", {}, headers, body, now))
    assert (info.value.status, info.value.code) == (403, "bad_signature")


def test_the_tolerance_window_is_a_setting() -> None:
    document = event("call.answered")
    body = json.dumps(document).encode()
    now = time.time()
    lenient = Telnyx(public_key=PUBLIC_KEY, tolerance=3600)
    lenient.verify(Webhook("POST", EVENTS, "/", {}, sign(body, at=int(now) - 1800), body, now))


def test_a_bad_public_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a base64 Ed25519 key"):
        Telnyx(public_key="not a key")
    with pytest.raises(ConfigurationError, match="telnyx_public_key"):
        get_platform(Settings(platform="telnyx", telnyx_api_key="KEY",
                              telnyx_connection_id="conn-1"))


# -- parsing ------------------------------------------------------------------------------------


def test_an_incoming_call() -> None:
    [e] = ADAPTER.parse(hook(event("call.initiated", id="ev-1", direction="incoming",
                                   state=None)))
    assert (e.kind, e.call_id, e.leg_id, e.caller, e.callee, e.id, e.name) == (
        "incoming", CALL, CALL, CALLER, NUMBER, "ev-1", "call.initiated")
    assert e.timestamp == "2024-01-01T00:00:00Z"


def test_a_dialled_leg_belongs_to_the_call_in_its_client_state() -> None:
    [e] = ADAPTER.parse(hook(event("call.initiated", leg="v3:leg-2", direction="outgoing",
                                   state={"c": CALL, "n": 7, "i": 0})))
    assert (e.kind, e.call_id, e.leg_id) == ("ringing", CALL, "v3:leg-2")


@pytest.mark.parametrize(("cause", "kind"), [
    ("normal_clearing", "hangup"), ("user_busy", "busy"), ("call_rejected", "busy"),
    ("timeout", "no_answer"), ("no_answer", "no_answer"), ("not_found", "unreachable"),
    ("originator_cancel", "hangup"),
])
def test_hangup_causes(cause: str, kind: str) -> None:
    [e] = ADAPTER.parse(hook(event("call.hangup", hangup_cause=cause, hangup_source="caller")))
    assert (e.kind, e.reason) == (kind, cause)


def test_gather_ended_and_recording_saved() -> None:
    [gathered] = ADAPTER.parse(hook(event("call.gather.ended", digits="123", status="valid",
                                          state={"c": CALL, "n": 3, "s": 2})))
    assert (gathered.kind, gathered.digits, gathered.reason, gathered.step) == (
        "digits", "123", "valid", 2)
    [saved] = ADAPTER.parse(hook(event(
        "call.recording.saved", recording_urls={"wav": "https://x/r.wav", "mp3": "https://x/r.mp3"},
        recording_started_at="2024-01-01T00:00:01Z", recording_ended_at="2024-01-01T00:00:08.5Z")))
    assert (saved.kind, saved.recording_url, saved.duration) == (
        "recording_stopped", "https://x/r.wav", 7.5)


def test_a_conference_webhook_is_the_participants_whatever_its_client_state() -> None:
    """Conference webhooks carry the owner's client_state: the participant's leg, not the
    state, says whose call a participant.left is."""
    owner = {"c": "v3:owner", "n": 4, "s": 1}
    [left] = ADAPTER.parse(hook(event("conference.participant.left", leg="v3:joiner",
                                      state=owner, conference_id="conf-1")))
    assert (left.call_id, left.leg_id) == ("v3:joiner", "v3:joiner")
    [spoken] = ADAPTER.parse(hook(event("call.speak.ended", leg="v3:leg-2", state=owner)))
    assert spoken.call_id == "v3:owner"  # a call's own events still go by their tag


@pytest.mark.parametrize(("asked", "sent"), [(300, 300), (2, 5), (900, 600), (30.2, 31)])
def test_a_dial_rings_as_long_as_telnyx_allows(asked: float, sent: int) -> None:
    request = ADAPTER.create_call_request(to="+34910000001", caller_id=NUMBER,
                                          callback_url=EVENTS, timeout=asked)
    assert request.json["timeout_secs"] == sent


def test_every_command_has_a_command_id_of_its_own() -> None:
    """Telnyx ignores a command_id it saw in the last 60 s, whatever the call."""
    from callflow.platforms._telnyx import _command_id

    assert len({_command_id() for _ in range(1000)}) == 1000


def test_events_callflow_has_no_kind_for_are_other() -> None:
    [bridged] = ADAPTER.parse(hook(event("call.bridged")))
    assert (bridged.kind, bridged.name) == ("other", "call.bridged")
    assert ADAPTER.parse(hook({"data": {"event_type": "conference.created", "id": "x",
                                        "payload": {"conference_id": "c"}}})) == []


def test_client_state_that_is_not_ours_is_ignored() -> None:
    foreign = base64.b64encode(b"have a nice day =]").decode()
    document = event("call.answered")
    document["data"]["payload"]["client_state"] = foreign
    [e] = ADAPTER.parse(hook(document))
    assert e.call_id == CALL
    assert _decode_state(foreign) == {} and _decode_state(None) == {}
    assert _decode_state(_encode_state({"c": "x", "n": 1})) == {"c": "x", "n": 1}


@pytest.mark.parametrize(("body", "code"), [
    (b"{nope", "malformed_json"), (b"[]", "malformed_json"),
    (b'{"data": {"id": "x"}}', "missing_field"),
])
def test_bad_webhooks_are_400(body: bytes, code: str) -> None:
    with pytest.raises(NotificationError) as info:
        ADAPTER.parse(Webhook("POST", EVENTS, "/", {}, {}, body))
    assert (info.value.status, info.value.code) == (400, code)


def test_replies_are_always_an_empty_json_object() -> None:
    reply = ADAPTER.reply([Say("Hi"), Hangup()], url_for=str, first=True)
    assert (reply.status, reply.body, reply.content_type) == (200, b"{}", "application/json")


@pytest.mark.parametrize("option", ["speak_on_enter", "speak_on_exit", "play_on_exit"])
def test_what_telnyx_cannot_do(option: str) -> None:
    value: Any = "Hi" if option.startswith("speak") else "https://media.test/bye.wav"
    command = Conference(1, name="r", options=ConferenceOptions(**{option: value}))
    with pytest.raises(UnsupportedFeature) as info:
        ADAPTER.check(command)
    assert (info.value.verb, info.value.platform, info.value.option) == (
        "conference", "telnyx", option)


def test_a_member_limit_and_ending_on_exit_are_telnyx_options() -> None:
    """max_participants on the room, end_conference_on_exit on joining (or an explicit
    end by its creator): nothing to refuse."""
    ADAPTER.check(Conference(1, name="r", options=ConferenceOptions(end_on_exit=True,
                                                                    max_members=5)))


def test_gone_calls_are_told_from_other_refusals() -> None:
    def error(status: int, body: dict[str, Any]) -> Any:
        return ADAPTER.error(httpx.Response(status, json=body))

    ended = {"errors": [{"code": "90018", "title": "Call has already ended"}]}
    assert error(422, ended).gone
    assert error(404, {}).gone
    assert not error(422, {"errors": [{"code": "90015", "title": "Invalid value"}]}).gone
    assert not error(500, {}).gone


# -- a scripted Telnyx --------------------------------------------------------------------------


@dataclass
class Leg:
    id: str
    number: str
    url: str
    state: str | None = None
    answered_at: datetime | None = None
    ended: bool = False


@dataclass
class FakeTelnyx:
    """Telnyx Call Control and its network, in-process: REST actions in, webhooks out.

    ``keys`` answer gathers in order (None: silence, "hangup": the caller hangs up,
    "wait": no answer yet); ``dial`` says what each number does ("answered", "busy",
    "no-answer").  ``duplicate`` delivers every webhook twice; ``reorder`` delivers
    each action's webhooks in reverse order, before the action's own response; ``late``
    re-delivers an old completion under a new id after every action.
    """

    keys: list[str | None] = field(default_factory=list)
    dial: dict[str, str] = field(default_factory=dict)
    talk: int = 10
    duplicate: bool = False
    reorder: bool = False
    late: bool = False
    mute: set[str] = field(default_factory=set)
    """Webhooks that never arrive (lost), by event type."""
    client: httpx.AsyncClient | None = None
    tg: TaskGroup | None = None
    heard: list[str] = field(default_factory=list)
    whispered: list[str] = field(default_factory=list)
    actions: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    legs: dict[str, Leg] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    clock: datetime = EPOCH
    over: anyio.Event = field(default_factory=anyio.Event)
    legs_made: int = 0
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def until(self, done: Any) -> None:
        """Wait until ``done()`` is true, checking after each action the app takes."""
        while not done():
            self.changed = anyio.Event()
            await self.changed.wait()

    # -- the phone network side --

    async def ring(self, leg: str = CALL, number: str = NUMBER) -> None:
        """A caller dials ``number``: Telnyx posts call.initiated for the new leg."""
        self.legs[leg] = Leg(leg, CALLER, EVENTS)
        await self.emit([self.event("call.initiated", self.legs[leg], direction="incoming",
                                    to=number, state="")])

    def event(self, name: str, leg: Leg, *, state: str | None = None, **payload: Any
              ) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"call_control_id": leg.id, "call_leg_id": f"uuid-{leg.id}",
                                "call_session_id": "session-1", "connection_id": "conn-1",
                                "from": CALLER if leg.id == CALL else NUMBER,
                                "to": NUMBER if leg.id == CALL else leg.number, **payload}
        client_state = leg.state if state is None else state
        if client_state:
            body["client_state"] = client_state
        document = {"data": {"record_type": "event", "event_type": name,
                             "id": f"ev-{next(_ids)}",
                             "occurred_at": self.clock.isoformat().replace("+00:00", "Z"),
                             "payload": body}}
        return leg.url, document

    async def emit(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        if self.reorder:
            events = events[::-1]
        for url, document in events:
            if document["data"]["event_type"] in self.mute:
                continue
            for _ in range(2 if self.duplicate else 1):
                await self.deliver(url, document)
            self.sent.append(document)
        if self.late and len(self.sent) > 3:
            old = json.loads(json.dumps(self.sent[-4]))
            old["data"]["id"] = f"ev-late-{next(_ids)}"  # a new id: only its tag betrays it
            await self.deliver(EVENTS, old)

    async def deliver(self, url: str, document: dict[str, Any]) -> None:
        assert self.client is not None
        body = json.dumps(document).encode()
        response = await self.client.post(url, content=body, headers={
            "content-type": "application/json", **sign(body)})
        assert response.status_code == 200, response.text
        assert response.json() == {}

    # -- the REST side --

    async def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer KEY"
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        if request.method == "GET" and path == "/v2/conferences":
            return httpx.Response(200, json={"data": []})
        if path.startswith("/v2/call_control_applications/"):
            self.actions.append((request.method, path, body))
            return httpx.Response(200, json={"data": {"application_name": "acme"}})
        if path == "/v2/conferences":
            self.actions.append(("conference", body["call_control_id"], body))
            self.changed.set()
            return httpx.Response(200, json={"data": {"id": "conf-1"}})
        if path == "/v2/calls":
            return await self.dial_out(body)
        _, _, _, leg_id, _, name = path.split("/", 5)
        leg = self.legs[leg_id]
        self.actions.append((name, leg_id, body))
        self.changed.set()
        if body.get("client_state"):
            leg.state = body["client_state"]
        events = self.act(name, leg, body)
        if self.reorder:
            await self.emit(events)  # the completion overtakes the response
        else:
            assert self.tg is not None
            self.tg.start_soon(self.emit, events)
        return httpx.Response(200, json={"data": {"result": "ok"}})

    async def dial_out(self, body: dict[str, Any]) -> httpx.Response:
        self.legs_made += 1
        leg = Leg(f"v3:leg-{self.legs_made}", body["to"], body["webhook_url"],
                  body.get("client_state"))
        self.legs[leg.id] = leg
        self.actions.append(("dial", leg.id, body))
        self.changed.set()
        outcome = self.dial.get(leg.number, "answered" if "link_to" not in body else "no-answer")
        events = [self.event("call.initiated", leg, direction="outgoing")]
        if outcome == "answered":
            leg.answered_at = self.clock
            events.append(self.event("call.answered", leg))
        else:
            leg.ended = True
            cause = {"busy": "user_busy", "no-answer": "timeout"}[outcome]
            events.append(self.event("call.hangup", leg, hangup_cause=cause))
        assert self.tg is not None
        self.tg.start_soon(self.emit, events)
        return httpx.Response(200, json={"data": {"call_control_id": leg.id,
                                                  "call_leg_id": f"uuid-{leg.id}"}})

    def act(self, name: str, leg: Leg, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        heard = self.heard if leg.id == CALL else self.whispered
        if name == "answer":
            return [self.event("call.answered", leg)]
        if name == "speak":
            heard.append(body["payload"])
            return [self.event("call.speak.started", leg), self.event("call.speak.ended", leg,
                                                                       status="completed")]
        if name == "playback_start":
            heard.extend([f"play:{body['audio_url']}"] * int(body.get("loop", 1)))
            return [self.event("call.playback.ended", leg, status="completed")]
        if name.startswith("gather"):
            if "payload" in body:
                heard.append(body["payload"])
            elif "audio_url" in body:
                heard.append(f"play:{body['audio_url']}")
            keys = self.keys.pop(0) if self.keys else None
            if keys == "wait":
                return []
            if keys == "hangup":
                return self.hang_up(leg, "normal_clearing")
            term = body.get("terminating_digit", "#")
            digits = (keys or "").removesuffix(term) if keys else ""
            return [self.event("call.gather.ended", leg, digits=digits,
                               status="valid" if keys else "timeout")]
        if name == "record_start":
            start = self.clock
            self.clock += timedelta(seconds=5)
            return [self.event("call.recording.saved", leg, channels="single",
                               recording_urls={"wav": "https://telnyx.example/r/1.wav"},
                               recording_started_at=start.isoformat(),
                               recording_ended_at=self.clock.isoformat())]
        if name == "bridge":
            other = self.legs[body["call_control_id"]]
            events = [self.event("call.bridged", leg), self.event("call.bridged", other)]
            self.clock += timedelta(seconds=self.talk)
            return events + self.hang_up(other, "normal_clearing")
        if name in ("hangup", "reject"):
            return self.hang_up(leg, "normal_clearing" if name == "hangup" else "call_rejected")
        return []  # playback_stop, gather_stop, record_stop

    def hang_up(self, leg: Leg, cause: str) -> list[tuple[str, dict[str, Any]]]:
        if leg.ended:
            return []
        leg.ended = True
        if leg.id == CALL:
            self.over.set()
        return [self.event("call.hangup", leg, hangup_cause=cause, hangup_source="caller")]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [body for action, _, body in self.actions if action == name]


def telnyx_app(app: App | None = None, **settings: Any) -> App:
    app = app or App()
    app.configure(Settings(platform="telnyx", public_url=PUBLIC, secret=SECRET,
                           telnyx_api_key="KEY", telnyx_public_key=PUBLIC_KEY,
                           telnyx_connection_id="conn-1", **settings))
    return app


@asynccontextmanager
async def serve(app: App, fake: FakeTelnyx) -> AsyncIterator[httpx.AsyncClient]:
    app._transport = httpx.MockTransport(fake.handler)
    async with app, httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                      base_url=PUBLIC) as client, \
            anyio.create_task_group() as tg:
        fake.client, fake.tg = client, tg
        yield client


async def run_call(app: App, fake: FakeTelnyx, number: str = NUMBER) -> Call:
    calls: list[Call] = []
    original = app._new_session

    def keep(*args: Any) -> Any:
        session = original(*args)
        if session is not None:
            calls.append(session.call)
        return session

    app._new_session = keep  # type: ignore[method-assign]
    async with serve(app, fake):
        await fake.ring(number=number)
        with anyio.fail_after(5):
            await fake.over.wait()
            await app.wait_ended(CALL)
            await anyio.wait_all_tasks_blocked()
    assert app.sessions == {}
    assert app._runners == {}
    [call] = calls
    return call


async def reference(keys: list[str | None], dial: dict[str, str]) -> FakeCall:
    fake = FakeCall(load_app(EXAMPLES / "ivr.py").get_flow().func, callee=NUMBER)
    for key in keys:
        (fake.press(key) if key else fake.silence())
    for number, status in dial.items():
        fake.on_dial(number, "no_answer" if status == "no-answer" else status,  # type: ignore[arg-type]
                     talk=10)
    return await fake.run()


IVR_SCENARIOS = {
    "sales-answered": (["1"], {"+34910000001": "answered"}),
    "support-busy": (["2"], {"+34910000002": "busy", "+34910000003": "busy",
                             "+34910000004": "busy"}),
    "support-third-answers": (["2"], {"+34910000002": "busy", "+34910000003": "no-answer",
                                      "+34910000004": "answered"}),
    "hours-after-a-wrong-key": (["9", "3"], {}),
    "silence": ([None, None, None], {}),
}


async def check_ivr(scenario: str, **network: Any) -> FakeTelnyx:
    keys, dial = IVR_SCENARIOS[scenario]
    fake = FakeTelnyx(keys=list(keys), dial=dict(dial), **network)
    call = await run_call(telnyx_app(load_app(EXAMPLES / "ivr.py")), fake)
    expected = await reference(keys, dial)
    assert fake.heard == expected.heard
    assert call.data["choice"] == expected.call.data["choice"]
    if "dial" in expected.call.data:
        want: DialResult = expected.call.data["dial"]
        got: DialResult = call.data["dial"]
        assert (got.status, got.number, got.duration) == (want.status, want.number,
                                                          want.duration)
        if got.answered:
            assert fake.whispered == [f"A caller for {call.data['choice']}."]
    return fake


@pytest.mark.anyio
@pytest.mark.parametrize("scenario", sorted(IVR_SCENARIOS))
async def test_the_ivr_example_on_telnyx_matches_the_reference(scenario: str) -> None:
    fake = await check_ivr(scenario)
    [answer] = fake.named("answer")
    assert answer["command_id"] and _decode_state(answer["client_state"])["c"] == CALL
    assert fake.named("hangup")[-1]["command_id"]


@pytest.mark.anyio
@pytest.mark.parametrize("scenario", ["sales-answered", "support-third-answers",
                                      "hours-after-a-wrong-key"])
@pytest.mark.parametrize("network", ["duplicate", "reorder", "late", "all"])
async def test_duplicated_reordered_and_late_webhooks_change_nothing(scenario: str,
                                                                     network: str) -> None:
    flags = {"duplicate": network in ("duplicate", "all"), "reorder": network in ("reorder", "all"),
             "late": network in ("late", "all")}
    await check_ivr(scenario, **flags)


@pytest.mark.anyio
async def test_the_ivr_actions_on_the_wire() -> None:
    fake = await check_ivr("sales-answered")
    gather = fake.named("gather_using_speak")[0]
    assert {k: v for k, v in gather.items() if k not in ("client_state", "command_id")} == {
        "payload": "For sales, press 1. For support, press 2. For our opening hours, press 3.",
        "voice": "female", "language": "en-US", "minimum_digits": 1, "maximum_digits": 1,
        "valid_digits": "0123456789*#", "inter_digit_timeout_millis": 5000,
        "terminating_digit": "#", "timeout_millis": 5000, "maximum_tries": 1,
    }
    assert _decode_state(gather["client_state"])["s"] == 1
    [dial] = fake.named("dial")
    assert {k: v for k, v in dial.items() if k not in ("client_state", "command_id")} == {
        "connection_id": "conn-1", "to": "+34910000001", "from": NUMBER,
        "webhook_url": EVENTS, "webhook_url_method": "POST", "timeout_secs": 25,
        "link_to": CALL,
    }
    [bridge] = fake.named("bridge")
    assert (bridge["call_control_id"], bridge["park_after_unbridge"]) == ("v3:leg-1", "self")
    ids = [body["command_id"] for _, _, body in fake.actions if "command_id" in body]
    assert len(ids) == len(set(ids))


@pytest.mark.anyio
async def test_a_caller_who_hangs_up_mid_menu_ends_the_flow() -> None:
    app = telnyx_app()
    trail: list[Any] = []

    @app.flow(number=NUMBER)
    async def menu(call: Call) -> None:
        try:
            await call.gather(prompt="Press a key.", num_digits=1)
        except CallEnded as exc:
            trail.append(exc.by)

    fake = FakeTelnyx(keys=["hangup"])
    await run_call(app, fake)
    assert trail == ["caller"]
    assert fake.named("hangup") == []


@pytest.mark.anyio
async def test_a_slow_flow_goes_on_when_it_is_ready() -> None:
    app = telnyx_app(response_budget=0.05)

    @app.flow(number=NUMBER)
    async def lookup(call: Call) -> None:
        await anyio.sleep(0.2)  # the CRM is slow
        await call.say("Found it.")

    fake = FakeTelnyx()
    await run_call(app, fake)
    assert fake.heard == ["Found it."]


@pytest.mark.anyio
async def test_a_push_interrupts_the_command_in_progress() -> None:
    app = telnyx_app()
    trail: list[Any] = []

    @app.flow(number=NUMBER)
    async def menu(call: Call) -> None:
        try:
            await call.gather(prompt="Press a key.", num_digits=1)
        except CallEnded as exc:
            trail.append(exc.by)

    fake = FakeTelnyx(keys=["wait"])
    async with serve(app, fake):
        await fake.ring()
        with anyio.fail_after(5):
            await fake.until(lambda: fake.named("gather_using_speak"))
            await app.sessions[CALL].call.hangup()  # from outside the flow
            await fake.over.wait()
    assert [name for name, _, _ in fake.actions] == ["answer", "gather_using_speak",
                                                     "gather_stop", "hangup"]
    assert trail == ["app"]


@pytest.mark.anyio
@pytest.mark.parametrize("lost", ["call.answered", "call.speak.ended", "call.gather.ended"])
async def test_a_lost_completion_ends_the_call_after_the_command_timeout(
        lost: str, caplog: pytest.LogCaptureFixture) -> None:
    """Telnyx does not re-deliver every webhook: a command whose completion never comes
    ends the call (a REST hang-up, an error in the log) instead of waiting for ever."""
    app = telnyx_app(command_timeout=0.2)

    @app.flow(number=NUMBER)
    async def menu(call: Call) -> None:
        await call.say("Hi.")
        await call.gather(num_digits=1, timeout=0.1)

    fake = FakeTelnyx(mute={lost})
    with caplog.at_level(logging.ERROR, logger="callflow"):
        await run_call(app, fake)
    assert [name for name, _, _ in fake.actions][-1] == "hangup"
    assert f"no {lost} within" in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize(("silence", "sent"), [(0, None), (4.2, 5)])
async def test_a_recording_asks_for_silence_detection_only_when_the_flow_does(
        silence: float, sent: int | None) -> None:
    """timeout_secs is billed transcription on Telnyx: not sent for silence_timeout=0."""
    app = telnyx_app()

    @app.flow(number=NUMBER)
    async def message(call: Call) -> None:
        await call.record(max_length=30, silence_timeout=silence)

    fake = FakeTelnyx()
    await run_call(app, fake)
    [start] = fake.named("record_start")
    assert (start.get("timeout_secs"), start["max_length"]) == (sent, 30)


@pytest.mark.anyio
async def test_a_number_nobody_answers_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    app = telnyx_app()

    @app.flow(number="+34900000009")
    async def other(call: Call) -> None:
        pass

    fake = FakeTelnyx()
    with caplog.at_level(logging.ERROR, logger="callflow"):
        async with serve(app, fake):
            await fake.ring()
            with anyio.fail_after(5):
                await fake.over.wait()
    assert [name for name, _, _ in fake.actions] == ["reject"]
    assert app.sessions == {}


@pytest.mark.anyio
async def test_a_flow_that_hangs_up_at_once_rejects_the_call() -> None:
    app = telnyx_app()

    @app.flow(number=NUMBER)
    async def closed(call: Call) -> None:
        await call.hangup("busy")

    fake = FakeTelnyx()
    await run_call(app, fake)
    assert fake.actions[0][0] == "reject" and fake.actions[0][2]["cause"] == "USER_BUSY"


@pytest.mark.anyio
async def test_a_flow_using_what_telnyx_lacks_apologises_and_hangs_up() -> None:
    app = telnyx_app()
    errors: list[UnsupportedFeature] = []

    @app.flow(number=NUMBER)
    async def boss(call: Call) -> None:
        try:
            await call.conference("board", speak_on_enter="Welcome.")
        except UnsupportedFeature as exc:
            errors.append(exc)
            raise

    fake = FakeTelnyx()
    await run_call(app, fake)
    assert str(errors[0]).startswith("telnyx does not support conference(speak_on_enter=...)")
    assert fake.heard == [Settings().apology]
    assert [name for name, _, _ in fake.actions] == ["answer", "speak", "hangup"]


@pytest.mark.anyio
async def test_a_conference_on_telnyx() -> None:
    app = telnyx_app()

    @app.flow(number=NUMBER)
    async def room(call: Call) -> None:
        await call.conference("board", beeps_on_enter=1, mute=True)

    fake = FakeTelnyx()
    async with serve(app, fake):
        await fake.ring()
        with anyio.fail_after(5):
            await fake.until(lambda: fake.named("conference"))
            # The caller leaves the room by hanging up.
            await fake.emit(fake.hang_up(fake.legs[CALL], "normal_clearing"))
            await app.wait_ended(CALL)
    [created] = fake.named("conference")
    assert (created["name"], created["beep_enabled"], created["start_conference_on_create"]) == (
        "board", "on_enter", True)


@pytest.mark.anyio
async def test_voicemail_on_telnyx_records_and_plays_back() -> None:
    app = telnyx_app(load_app(EXAMPLES / "voicemail.py"))
    fake = FakeTelnyx(keys=["1"])
    call = await run_call(app, fake, number="+34900000002")
    [record] = fake.named("record_start")
    assert {k: record[k] for k in ("format", "play_beep", "max_length", "timeout_secs")} == {
        "format": "wav", "play_beep": True, "max_length": 120, "timeout_secs": 5}
    assert "play:https://telnyx.example/r/1.wav" in fake.heard
    assert fake.heard[-1] == "Your message has been saved. Goodbye."
    assert call.caller == CALLER


@pytest.mark.anyio
async def test_an_outbound_call_on_telnyx() -> None:
    app = telnyx_app(load_app(EXAMPLES / "reminder.py"), caller_id=NUMBER)
    fake = FakeTelnyx(keys=["1"])
    results: list[OutboundCallResult] = []
    async with serve(app, fake):
        results.append(await app.call(CALLER, flow="reminder", data={"name": "Ana"}))
        with anyio.fail_after(5):
            await fake.until(lambda: fake.named("hangup"))
    assert results == [OutboundCallResult("v3:leg-1", "answered")]
    [dial] = fake.named("dial")
    assert dial["webhook_url"].startswith(f"{EVENTS}?out=") and "link_to" not in dial
    assert "Hello Ana." in fake.whispered[0]
    assert fake.whispered[-1].startswith("Thank you. Your appointment is confirmed.")


@pytest.mark.anyio
async def test_configure_numbers_points_the_application_at_the_app() -> None:
    app = telnyx_app(load_app(EXAMPLES / "ivr.py"))
    fake = FakeTelnyx()
    async with serve(app, fake):
        assert await app.configure_numbers() == {NUMBER: EVENTS}
    (get, path, _), (patch, _, body) = fake.actions
    assert (get, patch, path) == ("GET", "PATCH", "/v2/call_control_applications/conn-1")
    assert body == {"application_name": "acme", "webhook_event_url": EVENTS,
                    "webhook_api_version": "2", "webhook_event_failover_url": FALLBACK}


@pytest.mark.anyio
async def test_unsigned_webhooks_are_refused_by_the_app() -> None:
    app = telnyx_app(load_app(EXAMPLES / "ivr.py"))
    fake = FakeTelnyx()
    async with serve(app, fake) as client:
        response = await client.post(EVENTS, json=event("call.initiated", direction="incoming"))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "bad_signature"
    assert app.sessions == {} and fake.actions == []


def test_check_platform_on_telnyx(tmp_path: Path) -> None:
    flows = tmp_path / "rooms.py"
    flows.write_text("import callflow\napp = callflow.App()\n"
                     "@app.flow(number='+34900000001')\n"
                     "async def rooms(call):\n"
                     "    await call.conference('r', end_on_exit=True, max_members=5)\n"
                     "    await call.conference('r', speak_on_enter='Hi')\n")
    warnings = telnyx_app(load_app(flows)).check_platform()
    assert [w.split(": ", 1)[1].split(":")[0] for w in warnings] == [
        "telnyx does not support conference(speak_on_enter=...)",
    ]
    assert telnyx_app(load_app(EXAMPLES / "voicemail.py")).check_platform() == []
