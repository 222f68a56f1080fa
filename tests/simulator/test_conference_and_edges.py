"""Conference properties, `dial` to a call id, outbound phones that act, and malformed
requests: the simulator semantics the first round of tests left out."""

from __future__ import annotations

import base64
from typing import Any

import anyio
import httpx
import pytest

from callflow.simulator import Phone, Simulator, Transcript

from ._app import APP, App

pytestmark = pytest.mark.anyio

NUMBER = "+34900000001"
BASE = "http://sim.test"


def make_sim(app: App, **kwargs: Any) -> Simulator:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    sim = Simulator(http_client=client, **kwargs)
    sim.add_account_number(NUMBER, callback_url=f"{APP}/voice", fallback_url=f"{APP}/fallback")
    return sim


def rest(sim: Simulator, auth: Any = ("key", "secret")) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sim), base_url=BASE, auth=auth)


def by_caller(answers: dict[str, list[dict[str, Any]]]) -> Any:
    """Answer CalledNumber with the commands for its caller; other events with nothing."""

    def handler(n: dict[str, Any]) -> Any:
        if n["eventName"] != "CalledNumber":
            return None
        return answers[n["callerId"].removeprefix("tel:")]

    return handler


def conference(name: str = "room", after: str = "left", *, at: float = 0,
               **props: Any) -> list[dict[str, Any]]:
    """Join conference `name` `at` seconds into the call (calls placed together would
    otherwise join in whatever order the event loop runs them)."""
    wait = [{"wait": {"length": at}}] if at else []
    return [*wait, {"dial": {"conferenceName": name, "conferenceProperties": props}},
            {"speak": {"text": after}}, {"hangup": {}}]


async def calls(app: App, *callers: tuple[str, list[str]], **kwargs: Any) -> list[Transcript]:
    """Place one inbound call per (caller, script), in order, and wait for them all."""
    async with make_sim(app, **kwargs) as sim:
        placed = [await sim.place_inbound_call(caller, NUMBER, script=script)
                  for caller, script in callers]
        with anyio.fail_after(10):
            return [await call.wait_ended() for call in placed]


def kinds(transcript: Transcript) -> list[str]:
    return [e.kind for e in transcript.entries if e.kind != "notification"]


A, B, C = "+34600000001", "+34600000002", "+34600000003"


# -- conference properties ----------------------------------------------------------------------


async def test_start_on_enter_false_waits_on_music_for_a_starter() -> None:
    app = App({"/voice": by_caller({
        A: conference(startOnEnter="false"),
        B: conference(startOnEnter="false", at=1),
        C: conference(at=2),  # the moderator: startOnEnter defaults to true
    })})
    t_a, t_b, t_c = await calls(app, (A, ["hangup:30"]), (B, ["hangup:30"]),
                                (C, ["silence:10", "hangup"]))
    # A and B are two members, yet neither has started the conference: both hear music.
    assert "music" in kinds(t_a) and "music" in kinds(t_b)
    # C starts it: C, joining a room of two, hears no music.
    assert "music" not in kinds(t_c)

    app = App({"/voice": by_caller({A: conference(), B: conference(at=1)})})
    t_a, t_b = await calls(app, (A, ["hangup:30"]), (B, ["hangup:10"]))
    assert "music" in kinds(t_a)  # alone at first
    assert "music" not in kinds(t_b)  # a started conference with someone in it


async def test_mute_is_recorded_on_the_member() -> None:
    app = App({"/voice": by_caller({A: conference(mute="true"), B: conference()})})
    t_a, t_b = await calls(app, (A, ["hangup:5"]), (B, ["hangup:5"]))
    joined_a = next(e for e in t_a.entries if e.kind == "conference-joined")
    joined_b = next(e for e in t_b.entries if e.kind == "conference-joined")
    assert joined_a.data == {"conference": "room", "mute": True}
    assert joined_b.data["mute"] is False


async def test_max_members_turns_the_next_caller_away() -> None:
    app = App({"/voice": by_caller({
        A: conference(maxMembers="2"),
        B: conference(at=1),
        C: conference(after="the room is full", at=2),
    })})
    t_a, t_b, t_c = await calls(app, (A, ["hangup:20"]), (B, ["hangup:20"]), (C, []))
    assert "conference-joined" in kinds(t_a) and "conference-joined" in kinds(t_b)
    assert "conference-joined" not in kinds(t_c)
    assert t_c.texts("failed") == ["conference room is full"]
    assert t_c.spoken == ["the room is full"]  # the queue goes on at once
    assert next(e for e in t_c.entries if e.kind == "speak").at == pytest.approx(2)


