"""The simulator's Telnyx Call Control front end.

Two layers: the front end in-process (the simulator and a recording app both over
``httpx.ASGITransport``), driven action by action as a Call Control app would; then
callflow's own App with ``platform="telnyx"`` serving ``examples/ivr.py`` over real sockets
against the simulator, compared with the same call on BlueVia, with and without
duplicated and reordered webhooks.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

import callflow
from callflow import NotificationError
from callflow._loader import load_app
from callflow.platforms import Telnyx, Webhook
from callflow.simulator import (
    Chaos,
    ConfigError,
    Phone,
    SimCall,
    Simulator,
    TelnyxFrontEnd,
    TelnyxWebhook,
    Transcript,
    serve_asgi,
    serve_simulator,
)

NUMBER = "+34900000001"
CALLER = "+34600000001"
AGENT = "+34910000001"
HOOKS = "http://app.test/hooks"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# -- an in-process Call Control app that records what it is sent ----------------------------------


@dataclass
class Hooks:
    """An ASGI app taking webhooks: keeps them, answers ``200 {}`` (``500`` on ``failing``)."""

    received: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        status = 500 if scope["path"] in self.failing else 200
        if status == 200 and scope["method"] == "POST":  # (a GET: the simulator timing audio)
            self.received.append((scope["path"], body, headers))
            self._changed.set()
            self._changed = anyio.Event()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body)["data"] for _, body, _ in self.received]

    def named(self, event_type: str, ccid: str | None = None) -> list[dict[str, Any]]:
        return [e["payload"] for e in self.events if e["event_type"] == event_type
                and (ccid is None or e["payload"].get("call_control_id") == ccid)]

    def types(self, ccid: str | None = None) -> list[str]:
        return [e["event_type"] for e in self.events
                if ccid is None or e["payload"].get("call_control_id") == ccid]

    async def wait(self, event_type: str, ccid: str | None = None, n: int = 1
                   ) -> dict[str, Any]:
        """The ``n``-th ``event_type`` payload (about ``ccid``), once it has arrived."""
        with anyio.fail_after(5):
            while len(found := self.named(event_type, ccid)) < n:
                await self._changed.wait()
        return found[n - 1]


@dataclass
class Rig:
    sim: Simulator
    front: TelnyxFrontEnd
    api: httpx.AsyncClient
    hooks: Hooks

    async def act(self, ccid: str, action: str, **body: Any) -> httpx.Response:
        return await self.api.post(f"/v2/calls/{ccid}/actions/{action}", json=body)

    async def ok(self, ccid: str, action: str, **body: Any) -> None:
        response = await self.act(ccid, action, **body)
        assert response.status_code == 200, response.text
        assert response.json() == {"data": {"result": "ok"}}

    async def call_in(self, script: list[str] | None = None, *, answer: bool = True
                      ) -> tuple[SimCall, str]:
        """An inbound call, up to ``call.initiated`` (and ``call.answered``)."""
        call = await self.sim.place_inbound_call(CALLER, NUMBER, script=script or [])
        ccid = self.front.call_control_id(call)
        await self.hooks.wait("call.initiated", ccid)
        if answer:
            await self.ok(ccid, "answer")
            await self.hooks.wait("call.answered", ccid)
        return call, ccid

    async def dial(self, to: str, **body: Any) -> str:
        body = {"connection_id": self.front.connection_id, "to": to, "from": NUMBER, **body}
        response = await self.api.post("/v2/calls", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["data"]["call_control_id"])

    async def ended(self, call: SimCall) -> Transcript:
        with anyio.fail_after(5):
            transcript = await call.wait_ended()
            await self.front.wait_delivered(call)
        return transcript


@asynccontextmanager
async def rig(**options: Any) -> AsyncIterator[Rig]:
    hooks = Hooks()
    sim = Simulator(http_client=httpx.AsyncClient(transport=httpx.ASGITransport(hooks)))
    front = TelnyxFrontEnd(sim, **options)
    sim.frontend = front
    sim.add_account_number(NUMBER, callback_url=HOOKS)
    api = httpx.AsyncClient(transport=httpx.ASGITransport(sim), base_url="http://sim.test",
                            headers={"Authorization": f"Bearer {front.api_key}"})
    async with sim, api:
        yield Rig(sim, front, api, hooks)


def state(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- webhooks and signatures ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_webhooks_are_signed_for_the_public_key_and_the_apps_own_verifier() -> None:
    async with rig() as t:
        call, ccid = await t.call_in(answer=False)
        _, body, headers = t.hooks.received[0]
        stamp = int(headers["telnyx-timestamp"])
        assert abs(stamp - time.time()) < 5
        signature = base64.b64decode(headers["telnyx-signature-ed25519"])
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(t.front.public_key))
        key.verify(signature, f"{stamp}|".encode() + body)
        with pytest.raises(InvalidSignature):
            key.verify(signature, f"{stamp}|".encode() + body.replace(b"incoming", b"outgoing"))

        adapter = Telnyx(public_key=t.front.public_key)
        hook = Webhook("POST", HOOKS, "/hooks", {}, headers, body, time.time())
        adapter.verify(hook)
        [event] = adapter.parse(hook)
        assert (event.kind, event.call_id, event.caller, event.callee) == (
            "incoming", ccid, CALLER, NUMBER)
        forged = Webhook("POST", HOOKS, "/hooks", {}, headers, body + b" ", time.time())
        with pytest.raises(NotificationError):
            adapter.verify(forged)
        await t.ok(ccid, "hangup")
        await t.ended(call)


@pytest.mark.anyio
async def test_a_webhook_has_telnyx_shape() -> None:
    async with rig() as t:
        call, ccid = await t.call_in(answer=False)
        document = json.loads(t.hooks.received[0][1])
        data = document["data"]
        assert (data["record_type"], data["event_type"]) == ("event", "call.initiated")
        assert data["occurred_at"].endswith("Z") and len(data["id"]) == 36
        assert document["meta"] == {"attempt": 1, "delivered_to": HOOKS}
        payload = data["payload"]
        assert payload["call_control_id"] == ccid == call.call_id and ccid.startswith("v3:")
        assert t.sim.calls[ccid] is call
        assert payload["call_leg_id"] == call.main.leg_id
        assert {k: payload[k] for k in ("connection_id", "from", "to", "direction", "state")} == {
            "connection_id": t.front.connection_id, "from": CALLER, "to": NUMBER,
            "direction": "incoming", "state": "parked"}
        assert "client_state" not in payload
        await t.ok(ccid, "hangup")
        await t.ended(call)


def test_the_private_key_can_be_given() -> None:
    key = Ed25519PrivateKey.generate()
    raw = base64.b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fronts = [TelnyxFrontEnd(Simulator(), private_key=k) for k in (key, raw.decode(), pem)]
    assert len({front.public_key for front in fronts}) == 1
    headers = fronts[1].sign(b"{}", 1700000000)
    assert headers["telnyx-timestamp"] == "1700000000"
    key.public_key().verify(base64.b64decode(headers["telnyx-signature-ed25519"]),
                            b"1700000000|{}")
    with pytest.raises(ConfigError):
        TelnyxFrontEnd(Simulator(), private_key="not a key")
    with pytest.raises(ConfigError):
        TelnyxFrontEnd(Simulator(), duplicate=2)


# -- actions and their events ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_event_of_an_action_echoes_its_client_state() -> None:
    async with rig() as t:
        call, ccid = await t.call_in(answer=False)
        await t.ok(ccid, "answer", client_state=state("a"))
        assert (await t.hooks.wait("call.answered"))["client_state"] == state("a")
        await t.ok(ccid, "speak", payload="Hello there.", voice="female", language="en-US",
                   client_state=state("s"))
        started = await t.hooks.wait("call.speak.started")
        ended = await t.hooks.wait("call.speak.ended")
        assert (started["client_state"], ended["client_state"], ended["status"]) == (
            state("s"), state("s"), "completed")
        await t.ok(ccid, "playback_start", audio_url="http://media.test/bye.mp3", loop=2,
                   client_state=state("p"))
        ended = await t.hooks.wait("call.playback.ended")
        assert (ended["client_state"], ended["media_url"], ended["status"]) == (
            state("p"), "http://media.test/bye.mp3", "completed")
        call.main.hang_up()  # the caller
        hangup = await t.hooks.wait("call.hangup")
        # Not caused by an action: the call's latest client_state ("every subsequent webhook").
        assert (hangup["hangup_cause"], hangup["hangup_source"], hangup["client_state"]) == (
            "normal_clearing", "caller", state("p"))
        transcript = await t.ended(call)
    assert transcript.spoken == ["Hello there."]
    assert transcript.texts("play") == ["http://media.test/bye.mp3"] * 2
    assert t.hooks.types(ccid) == [
        "call.initiated", "call.answered", "call.speak.started", "call.speak.ended",
        "call.playback.started", "call.playback.ended", "call.hangup"]
    assert [e for e in transcript.events() if not e.startswith("call.")] == []


@pytest.mark.anyio
@pytest.mark.parametrize(("action", "options", "script", "digits", "status"), [
    ("gather_using_speak", {"maximum_digits": 5}, ["press:12#"], "12", "valid"),
    ("gather_using_speak", {"maximum_digits": 1, "valid_digits": "123"}, ["press:9"], "9",
     "invalid"),
    ("gather_using_speak", {"timeout_millis": 2000}, [], "", "timeout"),
    ("gather_using_audio", {"maximum_digits": 2}, ["press:45"], "45", "valid"),
    ("gather", {"maximum_digits": 3, "minimum_digits": 2, "inter_digit_timeout_millis": 1000},
     ["press:7"], "7", "invalid"),
    ("gather", {"maximum_digits": 4, "terminating_digit": "*"}, ["press:6*"], "6", "valid"),
])
async def test_gather(action: str, options: dict[str, Any], script: list[str], digits: str,
                      status: str) -> None:
    prompt = {"gather_using_speak": {"payload": "The menu.", "voice": "male",
                                     "language": "en-US"},
              "gather_using_audio": {"audio_url": "http://media.test/menu.wav"},
              "gather": {}}[action]
    async with rig() as t:
        call, ccid = await t.call_in(script)
        await t.ok(ccid, action, **prompt, **options, maximum_tries=1, client_state=state("g"))
        ended = await t.hooks.wait("call.gather.ended")
        assert (ended["digits"], ended["status"], ended["client_state"]) == (
            digits, status, state("g"))
        assert [p["digit"] for p in t.hooks.named("call.dtmf.received")] == list(
            "".join(s.removeprefix("press:") for s in script))
        await t.ok(ccid, "hangup")
        transcript = await t.ended(call)
    assert transcript.spoken == (["The menu."] if action == "gather_using_speak" else [])


@pytest.mark.anyio
async def test_a_gather_tries_again_after_silence_and_the_caller_hanging_up_ends_it() -> None:
    async with rig() as t:
        call, ccid = await t.call_in(["wait:menu", "wait:menu", "press:3"])
        await t.ok(ccid, "gather_using_speak", payload="The menu.", voice="female",
                   language="en-US", maximum_digits=1, timeout_millis=3000, maximum_tries=2)
        assert (await t.hooks.wait("call.gather.ended"))["digits"] == "3"
        await t.ok(ccid, "gather", maximum_digits=1, initial_timeout_millis=60000)
        call.main.hang_up()
        assert (await t.hooks.wait("call.gather.ended", n=2))["status"] == "call_hangup"
        await t.hooks.wait("call.hangup")
        transcript = await t.ended(call)
    assert transcript.spoken == ["The menu.", "The menu."]
    assert t.hooks.types()[-2:] == ["call.gather.ended", "call.hangup"]


@pytest.mark.anyio
async def test_recording_saves_a_real_wav_and_reports_keys() -> None:
    async with rig() as t:
        call, ccid = await t.call_in(["talk:3", "press:#"])
        await t.ok(ccid, "record_start", format="wav", channels="single", play_beep=True,
                   max_length=60, timeout_secs=1, client_state=state("r"))
        dtmf = await t.hooks.wait("call.dtmf.received")
        assert dtmf["digit"] == "#"
        # The app stops the recording on its finish key; simulated time waits for that
        # (reaction_hold), so the 1 s of silence after the key does not end it first.
        await t.ok(ccid, "record_stop")
        saved = await t.hooks.wait("call.recording.saved")
        assert saved["client_state"] == state("r") and saved["channels"] == "single"
        url = saved["recording_urls"]["wav"]
        assert saved["public_recording_urls"] == saved["recording_urls"] == {"wav": url}

        def at(key: str) -> float:
            return time.mktime(time.strptime(saved[key][:19], "%Y-%m-%dT%H:%M:%S")) + float(
                "0" + saved[key][19:-1])

        # The caller talked from 0 s to 3 s, then pressed #; the beep took the first 0.3 s.
        assert at("recording_ended_at") - at("recording_started_at") == pytest.approx(2.7,
                                                                                   abs=0.01)
        wav = await t.api.get(url.replace(str(t.sim.base_url or "http://127.0.0.1"),
                                          "http://sim.test"))
        assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
        # Silence ends a recording too (timeout_secs after the caller's last sound).
        await t.ok(ccid, "record_start", format="mp3", channels="dual", timeout_secs=1)
        saved = await t.hooks.wait("call.recording.saved", n=2)
        assert set(saved["recording_urls"]) == {"wav", "mp3"}
        await t.ok(ccid, "hangup")
        transcript = await t.ended(call)
    assert transcript.texts("beep") == ["beep"]
    assert len(transcript.texts("recording-stopped")) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(("phone", "outcome"), [
    (Phone.busy(), ("call.hangup", "user_busy")),
    (Phone.no_answer(), ("call.hangup", "timeout")),
    (Phone.unreachable(), ("call.hangup", "not_found")),
    (Phone.answers(after=2), ("call.answered", None)),
])
async def test_dialling_out(phone: Phone, outcome: tuple[str, str | None]) -> None:
    async with rig() as t:
        t.sim.add_phone(AGENT, phone)
        call, ccid = await t.call_in()
        leg = await t.dial(AGENT, link_to=ccid, timeout_secs=5, client_state=state("d"),
                           command_id="dial-1")
        initiated = await t.hooks.wait("call.initiated", leg)
        assert (initiated["direction"], initiated["state"], initiated["client_state"],
                initiated["from"], initiated["to"]) == (
            "outgoing", "bridging", state("d"), NUMBER, AGENT)
        assert initiated["call_session_id"] == t.hooks.named("call.initiated", ccid)[0][
            "call_session_id"]  # link_to: one call session
        event, cause = outcome
        payload = await t.hooks.wait(event, leg)
        assert payload["client_state"] == state("d")
        if cause:
            assert payload["hangup_cause"] == cause
            assert (await t.act(leg, "hangup")).json()["errors"][0]["code"] == "90018"
        else:
            await t.ok(leg, "hangup")
            assert (await t.hooks.wait("call.hangup", leg))["hangup_cause"] == "normal_clearing"
        # A retried dial (same command_id) is the same call.
        assert await t.dial(AGENT, link_to=ccid, timeout_secs=5, command_id="dial-1") == leg
        await t.ok(ccid, "hangup")
        transcript = await t.ended(call)
    # The dialled leg shows in the caller's transcript, as a BlueVia dial would.
    assert f"{AGENT} ringing" in transcript.texts("ringing") or cause == "not_found"


@pytest.mark.anyio
@pytest.mark.parametrize("park", [True, False])
async def test_a_bridge_and_what_is_left_when_one_side_hangs_up(park: bool) -> None:
    async with rig() as t:
        t.sim.add_phone(AGENT, Phone.answers(after=1, hang_up_after=5))
        call, ccid = await t.call_in()
        leg = await t.dial(AGENT, link_to=ccid)
        await t.hooks.wait("call.answered", leg)
        await t.ok(leg, "speak", payload="A caller for you.", voice="female", language="en")
        await t.hooks.wait("call.speak.ended", leg)
        options = {"park_after_unbridge": "self"} if park else {}
        await t.ok(ccid, "bridge", call_control_id=leg, client_state=state("b"), **options)
        assert (await t.hooks.wait("call.bridged", ccid))["client_state"] == state("b")
        await t.hooks.wait("call.bridged", leg)
        assert (await t.hooks.wait("call.hangup", leg))["hangup_source"] == "callee"
        if park:
            await t.ok(ccid, "speak", payload="Still here.", voice="female", language="en")
            await t.hooks.wait("call.speak.ended", ccid, n=1)
            await t.ok(ccid, "hangup")
        hangup = await t.hooks.wait("call.hangup", ccid)
        assert hangup["hangup_cause"] == "normal_clearing"
        transcript = await t.ended(call)
    assert transcript.spoken == ["A caller for you."] + (["Still here."] if park else [])
    assert transcript.texts("bridged") == [f"{CALLER} ⇄ {AGENT}"]
    assert not transcript.texts("conference-joined")  # the bridge's room is an inner detail


@pytest.mark.anyio
async def test_transfer_dials_and_bridges_the_new_leg() -> None:
    async with rig() as t:
        t.sim.add_phone(AGENT, Phone.answers(after=1, hang_up_after=3))
        call, ccid = await t.call_in()
        await t.ok(ccid, "transfer", to=AGENT, target_leg_client_state=state("x"))
        initiated = await t.hooks.wait("call.initiated", n=2)
        leg = initiated["call_control_id"]
        assert (initiated["from"], initiated["client_state"]) == (CALLER, state("x"))
        await t.hooks.wait("call.bridged", ccid)
        await t.hooks.wait("call.bridged", leg)
        await t.hooks.wait("call.hangup", leg)
        await t.hooks.wait("call.hangup", ccid)  # no park_after_unbridge: both go
        await t.ended(call)


@pytest.mark.anyio
async def test_conferences() -> None:
    async with rig() as t:
        first, a = await t.call_in()
        second, b = await t.call_in()
        created = await t.api.post("/v2/conferences", json={
            "call_control_id": a, "name": "board", "beep_enabled": "on_enter",
            "client_state": state("c")})
        assert created.status_code == 200, created.text
        room = created.json()["data"]
        assert (room["name"], room["status"], room["record_type"]) == (
            "board", "in_progress", "conference")
        assert (await t.hooks.wait("conference.created"))["conference_id"] == room["id"]
        await t.hooks.wait("conference.participant.joined", a)
        found = await t.api.get("/v2/conferences", params={
            "filter[name]": "board", "filter[status]": "in_progress"})
        assert [c["id"] for c in found.json()["data"]] == [room["id"]]
        joined = await t.api.post(f"/v2/conferences/{room['id']}/actions/join", json={
            "call_control_id": b, "mute": True, "client_state": state("j")})
        assert joined.status_code == 200, joined.text
        # Conference webhooks carry the owner's client_state, whoever they are about.
        assert (await t.hooks.wait("conference.participant.joined", b))["client_state"] == (
            state("c"))
        assert (await t.api.post(f"/v2/conferences/{room['id']}/actions/mute",
                                 json={"call_control_ids": [b]})).status_code == 200
        await t.ok(a, "hangup")
        left = await t.hooks.wait("conference.participant.left", a)
        assert left["conference_id"] == room["id"]
        await t.api.post("/v2/conferences/board/actions/leave", json={"call_control_id": b})
        ended = await t.hooks.wait("conference.ended")
        assert ended["reason"] == "all_left"
        await t.hooks.wait("conference.participant.left", b)
        await t.ok(b, "hangup")
        transcript = await t.ended(second)
        await t.ended(first)
        gone = await t.api.get(f"/v2/conferences/{room['id']}")
    assert gone.json()["data"]["status"] == "completed"
    assert transcript.texts("conference-joined") == [f"{CALLER} joined conference board"]


@pytest.mark.anyio
async def test_a_conference_ends_with_its_host_or_its_time() -> None:
    async with rig() as t:
        first, a = await t.call_in()
        second, b = await t.call_in()
        room = (await t.api.post("/v2/conferences", json={
            "call_control_id": a, "name": "short", "duration_minutes": 1})).json()["data"]
        await t.api.post("/v2/conferences/short/actions/join", json={
            "call_control_id": b, "end_conference_on_exit": True})
        await t.hooks.wait("conference.participant.joined", b)
        await t.ok(b, "hangup")  # the host leaves: everyone else is hung up
        assert (await t.hooks.wait("conference.ended"))["reason"] == "host_left"
        assert (await t.hooks.wait("call.hangup", a))["hangup_cause"] == "normal_clearing"
        await t.ended(first)
        await t.ended(second)
        third, c = await t.call_in()
        await t.api.post("/v2/conferences", json={"call_control_id": c, "name": "short",
                                                   "duration_minutes": 1})
        ended = await t.hooks.wait("conference.ended", n=2)
        assert ended["reason"] == "time_exceeded" and ended["conference_id"] != room["id"]
        await t.ok(c, "hangup")
        transcript = await t.ended(third)
    assert transcript.duration == pytest.approx(60)


@pytest.mark.anyio
@pytest.mark.parametrize(("cause", "expected"), [("USER_BUSY", "user_busy"),
                                                 ("CALL_REJECTED", "call_rejected")])
async def test_reject(cause: str, expected: str) -> None:
    async with rig() as t:
        call, ccid = await t.call_in(answer=False)
        await t.ok(ccid, "reject", cause=cause)
        hangup = await t.hooks.wait("call.hangup")
        assert (hangup["hangup_cause"], hangup["hangup_source"]) == (expected, "callee")
        await t.ended(call)


@pytest.mark.anyio
async def test_stops_and_queued_prompts() -> None:
    async with rig() as t:
        call, ccid = await t.call_in()
        await t.ok(ccid, "speak", payload="One two three.", voice="female", language="en")
        await t.ok(ccid, "speak", payload="Four.", voice="female", language="en")
        await t.hooks.wait("call.speak.ended", n=2)  # queued, played in turn
        await t.ok(ccid, "playback_start", audio_url="http://media.test/hold.wav",
                   loop="infinity")
        await t.hooks.wait("call.playback.started")
        await t.ok(ccid, "playback_stop", stop="all")
        assert (await t.hooks.wait("call.playback.ended"))["status"] == "cancelled"
        await t.ok(ccid, "gather", initial_timeout_millis=60000)
        await t.ok(ccid, "gather_stop")
        assert (await t.hooks.wait("call.gather.ended"))["status"] == "cancelled"
        await t.ok(ccid, "send_dtmf", digits="1234")
        await t.ok(ccid, "hangup")
        transcript = await t.ended(call)
    assert transcript.spoken == ["One two three.", "Four."]


@pytest.mark.anyio
async def test_a_repeated_command_id_is_ignored() -> None:
    async with rig() as t:
        call, ccid = await t.call_in()
        for _ in range(2):
            await t.ok(ccid, "speak", payload="Only once.", voice="female", language="en",
                       command_id="same")
        await t.hooks.wait("call.speak.ended")
        await t.ok(ccid, "hangup", command_id="bye")
        transcript = await t.ended(call)
    assert transcript.spoken == ["Only once."]
    assert len(t.hooks.named("call.speak.started")) == 1


@pytest.mark.anyio
async def test_a_command_id_is_the_accounts_for_60_seconds_whatever_the_call() -> None:
    """"Commands with duplicate command_ids within 60 seconds will be ignored", and Dial
    "will ignore other Dial commands with the same command_id": not one call's, the
    account's."""
    async with rig() as t:
        t.sim.idle_hold = 0.05  # real seconds the simulator waits for the app's next move
        t.sim.add_phone(AGENT, Phone.no_answer())
        first, a = await t.call_in()
        second, b = await t.call_in()
        await t.ok(a, "speak", payload="For the first.", voice="female", command_id="c-1")
        await t.ok(b, "speak", payload="For the second.", voice="female", command_id="c-1")
        await t.hooks.wait("call.speak.ended", a)
        leg = await t.dial(AGENT, link_to=a, timeout_secs=5, command_id="d-1")
        assert await t.dial(AGENT, link_to=b, timeout_secs=5, command_id="d-1") == leg
        await t.hooks.wait("call.hangup", leg)  # nobody answers it within its 5 s
        assert [x.direction for x in t.front.legs.values()].count("outgoing") == 1
        assert t.hooks.named("call.speak.started", b) == []
        for ccid in (a, b):
            await t.ok(ccid, "hangup")
        spoken = [(await t.ended(call)).spoken for call in (first, second)]
        await t.sim.clock.sleep(61)  # the window is over: the same id is a new command
        third, c = await t.call_in()
        await t.ok(c, "speak", payload="Later.", voice="female", command_id="c-1")
        await t.hooks.wait("call.speak.ended", c)
        await t.ok(c, "hangup")
        spoken.append((await t.ended(third)).spoken)
    assert spoken == [["For the first."], [], ["Later."]]


