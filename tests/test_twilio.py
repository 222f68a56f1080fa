"""The Twilio platform: the adapter as pure functions, then whole calls through the App.

The official ``twilio`` package is the oracle: every webhook here is signed with its
``RequestValidator``, and rendered TwiML is compared with what its ``VoiceResponse``
builds for the same verbs.  Whole calls run over ``httpx.ASGITransport`` against a
scripted Twilio (``TwilioCaller``) that executes the TwiML the app returns, and their
outcome is compared with ``FakeCall``'s, the neutral reference.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

import anyio
import httpx
import pytest
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Dial as TwDial
from twilio.twiml.voice_response import Gather as TwGather
from twilio.twiml.voice_response import VoiceResponse

from callflow import (
    App,
    Call,
    CallEnded,
    Conference,
    ConferenceOptions,
    Dial,
    DialResult,
    Gather,
    GatherResult,
    Hangup,
    NotificationError,
    OutboundCallResult,
    Pause,
    PlatformError,
    Play,
    Record,
    RecordResult,
    Resume,
    Say,
    Settings,
    UnsupportedFeature,
)
from callflow._loader import load_app
from callflow.platforms import Twilio, Webhook, get_platform
from callflow.platforms._twilio import _decode_whisper, _encode_whisper, _signature
from callflow.testing import FakeCall

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token"
PUBLIC = "https://app.example"
SECRET = "s3cret"
EVENTS = f"{PUBLIC}/callflow/{SECRET}/events"
FALLBACK = f"{PUBLIC}/callflow/{SECRET}/fallback"
NUMBER = "+34900000001"
CALLER = "+34600000001"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

ADAPTER = Twilio(account_sid=ACCOUNT, auth_token=TOKEN, language="en-US")
VALIDATOR = RequestValidator(TOKEN)


def url_for(step: int) -> str:
    return f"{EVENTS}?call=CA1&step={step}"


def webhook(params: Mapping[str, str], *, url: str = EVENTS, signed: bool = True,
            token: str = TOKEN, received_at: float = 1_700_000_000.0) -> Webhook:
    body = httpx.QueryParams(params).__str__().encode()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if signed:
        headers["x-twilio-signature"] = RequestValidator(token).compute_signature(url, params)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return Webhook("POST", url, parts.path, query, headers, body, received_at)


def voice(**extra: str) -> dict[str, str]:
    """The parameters of every Twilio voice webhook, plus ``extra``."""
    return {"CallSid": "CA1", "AccountSid": ACCOUNT, "From": CALLER, "To": NUMBER,
            "CallStatus": "in-progress", "Direction": "inbound", "ApiVersion": "2010-04-01",
            **extra}


def canonical(xml: bytes | str) -> Any:
    """A TwiML document as nested (tag, attributes, text, children), for comparison."""
    def walk(node: ET.Element) -> Any:
        return (node.tag, dict(node.attrib), (node.text or "").strip(),
                [walk(child) for child in node])
    return walk(ET.fromstring(xml))


def rendered(*commands: Any, first: bool = False) -> Any:
    reply = ADAPTER.reply(list(commands), url_for=url_for, first=first)
    assert reply.status == 200 and reply.content_type == "text/xml"
    return canonical(reply.body)


# -- signatures ---------------------------------------------------------------------------


def test_signature_matches_the_sdk() -> None:
    params = {"CallSid": "CA1", "Digits": "1234", "From": "+34600000001", "To": "+3490 1&2"}
    url = f"{EVENTS}?call=CA1&step=3"
    assert _signature(TOKEN, url, params) == VALIDATOR.compute_signature(url, params)


def test_a_signed_webhook_is_accepted() -> None:
    ADAPTER.verify(webhook(voice(CallStatus="ringing")))


@pytest.mark.parametrize("forgery", ["missing", "wrong_token", "altered", "other_url"])
def test_forged_or_missing_signatures_are_403(forgery: str) -> None:
    hook = webhook(voice(), signed=forgery != "missing",
                   token="not-the-token" if forgery == "wrong_token" else TOKEN)
    if forgery == "altered":
        hook = Webhook(hook.method, hook.url, hook.path, hook.query, hook.headers,
                       hook.body.replace(b"CA1", b"CA2"), hook.received_at)
    if forgery == "other_url":
        signed = webhook(voice(), url="https://elsewhere.example/callflow/s3cret/events")
        hook = Webhook(hook.method, hook.url, hook.path, hook.query, signed.headers, hook.body)
    with pytest.raises(NotificationError) as info:
        ADAPTER.verify(hook)
    assert (info.value.status, info.value.code) == (403, "bad_signature")


def test_a_signature_over_the_url_with_its_default_port_is_accepted() -> None:
    params = voice()
    hook = webhook(params)
    signed_with_port = VALIDATOR.compute_signature(
        EVENTS.replace("app.example", "app.example:443"), params)
    ADAPTER.verify(Webhook(hook.method, hook.url, hook.path, hook.query,
                           {"x-twilio-signature": signed_with_port}, hook.body))


# -- parsing ----------------------------------------------------------------------------------


def parse(params: Mapping[str, str], url: str = EVENTS) -> list[Any]:
    return [(e.kind, e.call_id, e.leg_id, e.step, e.digits, e.callee, e.duration, e.reason)
            for e in ADAPTER.parse(webhook(params, url=url))]


def test_an_incoming_call() -> None:
    [event] = ADAPTER.parse(webhook(voice(CallStatus="ringing")))
    assert (event.kind, event.call_id, event.leg_id, event.caller, event.callee) == (
        "incoming", "CA1", "CA1", CALLER, NUMBER)
    assert event.timestamp == "2023-11-14T22:13:20Z"


def test_gather_digits_get_their_finish_key_back() -> None:
    assert parse(voice(Digits="1234", FinishedOnKey="#"), url_for(3)) == [
        ("digits", "CA1", "CA1", 3, "1234#", NUMBER, None, None)]
    assert parse(voice(Digits="7"), url_for(3)) == [
        ("digits", "CA1", "CA1", 3, "7", NUMBER, None, None)]


def test_a_redirect_resumes_the_step() -> None:
    assert parse(voice(), url_for(4)) == [("resumed", "CA1", "CA1", 4, None, NUMBER, None, None)]


def test_a_completed_dial_is_answer_hangup_and_resume() -> None:
    events = parse(voice(DialCallStatus="completed", DialCallSid="CA2", DialCallDuration="42"),
                   url_for(2))
    assert events == [
        ("answered", "CA1", "CA2", None, None, "", None, None),
        ("hangup", "CA1", "CA2", None, None, "", 42.0, None),
        ("resumed", "CA1", "CA1", 2, None, NUMBER, None, None),
    ]


@pytest.mark.parametrize(("status", "kind"), [("busy", "busy"), ("no-answer", "no_answer"),
                                              ("failed", "failed"), ("canceled", "failed")])
def test_a_failed_dial(status: str, kind: str) -> None:
    leg_event, resumed = parse(voice(DialCallStatus=status), url_for(2))
    assert leg_event[0] == kind and leg_event[7] == status and leg_event[2] != "CA1"
    assert resumed[0] == "resumed"


def test_a_recording() -> None:
    assert parse(voice(RecordingUrl="https://api.twilio.com/rec/RE1", RecordingDuration="7",
                       Digits="#"), url_for(5)) == [
        ("recording_stopped", "CA1", "CA1", None, None, NUMBER, 7.0, None),
        ("resumed", "CA1", "CA1", 5, None, NUMBER, None, None),
    ]


def test_the_answering_party_of_a_dial() -> None:
    url = f"{url_for(2)}&leg=answer"
    params = voice(CallSid="CA2", ParentCallSid="CA1", To="+34910000001",
                   Direction="outbound-dial")
    assert parse(params, url) == [("answered", "CA1", "CA2", 2, None, "+34910000001", None,
                                   None)]


@pytest.mark.parametrize(("status", "kind"), [("completed", "hangup"), ("busy", "busy"),
                                              ("no-answer", "no_answer"), ("failed", "failed")])
def test_status_callbacks(status: str, kind: str) -> None:
    [event] = ADAPTER.parse(webhook(voice(CallStatus=status, CallbackSource="call-progress-events",
                                          Timestamp="Tue, 14 Nov 2023 22:13:25 +0000")))
    assert event.kind == kind
    assert event.timestamp == "2023-11-14T22:13:25Z"
    assert event.by == ("caller" if kind == "hangup" else None)


def test_an_answered_outbound_call() -> None:
    [event] = ADAPTER.parse(webhook(voice(Direction="outbound-api"), url=f"{EVENTS}?out=t"))
    assert event.kind == "answered"


@pytest.mark.parametrize(("params", "url", "code"), [
    ({"From": CALLER}, EVENTS, "missing_field"),
    (voice(), f"{EVENTS}?call=CA1&step=x", "invalid_field"),
    (voice(DialCallStatus="completed", DialCallDuration="long"), url_for(1), "invalid_field"),
])
def test_bad_webhooks_are_400(params: dict[str, str], url: str, code: str) -> None:
    with pytest.raises(NotificationError) as info:
        ADAPTER.parse(webhook(params, url=url))
    assert (info.value.status, info.value.code) == (400, code)


# -- rendering, against the SDK's VoiceResponse -------------------------------------------------


def test_say_play_pause() -> None:
    expected = VoiceResponse()
    expected.say("Hola & <adiós>", voice="man", language="en-US", loop=2)
    expected.say("Hi", voice="woman", language="en-US")
    expected.play("https://cdn.example/a.mp3", loop=3)
    expected.pause(length=2)
    assert rendered(Say("Hola & <adiós>", voice="male", repeat=2), Say("Hi"),
                    Play("https://cdn.example/a.mp3", repeat=3), Pause(1.5)) == canonical(
        expected.to_xml())


def test_gather_retries_then_redirect() -> None:
    expected = VoiceResponse()
    for _ in range(2):
        gather = TwGather(action=url_for(4), method="POST", timeout=7, finish_on_key="*",
                          num_digits=1)
        gather.say("Press 1", voice="woman", language="en-US")
        expected.append(gather)
    expected.redirect(url_for(4), method="POST")
    assert rendered(Gather(4, prompt=Say("Press 1"), num_digits=1, finish_on_key="*",
                           timeout=6.5, retries=2)) == canonical(expected.to_xml())


def test_record() -> None:
    expected = VoiceResponse()
    expected.play("https://cdn.example/beep-prompt.wav")
    expected.record(action=url_for(5), method="POST", max_length=30, timeout=4,
                    play_beep=True, finish_on_key="#")
    expected.redirect(url_for(5), method="POST")
    assert rendered(Record(5, prompt=Play("https://cdn.example/beep-prompt.wav"),
                           max_length=30, silence_timeout=4, beep=True,
                           finish_on_key="#")) == canonical(expected.to_xml())


def test_dial_with_whisper() -> None:
    whisper = Say("A caller for sales.")
    answer = f"{url_for(3)}&leg=answer&whisper={_encode_whisper(whisper)}"
    expected = VoiceResponse()
    dial = TwDial(action=url_for(3), method="POST", timeout=25, caller_id=NUMBER)
    dial.number("+34910000001", url=answer, method="POST")
    dial.number("+34910000002", url=answer, method="POST")
    expected.append(dial)
    expected.redirect(url_for(3), method="POST")
    assert rendered(Dial(3, numbers=("+34910000001", "+34910000002"), caller_id=NUMBER,
                         timeout=25, on_answer=whisper)) == canonical(expected.to_xml())
    assert _decode_whisper(_encode_whisper(whisper)) == whisper
    assert _decode_whisper(_encode_whisper(Play("https://x/w.mp3", repeat=2))) == Play(
        "https://x/w.mp3", repeat=2)
    assert _decode_whisper("not base64 json") is None


def test_conference() -> None:
    options = ConferenceOptions(beeps_on_enter=1, end_on_exit=True, mute=True,
                                max_members=10, time_limit=600)
    expected = VoiceResponse()
    dial = TwDial(action=url_for(6), method="POST", time_limit=600)
    dial.conference("room-1", beep="onEnter", start_conference_on_enter=True,
                    end_conference_on_exit=True, muted=True, max_participants=10)
    expected.append(dial)
    expected.redirect(url_for(6), method="POST")
    assert rendered(Conference(6, name="room-1", options=options)) == canonical(
        expected.to_xml())


def test_hangup_is_a_reject_only_as_the_first_verb_of_a_call() -> None:
    rejected = VoiceResponse()
    rejected.reject(reason="busy")
    assert rendered(Hangup("busy"), first=True) == canonical(rejected.to_xml())
    hung_up = VoiceResponse()
    hung_up.say("Bye", voice="woman", language="en-US")
    hung_up.hangup()
    assert rendered(Say("Bye"), Hangup("busy"), first=True) == canonical(hung_up.to_xml())


def test_resume_is_a_redirect_and_no_commands_is_an_empty_response() -> None:
    expected = VoiceResponse()
    expected.redirect(url_for(9), method="POST")
    assert rendered(Resume(9)) == canonical(expected.to_xml())
    assert canonical(ADAPTER.reply(None, url_for=url_for, first=False).body) == canonical(
        VoiceResponse().to_xml())


def test_the_whisper_document() -> None:
    url = f"{url_for(2)}&leg=answer&whisper={_encode_whisper(Say('For sales'))}"
    reply = ADAPTER.direct_reply(webhook(voice(CallSid="CA2"), url=url))
    expected = VoiceResponse()
    expected.say("For sales", voice="woman", language="en-US")
    assert reply is not None and canonical(reply.body) == canonical(expected.to_xml())
    assert ADAPTER.direct_reply(webhook(voice(), url=url_for(2))) is None


@pytest.mark.parametrize(("command", "option"), [
    (Gather(1, valid_digits="12"), "valid_digits"),
    (Conference(1, name="r", options=ConferenceOptions(speak_on_enter="Hi")), "speak_on_enter"),
    (Conference(1, name="r", options=ConferenceOptions(max_members=500)), "max_members"),
    (Dial(1, numbers=tuple(f"+3491000000{i:02d}" for i in range(11))), "numbers"),
])
def test_what_twilio_cannot_do(command: Any, option: str) -> None:
    with pytest.raises(UnsupportedFeature) as info:
        ADAPTER.check(command)
    assert (info.value.platform, info.value.option) == ("twilio", option)
    assert "twilio" in str(info.value) and option in str(info.value)


def test_get_platform_needs_the_credentials() -> None:
    from callflow import ConfigurationError

    with pytest.raises(ConfigurationError, match="twilio_auth_token"):
        get_platform(Settings(platform="twilio", twilio_account_sid=ACCOUNT))
    platform = get_platform(Settings(platform="twilio", twilio_account_sid=ACCOUNT,
                                     twilio_auth_token=TOKEN))
    assert isinstance(platform, Twilio)
    assert platform.client_options()["base_url"] == "https://api.twilio.com"


# -- a fake Twilio REST API ---------------------------------------------------------------------


@dataclass
class FakeTwilioApi:
    """Just enough of Twilio's REST API, recording what the app asks."""

    update_statuses: list[int] = field(default_factory=list)
    create_status: int = 201
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    def handler(self, request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode(), keep_blank_values=True)
        self.requests.append((request.method, request.url.path, form))
        self.arrived.set()
        assert request.headers["authorization"] == httpx.BasicAuth(
            ACCOUNT, TOKEN)._auth_header
        base = f"/2010-04-01/Accounts/{ACCOUNT}"
        path = request.url.path
        if path == f"{base}/Calls.json":
            if self.create_status != 201:
                return httpx.Response(self.create_status, json={"code": 21210})
            return httpx.Response(201, json={"sid": "CA-out", "status": "queued"})
        if path.startswith(f"{base}/Calls/"):
            status = self.update_statuses.pop(0) if self.update_statuses else 200
            return httpx.Response(status, json={"code": 21220} if status == 400 else {})
        if path == f"{base}/IncomingPhoneNumbers.json":
            number = request.url.params["PhoneNumber"]
            found = [{"sid": "PN1", "phone_number": number}] if number == NUMBER else []
            return httpx.Response(200, json={"incoming_phone_numbers": found})
        if path == f"{base}/IncomingPhoneNumbers/PN1.json":
            return httpx.Response(200, json={"sid": "PN1"})
        return httpx.Response(404)

    async def wait(self, count: int) -> None:
        with anyio.fail_after(5):
            while len(self.requests) < count:
                self.arrived = anyio.Event()
                await self.arrived.wait()