async def test_time_limit_takes_the_member_out() -> None:
    app = App({"/voice": by_caller({A: conference(timeLimit="5", after="time is up")})})
    (t_a,) = await calls(app, (A, []))
    left = next(e for e in t_a.entries if e.kind == "conference-left")
    assert left.at == pytest.approx(5)
    assert t_a.spoken == ["time is up"]


async def test_play_on_exit_and_speak_on_exit_are_heard_by_the_others() -> None:
    app = App({"/voice": by_caller({
        A: conference(playOnExit="http://audio.test/bye.mp3", speakOnExit="A has left",
                      beepsOnExit="2"),
        B: conference(at=1),
    })})
    t_a, t_b = await calls(app, (A, ["hangup:3"]), (B, ["hangup:10"]))
    assert t_b.texts("play") == ["http://audio.test/bye.mp3"]
    assert "A has left" in t_b.spoken
    assert t_b.texts("beep") == ["beep beep "]
    assert t_a.texts("play") == [] and "A has left" not in t_a.spoken


async def test_end_on_exit_of_a_member_frees_the_others_to_go_on() -> None:
    app = App({"/voice": by_caller({
        A: conference(endOnExit="true", timeLimit="4"),
        B: conference(after="the host has left"),
    })})
    _, t_b = await calls(app, (A, []), (B, []))
    left_b = next(e for e in t_b.entries if e.kind == "conference-left")
    assert left_b.at == pytest.approx(4)
    assert t_b.spoken == ["the host has left"]


# -- dial callId ---------------------------------------------------------------------------------


async def test_dial_call_id_bridges_two_calls() -> None:
    first: dict[str, str] = {}

    def voice(n: dict[str, Any]) -> Any:
        if n["eventName"] != "CalledNumber":
            return None
        if n["callerId"] == "tel:" + A:
            first["id"] = n["callId"]
            return [{"wait": {"length": 100}}, {"speak": {"text": "never"}}]
        # B's CalledNumber may come first: learn A's call id a second later, by redirect
        return [{"wait": {"length": 1}}, {"redirect": {"actionUrl": f"{APP}/bridge"}}]

    app = App({"/voice": voice,
               "/bridge": lambda n: [{"dial": {"callId": first["id"]}},
                                     {"speak": {"text": "bridge over"}}, {"hangup": {}}]})
    # A's queue is replaced by the bridge; when B leaves it, A is left idle: a short hold
    # and idle timeout end it.
    t_a, t_b = await calls(app, (A, []), (B, ["hangup:6"]), idle_hold=0.05, idle_timeout=1)
    bridged = next(e for e in t_b.entries if e.kind == "bridged")
    assert bridged.data["callId"] == first["id"]
    assert bridged.text == f"{B} ⇄ {A}"
    joined = next(e for e in t_a.entries if e.kind == "conference-joined")
    assert joined.data["conference"].startswith("bridge:")
    assert "never" not in t_a.spoken  # A's wait was interrupted and its queue replaced
    left = next(e for e in t_a.entries if e.kind == "conference-left")
    assert left.at == pytest.approx(6)
    assert t_a.entries[-1].text == "the application hung up (idle)"


async def test_dial_an_unknown_or_ended_call_id_goes_on() -> None:
    app = App({"/voice": lambda n: [{"dial": {"callId": "no-such-call"}},
                                    {"speak": {"text": "could not bridge"}}, {"hangup": {}}]})
    (t_a,) = await calls(app, (A, []))
    assert t_a.texts("failed") == ["cannot bridge to call no-such-call"]
    assert t_a.spoken == ["could not bridge"]


# -- outbound calls to phones that act ------------------------------------------------------------