@pytest.mark.anyio
async def test_a_room_not_started_is_init_and_conference_webhooks_carry_the_owners_state(
) -> None:
    async with rig() as t:
        first, a = await t.call_in()
        second, b = await t.call_in()
        created = await t.api.post("/v2/conferences", json={
            "call_control_id": a, "name": "later", "start_conference_on_create": False,
            "max_participants": 2, "client_state": state("owner")})
        room = created.json()["data"]
        assert room["status"] == "init"
        listed = await t.api.get("/v2/conferences", params={"filter[name]": "later",
                                                             "filter[status]": "init"})
        assert [c["id"] for c in listed.json()["data"]] == [room["id"]]
        await t.api.post(f"/v2/conferences/{room['id']}/actions/join", json={
            "call_control_id": b, "start_conference_on_enter": True,
            "client_state": state("joiner")})
        joined = await t.hooks.wait("conference.participant.joined", b)
        assert joined["client_state"] == state("owner")
        started = await t.api.get(f"/v2/conferences/{room['id']}")
        assert started.json()["data"]["status"] == "in_progress"
        third, c = await t.call_in()
        full = await t.api.post(f"/v2/conferences/{room['id']}/actions/join",
                                json={"call_control_id": c})
        assert full.status_code == 422  # max_participants: 2
        ended = await t.api.post(f"/v2/conferences/{room['id']}/actions/end", json={})
        assert ended.status_code == 200, ended.text
        left = await t.hooks.wait("conference.participant.left", b)
        assert left["client_state"] == state("owner")
        assert (await t.hooks.wait("conference.ended"))["client_state"] == state("owner")
        await t.hooks.wait("call.hangup", a)  # "terminate all active participants"
        await t.hooks.wait("call.hangup", b)
        await t.ok(c, "hangup")
        for call in (first, second, third):
            await t.ended(call)