def make_app(app: App | None = None, api: FakeTwilioApi | None = None, **settings: Any
             ) -> App:
    app = app or App()
    app.configure(Settings(platform="twilio", public_url=PUBLIC, secret=SECRET,
                           twilio_account_sid=ACCOUNT, twilio_auth_token=TOKEN, **settings))
    app._transport = httpx.MockTransport((api or FakeTwilioApi()).handler)
    return app


@asynccontextmanager
async def serve(app: App) -> AsyncIterator[httpx.AsyncClient]:
    async with app, httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                      base_url=PUBLIC) as client:
        yield client


async def post(client: httpx.AsyncClient, params: Mapping[str, str], url: str = EVENTS,
               *, status: int = 200) -> ET.Element:
    """Deliver a signed webhook as Twilio would; the TwiML it gets back."""
    signature = VALIDATOR.compute_signature(url, params)
    response = await client.post(url, data=dict(params),
                                 headers={"X-Twilio-Signature": signature})
    assert response.status_code == status, response.text
    if status != 200:
        return ET.Element("error")
    assert response.headers["content-type"] == "text/xml"
    return ET.fromstring(response.content)


# -- a scripted Twilio executing the app's TwiML -------------------------------------------------


@dataclass
class TwilioCaller:
    """Plays Twilio and the phone network for one inbound call, from TwiML to webhooks.

    ``keys`` answer the gathers in order (None: silence); ``dial`` says what each
    dialled number does ("answered", "busy", "no-answer") and ``talk`` how long
    an answered one talks.
    """

    client: httpx.AsyncClient
    keys: list[str | None] = field(default_factory=list)
    dial: dict[str, str] = field(default_factory=dict)
    talk: int = 10
    heard: list[str] = field(default_factory=list)
    whispered: list[str] = field(default_factory=list)
    documents: list[ET.Element] = field(default_factory=list)
    legs: int = 1

    async def call(self, to: str = NUMBER) -> None:
        doc: ET.Element | None = await self.post(EVENTS, CallStatus="ringing", To=to)
        while doc is not None:
            doc = await self.execute(doc)
        await self.post(EVENTS, CallStatus="completed", CallDuration="60",
                        CallbackSource="call-progress-events")

    async def post(self, url: str, **extra: str) -> ET.Element:
        doc = await post(self.client, voice(**extra), url)
        self.documents.append(doc)
        return doc

    def hear(self, node: ET.Element, into: list[str]) -> None:
        times = int(node.get("loop", "1"))
        text = (node.text or "").strip()
        into.extend([text if node.tag == "Say" else f"play:{text}"] * times)

    async def execute(self, doc: ET.Element) -> ET.Element | None:
        for verb in doc:
            if verb.tag in ("Say", "Play"):
                self.hear(verb, self.heard)
            elif verb.tag == "Gather":
                for prompt in verb:
                    self.hear(prompt, self.heard)
                keys = self.keys.pop(0) if self.keys else None
                if keys:
                    finish = verb.get("finishOnKey", "#")
                    params = {"Digits": keys.rstrip(finish)}
                    if finish and keys.endswith(finish):
                        params["FinishedOnKey"] = finish
                    return await self.post(verb.get("action", ""), **params)
            elif verb.tag == "Dial":
                return await self.run_dial(verb)
            elif verb.tag == "Record":
                return await self.post(verb.get("action", ""), Digits="#",
                                       RecordingUrl="https://api.twilio.com/rec/RE1",
                                       RecordingDuration="5")
            elif verb.tag == "Redirect":
                return await self.post((verb.text or "").strip())
            elif verb.tag in ("Hangup", "Reject"):
                return None
        return None  # the document ran out: Twilio hangs up

    async def run_dial(self, verb: ET.Element) -> ET.Element:
        numbers = [n for n in verb if n.tag == "Number"]
        winner = next((n for n in numbers if self.dial.get((n.text or "").strip()) == "answered"),
                      None)
        action = verb.get("action", "")
        if winner is None:
            statuses = {self.dial.get((n.text or "").strip(), "no-answer") for n in numbers}
            status = "busy" if "busy" in statuses else (
                "no-answer" if "no-answer" in statuses else "failed")
            return await self.post(action, DialCallStatus=status)
        self.legs += 1
        leg = f"CA{self.legs}"
        number = (winner.text or "").strip()
        whisper = await post(self.client, voice(CallSid=leg, ParentCallSid="CA1", To=number,
                                                From=NUMBER, Direction="outbound-dial"),
                             winner.get("url", ""))
        for node in whisper:
            self.hear(node, self.whispered)
        return await self.post(action, DialCallStatus="completed", DialCallSid=leg,
                               DialCallDuration=str(self.talk))


