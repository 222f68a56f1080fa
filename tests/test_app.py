"""The App as the platform sees it: notifications in over ``httpx.ASGITransport``, commands out.

No sockets: the app is entered with ``async with app:`` and its platform client talks
to ``FakePlatform``, a tiny ASGI app, through another ``ASGITransport``.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from callflow import (
    App,
    Call,
    CallEnded,
    DialResult,
    GatherResult,
    OutboundCallError,
    OutboundCallResult,
    RecordResult,
    Settings,
)
from callflow._settings import DEFAULT_APOLOGY
from callflow._types import Receive, Scope, Send

PUBLIC = "https://app.example"
SECRET = "s3cret-token"
EVENTS = f"{PUBLIC}/callflow/{SECRET}/events"
FALLBACK = f"{PUBLIC}/callflow/{SECRET}/fallback"
NUMBER = "+34900000001"
CALLER = "+34600000001"
CALL_ID = "call-1"
LEG = "leg-1"
AUTH = "Basic " + base64.b64encode(b"key:secret").decode()

NOTIFY = {"notifications": "true"}
HANGUP = {"hangup": {"reason": "rejected"}}
NOTHING: dict[str, Any] = {"commands": []}


def speak(text: str) -> dict[str, Any]:
    return {"speak": {"text": text, "voice": "female", "repeat": 1}}


def action(step: int, call_id: str = CALL_ID) -> str:
    return f"{EVENTS}?call={call_id}&step={step}"


def redirect(step: int, call_id: str = CALL_ID) -> dict[str, Any]:
    return {"redirect": {"actionUrl": action(step, call_id)}}


def get_digits(step: int, *, num_digits: int = 1, prompt: str | None = None,
               call_id: str = CALL_ID) -> dict[str, Any]:
    command: dict[str, Any] = {
        "actionUrl": action(step, call_id),
        "timeout": 5,
        "finishOnKey": "#",
        "numberOfDigits": num_digits,
        "validDigits": "0123456789*#",
        "retries": 1,
    }
    if prompt is not None:
        command.update(speak(prompt))
    return {"getDigits": command}


def note(
    name: str,
    *,
    call_id: str = CALL_ID,
    leg: str = LEG,
    caller: str = CALLER,
    callee: str = NUMBER,
    timestamp: str = "2013-03-01T10:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    return {"timestamp": timestamp, "eventName": name, "callId": call_id, "legId": leg,
            "callerId": f"tel:{caller}", "destination": f"tel:{callee}", **extra}


# -- a fake platform for the app's REST calls -------------------------------------------------


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    json: Any
    authorization: str | None


class FakePlatform:
    """Records every REST request the app makes, and answers as scripted."""

    def __init__(self, *, setcommands: tuple[int, ...] = (), create_status: int = 201,
                 call_id: str = "out-1") -> None:
        self.statuses = list(setcommands)  # then 202 for ever
        self.create_status = create_status
        self.call_id = call_id
        self.requests: list[Seen] = []
        self._arrived: anyio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization")
        seen = Seen(scope["method"], scope["raw_path"].decode(),
                    json.loads(body) if body else None, auth.decode() if auth else None)
        self.requests.append(seen)
        status, reply = 200, b""
        if seen.path.endswith("/setcommands"):
            status = self.statuses.pop(0) if self.statuses else 202
        elif seen.path == "/comms/v1/calls":
            status = self.create_status
            if status == 201:
                reply = json.dumps({"callId": self.call_id}).encode()
            else:
                reply = b'{"ClientException": {"exceptionCategory": "POL", "exceptionId": 1}}'
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(reply)).encode())]})
        await send({"type": "http.response.body", "body": reply})
        if self._arrived is not None:
            self._arrived.set()

    async def wait_requests(self, count: int) -> list[Seen]:
        """Wait until the app has made ``count`` requests; returns them all."""
        with anyio.fail_after(5):
            while len(self.requests) < count:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        return self.requests

    @property
    def setcommands(self) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith("/setcommands")]


def make_app(platform: FakePlatform | None = None, **settings: Any) -> App:
    return App(
        settings=Settings(public_url=PUBLIC, platform_url="https://platform.example",
                          secret=SECRET, **settings),
        transport=httpx.ASGITransport(platform or FakePlatform()),
    )


@asynccontextmanager
async def serve(app: App) -> AsyncIterator[httpx.AsyncClient]:
    async with app, httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                      base_url=PUBLIC) as client:
        yield client


async def post(client: httpx.AsyncClient, name: str, *, url: str = EVENTS,
               **fields: Any) -> Any:
    """Deliver a notification as the platform would; returns the app's JSON answer."""
    response = await client.post(url, json=note(name, **fields))
    assert response.status_code == 200, response.text
    return response.json()