@pytest.mark.anyio
async def test_the_silence_timeout_of_a_recording_starts_with_speech() -> None:
    """A caller who never speaks is recorded for the whole max_length: timeout_secs
    counts only after speech."""
    async with rig() as t:
        call, ccid = await t.call_in()
        await t.ok(ccid, "record_start", format="wav", channels="single", max_length=20,
                   timeout_secs=2)
        saved = await t.hooks.wait("call.recording.saved")
        await t.ok(ccid, "hangup")
        await t.ended(call)
    assert Telnyx().parse(Webhook("POST", HOOKS, body=json.dumps(
        {"data": {"event_type": "call.recording.saved", "id": "x",
                  "payload": saved}}).encode()))[0].duration == pytest.approx(20)


@pytest.mark.anyio
async def test_a_recording_url_works_for_ten_minutes() -> None:
    """call.recording.saved URLs are presigned for 600 s (X-Amz-Expires=600)."""
    async with rig() as t:
        call, ccid = await t.call_in(["talk:2"])
        await t.ok(ccid, "record_start", format="wav", channels="single", max_length=2)
        url = (await t.hooks.wait("call.recording.saved"))["recording_urls"]["wav"]
        local = url.replace(str(t.sim.base_url or "http://127.0.0.1"), "http://sim.test")
        assert (await t.api.get(local)).status_code == 200
        await t.ok(ccid, "hangup")
        await t.ended(call)
        await t.sim.clock.sleep(601)
        expired = await t.api.get(local)
    assert (expired.status_code, b"expired" in expired.content) == (403, True)