def ivr_app(**settings: Any) -> App:
    return make_app(load_app(EXAMPLES / "ivr.py"), **settings)


async def run_ivr(keys: list[str | None], dial: dict[str, str]) -> tuple[TwilioCaller, dict]:
    app = ivr_app()
    data: dict[str, Any] = {}
    async with serve(app) as client:
        caller = TwilioCaller(client, keys=list(keys), dial=dial)
        original = app._new_session

        def keep_data(*args: Any) -> Any:
            session = original(*args)
            if session is not None:
                data.update(call=session.call)
            return session

        app._new_session = keep_data  # type: ignore[method-assign]
        await caller.call()
        with anyio.fail_after(5):
            await app.wait_ended("CA1")
        assert app.sessions == {}
    return caller, data["call"].data


async def reference(keys: list[str | None], dial: dict[str, str]) -> FakeCall:
    """The same call through FakeCall: the outcome every platform must reproduce."""
    ivr = load_app(EXAMPLES / "ivr.py")
    fake = FakeCall(ivr.get_flow().func, callee=NUMBER)
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


@pytest.mark.anyio
@pytest.mark.parametrize("scenario", sorted(IVR_SCENARIOS))
async def test_the_ivr_example_on_twilio_matches_the_reference(scenario: str) -> None:
    keys, dial = IVR_SCENARIOS[scenario]
    caller, data = await run_ivr(keys, dial)
    fake = await reference(keys, dial)
    assert caller.heard == fake.heard
    assert data["choice"] == fake.call.data["choice"]
    if "dial" in fake.call.data:
        expected: DialResult = fake.call.data["dial"]
        got: DialResult = data["dial"]
        assert (got.status, got.number, got.duration) == (expected.status, expected.number,
                                                          expected.duration)
        if got.answered:
            assert caller.whispered == [f"A caller for {data['choice']}."]


