"""Bad input: whatever reaches the notification endpoint, the App answers with a clear 4xx
(``{"error": {"code", "message"}}``), or 200 for a well-formed notification it has nothing to
do with, never with a 5xx; and a call in progress beside it goes on as if nothing happened.

hypothesis draws batches of requests: bytes that are not JSON, JSON that is not a
notification, notifications with missing, extra and mistyped fields and unknown events,
bodies around and far over the size limit, wrong secrets, other paths and methods. Each
batch is fired concurrently at an App with a live call suspended in a gather, and the call
is then answered for real.
"""

from __future__ import annotations

import json
import string
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from callflow import App, Call, GatherResult

from ._support import (
    FUZZ,
    HANGUP,
    NUMBER,
    PREFIX,
    PUBLIC,
    SECRET,
    commands_of,
    make_app,
    note,
    post,
    running,
    speak,
    url_of,
)

pytestmark = pytest.mark.anyio

LIVE = "live-call"
MAX_BODY = 64 * 1024
EVENT_NAMES = ("CalledNumber", "Answered", "Ringing", "DigitsCollected", "Busy", "Failed",
               "NotReachable", "NoAnswer", "HangUp", "PlaybackStarted", "PlaybackStopped",
               "RecordingStarted", "RecordingStopped", "Redirected", "CallbackUnavailable")
ALTERING = {"HangUp", "DigitsCollected", "Redirected", "CallbackUnavailable"}
"""Well-formed notifications that may rightly change the live call: aimed elsewhere below."""

# -- what the platform (or anyone) might send ---------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12,
)
anything = st.one_of(scalars, st.lists(scalars, max_size=3))

FIELDS = ("timestamp", "eventName", "callId", "legId", "callerId", "destination", "digits",
          "direction", "recordingUrl", "duration", "reason", "failedEventName")


@st.composite
def notifications(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed notifications, then a few fields dropped, mistyped or added."""
    body: dict[str, Any] = {
        "timestamp": "2013-03-01T10:00:00Z",
        "eventName": draw(st.sampled_from(EVENT_NAMES * 2 + (
            "SmsReceived", "calledNumber", "", "HangUp ", "Hangup", "Digits\u0000Collected"))),
        "callId": draw(st.sampled_from([LIVE, LIVE, "other-1", "other-2"]) | st.text(max_size=8)),
        "legId": draw(st.sampled_from(["leg-live", "leg-x", ""])),
        "callerId": "tel:+34600000009",
        "destination": draw(st.sampled_from([f"tel:{NUMBER}", "tel:+34900000999"])),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "digits": st.text(alphabet="0123456789#*", max_size=6),
        "direction": st.sampled_from(["fromParticipant", "fromApplication", "sideways"]),
        "recordingUrl": st.just("https://rec.example/1.wav"),
        "duration": st.one_of(st.integers(0, 100), st.sampled_from(["7", "1e999", "nan", "x"])),
        "reason": st.text(max_size=10),
        "failedEventName": st.sampled_from(EVENT_NAMES),
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), max_size=3, unique=True)):
        body[name] = draw(optional[name])
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            body.pop(name, None)
        else:
            body[name] = draw(anything)
    body.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
    return body


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["notification"] * 6 + ["json", "bytes", "huge"]))
    if kind == "notification":
        return json.dumps(draw(notifications())).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    size = draw(st.sampled_from([MAX_BODY - 100, MAX_BODY, MAX_BODY + 1, 4 * MAX_BODY]))
    padded = json.dumps(note("PlaybackStarted", "huge-call", padding=""))
    return padded[:-2].encode() + b"x" * max(0, size - len(padded)) + b'"}'


ascii_text = st.text(alphabet=string.printable, max_size=12)
# The step parameter's alphabet is ASCII: see test_a_non_ascii_digit_step_is_a_400 below.
queries = st.fixed_dictionaries({}, optional={
    "step": st.one_of(st.integers(0, 3).map(str), st.integers(0, 10**20).map(str), ascii_text),
    "call": st.one_of(st.just(LIVE), ascii_text),
    "out": ascii_text,
    "junk": st.text(max_size=10),
})

paths = st.sampled_from(["events"] * 16 + ["fallback", "secret", "path"]).flatmap(
    lambda kind: {
        "events": st.just(f"{PREFIX}/events"),
        "fallback": st.just(f"{PREFIX}/fallback"),
        "secret": st.text(alphabet=string.ascii_letters + string.digits + "-_~.", max_size=20)
        .map(lambda secret: f"/callflow/{secret}/events"),
        "path": st.text(alphabet=string.ascii_letters + "/%.-_~", max_size=30)
        .map(lambda p: "/" + p),
    }[kind])
methods = st.sampled_from(["POST"] * 16 + ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    return draw(methods), draw(paths), draw(queries), draw(bodies())


def aimed_away_from_the_live_call(path: str, body: bytes) -> bytes:
    """A notification that would rightly end or answer the live call goes to another call."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if (isinstance(payload, dict) and payload.get("callId") == LIVE
            and (payload.get("eventName") in ALTERING or path.endswith("/fallback"))):
        payload["callId"] = "not-the-live-call"
        return json.dumps(payload).encode()
    return body


# -- the live call --------------------------------------------------------------------------


def live_app() -> tuple[App, list[Any]]:
    app = make_app()
    seen: list[Any] = []

    @app.flow(number=NUMBER)
    async def menu(call: Call) -> None:
        seen.append(call.id)
        choice = await call.gather(prompt="Choose.", num_digits=1)
        seen.append((call.id, choice))
        await call.say(f"{call.id} chose {choice.digits}.")

    return app, seen


def live_only(seen: list[Any]) -> list[Any]:
    """What the live call's flow saw (the fuzz may start other calls beside it)."""
    return [s for s in seen if s == LIVE or (isinstance(s, tuple) and s[0] == LIVE)]