@pytest.mark.anyio
@pytest.mark.parametrize(("network", "cause"), [(20.0, "no_answer"), (60.0, "timeout")])
async def test_a_number_nobody_answers_ends_by_its_own_clock_or_the_dials(
        network: float, cause: str) -> None:
    """timeout_secs over: "timeout"; the far end giving up first: "no_answer"."""
    async with rig() as t:
        t.sim.outbound_ring_timeout = network
        t.sim.add_phone(AGENT, Phone.no_answer())
        call, ccid = await t.call_in()
        leg = await t.dial(AGENT, link_to=ccid, timeout_secs=30)
        assert (await t.hooks.wait("call.hangup", leg))["hangup_cause"] == cause
        await t.ok(ccid, "hangup")
        await t.ended(call)


@pytest.mark.anyio
async def test_errors() -> None:
    async with rig() as t:
        call, ccid = await t.call_in(answer=False)
        anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(t.sim),
                                      base_url="http://sim.test")
        async with anonymous:
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": f"Basic {t.front.api_key}"}):
                denied = await anonymous.post(f"/v2/calls/{ccid}/actions/answer", json={},
                                              headers=headers)
                assert denied.status_code == 401
                assert denied.json()["errors"][0]["code"] == "10009"
        speak = {"payload": "Hi", "voice": "female"}

        async def error(response: httpx.Response) -> tuple[int, str, str | None]:
            first = response.json()["errors"][0]
            return response.status_code, first["code"], first.get("source", {}).get("pointer")

        assert await error(await t.act(ccid, "speak", **speak)) == (422, "10015", None)
        await t.ok(ccid, "answer")
        assert await error(await t.act(ccid, "speak", voice="female")) == (
            422, "10004", "/payload")
        assert await error(await t.act(ccid, "speak", **speak, client_state="%%")) == (
            422, "10015", "/client_state")
        assert await error(await t.act("v3:nobody", "speak", **speak)) == (404, "10005", None)
        assert await error(await t.act(ccid, "fly")) == (404, "10005", None)
        assert await error(await t.api.post("/v2/calls", json={
            "connection_id": t.front.connection_id, "to": "12", "from": NUMBER})) == (
            422, "10016", "/to")
        assert await error(await t.api.post("/v2/calls", json={
            "connection_id": "other", "to": AGENT, "from": NUMBER})) == (
            422, "10013", "/connection_id")
        bad = await t.api.post(f"/v2/calls/{ccid}/actions/speak", content=b"{nope",
                               headers={"content-type": "application/json"})
        assert await error(bad) == (400, "10023", None)
        assert await error(await t.api.get("/v2/nothing")) == (404, "10005", None)
        await t.ok(ccid, "hangup")
        await t.ended(call)
        assert await error(await t.act(ccid, "speak", **speak)) == (422, "90018", None)
        status = (await t.api.get(f"/v2/calls/{ccid}")).json()["data"]
        assert (status["is_alive"], status["call_control_id"]) == (False, ccid)
        # Paths outside /v2 are not Telnyx's: the simulator's own (BlueVia) API answers.
        assert (await t.api.get("/comms/v1/calls/x")).status_code == 401