async def wait_ended(app: App, call_id: str = CALL_ID) -> None:
    with anyio.fail_after(5):
        await app.wait_ended(call_id)
    assert call_id not in app.sessions


def reception_app(platform: FakePlatform | None = None, **settings: Any
                  ) -> tuple[App, list[Any]]:
    """An app with a welcome menu on NUMBER; the list collects what the flow saw."""
    app = make_app(platform, **settings)
    seen: list[Any] = []

    @app.flow(number=NUMBER)
    async def reception(call: Call) -> None:
        seen.append((call.id, call.caller, call.callee, call.direction))
        await call.say("Welcome to Acme.")
        choice = await call.gather(prompt="Press 1 for sales, 2 for support.", num_digits=1)
        seen.append(choice)
        if choice.timed_out:
            await call.say("We did not hear you.")
        else:
            await call.say(f"You pressed {choice.digits}.")

    return app, seen


WELCOME = {
    "commands": [
        NOTIFY,
        speak("Welcome to Acme."),
        get_digits(1, prompt="Press 1 for sales, 2 for support."),
        redirect(1),
    ]
}


# -- the happy paths ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_called_number_gets_the_welcome_commands() -> None:
    app, seen = reception_app()
    async with serve(app) as client:
        assert await post(client, "CalledNumber") == WELCOME
        assert seen == [(CALL_ID, CALLER, NUMBER, "inbound")]
        assert CALL_ID in app.sessions


@pytest.mark.anyio
async def test_digits_at_the_action_url_resume_the_flow() -> None:
    app, seen = reception_app()
    async with serve(app) as client:
        await post(client, "CalledNumber")
        answer = await post(client, "DigitsCollected", url=action(1), digits="2")
        assert answer == {"commands": [speak("You pressed 2."), HANGUP]}
        assert seen[1] == GatherResult(digits="2")
        assert app.sessions == {}


@pytest.mark.anyio
async def test_finish_key_is_split_from_the_digits() -> None:
    app = make_app()
    results: list[GatherResult] = []

    @app.flow(number=NUMBER)
    async def pin(call: Call) -> None:
        results.append(await call.gather(prompt="Your PIN, then hash."))

    async with serve(app) as client:
        answer = await post(client, "CalledNumber")
        assert answer["commands"][1] == get_digits(1, num_digits=0,
                                                   prompt="Your PIN, then hash.")
        assert await post(client, "DigitsCollected", url=action(1), digits="1234#") == {
            "commands": [HANGUP]
        }
    assert results == [GatherResult(digits="1234", finish_key="#")]


@pytest.mark.anyio
async def test_consecutive_verbs_arrive_in_one_response() -> None:
    app = make_app()

    @app.flow(number=NUMBER)
    async def chatty(call: Call) -> None:
        await call.say("One.")
        await call.say("Two.", voice="male", repeat=2)
        await call.play("https://cdn.example/jingle.mp3")
        await call.wait(1.5)
        await call.say("Three.")
        await call.gather(num_digits=1)
        await call.say("Four.")
        await call.say("Five.")

    async with serve(app) as client:
        assert await post(client, "CalledNumber") == {
            "commands": [
                NOTIFY,
                speak("One."),
                {"speak": {"text": "Two.", "voice": "male", "repeat": 2}},
                {"play": {"url": "https://cdn.example/jingle.mp3", "repeat": 1}},
                {"wait": {"length": 1.5}},
                speak("Three."),
                get_digits(1),
                redirect(1),
            ]
        }
        assert await post(client, "DigitsCollected", url=action(1), digits="1") == {
            "commands": [speak("Four."), speak("Five."), HANGUP]
        }


@pytest.mark.anyio
async def test_a_flow_that_only_talks_hangs_up_in_the_first_response() -> None:
    app = make_app()

    @app.flow(number=NUMBER)
    async def closed(call: Call) -> None:
        await call.say("We are closed.")
        await call.say("Goodbye.")

    async with serve(app) as client:
        assert await post(client, "CalledNumber") == {
            "commands": [NOTIFY, speak("We are closed."), speak("Goodbye."), HANGUP]
        }
        assert app.sessions == {}


