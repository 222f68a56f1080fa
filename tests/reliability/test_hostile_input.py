"""Hostile input on every platform: whatever a webhook holds, the answer is a 4xx or a 200.

Each adapter's ``verify`` and ``parse`` are fuzzed as the pure functions they are (hypothesis
draws queries, headers and bodies, with numbers thousands of digits long among them), and
the bugs the fuzzing found are pinned through the App itself, under asyncio and trio.
"""

from __future__ import annotations

import base64
import json
import string
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callflow import App, Call, NotificationError
from callflow.platforms import BlueVia, Platform, Telnyx, Twilio, Webhook
from callflow.platforms._limits import MAX_DIGITS, MAX_ID, MAX_STEP, MAX_TEXT

from ._platforms import (
    EVENTS,
    PLATFORMS,
    TELNYX_PUBLIC,
    TWILIO_SID,
    TWILIO_TOKEN,
    VALIDATOR,
    incoming,
    platform_app,
    telnyx_headers,
    twilio_headers,
)
from ._support import CALLER, FUZZ, NUMBER, PUBLIC, note

ADAPTERS: dict[str, Platform] = {
    "bluevia": BlueVia(),
    "twilio": Twilio(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN),
    "telnyx": Telnyx(api_key="KEY", public_key=TELNYX_PUBLIC),
}

# -- what anyone might send -----------------------------------------------------------------------

long_numbers = st.integers(1, 6000).map(lambda n: "9" * n)
texts = st.one_of(st.text(max_size=12), st.text(alphabet=string.digits, max_size=12),
                  long_numbers, st.integers(MAX_ID - 2, MAX_TEXT + 2).map(lambda n: "x" * n))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts,
                    st.integers(1, 4200).map(lambda n: int("7" * n)))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10)
queries = st.dictionaries(st.sampled_from(["step", "call", "out", "leg", "junk"]), texts,
                          max_size=4)

BLUEVIA_FIELDS = ("eventName", "callId", "legId", "callerId", "destination", "digits",
                  "duration", "direction", "reason", "recordingUrl", "timestamp")
TWILIO_FIELDS = ("CallSid", "From", "To", "CallStatus", "Digits", "FinishedOnKey",
                 "DialCallStatus", "DialCallSid", "DialCallDuration", "RecordingUrl",
                 "RecordingDuration", "CallDuration", "Timestamp", "ParentCallSid")
TELNYX_FIELDS = ("call_control_id", "call_leg_id", "client_state", "from", "to", "digits",
                 "digit", "hangup_cause", "status", "direction", "recording_urls",
                 "recording_started_at", "recording_ended_at")
TELNYX_EVENTS = ("call.initiated", "call.answered", "call.hangup", "call.gather.ended",
                 "call.recording.saved", "call.speak.ended", "call.dtmf.received")


@st.composite
def bluevia_bodies(draw: st.DrawFn) -> bytes:
    body = note(draw(st.sampled_from(["CalledNumber", "DigitsCollected", "HangUp",
                                      "RecordingStopped", "Busy"])), draw(texts))
    body.update(draw(st.dictionaries(st.sampled_from(BLUEVIA_FIELDS), json_values, max_size=4)))
    return json.dumps(body).encode()


@st.composite
def twilio_bodies(draw: st.DrawFn) -> bytes:
    params = {"CallSid": "CA1", "From": CALLER, "To": NUMBER, "CallStatus": "in-progress"}
    params.update(draw(st.dictionaries(st.sampled_from(TWILIO_FIELDS), texts, max_size=5)))
    return urlencode(params).encode()


@st.composite
def telnyx_bodies(draw: st.DrawFn) -> bytes:
    payload: dict[str, Any] = {"call_control_id": "v3:1", "from": CALLER, "to": NUMBER}
    payload.update(draw(st.dictionaries(st.sampled_from(TELNYX_FIELDS), json_values,
                                        max_size=5)))
    if draw(st.booleans()):
        state = draw(st.dictionaries(st.sampled_from("cnsi"), scalars, max_size=4))
        payload["client_state"] = base64.b64encode(
            json.dumps(state).encode()).decode()
    return json.dumps({"data": {"event_type": draw(st.sampled_from(TELNYX_EVENTS)),
                                "id": draw(texts), "occurred_at": draw(texts),
                                "payload": payload}}).encode()


def bodies(platform: str) -> st.SearchStrategy[bytes]:
    structured = {"bluevia": bluevia_bodies(), "twilio": twilio_bodies(),
                  "telnyx": telnyx_bodies()}[platform]
    return st.one_of(structured, structured, st.binary(max_size=100),
                     json_values.map(lambda v: json.dumps(v).encode()))


@st.composite
def webhooks(draw: st.DrawFn, platform: str) -> Webhook:
    body = draw(bodies(platform))
    query = draw(queries)
    headers: dict[str, str] = {}
    if platform == "telnyx":
        stamp = draw(st.one_of(st.none(), texts))
        headers = telnyx_headers(body, stamp) if draw(st.booleans()) else {
            "telnyx-timestamp": stamp or "", "telnyx-signature-ed25519": draw(texts)}
    elif platform == "twilio":
        headers = {"x-twilio-signature": draw(texts)}
    return Webhook("POST", EVENTS + ("?" + urlencode(query) if query else ""), "/", query,
                   headers, body, 1_700_000_000.0)