@pytest.mark.anyio
async def test_the_ivr_renders_what_the_sdk_would() -> None:
    caller, _ = await run_ivr(["1"], {"+34910000001": "answered"})
    welcome = caller.documents[0]
    expected = VoiceResponse()
    expected.say("Welcome to Acme.", voice="woman", language="en-US")
    gather = TwGather(action=f"{EVENTS}?call=CA1&step=1", method="POST", timeout=5,
                      finish_on_key="#", num_digits=1)
    gather.say("For sales, press 1. For support, press 2. For our opening hours, press 3.",
               voice="woman", language="en-US")
    expected.append(gather)
    expected.redirect(f"{EVENTS}?call=CA1&step=1", method="POST")
    assert canonical(ET.tostring(welcome)) == canonical(expected.to_xml())


# -- the App on Twilio --------------------------------------------------------------------


@pytest.mark.anyio
async def test_unsigned_and_misdirected_webhooks_are_refused() -> None:
    app = ivr_app()
    async with serve(app) as client:
        response = await client.post(EVENTS, data=voice(CallStatus="ringing"))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "bad_signature"
        # Signed for another public URL (a proxy the app was not told about).
        signature = VALIDATOR.compute_signature("https://other.example/callflow/s3cret/events",
                                                voice(CallStatus="ringing"))
        response = await client.post(EVENTS, data=voice(CallStatus="ringing"),
                                     headers={"X-Twilio-Signature": signature})
        assert response.status_code == 403
        assert app.sessions == {}