@pytest.mark.anyio
async def test_the_call_control_application_and_its_failover_url() -> None:
    async with rig() as t:
        path = f"/v2/call_control_applications/{t.front.connection_id}"
        current = (await t.api.get(path)).json()["data"]
        assert (current["id"], current["webhook_api_version"]) == (
            t.front.connection_id, "2")
        t.hooks.failing.add("/broken")
        patched = await t.api.patch(path, json={
            "application_name": "acme", "webhook_event_url": "http://app.test/broken",
            "webhook_event_failover_url": HOOKS, "webhook_api_version": "2"})
        assert patched.json()["data"]["webhook_event_url"] == "http://app.test/broken"
        assert t.sim.account_numbers[NUMBER].callback_url == "http://app.test/broken"
        assert (await t.api.get("/v2/call_control_applications/other")).status_code == 404
        call, ccid = await t.call_in(answer=False)
        [failed, delivered] = t.front.webhooks(ccid)
        assert (failed.url, failed.status, delivered.url, delivered.status) == (
            "http://app.test/broken", 500, HOOKS, 200)
        assert delivered.document["meta"]["delivered_to"] == HOOKS
        await t.ok(ccid, "hangup")
        await t.ended(call)


@pytest.mark.anyio
async def test_an_app_that_never_answers_is_hung_up_after_the_idle_timeout() -> None:
    async with rig() as t:
        t.sim.idle_hold = 0.05  # real seconds the simulator waits for the app
        call, _ = await t.call_in(answer=False)
        hangup = await t.hooks.wait("call.hangup")
        assert (hangup["hangup_cause"], hangup["hangup_source"]) == ("unspecified", "unknown")
        transcript = await t.ended(call)
    assert transcript.duration == pytest.approx(t.sim.idle_timeout)
    assert "no command from the app" in transcript.texts("error")[0]