@pytest.mark.anyio
async def test_explicit_hangup_with_reason() -> None:
    app = make_app()
    after: list[str] = []

    @app.flow(number=NUMBER)
    async def busy(call: Call) -> None:
        await call.hangup("busy")
        try:
            await call.say("never heard")
        except CallEnded as exc:
            after.append(exc.by)

    async with serve(app) as client:
        assert await post(client, "CalledNumber") == {
            "commands": [NOTIFY, {"hangup": {"reason": "busy"}}]
        }
        await wait_ended(app)
    assert after == ["app"]


@pytest.mark.anyio
async def test_redirect_after_get_digits_observes_no_input() -> None:
    app, seen = reception_app()
    async with serve(app) as client:
        await post(client, "CalledNumber")
        answer = await post(client, "Redirected", url=action(1))
        assert answer == {"commands": [speak("We did not hear you."), HANGUP]}
        assert seen[1] == GatherResult(timed_out=True)


@pytest.mark.anyio
async def test_notifications_for_another_step_do_not_resume_the_flow() -> None:
    app, seen = reception_app()
    async with serve(app) as client:
        await post(client, "CalledNumber")
        assert await post(client, "Redirected", url=action(7)) == NOTHING
        assert await post(client, "PlaybackStarted") == NOTHING
        assert len(seen) == 1
        assert await post(client, "DigitsCollected", url=action(1), digits="1") == {
            "commands": [speak("You pressed 1."), HANGUP]
        }


@pytest.mark.anyio
async def test_dial_leg_events_then_redirect_give_the_dial_result() -> None:
    app = make_app()
    results: list[DialResult] = []

    @app.flow(number=NUMBER)
    async def forward(call: Call) -> None:
        results.append(await call.dial("+34911111111", caller_id=NUMBER, timeout=20))
        await call.say("The other party hung up.")

    agent = {"leg": "leg-2", "caller": NUMBER, "callee": "+34911111111"}
    async with serve(app) as client:
        assert await post(client, "CalledNumber") == {
            "commands": [
                NOTIFY,
                {"dial": {"number": {"destination": "tel:+34911111111", "timeout": 20,
                                     "callerId": "tel:+34900000001"}}},
                redirect(1),
            ]
        }
        assert await post(client, "Ringing", **agent) == NOTHING
        assert await post(client, "Answered", timestamp="2013-03-01T10:00:05Z",
                          **agent) == NOTHING
        assert await post(client, "HangUp", direction="fromParticipant",
                          timestamp="2013-03-01T10:00:47Z", **agent) == NOTHING
        # The agent hanging up is not the caller hanging up.
        assert CALL_ID in app.sessions
        assert results == []
        assert await post(client, "Redirected", url=action(1)) == {
            "commands": [speak("The other party hung up."), HANGUP]
        }
    assert results == [DialResult("answered", number="+34911111111", duration=42.0)]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("event", "status"),
    [("Busy", "busy"), ("NoAnswer", "no_answer"), ("Failed", "failed"),
     ("NotReachable", "failed")],
)
async def test_dial_failures(event: str, status: str) -> None:
    app = make_app()
    results: list[DialResult] = []

    @app.flow(number=NUMBER)
    async def forward(call: Call) -> None:
        results.append(await call.dial(["+34911111111", "+34922222222"]))
        await call.say("Nobody is available.")

    async with serve(app) as client:
        answer = await post(client, "CalledNumber")
        assert answer["commands"][1] == {"dial": {"number": {
            "destination": ["tel:+34911111111", "tel:+34922222222"], "timeout": 30}}}
        assert await post(client, event, leg="leg-2", callee="+34911111111",
                          reason="line trouble") == NOTHING
        assert await post(client, "Redirected", url=action(1)) == {
            "commands": [speak("Nobody is available."), HANGUP]
        }
    assert results == [DialResult(status, reason="line trouble")]  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_recording_stopped_then_redirect_give_the_record_result() -> None:
    app = make_app()
    results: list[RecordResult] = []

    @app.flow(number=NUMBER)
    async def voicemail(call: Call) -> None:
        recording = await call.record(prompt="Leave a message.", beep=True, max_length=30)
        results.append(recording)
        assert recording.url is not None
        await call.play(recording.url)

    url = "https://platform.example/recordings/1.wav"
    async with serve(app) as client:
        assert await post(client, "CalledNumber") == {
            "commands": [
                NOTIFY,
                {"record": {"timeout": 15, "playBeep": True, "maximumLength": 30,
                            **speak("Leave a message.")}},
                redirect(1),
            ]
        }
        assert await post(client, "RecordingStarted") == NOTHING
        assert await post(client, "RecordingStopped", recordingUrl=url, duration="7") == NOTHING
        assert results == []
        assert await post(client, "Redirected", url=action(1)) == {
            "commands": [{"play": {"url": url, "repeat": 1}}, HANGUP]
        }
    assert results == [RecordResult(url=url, duration=7.0)]