def slow_app(api: FakeTwilioApi, proceed: anyio.Event, *, say_first: bool) -> App:
    app = make_app(api=api, response_budget=0.05, keepalive=1.0)

    @app.flow(number=NUMBER)
    async def lookup(call: Call) -> None:
        if say_first:
            await call.say("One moment please.")
        await proceed.wait()  # the CRM is slow
        await call.say("Found it.")

    return app


@pytest.mark.anyio
async def test_a_slow_flow_with_nothing_to_say_holds_the_line() -> None:
    api, proceed = FakeTwilioApi(), anyio.Event()
    app = slow_app(api, proceed, say_first=False)
    hold = VoiceResponse()
    hold.pause(length=1)
    hold.redirect(f"{EVENTS}?call=CA1&step=1", method="POST")
    async with serve(app) as client:
        first = await post(client, voice(CallStatus="ringing"))
        assert canonical(ET.tostring(first)) == canonical(hold.to_xml())
        # Still busy at the callback: hold again, with a new marker.
        again = await post(client, voice(), f"{EVENTS}?call=CA1&step=1")
        assert [(v.tag, (v.text or "").strip()) for v in again] == [
            ("Pause", ""), ("Redirect", f"{EVENTS}?call=CA1&step=2")]
        proceed.set()
        await anyio.wait_all_tasks_blocked()
        done = await post(client, voice(), f"{EVENTS}?call=CA1&step=2")
        assert [(v.tag, (v.text or "").strip()) for v in done] == [
            ("Say", "Found it."), ("Hangup", "")]
    assert api.requests == []  # the hold loop needs no REST call


