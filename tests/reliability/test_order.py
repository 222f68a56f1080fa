"""Order: notifications that arrive late, for another step or for another leg, do not derail
a flow. Each test interleaves such noise with a real call, then checks that every piece of
noise got a harmless answer, that the next real answer still works, and that the flow saw
exactly the results it should have.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from callflow import Call, DialResult, GatherResult

from ._support import (
    HANGUP,
    NUMBER,
    commands_of,
    make_app,
    post,
    running,
    speak,
    url_of,
)

pytestmark = pytest.mark.anyio

CALL = "order-1"
AGENT_A = "+34910000001"
AGENT_B = "+34910000002"


def with_step(url: str, step: int) -> str:
    """An action URL of this call for another step (what a stale notification would carry)."""
    base, _, _ = url.rpartition("&step=")
    return f"{base}&step={step}"


async def noise(client: httpx.AsyncClient, url: str, deliveries: list[tuple[str, dict[str, Any]]]
                ) -> None:
    """Deliver each notification; every one must be answered 200 with no commands."""
    for name, fields in deliveries:
        fields = dict(fields)
        target = fields.pop("url", url)
        body = await post(client, name, CALL, url=target, **fields)
        assert commands_of(body) == [], (name, fields, body)


async def test_noise_around_a_gather_does_not_derail_the_flow() -> None:
    app = make_app()
    seen: list[GatherResult] = []

    @app.flow(number=NUMBER)
    async def two_codes(call: Call) -> None:
        seen.append(await call.gather(prompt="First code.", num_digits=1))
        await call.say("Got the first.")
        seen.append(await call.gather(prompt="Second code.", num_digits=1))
        await call.say(f"Codes {seen[0].digits} and {seen[1].digits}.")

    async with running(app) as client:
        first = url_of(commands_of(await post(client, "CalledNumber", CALL)))
        answer = commands_of(await post(client, "DigitsCollected", CALL, url=first, digits="3"))
        second = url_of(answer)
        assert second != first
        other_leg = {"leg": "leg-other", "caller": NUMBER, "callee": AGENT_A}
        events = f"{first.partition('?')[0]}"
        await noise(client, events, [
            # Late copies for the step already answered, with other digits and as a timeout.
            ("DigitsCollected", {"url": first, "digits": "9"}),
            ("Redirected", {"url": first}),
            # Answers for steps that are not pending: one from the future, one never issued.
            ("DigitsCollected", {"url": with_step(second, 99), "digits": "7"}),
            ("Redirected", {"url": with_step(second, 99)}),
            ("DigitsCollected", {"url": with_step(second, 0), "digits": "7"}),
            # Playback and recording noise on the caller's leg.
            ("PlaybackStarted", {}),
            ("PlaybackStopped", {}),
            ("RecordingStarted", {}),
            ("RecordingStopped", {"recordingUrl": "https://rec.example/x.wav", "duration": 3}),
            # Another leg's whole life, hang-up included: not the caller hanging up.
            ("Ringing", other_leg),
            ("Answered", other_leg),
            ("Busy", {**other_leg, "reason": "busy"}),
            ("HangUp", {**other_leg, "direction": "fromParticipant"}),
            # The caller leg's Answered again, and the first CalledNumber again (a new leg id).
            ("Answered", {}),
            ("CalledNumber", {"leg": "leg-late"}),
        ])
        assert CALL in app.sessions
        assert seen == [GatherResult(digits="3")]
        final = commands_of(await post(client, "DigitsCollected", CALL, url=second, digits="8"))
        assert final == [speak("Codes 3 and 8."), HANGUP]
    assert seen == [GatherResult(digits="3"), GatherResult(digits="8")]
    assert app.sessions == {}


async def test_a_late_timeout_for_the_answered_step_is_ignored() -> None:
    """getDigits completes, then the redirect behind it arrives late: the digits stand."""
    app = make_app()
    seen: list[GatherResult] = []

    @app.flow(number=NUMBER)
    async def one(call: Call) -> None:
        seen.append(await call.gather(num_digits=1))
        seen.append(await call.gather(num_digits=1))

    async with running(app) as client:
        welcome = commands_of(await post(client, "CalledNumber", CALL))
        next_ = commands_of(await post(client, "DigitsCollected", CALL,
                                       url=url_of(welcome), digits="1"))
        assert commands_of(await post(client, "Redirected", CALL,
                                      url=url_of(welcome, "redirect"))) == []
        assert seen == [GatherResult(digits="1")]
        assert commands_of(await post(client, "Redirected", CALL,
                                      url=url_of(next_, "redirect"))) == [HANGUP]
    assert seen == [GatherResult(digits="1"), GatherResult(timed_out=True)]


def two_dials(results: list[DialResult]) -> Any:
    async def flow(call: Call) -> None:
        results.append(await call.dial(AGENT_A, timeout=20))
        await call.say("Trying someone else.")
        results.append(await call.dial(AGENT_B, timeout=20))
        await call.say("Done.")

    return flow


LEG_A = {"leg": "leg-a", "caller": NUMBER, "callee": AGENT_A}
LEG_B = {"leg": "leg-b", "caller": NUMBER, "callee": AGENT_B}


async def first_dial_answered(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The caller talks to agent A for 30 s; returns the commands that start the second dial."""
    welcome = commands_of(await post(client, "CalledNumber", CALL))
    for name, fields in [("Ringing", LEG_A),
                         ("Answered", {**LEG_A, "timestamp": "2013-03-01T10:00:05Z"}),
                         ("HangUp", {**LEG_A, "timestamp": "2013-03-01T10:00:35Z",
                                     "direction": "fromParticipant"})]:
        assert commands_of(await post(client, name, CALL, **fields)) == []
    second = commands_of(await post(client, "Redirected", CALL, url=url_of(welcome, "redirect")))
    assert second[0] == speak("Trying someone else.")
    assert "dial" in second[1]
    return second


