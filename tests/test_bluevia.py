"""The BlueVia adapter as pure functions: notifications in, wire commands and REST requests out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from callflow import (
    Conference,
    ConferenceOptions,
    ConfigurationError,
    Dial,
    Event,
    Gather,
    Hangup,
    NotificationError,
    Pause,
    PlatformError,
    Play,
    Record,
    Resume,
    Say,
)
from callflow.platforms import ApiRequest, BlueVia, get_platform
from callflow.platforms._bluevia import EVENT_KINDS

ADAPTER = BlueVia()
CALL = "call-1"
SPEC_EVENT_NAMES = {
    "CalledNumber", "Answered", "Ringing", "DigitsCollected", "Busy", "Failed", "NotReachable",
    "NoAnswer", "HangUp", "PlaybackStarted", "PlaybackStopped", "RecordingStarted",
    "RecordingStopped", "Redirected", "CallbackUnavailable",
}


def url_for(step: int) -> str:
    return f"https://app.example/callflow/s3cret/events?call={CALL}&step={step}"


def body(event_name: str, **extra: Any) -> bytes:
    payload: dict[str, Any] = {
        "timestamp": "2013-03-01T10:00:00Z",
        "eventName": event_name,
        "callId": CALL,
        "legId": "leg-1",
        "callerId": "tel:+34600000001",
        "destination": "tel:+34900000001",
    }
    payload.update(extra)
    return json.dumps(payload).encode()


def parse(raw: bytes, **query: str) -> Event:
    return ADAPTER.parse_notification(raw, query)


def render(*commands: Any, first: bool = False) -> Any:
    return ADAPTER.render_commands(list(commands), url_for=url_for, first=first)


# -- parsing --------------------------------------------------------------------------------


def test_every_spec_event_name_is_known() -> None:
    assert set(EVENT_KINDS) == SPEC_EVENT_NAMES


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("CalledNumber", "incoming"),
        ("Answered", "answered"),
        ("Ringing", "ringing"),
        ("DigitsCollected", "digits"),
        ("Redirected", "resumed"),
        ("Busy", "busy"),
        ("NoAnswer", "no_answer"),
        ("Failed", "failed"),
        ("NotReachable", "unreachable"),
        ("HangUp", "hangup"),
        ("PlaybackStarted", "playback_started"),
        ("PlaybackStopped", "playback_stopped"),
        ("RecordingStarted", "recording_started"),
        ("RecordingStopped", "recording_stopped"),
        ("CallbackUnavailable", "callback_unavailable"),
    ],
)
def test_event_name_maps_to_kind(name: str, kind: str) -> None:
    extra = {"digits": "1#"} if name == "DigitsCollected" else {}
    event = parse(body(name, **extra))
    assert event.kind == kind
    assert event.name == name
    assert event.call_id == CALL
    assert event.leg_id == "leg-1"
    assert event.caller == "+34600000001"
    assert event.callee == "+34900000001"
    assert event.timestamp == "2013-03-01T10:00:00Z"
    assert event.step is None


def test_called_number_fields() -> None:
    raw = body("CalledNumber")
    event = parse(raw)
    assert event == Event(
        kind="incoming", call_id=CALL, leg_id="leg-1", caller="+34600000001",
        callee="+34900000001", timestamp="2013-03-01T10:00:00Z", name="CalledNumber",
    )
    assert event.raw == json.loads(raw)
    assert event.by is None
    assert event.digits is None


def test_digits_keep_the_finish_key_and_take_the_step_from_the_query() -> None:
    event = parse(body("DigitsCollected", digits="1234#"), call=CALL, step="3")
    assert event.kind == "digits"
    assert event.digits == "1234#"
    assert event.step == 3


def test_redirected_takes_the_step_from_the_query() -> None:
    event = parse(body("Redirected"), step="12")
    assert (event.kind, event.step) == ("resumed", 12)


def test_recording_stopped_has_url_and_duration() -> None:
    event = parse(body("RecordingStopped", recordingUrl="http://sim/r/1.wav", duration="7"))
    assert event.recording_url == "http://sim/r/1.wav"
    assert event.duration == 7.0


@pytest.mark.parametrize("duration", [7, 7.0, "7", "7.0"])
def test_duration_as_number_or_numeric_string(duration: Any) -> None:
    assert parse(body("RecordingStopped", duration=duration)).duration == 7.0


@pytest.mark.parametrize(
    ("direction", "by"),
    [("fromParticipant", "caller"), ("fromApplication", "app"), (None, "caller")],
)
def test_hangup_direction_becomes_by(direction: str | None, by: str) -> None:
    extra = {"direction": direction} if direction else {}
    assert parse(body("HangUp", **extra)).by == by


def test_by_is_only_set_on_hangups() -> None:
    assert parse(body("Answered")).by is None
    assert parse(body("Ringing", direction="fromParticipant")).by is None


@pytest.mark.parametrize("name", ["Busy", "NoAnswer", "Failed", "NotReachable"])
def test_leg_failures_carry_the_reason(name: str) -> None:
    event = parse(body(name, legId="leg-2", destination="tel:+34911111111", reason="busy line"))
    assert event.reason == "busy line"
    assert event.leg_id == "leg-2"
    assert event.callee == "+34911111111"


def test_callback_unavailable_reason_is_the_failed_event() -> None:
    event = parse(body("CallbackUnavailable", failedEventName="DigitsCollected"))
    assert event.kind == "callback_unavailable"
    assert event.reason == "DigitsCollected"


def test_a_fallback_request_stands_for_the_notification_that_failed() -> None:
    failed = ADAPTER.failed_event(parse(body("CallbackUnavailable", digits="12",
                                             failedEventName="DigitsCollected")))
    assert failed is not None
    assert (failed.kind, failed.name, failed.digits) == ("digits", "DigitsCollected", "12")
    assert ADAPTER.failed_event(parse(body("CallbackUnavailable"))) is None
    assert ADAPTER.failed_event(parse(body("CallbackUnavailable",
                                           failedEventName="Nonsense"))) is None
    digits = parse(body("DigitsCollected", digits="1"))
    assert ADAPTER.failed_event(digits) is digits


def test_absent_optional_fields_are_empty() -> None:
    event = parse(json.dumps({"eventName": "Redirected", "callId": CALL}).encode())
    assert event == Event(kind="resumed", call_id=CALL, name="Redirected")
    assert (event.recording_url, event.duration, event.reason) == (None, None, None)


def _error(raw: bytes, **query: str) -> NotificationError:
    with pytest.raises(NotificationError) as info:
        parse(raw, **query)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b"\xff\xfe\x00", b'{"eventName": "HangUp",}'],
)
def test_malformed_json(raw: bytes) -> None:
    assert _error(raw).code == "malformed_json"


@pytest.mark.parametrize("raw", [b"[]", b'"HangUp"', b"42", b"null"])
def test_body_must_be_an_object(raw: bytes) -> None:
    assert _error(raw).code == "malformed_json"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"callId": CALL}, "missing_field"),
        ({"eventName": "HangUp"}, "missing_field"),
        ({"eventName": "HangUp", "callId": ""}, "missing_field"),
        ({"eventName": "DigitsCollected", "callId": CALL}, "missing_field"),
        ({"eventName": "SmsReceived", "callId": CALL}, "unknown_event"),
        ({"eventName": "hangup", "callId": CALL}, "unknown_event"),
        ({"eventName": 7, "callId": CALL}, "invalid_field"),
        ({"eventName": "HangUp", "callId": 7}, "invalid_field"),
        ({"eventName": "HangUp", "callId": CALL, "legId": ["x"]}, "invalid_field"),
        ({"eventName": "HangUp", "callId": CALL, "direction": 1}, "invalid_field"),
        ({"eventName": "HangUp", "callId": CALL, "callerId": {}}, "invalid_field"),
        ({"eventName": "RecordingStopped", "callId": CALL, "duration": "long"}, "invalid_field"),
        ({"eventName": "RecordingStopped", "callId": CALL, "duration": True}, "invalid_field"),
        ({"eventName": "RecordingStopped", "callId": CALL, "duration": [1]}, "invalid_field"),
        ({"eventName": "RecordingStopped", "callId": CALL, "recordingUrl": 3}, "invalid_field"),
    ],
)
def test_bad_fields(payload: dict[str, Any], code: str) -> None:
    error = _error(json.dumps(payload).encode())
    assert error.code == code
    assert error.message


@pytest.mark.parametrize("step", ["", "x", "-1", "1.5", "2a"])
def test_bad_step(step: str) -> None:
    assert _error(body("Redirected"), step=step).code == "invalid_field"


# -- rendering --------------------------------------------------------------------------------

SAY = {"speak": {"text": "Hello", "voice": "female", "repeat": 1}}


def test_first_batch_switches_on_all_events_mode() -> None:
    assert render(Say("Hello"), first=True) == {"commands": [{"notifications": "true"}, SAY]}
    assert render(first=True) == {"commands": [{"notifications": "true"}]}


def test_later_batches_do_not() -> None:
    assert render(Say("Hello")) == {"commands": [SAY]}
    assert render() == {"commands": []}


def test_say() -> None:
    assert render(Say("Hola", voice="male", repeat=3)) == {
        "commands": [{"speak": {"text": "Hola", "voice": "male", "repeat": 3}}]
    }


def test_play() -> None:
    assert render(Play("https://cdn.example/a.mp3", repeat=2)) == {
        "commands": [{"play": {"url": "https://cdn.example/a.mp3", "repeat": 2}}]
    }


def test_pause_whole_and_fractional_seconds() -> None:
    assert render(Pause(2.0), Pause(1.5)) == {
        "commands": [{"wait": {"length": 2}}, {"wait": {"length": 1.5}}]
    }
    assert type(render(Pause(2.0))["commands"][0]["wait"]["length"]) is int


def test_gather_with_prompt_becomes_get_digits_then_redirect() -> None:
    gather = Gather(4, prompt=Say("Press 1"), num_digits=1, finish_on_key="*",
                    valid_digits="12", timeout=7.0, retries=2)
    assert render(gather) == {
        "commands": [
            {"getDigits": {
                "actionUrl": url_for(4),
                "timeout": 7,
                "finishOnKey": "*",
                "numberOfDigits": 1,
                "validDigits": "12",
                "retries": 2,
                "speak": {"text": "Press 1", "voice": "female", "repeat": 1},
            }},
            {"redirect": {"actionUrl": url_for(4)}},
        ]
    }


def test_gather_defaults_and_play_prompt() -> None:
    assert render(Gather(1, prompt=Play("https://cdn.example/menu.wav"))) == {
        "commands": [
            {"getDigits": {
                "actionUrl": url_for(1),
                "timeout": 5,
                "finishOnKey": "#",
                "numberOfDigits": 0,
                "validDigits": "0123456789*#",
                "retries": 1,
                "play": {"url": "https://cdn.example/menu.wav", "repeat": 1},
            }},
            {"redirect": {"actionUrl": url_for(1)}},
        ]
    }


def test_gather_without_prompt_has_no_prompt_key() -> None:
    get_digits = render(Gather(2, timeout=2.5))["commands"][0]["getDigits"]
    assert set(get_digits) == {"actionUrl", "timeout", "finishOnKey", "numberOfDigits",
                               "validDigits", "retries"}
    assert get_digits["timeout"] == 2.5


def test_record() -> None:
    assert render(Record(5, prompt=Say("After the tone"), max_length=30.0,
                         silence_timeout=4.0, beep=True, finish_on_key="#")) == {
        "commands": [
            {"record": {
                "timeout": 4,
                "playBeep": True,
                "maximumLength": 30,
                "finishOnKey": "#",
                "speak": {"text": "After the tone", "voice": "female", "repeat": 1},
            }},
            {"redirect": {"actionUrl": url_for(5)}},
        ]
    }


def test_record_defaults_have_no_finish_key() -> None:
    assert render(Record(1)) == {
        "commands": [
            {"record": {"timeout": 15, "playBeep": False, "maximumLength": 60}},
            {"redirect": {"actionUrl": url_for(1)}},
        ]
    }


def test_dial_one_number() -> None:
    assert render(Dial(2, numbers=("+34911111111",))) == {
        "commands": [
            {"dial": {"number": {"destination": "tel:+34911111111", "timeout": 30}}},
            {"redirect": {"actionUrl": url_for(2)}},
        ]
    }


def test_dial_several_numbers_with_caller_id_timeout_and_whisper() -> None:
    dial = Dial(3, numbers=("+34911111111", "+34922222222"), caller_id="+34900000001",
                timeout=12.5, on_answer=Say("Call from Acme"))
    assert render(dial) == {
        "commands": [
            {"dial": {
                "number": {
                    "destination": ["tel:+34911111111", "tel:+34922222222"],
                    "timeout": 12.5,
                    "callerId": "tel:+34900000001",
                },
                "behaviorOnAnswer": {
                    "speak": {"text": "Call from Acme", "voice": "female", "repeat": 1}
                },
            }},
            {"redirect": {"actionUrl": url_for(3)}},
        ]
    }


def test_dial_whisper_as_audio() -> None:
    dial = Dial(1, numbers=("+34911111111",), on_answer=Play("https://cdn.example/w.mp3"))
    assert render(dial)["commands"][0]["dial"]["behaviorOnAnswer"] == {
        "play": {"url": "https://cdn.example/w.mp3", "repeat": 1}
    }


def test_conference_defaults() -> None:
    assert render(Conference(6, name="room-1")) == {
        "commands": [
            {"dial": {
                "conferenceName": "room-1",
                "conferenceProperties": {
                    "beepsOnEnter": "0",
                    "beepsOnExit": "0",
                    "endOnExit": False,
                    "startOnEnter": True,
                    "mute": False,
                    "maxMembers": 41,
                    "timeLimit": 0,
                },
            }},
            {"redirect": {"actionUrl": url_for(6)}},
        ]
    }


def test_conference_with_every_property() -> None:
    options = ConferenceOptions(
        beeps_on_enter=2, speak_on_enter="Welcome", beeps_on_exit=1, speak_on_exit="Bye",
        play_on_exit="https://cdn.example/exit.wav", end_on_exit=True, start_on_enter=False,
        mute=True, max_members=5, time_limit=600.0,
    )
    assert render(Conference(1, name="board", options=options))["commands"][0] == {
        "dial": {
            "conferenceName": "board",
            "conferenceProperties": {
                "beepsOnEnter": "2",
                "speakOnEnter": "Welcome",
                "beepsOnExit": "1",
                "speakOnExit": "Bye",
                "playOnExit": "https://cdn.example/exit.wav",
                "endOnExit": True,
                "startOnEnter": False,
                "mute": True,
                "maxMembers": 5,
                "timeLimit": 600,
            },
        }
    }


@pytest.mark.parametrize("reason", ["rejected", "busy"])
def test_hangup(reason: Any) -> None:
    assert render(Hangup(reason)) == {"commands": [{"hangup": {"reason": reason}}]}


def test_hangup_default_reason() -> None:
    assert render(Hangup()) == {"commands": [{"hangup": {"reason": "rejected"}}]}


def test_resume_is_a_bare_redirect() -> None:
    assert render(Say("Hello"), Resume(9)) == {
        "commands": [SAY, {"redirect": {"actionUrl": url_for(9)}}]
    }


def test_a_batch_keeps_its_order() -> None:
    rendered = render(Say("Hello"), Pause(1), Play("https://cdn.example/a.mp3"), Gather(2),
                      Hangup(), first=True)
    assert [next(iter(c)) for c in rendered["commands"]] == [
        "notifications", "speak", "wait", "play", "getDigits", "redirect", "hangup"
    ]


def test_rendered_batches_are_json() -> None:
    rendered = render(Gather(1, prompt=Say("x")), Dial(2, numbers=("+1",)),
                      Conference(3, name="r"), first=True)
    assert json.loads(json.dumps(rendered)) == rendered


# -- REST requests ----------------------------------------------------------------------------


def test_set_commands_request() -> None:
    payload = {"commands": [SAY]}
    assert ADAPTER.set_commands_request("abc-123", payload) == ApiRequest(
        "POST", "/comms/v1/calls/abc-123/setcommands", payload
    )


def test_set_commands_request_quotes_the_call_id() -> None:
    assert ADAPTER.set_commands_request("a/b c", {}).path == (
        "/comms/v1/calls/a%2Fb%20c/setcommands"
    )


def test_create_call_request() -> None:
    request = ADAPTER.create_call_request(
        to="+34600000002", caller_id="+34900000001",
        callback_url="https://app.example/cb?out=t", fallback_url="https://app.example/fb",
    )
    assert (request.method, request.path) == ("POST", "/comms/v1/calls")
    assert request.json == {
        "callerId": "tel:+34900000001",
        "destination": "tel:+34600000002",
        "callbackUrl": "https://app.example/cb?out=t",
        "fallbackUrl": "https://app.example/fb",
        "notifications": "true",
    }


def test_create_call_request_without_fallback_and_with_tel_addresses() -> None:
    request = ADAPTER.create_call_request(
        to="tel:+34600000002", caller_id="tel:+34900000001",
        callback_url="https://app.example/cb", fallback_url=None,
    )
    assert request.json == {
        "callerId": "tel:+34900000001",
        "destination": "tel:+34600000002",
        "callbackUrl": "https://app.example/cb",
        "notifications": "true",
    }


def test_configure_number_request() -> None:
    request = ADAPTER.configure_number_request(
        "+34900000001", callback_url="https://app.example/cb",
        fallback_url="https://app.example/fb",
    )
    assert request == ApiRequest(
        "POST", "/comms/v1/me/numbers/tel:%2B34900000001",
        {"notificationFormat": "JSON", "voiceCallbackUrl": "https://app.example/cb",
         "voiceFallbackUrl": "https://app.example/fb"},
    )


def test_configure_number_request_without_fallback() -> None:
    request = ADAPTER.configure_number_request(
        "tel:+34900000001", callback_url="https://app.example/cb", fallback_url=None
    )
    assert request.path == "/comms/v1/me/numbers/tel:%2B34900000001"
    assert request.json == {"notificationFormat": "JSON",
                            "voiceCallbackUrl": "https://app.example/cb"}


def test_create_call_response() -> None:
    assert ADAPTER.call_id_from_create_response(201, b'{"callId": "c-9"}') == "c-9"


@pytest.mark.parametrize(
    ("status", "raw"),
    [
        (403, b'{"ClientException": {"exceptionCategory": "POL", "exceptionId": 1}}'),
        (200, b'{"callId": "c-9"}'),
        (201, b"not json"),
        (201, b"{}"),
        (201, b"[]"),
        (201, b'{"callId": ""}'),
        (201, b'{"callId": 9}'),
    ],
)
def test_bad_create_call_response(status: int, raw: bytes) -> None:
    with pytest.raises(PlatformError) as info:
        ADAPTER.call_id_from_create_response(status, raw)
    assert info.value.status == status


def test_refused_call_keeps_the_platform_body() -> None:
    with pytest.raises(PlatformError) as info:
        ADAPTER.call_id_from_create_response(403, b'{"ClientException": {}}')
    assert info.value.body == '{"ClientException": {}}'


def test_get_platform() -> None:
    assert isinstance(get_platform("bluevia"), BlueVia)
    assert get_platform("bluevia").name == "bluevia"
    with pytest.raises(ConfigurationError, match="unknown platform 'sip'"):
        get_platform("sip")