@pytest.mark.anyio
async def test_a_slow_flow_with_queued_speech_gets_it_and_a_redirect() -> None:
    api, proceed = FakeTwilioApi(), anyio.Event()
    app = slow_app(api, proceed, say_first=True)
    async with serve(app) as client:
        first = await post(client, voice(CallStatus="ringing"))
        assert [(v.tag, (v.text or "").strip()) for v in first] == [
            ("Say", "One moment please."), ("Redirect", f"{EVENTS}?call=CA1&step=1")]
        proceed.set()
        await anyio.wait_all_tasks_blocked()
        done = await post(client, voice(), f"{EVENTS}?call=CA1&step=1")
        assert [v.tag for v in done] == ["Say", "Hangup"]


def waiting_app(api: FakeTwilioApi, trail: list[Any], **settings: Any) -> App:
    app = make_app(api=api, **settings)

    @app.flow(number=NUMBER)
    async def menu(call: Call) -> None:
        try:
            await call.gather(prompt="Press a key.", num_digits=1)
        except CallEnded as exc:
            trail.append(exc.by)

    return app


@pytest.mark.anyio
async def test_commands_with_no_webhook_waiting_go_by_the_calls_api() -> None:
    api, trail = FakeTwilioApi(update_statuses=[500]), []
    app = waiting_app(api, trail)
    async with serve(app) as client:
        await post(client, voice(CallStatus="ringing"))
        # Hung up from outside the flow (an operator's dashboard, say): no webhook waits.
        await app.sessions["CA1"].call.hangup()
        await api.wait(2)
        (m1, p1, f1), (m2, p2, f2) = api.requests
        assert (m1, p1) == (m2, p2) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/Calls/CA1.json")
        assert f1 == f2  # retried after the 500, unchanged
        expected = VoiceResponse()
        expected.hangup()
        assert canonical(f1["Twiml"][0]) == canonical(expected.to_xml())
        with anyio.fail_after(5):
            await app.wait_ended("CA1")
    assert trail == ["app"]