def check_answer(method: str, response: httpx.Response) -> None:
    assert response.status_code < 500, (method, response.status_code, response.text)
    payload = response.json()
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json"
        assert set(payload) == {"error"}, payload
        assert set(payload["error"]) == {"code", "message"}, payload
        assert isinstance(payload["error"]["code"], str) and payload["error"]["code"]
        assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    else:
        assert response.status_code == 200
        assert isinstance(payload.get("commands"), list), payload


@FUZZ
@given(batch=st.lists(requests(), min_size=1, max_size=8))
async def test_fuzzed_requests_never_get_a_5xx_nor_alter_a_live_call(
    batch: list[tuple[str, str, dict[str, str], bytes]],
) -> None:
    app, seen = live_app()
    async with running(app) as client:
        first = commands_of(await post(client, "CalledNumber", LIVE, leg="leg-live"))
        url = url_of(first)

        async def fire(method: str, path: str, query: dict[str, str], body: bytes) -> None:
            body = aimed_away_from_the_live_call(path, body)
            response = await client.request(method, PUBLIC + path, params=query, content=body,
                                            headers={"content-type": "application/json"})
            check_answer(method, response)
            error = response.json().get("error", {})
            event(f"{response.status_code} {error.get('code', '')}")

        async with anyio.create_task_group() as tg:
            for request in batch:
                tg.start_soon(fire, *request)

        assert live_only(seen) == [LIVE]
        assert LIVE in app.sessions
        answer = commands_of(await post(client, "DigitsCollected", LIVE, url=url, digits="4",
                                        leg="leg-live"))
        assert answer == [speak(f"{LIVE} chose 4."), HANGUP]
    assert live_only(seen) == [LIVE, (LIVE, GatherResult(digits="4"))]


WRONG_TYPES: tuple[Any, ...] = (None, 0, 1.5, True, [], {}, "", "x" * 300)


async def test_every_field_of_every_event_dropped_or_mistyped_in_turn() -> None:
    """The exhaustive complement of the fuzzer: one field wrong at a time, in an otherwise
    well-formed notification of each event (hypothesis rarely hits one precise field)."""
    app, seen = live_app()
    async with running(app) as client:
        url = url_of(commands_of(await post(client, "CalledNumber", LIVE, leg="leg-live")))
        base = {**note("PlaybackStarted", "other-call", leg="leg-x"), "digits": "1",
                "direction": "fromParticipant", "recordingUrl": "https://rec.example/1.wav",
                "duration": 3, "reason": "busy", "failedEventName": "CalledNumber"}
        for name in EVENT_NAMES:
            for field in FIELDS:
                for value in (..., *WRONG_TYPES):
                    body = {**base, "eventName": name}
                    if value is ...:
                        del body[field]
                    else:
                        body[field] = value
                    target = f"{PREFIX}/fallback" if name == "CallbackUnavailable" else (
                        f"{PREFIX}/events")
                    response = await client.post(target, params={"step": "1"}, json=body)
                    check_answer("POST", response)
        assert live_only(seen) == [LIVE]
        answer = commands_of(await post(client, "DigitsCollected", LIVE, url=url, digits="4",
                                        leg="leg-live"))
        assert answer == [speak(f"{LIVE} chose 4."), HANGUP]


# -- bugs the fuzzer found, pinned ----------------------------------------------------------------


async def test_wrong_secret_never_reaches_the_live_call() -> None:
    """Even a notification that would end the call is refused with a wrong secret."""
    app, seen = live_app()
    async with running(app) as client:
        url = url_of(commands_of(await post(client, "CalledNumber", LIVE, leg="leg-live")))
        for secret in ("", "x", SECRET.upper(), SECRET + "x", SECRET[:-1]):
            for endpoint in ("events", "fallback"):
                for name, fields in [("HangUp", {"direction": "fromParticipant"}),
                                     ("DigitsCollected", {"digits": "1"})]:
                    response = await client.post(
                        f"{PUBLIC}/callflow/{secret}/{endpoint}",
                        params={"call": LIVE, "step": "1"},
                        json=note(name, LIVE, leg="leg-live", **fields))
                    assert response.status_code in (403, 404), response.text
                    assert response.json()["error"]["code"] in ("forbidden", "not_found")
        assert seen == [LIVE]
        answer = commands_of(await post(client, "DigitsCollected", LIVE, url=url, digits="4",
                                        leg="leg-live"))
        assert answer == [speak(f"{LIVE} chose 4."), HANGUP]


async def test_a_non_ascii_digit_step_is_a_400() -> None:
    app, _ = live_app()
    async with app, httpx.AsyncClient(
        transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url=PUBLIC
    ) as client:
        await post(client, "CalledNumber", LIVE)
        response = await client.post(f"{PREFIX}/events?call={LIVE}&step=%C2%B2",
                                     json=note("DigitsCollected", LIVE, digits="1"))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_field"


async def test_deeply_nested_json_is_a_400() -> None:
    app, _ = live_app()
    async with app, httpx.AsyncClient(
        transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url=PUBLIC
    ) as client:
        response = await client.post(f"{PREFIX}/events", content=b"[" * 60_000)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "malformed_json"


async def test_a_call_id_that_is_not_unicode_text_is_a_400() -> None:
    app, _ = live_app()
    async with app, httpx.AsyncClient(
        transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url=PUBLIC
    ) as client:
        body = json.dumps(note("CalledNumber", "\ud800bad")).encode()
        response = await client.post(f"{PREFIX}/events", content=body)
        assert response.status_code == 400, response.status_code
        assert response.json()["error"]["code"] == "invalid_field"
        assert app.sessions == {}