@pytest.mark.anyio
async def test_an_unreachable_app_holds_no_time() -> None:
    async with rig() as t:
        t.hooks.failing.add("/hooks")
        call = await t.sim.place_inbound_call(CALLER, NUMBER)
        with anyio.fail_after(3):  # real seconds: no waiting for the app's turn
            transcript = await call.wait_ended()
    assert transcript.duration == pytest.approx(t.sim.idle_timeout)
    assert transcript.texts("error")[0].startswith("call.initiated: HTTP 500")
    assert [hook.status for hook in t.front.sent][:1] == [500]


# -- duplicated and reordered webhooks ------------------------------------------------------------


async def _noisy_call(seed: int) -> list[tuple[str, int, str]]:
    async with rig(duplicate=0.5, reorder=True, seed=seed) as t:
        call, ccid = await t.call_in(["wait:menu", "press:1"])
        for text in ("Welcome.", "Hello.", "The menu."):  # queued: one after the other
            await t.ok(ccid, "speak", payload=text, voice="female", language="en")
        await t.hooks.wait("call.speak.ended", n=3)
        await t.ok(ccid, "gather", maximum_digits=1)
        await t.hooks.wait("call.gather.ended")
        await t.ok(ccid, "hangup")
        await t.ended(call)
    return [(hook.event_type, hook.attempt, hook.data["occurred_at"]) for hook in t.front.sent]