@pytest.mark.anyio
async def test_a_call_twilio_says_is_over_is_ended_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeTwilioApi(update_statuses=[400])
    app = waiting_app(api, [])
    async with serve(app) as client:
        await post(client, voice(CallStatus="ringing"))
        await app.sessions["CA1"].call.hangup()
        await api.wait(1)
        await anyio.sleep(0.3)
        assert len(api.requests) == 1


@pytest.mark.anyio
async def test_push_reports_gone_calls_and_refusals() -> None:
    def answer(status: int, body: dict[str, Any]) -> httpx.MockTransport:
        return httpx.MockTransport(lambda request: httpx.Response(status, json=body))

    for status, body, gone in [(404, {}, True), (400, {"code": 21220}, True),
                               (400, {"code": 21218}, False), (503, {}, False)]:
        async with httpx.AsyncClient(transport=answer(status, body),
                                     base_url="https://api.twilio.com") as http:
            with pytest.raises(PlatformError) as info:
                await ADAPTER.push(http, "CA1", [Hangup()], url_for=url_for)
        assert (info.value.status, info.value.gone) == (status, gone)


@pytest.mark.anyio
async def test_a_flow_using_what_twilio_lacks_apologises_and_hangs_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    errors: list[BaseException] = []

    @app.flow(number=NUMBER)
    async def picky(call: Call) -> None:
        try:
            await call.gather(prompt="Press 1 or 2.", valid_digits="12")
        except UnsupportedFeature as exc:
            errors.append(exc)
            raise

    with caplog.at_level(logging.ERROR, logger="callflow"):
        async with serve(app) as client:
            doc = await post(client, voice(CallStatus="ringing"))
    assert [v.tag for v in doc] == ["Say", "Hangup"]
    assert "Sorry, something went wrong" in (doc[0].text or "")
    [error] = errors
    assert str(error).startswith("twilio does not support gather(valid_digits=...)")
    assert any("twilio does not support gather" in r.getMessage() or r.exc_info
               for r in caplog.records)


def test_check_platform_finds_unsupported_options(tmp_path: Path) -> None:
    flows = tmp_path / "picky.py"
    flows.write_text(
        "import callflow\n"
        "app = callflow.App()\n"
        "@app.flow(number='+34900000001')\n"
        "async def picky(call):\n"
        "    await call.gather(valid_digits='12')\n"
        "    await call.conference('room', speak_on_enter='Hi')\n"
    )
    app = make_app(load_app(flows))
    warnings = app.check_platform()
    assert len(warnings) == 2
    assert warnings[0].endswith("picky.py:5: twilio does not support gather(valid_digits=...): "
                                "<Gather> accepts every key; check the digits in the flow")
    assert "picky.py:6: twilio does not support conference(speak_on_enter=...)" in warnings[1]
    assert make_app(load_app(EXAMPLES / "ivr.py")).check_platform() == []


@pytest.mark.anyio
async def test_an_outbound_call_through_the_calls_api() -> None:
    api = FakeTwilioApi()
    app = make_app(load_app(EXAMPLES / "reminder.py"), api=api, caller_id=NUMBER)
    results: list[OutboundCallResult] = []
    async with serve(app) as client, anyio.create_task_group() as tg:
        async def place() -> None:
            results.append(await app.call(CALLER, flow="reminder", data={"name": "Ana"}))

        tg.start_soon(place)
        await api.wait(1)
        [(method, path, form)] = api.requests
        assert (method, path) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json")
        callback = form["Url"][0]
        assert callback.startswith(f"{EVENTS}?out=")
        assert form["StatusCallback"] == [callback]
        assert (form["To"], form["From"], form["Method"]) == ([CALLER], [NUMBER], ["POST"])
        assert form["FallbackUrl"] == [FALLBACK]
        doc = await post(client, voice(CallSid="CA-out", From=NUMBER, To=CALLER,
                                       Direction="outbound-api"), callback)
        assert [v.tag for v in doc] == ["Gather", "Redirect"]
        assert "Hello Ana." in (doc[0][0].text or "")
    assert results == [OutboundCallResult("CA-out", "answered")]