def check_events(platform: Platform, webhook: Webhook) -> None:
    """``parse`` returns bounded events, or refuses with a 4xx: it never raises anything else."""
    try:
        events = platform.parse(webhook)
    except NotificationError as exc:
        assert 400 <= exc.status < 500, exc
        return
    for event in events:
        assert len(event.call_id) <= MAX_ID and len(event.leg_id) <= MAX_ID
        assert len(event.caller) <= MAX_ID and len(event.callee) <= MAX_ID
        assert event.digits is None or len(event.digits) <= MAX_DIGITS
        assert event.step is None or 0 <= event.step <= MAX_STEP
        assert len(event.reason or "") <= MAX_TEXT


@pytest.mark.parametrize("name", PLATFORMS)
def test_fuzzed_webhooks_are_parsed_or_refused_with_a_4xx(name: str) -> None:
    platform = ADAPTERS[name]

    @FUZZ
    @given(webhook=webhooks(name))
    def run(webhook: Webhook) -> None:
        try:
            platform.verify(webhook)
        except NotificationError as exc:
            assert 400 <= exc.status < 500, exc
        check_events(platform, webhook)

    run()


# -- pinned through the App ----------------------------------------------------------------------

def answering_app(platform: str) -> App:
    app = platform_app(platform)

    @app.flow
    async def waits(call: Call) -> None:
        await call.gather(prompt="Press a key.", num_digits=1, timeout=60)

    return app


async def post_to(app: App, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url=PUBLIC
    ) as client:
        return await client.post(url, content=body, headers=headers)


@pytest.mark.anyio
@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
async def test_a_step_of_5000_digits_is_a_400(platform: str) -> None:
    app = answering_app(platform)
    async with app:
        response = await post_to(app, *incoming(platform, "call-1"))
        assert response.status_code == 200
        url = f"{EVENTS}?call=call-1&step={'9' * 5000}"
        if platform == "bluevia":
            body = json.dumps(note("DigitsCollected", "call-1", digits="1")).encode()
            headers = {"content-type": "application/json"}
        else:
            params = {"CallSid": "call-1", "From": CALLER, "To": NUMBER, "Digits": "1",
                      "CallStatus": "in-progress"}
            body, headers = urlencode(params).encode(), twilio_headers(url, params)
        response = await post_to(app, url, body, headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_field"


@pytest.mark.anyio
@pytest.mark.parametrize("platform", PLATFORMS)
async def test_an_id_of_20000_characters_is_a_400(platform: str) -> None:
    app = answering_app(platform)
    async with app:
        response = await post_to(app, *incoming(platform, "c" * 20_000))
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_field"
        assert app.sessions == {}


@pytest.mark.anyio
async def test_a_telnyx_timestamp_of_5000_digits_is_a_403() -> None:
    app = answering_app("telnyx")
    async with app:
        url, body, _ = incoming("telnyx", "call-1")
        response = await post_to(app, url, body, telnyx_headers(body, "9" * 5000))
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "bad_signature"


# -- Twilio signatures ---------------------------------------------------------------------------


class MultiDict(dict[str, list[str]]):
    """Form fields with repeated names, as Flask hands them to Twilio's validator."""

    def getall(self, name: str) -> list[str]:
        return self[name]


TWILIO_CALL = {"CallSid": "CA1", "AccountSid": TWILIO_SID, "From": CALLER, "To": NUMBER,
               "CallStatus": "ringing", "Direction": "inbound"}


@pytest.mark.anyio
@pytest.mark.parametrize("repeat", ["X=1&X=1", "X=2&X=1&X=2", "X=&X="])
async def test_a_repeated_parameter_signed_by_the_sdk_is_accepted(repeat: str) -> None:
    app = answering_app("twilio")
    body = f"{urlencode(TWILIO_CALL)}&{repeat}".encode()
    fields = MultiDict({name: [value] for name, value in TWILIO_CALL.items()})
    for pair in repeat.split("&"):
        name, _, value = pair.partition("=")
        fields.setdefault(name, []).append(value)
    signature = VALIDATOR.compute_signature(EVENTS, fields)
    assert VALIDATOR.validate(EVENTS, fields, signature)  # the oracle accepts its own
    async with app:
        response = await post_to(app, EVENTS, body, {
            "x-twilio-signature": signature,
            "content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == 200, response.text
        assert "CA1" in app.sessions


@pytest.mark.anyio
@pytest.mark.parametrize("signature", ["", "d3Jvbmc=", "é", "A" * 200],
                         ids=["none", "wrong", "not_ascii", "too_long"])
async def test_a_body_that_is_not_utf8_is_refused_for_its_signature(signature: str) -> None:
    """Verification comes before reading the body: a stranger learns nothing of the parser."""
    app = answering_app("twilio")
    body = urlencode(TWILIO_CALL).encode() + b"&Digits=\xff\xfe"
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if signature:
        headers["x-twilio-signature"] = signature
    async with app:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url=PUBLIC
        ) as client:
            response = await client.post(EVENTS, content=body, headers={
                k: v.encode() if k == "x-twilio-signature" else v
                for k, v in headers.items()})
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "bad_signature"
        assert app.sessions == {}