@pytest.mark.parametrize("b_answers", [True, False], ids=["B-answers", "B-no-answer"])
async def test_late_leg_events_of_an_earlier_dial_do_not_answer_the_next(b_answers: bool
                                                                         ) -> None:
    app = make_app()
    results: list[DialResult] = []
    app.add_flow(two_dials(results), numbers=(NUMBER,), name="two_dials")
    async with running(app) as client:
        second = await first_dial_answered(client)
        assert results == [DialResult("answered", number=AGENT_A, duration=30.0)]
        # Agent A's events are re-delivered late, while the second dial rings B.
        deliveries: list[tuple[str, dict[str, Any]]] = [
            ("Ringing", LEG_B),
            ("Answered", {**LEG_A, "timestamp": "2013-03-01T10:00:05Z"}),
            ("Busy", {**LEG_A, "reason": "late copy"}),
            ("HangUp", {**LEG_A, "timestamp": "2013-03-01T10:00:35Z",
                        "direction": "fromParticipant"}),
        ]
        if b_answers:
            deliveries += [
                ("Answered", {**LEG_B, "timestamp": "2013-03-01T10:01:00Z"}),
                ("HangUp", {**LEG_B, "timestamp": "2013-03-01T10:01:10Z",
                            "direction": "fromParticipant"}),
            ]
        else:
            deliveries += [("NoAnswer", {**LEG_B, "reason": "nobody there"})]
        for name, fields in deliveries:
            assert commands_of(await post(client, name, CALL, **fields)) == []
        final = commands_of(await post(client, "Redirected", CALL,
                                       url=url_of(second, "redirect")))
        assert final == [speak("Done."), HANGUP]
    expected = (DialResult("answered", number=AGENT_B, duration=10.0) if b_answers
                else DialResult("no_answer", reason="nobody there"))
    assert results[1] == expected