@pytest.mark.anyio
async def test_duplicates_and_reordering_are_repeatable_with_a_seed() -> None:
    def order(run: list[tuple[str, int, str]]) -> list[tuple[str, int]]:
        return [(kind, attempt) for kind, attempt, _ in run]

    first = await _noisy_call(3)
    assert order(first) == order(await _noisy_call(3))
    assert order(first) != order(await _noisy_call(4))
    assert any(attempt == 2 for _, attempt, _ in first)
    # Reordered: a webhook delivered after one about something that happened later.
    stamps = [at for _, _, at in first]
    assert any(a > b for a, b in itertools.pairwise(stamps))
    assert {kind for kind, _, _ in first} >= {"call.speak.started", "call.speak.ended",
                                              "call.gather.ended", "call.hangup"}


# -- callflow's App on Telnyx, end to end over real sockets ----------------------------------------


@dataclass
class Ran:
    transcript: Transcript
    app: callflow.App
    front: TelnyxFrontEnd | None


async def run_ivr(platform: str, phones: dict[str, Phone], script: list[str],
                  chaos: Chaos | None = None) -> Ran:
    sim = Simulator(platform=platform, chaos=chaos)
    for number, phone in phones.items():
        sim.add_phone(number, phone)
    sim.add_account_number(NUMBER)  # the app points it at itself
    app = load_app(EXAMPLES / "ivr.py")
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            await app.configure_numbers()
            call = await sim.place_inbound_call(CALLER, NUMBER, script=script)
            with anyio.fail_after(10):
                transcript = await call.wait_ended()
                await app.wait_ended(call.call_id)  # on Telnyx, its call_control_id
                if isinstance(sim.frontend, TelnyxFrontEnd):
                    await sim.frontend.wait_delivered(call)
    assert app.sessions == {}
    front = sim.frontend if isinstance(sim.frontend, TelnyxFrontEnd) else None
    return Ran(transcript, app, front)


IVR = {
    "sales-answered": (["wait:sales", "press:1"],
                       {AGENT: Phone.answers(after=2, hang_up_after=10)}),
    "sales-busy": (["wait:sales", "press:1"], {AGENT: Phone.busy()}),
    # All three support lines ring at once: one busy, one not answering, one answering.
    "support-third-answers": (["wait:support", "press:2"], {
        "+34910000002": Phone.busy(), "+34910000003": Phone.no_answer(),
        "+34910000004": Phone.answers(after=3, hang_up_after=10)}),
}


@pytest.mark.anyio
@pytest.mark.parametrize("scenario", sorted(IVR))
async def test_the_ivr_on_telnyx_says_what_it_says_on_bluevia(scenario: str) -> None:
    script, phones = IVR[scenario]
    bluevia = await run_ivr("bluevia", phones, script)
    telnyx = await run_ivr("telnyx", phones, script)
    assert telnyx.transcript.spoken == bluevia.transcript.spoken
    assert telnyx.transcript.keys == bluevia.transcript.keys == script[-1][-1]
    assert telnyx.transcript.texts("bridged") == bluevia.transcript.texts("bridged")
    assert telnyx.front is not None
    sent = [hook.event_type for hook in telnyx.front.sent]
    assert sent[0] == "call.initiated" and sent[-1] == "call.hangup"
    assert all(hook.status == 200 for hook in telnyx.front.sent)
    if scenario != "sales-busy":
        assert sent.count("call.bridged") == 2
        assert telnyx.transcript.texts("answered") == bluevia.transcript.texts("answered")


@pytest.mark.anyio
@pytest.mark.parametrize("scenario", sorted(IVR))
async def test_the_ivr_survives_duplicated_and_reordered_webhooks(scenario: str) -> None:
    script, phones = IVR[scenario]
    bluevia = await run_ivr("bluevia", phones, script)
    telnyx = await run_ivr("telnyx", phones, script, Chaos(duplicate=0.3, reorder=1.0, seed=11))
    assert telnyx.transcript.spoken == bluevia.transcript.spoken
    assert telnyx.front is not None
    assert any(hook.attempt == 2 for hook in telnyx.front.sent)
    assert not telnyx.transcript.texts("error")


# -- callflow's App on the simulator: what the provider's docs say, met by the adapter ---------


@asynccontextmanager
async def app_on(sim: Simulator, app: callflow.App, **settings: Any
                 ) -> AsyncIterator[callflow.App]:
    """``app`` served on a real socket, speaking Telnyx to ``sim`` (also served)."""
    sim.add_account_number(NUMBER)
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, **sim.app_settings(),
                                        **settings))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            await app.configure_numbers()
            yield app


def flow_calls(app: callflow.App) -> list[callflow.Call]:
    """The app's Call objects, as sessions start (to read what flows left in ``data``)."""
    calls: list[callflow.Call] = []
    original = app._new_session

    def new_session(*args: Any) -> Any:
        session = original(*args)
        if session is not None:
            calls.append(session.call)
        return session

    app._new_session = new_session  # type: ignore[method-assign]
    return calls


async def wait_entry(sim: Simulator, call: SimCall, kind: str) -> None:
    """Until ``call``'s transcript has an entry of ``kind``."""
    arrived = anyio.Event()

    def observe(observed: SimCall, entry: Any) -> None:
        if observed is call and entry is not None and entry.kind == kind:
            arrived.set()

    sim.observers.append(observe)
    try:
        if not any(e.kind == kind for e in call.transcript.entries):
            await arrived.wait()
    finally:
        sim.observers.remove(observe)


@pytest.mark.anyio
async def test_two_callers_dialling_within_a_minute_both_get_through() -> None:
    """Each command has its own command_id: the second caller's dial is not taken for a
    repeat of the first's (Telnyx ignores a command_id it saw in the last 60 s)."""
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def put_through(call: callflow.Call) -> None:
        call.data["dial"] = await call.dial(AGENT, timeout=20)

    sim = Simulator(platform="telnyx")
    sim.add_phone(AGENT, Phone.answers(after=2, hang_up_after=3))
    calls = flow_calls(app)
    async with app_on(sim, app):
        with anyio.fail_after(20):
            first = await sim.place_inbound_call(CALLER, NUMBER)
            second = await sim.place_inbound_call("+34600000002", NUMBER)
            for call in (first, second):
                await call.wait_ended()
            for flow_call in calls:
                await app.wait_ended(flow_call.id)
    assert [c.data["dial"].status for c in calls] == ["answered", "answered"]