# -- hang-ups and ended calls ----------------------------------------------------------------


@pytest.mark.anyio
async def test_caller_hangup_runs_the_flows_finally_and_forgets_the_call() -> None:
    app = make_app()
    trail: list[Any] = []

    @app.flow(number=NUMBER)
    async def menu(call: Call) -> None:
        try:
            await call.gather(num_digits=1)
        except CallEnded as exc:
            trail.append(("ended", exc.by))
            raise
        finally:
            trail.append("finally")

    async with serve(app) as client:
        await post(client, "CalledNumber")
        assert await post(client, "HangUp", direction="fromParticipant") == NOTHING
        await wait_ended(app)
        assert trail == [("ended", "caller"), "finally"]
        assert (await client.get(f"{PUBLIC}/callflow/{SECRET}/health")).json() == {
            "status": "ok", "calls": 0}

        # Late notifications for the ended call are answered harmlessly.
        assert await post(client, "DigitsCollected", url=action(1), digits="1") == NOTHING
        assert await post(client, "Redirected", url=action(1)) == NOTHING
        assert await post(client, "HangUp", direction="fromParticipant") == NOTHING
        assert await post(client, "PlaybackStopped") == NOTHING
        assert trail == [("ended", "caller"), "finally"]


@pytest.mark.anyio
async def test_unknown_call_id_is_ended_with_an_apology() -> None:
    # Memory mode: a call the app does not know (it restarted) is ended for good, not a
    # 404 the platform would fall back from (see tests/reliability/test_unknown_calls.py).
    app, _ = reception_app()
    async with serve(app) as client:
        response = await client.post(action(1, "nope"),
                                     json=note("DigitsCollected", call_id="nope", digits="1"))
        assert response.status_code == 200
        commands = response.json()["commands"]
        assert "speak" in commands[0] and commands[-1] == {"hangup": {"reason": "rejected"}}


# -- what the platform must not be able to do -----------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    [
        "/callflow/wrong-secret/events",
        "/callflow/s3cret-tokeN/events",
        "/callflow/wrong-secret/fallback",
        "/callflow//events",
        "/callflow/events",
        "/callflow/fallback",
    ],
)
async def test_wrong_or_missing_secret_is_forbidden(path: str) -> None:
    app, seen = reception_app()
    async with serve(app) as client:
        response = await client.post(path, json=note("CalledNumber"))
        assert response.status_code == 403
        assert response.json() == {"error": {"code": "forbidden",
                                             "message": "wrong or missing webhook secret"}}
        assert seen == []
        assert app.sessions == {}