async def outbound(app: App, phone: Phone) -> tuple[Transcript, list[str]]:
    async with make_sim(app) as sim, rest(sim) as client:
        sim.add_phone("+34600000009", phone)
        response = await client.post("/comms/v1/calls", json={
            "callerId": "tel:" + NUMBER, "destination": "tel:+34600000009",
            "notifications": "true"})
        assert response.status_code == 201
        call = sim.calls[response.json()["callId"]]
        with anyio.fail_after(10):
            transcript = await call.wait_ended()
    return transcript, app.events()


async def test_outbound_phone_answers_then_hangs_up() -> None:
    app = App({"/voice": lambda n: [{"wait": {"length": 100}}]
               if n["eventName"] == "Answered" else None})
    transcript, events = await outbound(app, Phone.answers(after=2, hang_up_after=3))
    assert events[:2] == ["Ringing", "Answered"]
    assert events[-1] == "HangUp"
    assert app.received[-1][1]["direction"] == "fromParticipant"
    hangup = [e for e in transcript.entries if e.kind == "hangup"][-1]
    assert hangup.at == pytest.approx(5)
    assert hangup.text == "+34600000009 hung up"


async def test_outbound_phone_presses_keys() -> None:
    app = App({
        "/voice": lambda n: [{"getDigits": {"actionUrl": f"{APP}/digits", "finishOnKey": "#",
                                            "speak": {"text": "Your PIN and hash"}}}]
        if n["eventName"] == "Answered" else None,
        "/digits": lambda n: [{"speak": {"text": f"PIN {n['digits']}"}}, {"hangup": {}}],
    })
    transcript, _ = await outbound(app, Phone.answers(after=1, press="42#"))
    digits = next(body for path, body in app.received if path == "/digits")
    assert digits["digits"] == "42#"
    assert transcript.keys == "42#"
    assert transcript.spoken == ["Your PIN and hash", "PIN 42#"]


async def test_outbound_phone_follows_a_script() -> None:
    app = App({"/voice": lambda n: [{"speak": {"text": "Hello, this is Acme"}},
                                    {"wait": {"length": 100}}]
               if n["eventName"] == "Answered" else None})
    transcript, _ = await outbound(app, Phone.answers(script=["wait:acme", "hangup:1"]))
    hangup = [e for e in transcript.entries if e.kind == "hangup"][-1]
    assert hangup.at == pytest.approx(1 + 1.6 + 1)  # rings 1 s, hears 4 words, waits 1 s


# -- malformed requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"Basic",
        b"Basic ",
        b"Basic !!!not-base64!!!",
        b"Basic " + base64.b64encode(b"key"),  # no colon: no secret
        b"Basic " + base64.b64encode(b"key:secret:extra"),
        b"Bearer " + base64.b64encode(b"key:secret"),
        b"basic",
        "Basic ключ".encode(),
    ],
)
async def test_malformed_authorization_is_401(header: bytes) -> None:
    async with Simulator() as sim, rest(sim, auth=None) as client:
        response = await client.get("/comms/v1/calls/x", headers={"Authorization": header})
        extension = await client.get("/simulator/calls/x/transcript",
                                     headers={"Authorization": header})
    for answer in (response, extension):
        assert answer.status_code == 401
        assert answer.json()["ClientException"]["exceptionCategory"] == "SEC"


async def test_lowercase_basic_scheme_is_accepted() -> None:
    token = base64.b64encode(b"key:secret")
    async with Simulator() as sim, rest(sim, auth=None) as client:
        response = await client.get("/comms/v1/calls/x",
                                    headers={"Authorization": b"basic " + token})
    assert response.status_code == 404  # authenticated; the call is unknown


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"42", b"null", b"true", b""])
async def test_a_body_that_is_not_a_json_object_is_400(body: bytes) -> None:
    async with Simulator() as sim, rest(sim) as client:
        sim.add_account_number(NUMBER, callback_url=f"{APP}/voice")
        create = await client.post("/comms/v1/calls", content=body)
        number = await client.post("/comms/v1/me/numbers/tel:%2B34900000001", content=body)
        call = sim.create_call(NUMBER, "+34600000009")
        setcommands = await client.post(f"/comms/v1/calls/{call.call_id}/setcommands",
                                        content=body)
    for response in (create, number, setcommands):
        assert response.status_code == 400, response.text
        error = response.json()["ClientException"]
        assert (error["exceptionCategory"], error["exceptionId"]) == ("SVC", 1)
        assert error["variables"] == ["body"]