@pytest.mark.anyio
@pytest.mark.parametrize("started", [True, False])
async def test_callers_in_one_conference_meet_and_both_hear_when_it_is_over(
        started: bool) -> None:
    """The first caller makes the room (not started yet: ``init``, when ``started`` is
    false), the second joins it; when its time is up, each participant's
    conference.participant.left (carrying the owner's client_state) ends that caller's
    wait, joiner included."""
    app = callflow.App()
    order: list[str] = []

    @app.flow(number=NUMBER)
    async def board(call: callflow.Call) -> None:
        order.append(call.caller)
        await call.conference("board", start_on_enter=started or len(order) > 1,
                              time_limit=120)
        await call.say("The conference is over.")

    sim = Simulator(platform="telnyx")
    async with app_on(sim, app):
        front = sim.frontend
        assert isinstance(front, TelnyxFrontEnd)
        with anyio.fail_after(20):
            with sim.clock.busy():  # both are in before the room's two minutes run
                first = await sim.place_inbound_call(CALLER, NUMBER)
                await wait_entry(sim, first, "conference-joined")
                second = await sim.place_inbound_call("+34600000002", NUMBER)
                await wait_entry(sim, second, "conference-joined")
            transcripts = [await call.wait_ended() for call in (first, second)]
            for call in (first, second):
                await app.wait_ended(front.call_control_id(call))
    assert len({c.id for c in front.conferences.values()}) == 1
    assert [t.spoken for t in transcripts] == [["The conference is over."]] * 2
    assert [t.duration for t in transcripts] == [pytest.approx(120, abs=2)] * 2


@pytest.mark.anyio
async def test_a_host_who_made_the_room_ends_it_on_leaving() -> None:
    """POST /v2/conferences takes no end_conference_on_exit: a creator with end_on_exit
    ends the room itself when it leaves, and everyone in it is hung up."""
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def board(call: callflow.Call) -> None:
        await call.conference("board", end_on_exit=call.caller == CALLER)
        await call.say("Still here.")

    sim = Simulator(platform="telnyx")
    async with app_on(sim, app):
        front = sim.frontend
        assert isinstance(front, TelnyxFrontEnd)
        with anyio.fail_after(20):
            with sim.clock.busy():
                host = await sim.place_inbound_call(CALLER, NUMBER, script=["hangup:10"])
                await wait_entry(sim, host, "conference-joined")
                guest = await sim.place_inbound_call("+34600000002", NUMBER)
                await wait_entry(sim, guest, "conference-joined")
            transcripts = [await call.wait_ended() for call in (host, guest)]
            for call in (host, guest):
                await app.wait_ended(front.call_control_id(call))
    assert [t.spoken for t in transcripts] == [[], []]
    assert transcripts[1].duration == pytest.approx(transcripts[0].duration, abs=1)
    assert [c.end_reason for c in front.conferences.values()] == ["ended_via_api"]


@pytest.mark.anyio
async def test_with_no_finish_key_a_hash_is_just_a_digit() -> None:
    """Telnyx ends a gather on "#" unless told another terminating_digit (its default):
    with finish_on_key="" the adapter takes the "#" as a digit and gathers on."""
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def code(call: callflow.Call) -> None:
        call.data["code"] = await call.gather(prompt="Your code?", num_digits=4,
                                              finish_on_key="")

    sim = Simulator(platform="telnyx")
    calls = flow_calls(app)
    async with app_on(sim, app):
        with anyio.fail_after(20):
            call = await sim.place_inbound_call(CALLER, NUMBER, script=["press-next:12#4"])
            await call.wait_ended()
            await app.wait_ended(calls[0].id)
    result = calls[0].data["code"]
    assert (result.digits, result.finish_key, result.timed_out) == ("12#4", None, False)


@pytest.mark.anyio
async def test_an_outbound_call_nobody_answers_is_no_answer() -> None:
    """hangup_cause no_answer (the far end gave up ringing) is no answer, not a hang-up."""
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def remind(call: callflow.Call) -> None:
        await call.say("Hello.")

    sim = Simulator(platform="telnyx", outbound_ring_timeout=20)  # before Telnyx's 30 s
    sim.add_phone(AGENT, Phone.no_answer())
    async with app_on(sim, app):
        with anyio.fail_after(20):
            result = await app.call(AGENT, flow="remind", caller_id=NUMBER)
    assert (result.status, result.answered) == ("no_answer", False)


def test_a_webhook_record_reads_its_document() -> None:
    body = json.dumps({"data": {"event_type": "call.answered", "id": "e1",
                                "payload": {"call_control_id": "v3:x"}},
                       "meta": {"attempt": 2}}).encode()
    hook = TelnyxWebhook("http://x", body, {}, 200)
    assert (hook.event_type, hook.id, hook.attempt, hook.payload) == (
        "call.answered", "e1", 2, {"call_control_id": "v3:x"})


def test_the_simulator_banner_says_where_the_telnyx_api_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from callflow.cli._simulator import _banner
    from callflow.simulator import Clock

    sim = Simulator(platform="telnyx")
    _banner(sim, "http://127.0.0.1:9999", Clock.virtual())
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == ("Telnyx REST API: http://127.0.0.1:9999/v2 (API key "
                        f"{sim.app_settings()['telnyx_api_key']}, connection "
                        f"{sim.app_settings()['telnyx_connection_id']})")
    assert lines[2].startswith("BlueVia REST API: http://127.0.0.1:9999/comms/v1 ")