@pytest.mark.anyio
async def test_an_app_given_settings_without_a_secret_still_has_one() -> None:
    app = App(settings=Settings(public_url=PUBLIC, secret=""),
              transport=httpx.ASGITransport(FakePlatform()))
    secret = app.settings.secret
    assert len(secret) >= 16
    assert app.callback_url == f"{PUBLIC}/callflow/{secret}/events"
    async with serve(app) as client:
        response = await client.post("/callflow//events", json=note("CalledNumber"))
        assert response.status_code == 403


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"", "malformed_json"),
        (b'["CalledNumber"]', "malformed_json"),
        (b'{"eventName": "CalledNumber"}', "missing_field"),
        (b'{"callId": "call-1"}', "missing_field"),
        (b'{"eventName": "DigitsCollected", "callId": "call-1"}', "missing_field"),
        (b'{"eventName": "SmsReceived", "callId": "call-1"}', "unknown_event"),
        (b'{"eventName": "HangUp", "callId": 1}', "invalid_field"),
    ],
)
async def test_bad_notifications_are_400_json_errors(
    content: bytes, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = reception_app()
    async with serve(app) as client:
        await post(client, "CalledNumber")
        with caplog.at_level(logging.WARNING, logger="callflow"):
            response = await client.post(EVENTS, content=content,
                                         headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == code
        assert isinstance(error["message"], str) and error["message"]
        assert any("refused a notification" in r.getMessage() for r in caplog.records)
        # The live call is undisturbed.
        assert await post(client, "DigitsCollected", url=action(1), digits="1") == {
            "commands": [speak("You pressed 1."), HANGUP]
        }


@pytest.mark.anyio
async def test_bad_step_in_the_action_url_is_a_400() -> None:
    app, _ = reception_app()
    async with serve(app) as client:
        await post(client, "CalledNumber")
        response = await client.post(f"{EVENTS}?call={CALL_ID}&step=one",
                                     json=note("DigitsCollected", digits="1"))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_field"


@pytest.mark.anyio
async def test_oversized_body_is_413() -> None:
    app, seen = reception_app(max_body=512)
    async with serve(app) as client:
        response = await client.post(EVENTS, json=note("CalledNumber", padding="x" * 1000))
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "too_large"
        assert "512" in response.json()["error"]["message"]
        assert seen == []
        # Just under the limit is fine.
        assert await post(client, "CalledNumber") == WELCOME


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_on_the_endpoint_are_405(method: str) -> None:
    app, _ = reception_app()
    async with serve(app) as client:
        response = await client.request(method, EVENTS)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.anyio
async def test_unknown_paths_are_404() -> None:
    app, _ = reception_app()
    async with serve(app) as client:
        for path in ("/", "/callflow", f"/callflow/{SECRET}/other", f"/callflow/{SECRET}"):
            response = await client.post(path, json=note("CalledNumber"))
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"


@pytest.mark.anyio
async def test_health_counts_live_calls_behind_the_secret() -> None:
    app, _ = reception_app()
    async with serve(app) as client:
        response = await client.get(f"/callflow/{SECRET}/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "calls": 0}
        await post(client, "CalledNumber")
        await post(client, "CalledNumber", call_id="call-2", leg="leg-9")
        assert (await client.get(f"/callflow/{SECRET}/health")).json() == {
            "status": "ok", "calls": 2}


@pytest.mark.anyio
async def test_public_health_tells_only_that_the_app_is_alive() -> None:
    """Liveness is public; how many calls are live is for those who hold the secret."""
    app, _ = reception_app()
    async with serve(app) as client:
        await post(client, "CalledNumber")
        for method in ("GET", "POST", "HEAD"):
            response = await client.request(method, "/callflow/health")
            assert response.status_code == 200
            if method != "HEAD":
                assert response.json() == {"status": "ok"}
        for secret in ("", "wrong", SECRET[:-1]):
            response = await client.get(f"/callflow/{secret}/health")
            assert response.status_code in (403, 404), secret
            assert "calls" not in response.text


@pytest.mark.anyio
async def test_the_app_refuses_notifications_until_it_runs() -> None:
    app, _ = reception_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=PUBLIC) as client:
        response = await client.post(EVENTS, json=note("CalledNumber"))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_running"


# -- a flow that fails ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_flow_that_raises_apologises_and_hangs_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()

    @app.flow(number=NUMBER)
    async def broken(call: Call) -> None:
        await call.say("Let me check.")
        raise RuntimeError("the CRM is down")

    with caplog.at_level(logging.ERROR, logger="callflow"):
        async with serve(app) as client:
            response = await client.post(EVENTS, json=note("CalledNumber"))
            assert response.status_code == 200
            assert response.json() == {
                "commands": [NOTIFY, speak("Let me check."), speak(DEFAULT_APOLOGY), HANGUP]
            }
            assert app.sessions == {}
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert CALL_ID in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError
    assert "the CRM is down" in caplog.text


@pytest.mark.anyio
async def test_a_flow_that_raises_after_resuming_uses_the_configured_apology(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(apology="Oops.")

    @app.flow(number=NUMBER)
    async def broken(call: Call) -> None:
        choice = await call.gather(num_digits=1)
        {"1": "sales"}[choice.digits]

    with caplog.at_level(logging.ERROR, logger="callflow"):
        async with serve(app) as client:
            await post(client, "CalledNumber")
            assert await post(client, "DigitsCollected", url=action(1), digits="9") == {
                "commands": [speak("Oops."), HANGUP]
            }
    assert any(r.exc_info and r.exc_info[0] is KeyError and CALL_ID in r.getMessage()
               for r in caplog.records)


@pytest.mark.anyio
async def test_no_apology_configured_just_hangs_up() -> None:
    app = make_app(apology="")

    @app.flow(number=NUMBER)
    async def broken(call: Call) -> None:
        raise ValueError("bug")

    async with serve(app) as client:
        assert await post(client, "CalledNumber") == {"commands": [NOTIFY, HANGUP]}


# -- duplicates --------------------------------------------------------------------------------


def counting_app(**settings: Any) -> tuple[App, list[str], anyio.Event, anyio.Event]:
    app = make_app(**settings)
    got: list[str] = []
    entered, release = anyio.Event(), anyio.Event()

    @app.flow(number=NUMBER)
    async def twice(call: Call) -> None:
        for gate in (True, False):
            choice = await call.gather(num_digits=1)
            got.append(choice.digits)
            if gate and settings.get("extra", {}).get("gated"):
                entered.set()
                await release.wait()
            await call.say(f"Got {choice.digits}.")

    return app, got, entered, release


AFTER_FIVE = {"commands": [speak("Got 5."), get_digits(2), redirect(2)]}


@pytest.mark.anyio
async def test_sequential_duplicate_digits_get_the_same_response_and_advance_once() -> None:
    app, got, _, _ = counting_app()
    async with serve(app) as client:
        await post(client, "CalledNumber")
        first = await post(client, "DigitsCollected", url=action(1), digits="5")
        second = await post(client, "DigitsCollected", url=action(1), digits="5")
        assert first == second == AFTER_FIVE
        assert got == ["5"]
        assert await post(client, "DigitsCollected", url=action(2), digits="6") == {
            "commands": [speak("Got 6."), HANGUP]
        }
        assert got == ["5", "6"]


@pytest.mark.anyio
async def test_concurrent_duplicate_digits_get_the_same_response_and_advance_once() -> None:
    app, got, entered, release = counting_app(extra={"gated": True}, response_budget=30.0)
    answers: list[Any] = []

    async with serve(app) as client:
        await post(client, "CalledNumber")

        async def deliver() -> None:
            answers.append(await post(client, "DigitsCollected", url=action(1), digits="5"))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(deliver)
                await entered.wait()
                # Every copy is now inside the app, waiting on the flow.
                await anyio.wait_all_tasks_blocked()
                assert answers == []
                release.set()
        assert answers == [AFTER_FIVE] * 3
        assert got == ["5"]


# -- numbers nobody answers ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_number_with_no_flow_and_no_default_is_hung_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, seen = reception_app()
    with caplog.at_level(logging.ERROR, logger="callflow"):
        async with serve(app) as client:
            assert await post(client, "CalledNumber", callee="+34900000009") == {
                "commands": [HANGUP]
            }
            assert app.sessions == {}
    assert seen == []
    assert any("+34900000009" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_the_default_flow_answers_other_numbers() -> None:
    app, _ = reception_app()
    numbers: list[str] = []

    @app.flow
    async def anything(call: Call) -> None:
        numbers.append(call.callee)
        await call.say("Hello.")

    async with serve(app) as client:
        assert await post(client, "CalledNumber", callee="+34900000009") == {
            "commands": [NOTIFY, speak("Hello."), HANGUP]
        }
    assert numbers == ["+34900000009"]


# -- slow flows ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_slow_flow_with_queued_speech_gets_a_marker_and_the_rest_on_its_callback() -> None:
    platform = FakePlatform()
    app = make_app(platform, response_budget=0.05)
    ready = anyio.Event()

    @app.flow(number=NUMBER)
    async def lookup(call: Call) -> None:
        await call.say("One moment please.")
        await anyio.sleep(0.2)  # the CRM is slow
        await call.say("Your balance is 10 euros.")
        ready.set()
        await call.gather(num_digits=1)

    async with serve(app) as client:
        assert await post(client, "CalledNumber") == {
            "commands": [NOTIFY, speak("One moment please."), redirect(1)]
        }
        with anyio.fail_after(5):
            await ready.wait()
        assert await post(client, "Redirected", url=action(1)) == {
            "commands": [speak("Your balance is 10 euros."), get_digits(2), redirect(2)]
        }
        assert platform.requests == []


@pytest.mark.anyio
async def test_marker_callback_before_the_flow_is_ready_sends_the_rest_by_setcommands() -> None:
    platform = FakePlatform()
    app = make_app(platform, response_budget=0.05)
    proceed = anyio.Event()

    @app.flow(number=NUMBER)
    async def lookup(call: Call) -> None:
        await call.say("One moment please.")
        await proceed.wait()  # the CRM is very slow
        await call.say("Found it.")
        await call.gather(num_digits=1)

    async with serve(app) as client:
        assert await post(client, "CalledNumber") == {
            "commands": [NOTIFY, speak("One moment please."), redirect(1)]
        }
        assert await post(client, "Redirected", url=action(1)) == NOTHING
        proceed.set()
        [request] = await platform.wait_requests(1)
        assert request.json == {"commands": [speak("Found it."), get_digits(2), redirect(2)]}
        assert await post(client, "Redirected", url=action(1)) == NOTHING
        assert len(platform.requests) == 1
    # Leaving the app shuts it down: the call, still live, is hung up politely.
    goodbye = platform.requests[-1].json["commands"]
    assert len(platform.requests) == 2
    assert goodbye == [speak(Settings().shutdown_message), {"hangup": {"reason": "rejected"}}]


@pytest.mark.anyio
async def test_slow_flow_with_nothing_queued_gets_the_rest_through_setcommands() -> None:
    platform = FakePlatform()
    app = make_app(platform, response_budget=0.05)
    results: list[GatherResult] = []

    @app.flow(number=NUMBER)
    async def lookup(call: Call) -> None:
        await anyio.sleep(0.2)  # the CRM is slow
        await call.say("Thanks for waiting.")
        results.append(await call.gather(num_digits=1))
        await call.say("Bye.")

    async with serve(app) as client:
        # Only all-events mode, which must be the first command of the first response.
        assert await post(client, "CalledNumber") == {"commands": [NOTIFY]}
        [request] = await platform.wait_requests(1)
        assert request == Seen(
            "POST", f"/comms/v1/calls/{CALL_ID}/setcommands",
            {"commands": [speak("Thanks for waiting."), get_digits(1), redirect(1)]}, AUTH,
        )
        assert await post(client, "DigitsCollected", url=action(1), digits="3") == {
            "commands": [speak("Bye."), HANGUP]
        }
    assert results == [GatherResult(digits="3")]
    assert len(platform.requests) == 1


@pytest.mark.anyio
async def test_setcommands_is_retried_after_a_500_and_delivered_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    platform = FakePlatform(setcommands=(500,))
    app = make_app(platform, response_budget=0.05)

    @app.flow(number=NUMBER)
    async def lookup(call: Call) -> None:
        await anyio.sleep(0.1)
        await call.say("Thanks for waiting.")
        await call.gather(num_digits=1)

    expected = {"commands": [speak("Thanks for waiting."), get_digits(1), redirect(1)]}
    with caplog.at_level(logging.WARNING, logger="callflow"):
        async with serve(app) as client:
            await post(client, "CalledNumber")
            first, second = await platform.wait_requests(2)
            assert first.json == second.json == expected
            assert first.path == second.path == f"/comms/v1/calls/{CALL_ID}/setcommands"
            assert await post(client, "DigitsCollected", url=action(1), digits="1") == {
                "commands": [HANGUP]
            }
    assert len(platform.setcommands) == 2
    assert any(CALL_ID in r.getMessage() and "HTTP 500" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.anyio
async def test_setcommands_failing_for_ever_ends_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    platform = FakePlatform(setcommands=(500, 503, 500, 500))
    app = make_app(platform, response_budget=0.05, push_retries=2)
    trail: list[Any] = []

    @app.flow(number=NUMBER)
    async def lookup(call: Call) -> None:
        await anyio.sleep(0.1)
        await call.say("Thanks for waiting.")
        try:
            await call.gather(num_digits=1)
        except CallEnded as exc:
            trail.append(exc.by)
            raise
        finally:
            trail.append("finally")

    with caplog.at_level(logging.WARNING, logger="callflow"):
        async with serve(app) as client:
            await post(client, "CalledNumber")
            await wait_ended(app)
            assert trail == ["app", "finally"]
            assert len(platform.setcommands) == 2
            # The platform's late events find a forgotten call, harmlessly.
            assert await post(client, "HangUp", direction="fromApplication") == NOTHING
    assert any(r.levelno == logging.ERROR and CALL_ID in r.getMessage()
               and "could not deliver" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_caller_hangs_up_while_a_slow_flows_marker_is_outstanding() -> None:
    platform = FakePlatform()
    app = make_app(platform, response_budget=0.05)
    proceed = anyio.Event()
    trail: list[Any] = []

    @app.flow(number=NUMBER)
    async def lookup(call: Call) -> None:
        try:
            await call.say("One moment please.")
            await proceed.wait()
            await call.say("Found it.")
        except CallEnded as exc:
            trail.append(exc.by)
        finally:
            trail.append("finally")

    async with serve(app) as client:
        assert await post(client, "CalledNumber") == {
            "commands": [NOTIFY, speak("One moment please."), redirect(1)]
        }
        assert await post(client, "HangUp", direction="fromParticipant") == NOTHING
        proceed.set()
        await wait_ended(app)
        assert trail == ["caller", "finally"]
        assert platform.requests == []


# -- outbound calls ----------------------------------------------------------------------------


def outbound_app(platform: FakePlatform) -> tuple[App, list[Any]]:
    app, _ = reception_app(platform)
    seen: list[Any] = []

    @app.flow
    async def reminder(call: Call) -> None:
        seen.append((call.id, call.caller, call.callee, call.direction, call.data))
        confirm = await call.gather(prompt="Press 1 to confirm your appointment.",
                                    num_digits=1)
        seen.append(confirm)

    return app, seen


@pytest.mark.anyio
async def test_outbound_call_starts_the_flow_on_answered() -> None:
    platform = FakePlatform(call_id="out-1")
    app, seen = outbound_app(platform)
    results: list[OutboundCallResult] = []

    async with serve(app) as client:
        async def place() -> None:
            results.append(await app.call("+34600000002", flow="reminder",
                                          data={"appointment": 7}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(place)
            [request] = await platform.wait_requests(1)
            assert (request.method, request.path, request.authorization) == (
                "POST", "/comms/v1/calls", AUTH)
            callback = request.json["callbackUrl"]
            assert callback.startswith(f"{EVENTS}?out=")
            assert request.json == {
                "callerId": "tel:+34900000001",
                "destination": "tel:+34600000002",
                "callbackUrl": callback,
                "fallbackUrl": FALLBACK,
                "notifications": "true",
            }
            assert results == []
            answer = await post(client, "Answered", url=callback, call_id="out-1",
                                leg="leg-out", caller=NUMBER, callee="+34600000002")
            assert answer == {"commands": [
                NOTIFY,
                get_digits(1, prompt="Press 1 to confirm your appointment.", call_id="out-1"),
                redirect(1, "out-1"),
            ]}
        assert results == [OutboundCallResult("out-1", "answered")]
        assert seen == [("out-1", NUMBER, "+34600000002", "outbound", {"appointment": 7})]
        assert await post(client, "DigitsCollected", url=action(1, "out-1"),
                          call_id="out-1", leg="leg-out", digits="1") == {"commands": [HANGUP]}
        assert seen[1] == GatherResult(digits="1")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("event", "status"),
    [("Busy", "busy"), ("NoAnswer", "no_answer"), ("Failed", "failed")],
)
async def test_outbound_call_that_is_not_answered_never_starts_the_flow(
    event: str, status: str
) -> None:
    platform = FakePlatform(call_id="out-2")
    app, seen = outbound_app(platform)
    results: list[OutboundCallResult] = []

    async with serve(app) as client:
        async def place() -> None:
            results.append(await app.call("+34600000002", flow="reminder"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(place)
            [request] = await platform.wait_requests(1)
            callback = request.json["callbackUrl"]
            assert await post(client, event, url=callback, call_id="out-2", leg="leg-out",
                              caller=NUMBER, callee="+34600000002", reason="no luck") == NOTHING
        assert results == [OutboundCallResult("out-2", status, "no luck")]  # type: ignore[arg-type]
        assert seen == []
        assert app.sessions == {}
        # In all-events mode the platform follows up with the leg's HangUp: harmless.
        assert await post(client, "HangUp", url=callback, call_id="out-2", leg="leg-out",
                          caller=NUMBER, callee="+34600000002",
                          direction="fromApplication") == NOTHING
        assert seen == []


@pytest.mark.anyio
async def test_outbound_call_refused_by_the_platform() -> None:
    platform = FakePlatform(create_status=403)
    app, seen = outbound_app(platform)
    async with serve(app):
        with pytest.raises(OutboundCallError) as info:
            await app.call("+34600000002", flow="reminder")
    assert info.value.status == 403
    assert seen == []


# -- the fallback URL ------------------------------------------------------------------------


APOLOGY_AND_HANGUP = {"commands": [speak(DEFAULT_APOLOGY), HANGUP]}


@pytest.mark.anyio
async def test_callback_unavailable_at_the_fallback_url_apologises_and_hangs_up() -> None:
    app = make_app()
    trail: list[Any] = []

    @app.flow(number=NUMBER)
    async def menu(call: Call) -> None:
        try:
            await call.gather(num_digits=1)
        except CallEnded as exc:
            trail.append(exc.by)

    async with serve(app) as client:
        await post(client, "CalledNumber")
        assert await post(client, "CallbackUnavailable", url=FALLBACK,
                          failedEventName="DigitsCollected", digits="1") == APOLOGY_AND_HANGUP
        await wait_ended(app)
        assert trail == ["app"]


@pytest.mark.anyio
async def test_callback_unavailable_for_a_call_the_app_never_saw() -> None:
    app, seen = reception_app()
    async with serve(app) as client:
        assert await post(client, "CallbackUnavailable", url=FALLBACK, call_id="call-9",
                          failedEventName="CalledNumber") == APOLOGY_AND_HANGUP
        assert seen == []
        assert app.sessions == {}
