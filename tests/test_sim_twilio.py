"""The simulator's Twilio front end, against hand-written TwiML apps.

The official ``twilio`` package is the oracle: every webhook the simulator sends must
pass its ``RequestValidator``, the apps answer with TwiML built by its ``VoiceResponse``,
and its REST client talks to the simulated API. Everything runs in-process (the apps over
``httpx.ASGITransport``), except the REST client, which needs a socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx
import pytest
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

from callflow.simulator import (
    Chaos,
    ConfigError,
    Phone,
    SimCall,
    Simulator,
    Transcript,
    TwilioFrontEnd,
    serve_simulator,
)

pytestmark = pytest.mark.anyio

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "sim-auth-token"
APP = "http://app.test"
SIM = "http://sim.test"
NUMBER = "+34900000001"
CALLER = "+34600000001"
AGENT = "+34910000001"
VALIDATOR = RequestValidator(TOKEN)

Handler = Callable[[dict[str, str]], Any]


@dataclass
class Hit:
    """One request the simulator made to the app."""

    method: str
    path: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]

    @property
    def signed(self) -> bool:
        """Whether the twilio SDK accepts its X-Twilio-Signature."""
        params = self.params if self.method == "POST" else {}
        return VALIDATOR.validate(self.url, params, self.headers.get("x-twilio-signature", ""))


@dataclass
class TwimlApp:
    """A Twilio app: ``routes[path](params)`` answers with TwiML (a VoiceResponse or a
    string), an int status, or None (an empty 200). Every request is recorded."""

    routes: dict[str, Handler] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    delay: dict[str, float] = field(default_factory=dict)

    def paths(self) -> list[str]:
        return [hit.path for hit in self.hits]

    def to(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope.get("query_string", b"").decode()
        url = f"{APP}{scope['path']}" + (f"?{query}" if query else "")
        source = body.decode() if scope["method"] == "POST" else query
        params = dict(parse_qsl(source, keep_blank_values=True))
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.hits.append(Hit(scope["method"], scope["path"], url, params, headers))
        if scope["path"] in self.delay:
            await anyio.sleep(self.delay[scope["path"]])
        handler = self.routes.get(scope["path"])
        result = handler(params) if handler else VoiceResponse()
        status, text = 200, ""
        if isinstance(result, int):
            status = result
        elif result is not None:
            text = str(result.to_xml() if isinstance(result, VoiceResponse) else result)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/xml")]})
        await send({"type": "http.response.body", "body": text.encode()})


def said(text: str) -> VoiceResponse:
    """A document that says ``text`` (``VoiceResponse.say`` returns the ``<Say>``)."""
    response = VoiceResponse()
    response.say(text)
    return response


def twiml(build: Callable[[VoiceResponse], Any]) -> Handler:
    """A handler that always answers with the document ``build`` fills in."""
    def handler(params: dict[str, str]) -> VoiceResponse:
        response = VoiceResponse()
        build(response)
        return response
    return handler


@asynccontextmanager
async def simulator(app: TwimlApp, **options: Any) -> AsyncIterator[Simulator]:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    sim = Simulator(platform="twilio", twilio_account_sid=ACCOUNT, twilio_auth_token=TOKEN,
                    http_client=client, base_url=SIM, **options)
    async with client, sim:
        sim.add_account_number(NUMBER, callback_url=f"{APP}/voice",
                               fallback_url=f"{APP}/fallback")
        yield sim


async def call_in(sim: Simulator, *script: str) -> tuple[SimCall, Transcript]:
    call = await sim.place_inbound_call(CALLER, NUMBER, script=list(script))
    with anyio.fail_after(10):
        return call, await call.wait_ended()


def assert_all_signed(app: TwimlApp) -> None:
    assert app.hits and all(hit.signed for hit in app.hits), [
        (hit.path, hit.params) for hit in app.hits if not hit.signed]


# -- webhooks and TwiML -------------------------------------------------------------------------


async def test_an_incoming_call_posts_the_voice_url_signed_as_the_sdk_checks() -> None:
    app = TwimlApp({"/voice": twiml(lambda r: (
        r.say("Hello there.", voice="man", loop=2),
        r.play("https://cdn.example/tone.mp3"),
        r.pause(length=2),
        r.say("Bye.", voice="Polly.Joanna")))})
    async with simulator(app) as sim:
        call, transcript = await call_in(sim)
    [hit] = app.hits
    assert hit.method == "POST" and hit.signed
    assert hit.params == {
        "AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", "CallSid": call.call_id,
        "CallStatus": "ringing", "Direction": "inbound", "From": CALLER, "To": NUMBER,
        "Caller": CALLER, "Called": NUMBER}
    assert call.call_id.startswith("CA") and len(call.call_id) == 34
    assert transcript.call_id == call.call_id and sim.calls[call.call_id] is call
    assert transcript.spoken == ["Hello there.", "Hello there.", "Bye."]
    voices = [e.data["voice"] for e in transcript.entries if e.kind == "speak"]
    assert voices == ["male", "male", "female"]
    assert transcript.texts("play") == ["https://cdn.example/tone.mp3"]
    assert transcript.texts("silence") == ["silence 2s"]
    # The document ran out of verbs: Twilio hangs up.
    assert transcript.texts("hangup")[-1].startswith("the application hung up")
    assert transcript.events() == ["VoiceUrl"]  # nothing BlueVia-only reaches the app


async def test_gather_posts_the_digits_without_the_finish_key() -> None:
    def menu(response: VoiceResponse) -> None:
        gather = Gather(action="/menu", num_digits=3, timeout=4)
        gather.say("Enter your code.")
        response.append(gather)
        response.say("Not reached.")

    app = TwimlApp({"/voice": twiml(menu),
                    "/menu": lambda p: said(f"You entered {p['Digits']}.")})
    async with simulator(app) as sim:
        _, short = await call_in(sim, "press:12#")
        _, full = await call_in(sim, "press:987")
    first, second = app.to("/menu")
    assert (first.params["Digits"], first.params["FinishedOnKey"]) == ("12", "#")
    assert (second.params["Digits"], second.params["FinishedOnKey"]) == ("987", "")
    assert first.params["CallStatus"] == "in-progress"
    assert short.spoken == ["Enter your code.", "You entered 12."]
    assert full.spoken == ["Enter your code.", "You entered 987."]
    assert short.keys == "12#"
    assert_all_signed(app)


@pytest.mark.parametrize("script", [[], ["press:#"]], ids=["silence", "lone-finish-key"])
async def test_a_gather_without_input_falls_through_to_the_next_verb(script: list[str]) -> None:
    def menu(response: VoiceResponse) -> None:
        gather = Gather(action="/menu", timeout=3)
        gather.say("Press something.")
        gather.pause(length=1)
        response.append(gather)
        response.say("We did not get that.")

    app = TwimlApp({"/voice": twiml(menu)})
    async with simulator(app) as sim:
        _, transcript = await call_in(sim, *script)
    assert app.paths() == ["/voice"]
    assert transcript.spoken == ["Press something.", "We did not get that."]


async def test_action_on_empty_result_posts_empty_digits() -> None:
    app = TwimlApp({
        "/voice": lambda p: ('<Response><Gather action="/menu" actionOnEmptyResult="true" '
                             'timeout="2"><Say>Press.</Say></Gather><Say>Unreached.</Say>'
                             '</Response>'),
        "/menu": twiml(lambda r: r.say("Empty it is.")),
    })
    async with simulator(app) as sim:
        _, transcript = await call_in(sim)
    assert app.to("/menu")[0].params["Digits"] == ""
    assert transcript.spoken == ["Press.", "Empty it is."]


async def test_a_gather_without_action_posts_its_own_document_url() -> None:
    def voice(params: dict[str, str]) -> VoiceResponse:
        if "Digits" in params:
            return said(f"Got {params['Digits']}.")
        response, gather = VoiceResponse(), Gather(num_digits=1)
        gather.say("Press a key.")
        response.append(gather)
        return response

    app = TwimlApp({"/voice": voice})
    async with simulator(app) as sim:
        _, transcript = await call_in(sim, "press:4")
    assert app.paths() == ["/voice", "/voice"]
    assert transcript.spoken == ["Press a key.", "Got 4."]


async def test_record_posts_the_recording_and_skips_an_empty_one() -> None:
    app = TwimlApp({
        "/voice": twiml(lambda r: (r.say("Speak after the beep."),
                                   r.record(action="/saved", max_length=20, timeout=3),
                                   r.say("Nothing recorded."))),
        "/saved": lambda p: said(f"Saved {p['RecordingDuration']} seconds."),
    })
    async with simulator(app) as sim:
        _, spoke = await call_in(sim, "wait:beep", "talk:4", "press:5")
        _, silent = await call_in(sim, "wait:beep", "silence:5")
        [saved] = app.to("/saved")
        recording = await httpx.AsyncClient(transport=httpx.ASGITransport(app=sim)).get(
            saved.params["RecordingUrl"])
    # Twilio's default finishOnKey is any key: 5 ended the recording.
    assert saved.params["Digits"] == "5"
    assert saved.params["RecordingSid"].startswith("RE")
    assert 3 <= int(saved.params["RecordingDuration"]) <= 5
    assert recording.status_code == 200 and recording.content[:4] == b"RIFF"
    assert spoke.spoken[-1] == f"Saved {saved.params['RecordingDuration']} seconds."
    assert "beep" in spoke.texts("beep")
    assert silent.spoken == ["Speak after the beep.", "Nothing recorded."]
    assert_all_signed(app)


async def test_a_caller_hanging_up_during_record_still_gets_the_action_posted() -> None:
    app = TwimlApp({"/voice": twiml(lambda r: r.record(action="/saved", finish_on_key="#")),
                    "/saved": twiml(lambda r: r.say("Ignored."))})
    async with simulator(app) as sim:
        _, transcript = await call_in(sim, "talk:3", "hangup:4")
    [saved] = app.to("/saved")
    assert (saved.params["Digits"], saved.params["CallStatus"]) == ("hangup", "completed")
    assert "Ignored." not in transcript.spoken


async def test_dial_fetches_the_number_url_and_posts_the_outcome() -> None:
    def voice(response: VoiceResponse) -> None:
        dial = Dial(action="/dialled", timeout=10, caller_id="+34900000009")
        dial.number(AGENT, url="/whisper")
        response.append(dial)

    app = TwimlApp({
        "/voice": twiml(voice),
        "/whisper": twiml(lambda r: (r.say("A caller for you."), r.pause(length=1))),
        "/dialled": lambda p: said(f"Dial {p['DialCallStatus']}."),
    })
    async with simulator(app) as sim:
        sim.add_phone(AGENT, Phone.answers(after=2, hang_up_after=8))
        call, transcript = await call_in(sim)
    [whisper] = app.to("/whisper")
    [dialled] = app.to("/dialled")
    child = whisper.params["CallSid"]
    assert child.startswith("CA") and child != call.call_id
    assert whisper.params["ParentCallSid"] == call.call_id
    assert (whisper.params["Direction"], whisper.params["To"], whisper.params["From"]) == (
        "outbound-dial", AGENT, "+34900000009")
    assert dialled.params["DialCallStatus"] == "completed"
    assert dialled.params["DialCallSid"] == child
    assert 8 <= int(dialled.params["DialCallDuration"]) <= 11  # whisper + talk
    agent_leg = next(leg for leg in call.legs if not leg.main)
    whispered = [e.text for e in transcript.entries
                 if e.kind == "speak" and e.leg_id == agent_leg.leg_id]
    assert whispered == ["A caller for you."]
    assert transcript.spoken == ["A caller for you.", "Dial completed."]
    assert "bridged" in [e.kind for e in transcript.entries]
    assert_all_signed(app)


@pytest.mark.parametrize(("phones", "status"), [
    ({AGENT: Phone.busy()}, "busy"),
    ({AGENT: Phone.no_answer()}, "no-answer"),
    ({AGENT: Phone.failing()}, "failed"),
    ({AGENT: Phone.no_answer(), "+34910000002": Phone.busy()}, "busy"),
])
async def test_an_unanswered_dial_posts_its_status(phones: dict[str, Phone],
                                                    status: str) -> None:
    def voice(response: VoiceResponse) -> None:
        dial = Dial(action="/dialled", timeout=5)
        for number in phones:
            dial.number(number)
        response.append(dial)

    app = TwimlApp({"/voice": twiml(voice),
                    "/dialled": lambda p: said(p["DialCallStatus"])})
    async with simulator(app) as sim:
        for number, phone in phones.items():
            sim.add_phone(number, phone)
        _, transcript = await call_in(sim)
    assert transcript.spoken == [status]
    assert "DialCallDuration" not in app.to("/dialled")[0].params


async def test_a_dial_without_action_goes_on_with_the_document() -> None:
    app = TwimlApp({"/voice": lambda p: (f"<Response><Dial>{AGENT}</Dial>"
                                         "<Say>After the dial.</Say></Response>")})
    async with simulator(app) as sim:
        sim.add_phone(AGENT, Phone.busy())
        _, transcript = await call_in(sim)
    assert app.paths() == ["/voice"]
    assert transcript.spoken == ["After the dial."]


async def test_a_conference_dial() -> None:
    def voice(response: VoiceResponse) -> None:
        dial = Dial(action="/left", time_limit=20)
        dial.conference("room-1", beep="false", end_conference_on_exit=True)
        response.append(dial)

    app = TwimlApp({"/voice": twiml(voice), "/left": twiml(lambda r: r.say("Bye."))})
    async with simulator(app) as sim:
        _, transcript = await call_in(sim)
    assert "conference-joined" in [e.kind for e in transcript.entries]
    [left] = app.to("/left")
    assert left.params["DialCallStatus"] == "completed"
    assert 19 <= int(left.params["DialCallDuration"]) <= 21
    assert transcript.spoken == ["Bye."]


async def test_reject_only_as_the_first_verb() -> None:
    app = TwimlApp({"/voice": twiml(lambda r: r.reject(reason="busy"))})
    async with simulator(app) as sim:
        _, rejected = await call_in(sim)
        app.routes["/voice"] = twiml(lambda r: (r.say("Hello."), r.reject()))
        _, late = await call_in(sim)
    assert rejected.texts("hangup") == ["the application hung up (busy)"]
    assert rejected.texts("error") == []
    assert late.spoken == ["Hello."]
    assert late.texts("error") == ["TwiML: <Reject> is only honoured as the first verb of a "
                                   "call; hanging up instead"]


async def test_redirect_replaces_the_document_also_by_get() -> None:
    app = TwimlApp({
        "/voice": twiml(lambda r: (r.say("One."), r.redirect("/two?x=1", method="GET"),
                                   r.say("Unreached."))),
        "/two": twiml(lambda r: (r.say("Two."), r.redirect("/three"))),
        "/three": twiml(lambda r: r.say("Three.")),
    })
    async with simulator(app) as sim:
        _, transcript = await call_in(sim)
    assert transcript.spoken == ["One.", "Two.", "Three."]
    two = app.to("/two")[0]
    assert two.method == "GET" and two.params["x"] == "1" and two.params["CallSid"]
    assert_all_signed(app)


async def test_unsupported_verbs_are_errors_in_the_transcript() -> None:
    app = TwimlApp({"/voice": lambda p: ("<Response><Connect><Stream url=\"wss://x\"/>"
                                         "</Connect><Say>Still here.</Say></Response>")})
    async with simulator(app) as sim:
        _, transcript = await call_in(sim)
    assert transcript.spoken == ["Still here."]
    assert transcript.texts("error") == ["TwiML: <Connect> is not simulated; skipped"]


@pytest.mark.parametrize("failure", [500, "not twiml", "slow"])
async def test_a_failing_voice_url_falls_back(failure: Any) -> None:
    app = TwimlApp({
        "/voice": lambda p: failure if failure != "slow" else VoiceResponse(),
        "/fallback": twiml(lambda r: r.say("Sorry.")),
    })
    if failure == "slow":
        app.delay["/voice"] = 1.0
    async with simulator(app, notification_timeout=0.2) as sim:
        _, transcript = await call_in(sim)
    fallback = app.to("/fallback")[0]
    assert fallback.params["ErrorCode"] == "11200"
    assert fallback.params["ErrorUrl"] == f"{APP}/voice"
    assert fallback.params["CallStatus"] == "ringing"
    assert transcript.spoken == ["Sorry."]
    assert transcript.events() == ["VoiceUrl", "VoiceFallbackUrl"]
    assert len(transcript.texts("error")) == 1


async def test_the_default_webhook_timeout_is_twilios_15_seconds() -> None:
    assert Simulator(platform="twilio").notification_timeout == 15.0
    assert Simulator().notification_timeout == 10.0
    with pytest.raises(ConfigError, match="unknown platform"):
        Simulator(platform="nexmo")


# -- status callbacks and chaos ---------------------------------------------------------------


async def configure_status_callback(sim: Simulator) -> None:
    async with api(sim) as http:
        found = (await http.get("/IncomingPhoneNumbers.json",
                                params={"PhoneNumber": NUMBER})).json()
        sid = found["incoming_phone_numbers"][0]["sid"]
        await http.post(f"/IncomingPhoneNumbers/{sid}.json",
                        data={"StatusCallback": f"{APP}/status"})


async def test_the_status_callback_says_the_call_completed() -> None:
    app = TwimlApp({"/voice": twiml(lambda r: r.say("Four words are here."))})
    async with simulator(app) as sim:
        await configure_status_callback(sim)
        _, transcript = await call_in(sim)
    [status] = app.to("/status")
    assert (status.params["CallStatus"], status.params["CallDuration"]) == ("completed", "1")
    assert status.params["CallbackSource"] == "call-progress-events"
    assert transcript.events() == ["VoiceUrl", "StatusCallback"]
    assert_all_signed(app)


async def test_duplicated_webhooks() -> None:
    app = TwimlApp({"/voice": twiml(lambda r: r.say("Hi."))})
    async with simulator(app, chaos=Chaos(duplicate=1.0)) as sim:
        await configure_status_callback(sim)
        _, transcript = await call_in(sim)
    assert app.paths() == ["/voice", "/voice", "/status", "/status"]
    first, again = app.to("/status")
    assert first.params == again.params
    assert (first.headers["i-twilio-idempotency-token"]
            == again.headers["i-twilio-idempotency-token"])
    assert transcript.spoken == ["Hi."]  # the duplicate's answer is not run


async def test_reordered_status_callbacks_of_an_outbound_call() -> None:
    app = TwimlApp({"/answer": twiml(lambda r: r.say("Hello."))})
    async with simulator(app, chaos=Chaos(reorder=1.0, seed=1)) as sim, api(sim) as http:
        created = await http.post("/Calls.json", data={
            "To": CALLER, "From": NUMBER, "Url": f"{APP}/answer",
            "StatusCallback": f"{APP}/status",
            "StatusCallbackEvent": "initiated ringing answered completed"})
        with anyio.fail_after(10):
            transcript = await sim.calls[created.json()["sid"]].wait_ended()
    # Every status callback was held back behind the call's next webhook (the answered
    # call's Url), and those held back together raced each other.
    assert next((hit.path, hit.params["CallStatus"]) for hit in app.hits) == (
        "/answer", "in-progress")
    callbacks = app.to("/status")
    sent = [(hit.params["SequenceNumber"], hit.params["CallStatus"]) for hit in callbacks]
    assert sorted(sent) == [("0", "initiated"), ("1", "ringing"), ("2", "in-progress"),
                            ("3", "completed")]
    assert sent != sorted(sent)
    assert transcript.spoken == ["Hello."]
    assert sum("(late)" in text for text in transcript.texts("notification")) == 4


async def test_chaos_is_a_probability() -> None:
    with pytest.raises(ConfigError):
        Chaos(duplicate=1.5)


# -- the REST API -----------------------------------------------------------------------------


@asynccontextmanager
async def api(sim: Simulator, *, auth: tuple[str, str] = (ACCOUNT, TOKEN),
              account: str = ACCOUNT) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim), auth=auth,
        base_url=f"{SIM}/2010-04-01/Accounts/{account}",
    ) as http:
        yield http


def error(response: httpx.Response) -> tuple[int, int]:
    body = response.json()
    assert set(body) == {"code", "message", "more_info", "status"}
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}"
    assert body["status"] == response.status_code
    return response.status_code, body["code"]


@pytest.mark.parametrize("auth", [None, (ACCOUNT, "wrong"), ("AC" + "f" * 32, TOKEN)])
async def test_the_api_wants_the_account_sid_and_auth_token(auth: Any) -> None:
    async with (simulator(TwimlApp()) as sim,
                httpx.AsyncClient(transport=httpx.ASGITransport(app=sim)) as http):
        response = await http.get(f"{SIM}/2010-04-01/Accounts/{ACCOUNT}/Calls.json", auth=auth)
    assert error(response) == (401, 20003)
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_other_accounts_unknown_resources_and_methods() -> None:
    async with simulator(TwimlApp()) as sim:
        async with api(sim, account="AC" + "f" * 32) as other:
            assert error(await other.get("/Calls.json")) == (404, 20404)
        async with api(sim) as http:
            assert error(await http.get("/Queues.json")) == (404, 20404)
            assert error(await http.get("/Calls/CA0.json")) == (404, 20404)
            assert error(await http.delete("/Calls.json")) == (405, 20004)
            # The simulator's other APIs are still there.
            bluevia = await http.get(f"{SIM}/comms/v1/calls/x", auth=("key", "secret"))
            assert bluevia.status_code == 404 and "ClientException" in bluevia.json()


@pytest.mark.parametrize(("form", "code"), [
    ({"From": NUMBER, "Url": f"{APP}/a"}, 21201),
    ({"To": CALLER, "Url": f"{APP}/a"}, 21213),
    ({"To": "nonsense", "From": NUMBER, "Url": f"{APP}/a"}, 21211),
    ({"To": CALLER, "From": "+34999999999", "Url": f"{APP}/a"}, 21210),
    ({"To": CALLER, "From": NUMBER}, 21205),
    ({"To": CALLER, "From": NUMBER, "Url": "ftp://x"}, 21205),
    ({"To": CALLER, "From": NUMBER, "Twiml": "<Nope/>"}, 12100),
])
async def test_creating_a_call_checks_its_parameters(form: dict[str, str], code: int) -> None:
    async with simulator(TwimlApp()) as sim, api(sim) as http:
        assert error(await http.post("/Calls.json", data=form)) == (400, code)
        assert sim.calls == {}


async def test_an_outbound_call_through_the_api() -> None:
    def answer(response: VoiceResponse) -> None:
        response.gather(num_digits=1, action="/got").say("Press 1 to confirm.")

    app = TwimlApp({"/answer": twiml(answer), "/got": twiml(lambda r: r.say("Confirmed."))})
    async with simulator(app) as sim, api(sim) as http:
        sim.add_phone(CALLER, Phone.answers(after=2, press="1"))
        created = await http.post("/Calls.json", data={
            "To": CALLER, "From": NUMBER, "Url": f"{APP}/answer",
            "StatusCallback": f"{APP}/status", "StatusCallbackEvent": "completed"})
        assert created.status_code == 201
        call = created.json()
        assert call["sid"].startswith("CA") and call["status"] == "queued"
        assert (call["to"], call["from"], call["direction"]) == (CALLER, NUMBER, "outbound-api")
        with anyio.fail_after(10):
            transcript = await sim.calls[call["sid"]].wait_ended()
        fetched = (await http.get(f"/Calls/{call['sid']}.json")).json()
    answer, _, status = app.hits
    assert (answer.path, answer.params["CallStatus"], answer.params["Direction"]) == (
        "/answer", "in-progress", "outbound-api")
    assert (status.path, status.params["CallStatus"]) == ("/status", "completed")
    assert transcript.spoken == ["Press 1 to confirm.", "Confirmed."]
    assert fetched["status"] == "completed" and int(fetched["duration"]) >= 1
    assert fetched["end_time"] and fetched["start_time"]
    assert_all_signed(app)


@pytest.mark.parametrize(("phone", "status"), [(Phone.busy(), "busy"),
                                               (Phone.no_answer(), "no-answer"),
                                               (Phone.unreachable(), "failed")])
async def test_an_unanswered_outbound_call_reports_its_status(phone: Phone, status: str) -> None:
    app = TwimlApp()
    async with simulator(app, outbound_ring_timeout=5) as sim, api(sim) as http:
        sim.add_phone(CALLER, phone)
        sid = (await http.post("/Calls.json", data={
            "To": CALLER, "From": NUMBER, "Twiml": "<Response><Say>x</Say></Response>",
            "StatusCallback": f"{APP}/status"})).json()["sid"]
        with anyio.fail_after(10):
            await sim.calls[sid].wait_ended()
        fetched = (await http.get(f"/Calls/{sid}.json")).json()
    [callback] = app.hits
    assert (callback.path, callback.params["CallStatus"]) == ("/status", status)
    assert fetched["status"] == status


async def test_updating_a_live_call_replaces_its_document_at_once() -> None:
    app = TwimlApp({"/voice": twiml(lambda r: (r.say("Hold on."), r.pause(length=60),
                                               r.say("Never said."))),
                    "/next": twiml(lambda r: r.say("From the Url."))})
    async with simulator(app) as sim, api(sim) as http:
        call = await sim.place_inbound_call(CALLER, NUMBER)
        await sim.clock.sleep(5)
        updated = await http.post(f"/Calls/{call.call_id}.json", data={
            "Twiml": "<Response><Say>Changed.</Say><Redirect>http://app.test/next</Redirect>"
                     "</Response>"})
        assert updated.status_code == 200 and updated.json()["status"] == "in-progress"
        with anyio.fail_after(10):
            transcript = await call.wait_ended()
        gone = await http.post(f"/Calls/{call.call_id}.json", data={"Twiml": "<Response/>"})
    assert transcript.spoken == ["Hold on.", "Changed.", "From the Url."]
    assert error(gone) == (400, 21220)


async def test_updating_with_a_url_and_hanging_up_through_the_api() -> None:
    app = TwimlApp({"/voice": twiml(lambda r: r.pause(length=60)),
                    "/new": twiml(lambda r: (r.say("New instructions."), r.pause(length=60)))})
    async with simulator(app) as sim, api(sim) as http:
        call = await sim.place_inbound_call(CALLER, NUMBER)
        await sim.clock.sleep(2)
        await http.post(f"/Calls/{call.call_id}.json", data={"Url": f"{APP}/new",
                                                              "Method": "POST"})
        await sim.clock.sleep(5)
        done = await http.post(f"/Calls/{call.call_id}.json", data={"Status": "completed"})
        with anyio.fail_after(10):
            transcript = await call.wait_ended()
    assert done.status_code == 200
    assert app.paths() == ["/voice", "/new"]
    assert transcript.spoken == ["New instructions."]
    assert transcript.duration is not None and transcript.duration < 10


async def test_canceling_a_ringing_outbound_call() -> None:
    app = TwimlApp()
    async with simulator(app) as sim, api(sim) as http:
        sim.add_phone(CALLER, Phone.no_answer())
        sid = (await http.post("/Calls.json", data={
            "To": CALLER, "From": NUMBER, "Url": f"{APP}/answer",
            "StatusCallback": f"{APP}/status"})).json()["sid"]
        await sim.clock.sleep(3)
        await http.post(f"/Calls/{sid}.json", data={"Status": "canceled"})
        with anyio.fail_after(10):
            await sim.calls[sid].wait_ended()
        fetched = (await http.get(f"/Calls/{sid}.json")).json()
    assert fetched["status"] == "canceled"
    assert [(h.path, h.params["CallStatus"]) for h in app.hits] == [("/status", "canceled")]


async def test_incoming_phone_numbers() -> None:
    async with simulator(TwimlApp()) as sim, api(sim) as http:
        found = (await http.get("/IncomingPhoneNumbers.json",
                                params={"PhoneNumber": NUMBER})).json()
        [number] = found["incoming_phone_numbers"]
        assert (number["phone_number"], number["voice_url"]) == (NUMBER, f"{APP}/voice")
        assert number["sid"].startswith("PN") and len(number["sid"]) == 34
        updated = (await http.post(f"/IncomingPhoneNumbers/{number['sid']}.json", data={
            "VoiceUrl": f"{APP}/v2", "VoiceMethod": "GET", "StatusCallback": f"{APP}/s"})).json()
        assert (updated["voice_url"], updated["voice_method"], updated["status_callback"],
                updated["voice_fallback_url"]) == (f"{APP}/v2", "GET", f"{APP}/s",
                                                   f"{APP}/fallback")
        assert sim.account_numbers[NUMBER].callback_url == f"{APP}/v2"
        # The simulated account owns any number asked about in full...
        new = (await http.get("/IncomingPhoneNumbers.json",
                              params={"PhoneNumber": "+34900000077"})).json()
        assert [n["phone_number"] for n in new["incoming_phone_numbers"]] == ["+34900000077"]
        # ...and a pattern finds only what it has.
        pattern = (await http.get("/IncomingPhoneNumbers.json",
                                  params={"PhoneNumber": "9000000*7"})).json()
        assert [n["phone_number"] for n in pattern["incoming_phone_numbers"]] == [
            "+34900000077"]
        assert error(await http.post(f"/IncomingPhoneNumbers/{number['sid']}.json",
                                     data={"VoiceUrl": "nope"}))[0] == 400
        assert error(await http.get("/IncomingPhoneNumbers/PN0.json")) == (404, 20404)


async def test_a_voice_url_by_get() -> None:
    app = TwimlApp({"/voice": twiml(lambda r: r.say("Got by GET."))})
    async with simulator(app) as sim:
        assert isinstance(sim.frontend, TwilioFrontEnd)
        async with api(sim) as http:
            sid = sim.frontend.number_sid(NUMBER)
            await http.post(f"/IncomingPhoneNumbers/{sid}.json", data={"VoiceMethod": "GET"})
        _, transcript = await call_in(sim)
    [hit] = app.hits
    assert hit.method == "GET" and hit.params["CallStatus"] == "ringing" and hit.signed
    assert transcript.spoken == ["Got by GET."]


async def test_the_official_rest_client_places_and_reads_calls() -> None:
    """The twilio package's own REST client against the simulated API, over a socket."""
    app = TwimlApp({"/answer": twiml(lambda r: r.say("From the SDK."))})
    async with simulator(app) as sim, serve_simulator(sim) as url:
        client = Client(ACCOUNT, TOKEN)
        client.api.base_url = url

        def place() -> Any:
            call = client.calls.create(to=CALLER, from_=NUMBER, url=f"{APP}/answer")
            return call.sid

        sid = await anyio.to_thread.run_sync(place)
        with anyio.fail_after(10):
            transcript = await sim.calls[sid].wait_ended()
        fetched = await anyio.to_thread.run_sync(lambda: client.calls(sid).fetch())
        numbers = await anyio.to_thread.run_sync(
            lambda: client.incoming_phone_numbers.list(phone_number=NUMBER))
        bad = Client(ACCOUNT, "wrong")
        bad.api.base_url = url
        with pytest.raises(Exception) as info:
            await anyio.to_thread.run_sync(lambda: bad.calls(sid).fetch())
    assert transcript.spoken == ["From the SDK."]
    assert (fetched.sid, fetched.status, fetched.direction) == (sid, "completed",
                                                                "outbound-api")
    assert [n.phone_number for n in numbers] == [NUMBER]
    assert getattr(info.value, "status", None) == 401
    assert getattr(info.value, "code", None) == 20003


def test_app_settings_and_the_signature_helper() -> None:
    sim = Simulator(platform="twilio")
    settings = sim.app_settings()
    assert settings["platform"] == "twilio"
    assert settings["twilio_account_sid"].startswith("AC")
    assert len(settings["twilio_account_sid"]) == 34 and settings["twilio_auth_token"]
    from callflow.simulator._twilio import signature
    params = {"b": "2", "a": "1", "Digits": "1#"}
    url = "https://x.example/p?q=1"
    assert signature(TOKEN, url, params) == VALIDATOR.compute_signature(url, params)
    assert Simulator().app_settings() == {"platform": "bluevia", "api_key": "key",
                                          "api_secret": "secret"}