@pytest.mark.anyio
async def test_an_outbound_call_that_is_busy() -> None:
    api = FakeTwilioApi()
    app = make_app(load_app(EXAMPLES / "reminder.py"), api=api, caller_id=NUMBER)
    results: list[OutboundCallResult] = []
    async with serve(app) as client, anyio.create_task_group() as tg:
        async def place() -> None:
            results.append(await app.call(CALLER, flow="reminder"))

        tg.start_soon(place)
        await api.wait(1)
        callback = api.requests[0][2]["Url"][0]
        await post(client, voice(CallSid="CA-out", CallStatus="busy",
                                 CallbackSource="call-progress-events"), callback)
    assert results == [OutboundCallResult("CA-out", "busy", "busy")]
    assert app.sessions == {}


@pytest.mark.anyio
async def test_configure_numbers_sets_the_voice_url() -> None:
    api = FakeTwilioApi()
    app = make_app(load_app(EXAMPLES / "ivr.py"), api=api)
    async with serve(app):
        assert await app.configure_numbers() == {NUMBER: EVENTS}
    (m1, p1, _), (m2, p2, form) = api.requests
    assert (m1, p1) == ("GET", f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json")
    assert (m2, p2) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/PN1.json")
    assert form == {"VoiceUrl": [EVENTS], "VoiceMethod": ["POST"], "StatusCallback": [EVENTS],
                    "StatusCallbackMethod": ["POST"], "VoiceFallbackUrl": [FALLBACK],
                    "VoiceFallbackMethod": ["POST"]}


@pytest.mark.anyio
async def test_configuring_a_number_of_another_account_fails() -> None:
    app = make_app()

    @app.flow(number="+34900000099")
    async def other(call: Call) -> None:
        pass

    async with serve(app):
        with pytest.raises(PlatformError, match=r"\+34900000099 is not a phone number"):
            await app.configure_numbers()


@pytest.mark.anyio
async def test_the_fallback_url_apologises_and_hangs_up() -> None:
    app = ivr_app()
    async with serve(app) as client:
        doc = await post(client, voice(CallStatus="ringing", ErrorCode="11200"), FALLBACK)
    assert [v.tag for v in doc] == ["Say", "Hangup"]


@pytest.mark.anyio
async def test_a_voicemail_recording_on_twilio() -> None:
    app = make_app(load_app(EXAMPLES / "voicemail.py"))
    async with serve(app) as client:
        caller = TwilioCaller(client, keys=["1"])
        await caller.call("+34900000002")
    record = next(v for d in caller.documents for v in d if v.tag == "Record")
    assert (record.get("playBeep"), record.get("finishOnKey"), record.get("maxLength"),
            record.get("timeout")) == ("true", "#", "120", "5")
    assert "play:https://api.twilio.com/rec/RE1" in caller.heard
    assert caller.heard[-1] == "Your message has been saved. Goodbye."


def test_json_is_not_twiml() -> None:
    # A BlueVia app answering Twilio would be a configuration error; the replies differ.
    assert json.loads(get_platform("bluevia").reply(None, url_for=url_for,
                                                    first=False).body) == {"commands": []}
    assert GatherResult() == GatherResult(digits="")
    assert RecordResult().url is None


# -- the session's hold loop, and FakeCall on a platform -----------------------------------------


@pytest.mark.anyio
async def test_the_session_holds_a_keepalive_platforms_line_while_the_flow_is_slow() -> None:
    async def slow(call: Call) -> None:
        await anyio.sleep(0.2)
        await call.say("Found it.")

    fake = await FakeCall(slow, response_budget=0.05, keepalive=1.0).run()
    assert fake.commands[:2] == [Pause(1.0), Resume(1)]
    assert fake.heard == ["Found it."]
    assert fake.commands[-2:] == [Say("Found it."), Hangup()]
    # Without keepalive (BlueVia) the first answer is empty and the rest is pushed.
    plain = await FakeCall(slow, response_budget=0.05).run()
    assert Pause(1.0) not in plain.commands and plain.heard == ["Found it."]


@pytest.mark.anyio
async def test_fake_call_checks_a_flow_against_a_platform() -> None:
    async def picky(call: Call) -> None:
        await call.gather(valid_digits="12")

    fake = await FakeCall(picky, platform=Twilio()).run()
    assert isinstance(fake.error, UnsupportedFeature)
    assert fake.said == Settings().apology
    assert (await FakeCall(picky).run()).error is None
