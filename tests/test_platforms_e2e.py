"""Every example, end to end on every platform: the same flows file, the same caller, the
same transcript.

The app and the simulator each run under hypercorn on a port the OS picks; the simulator
speaks BlueVia, Twilio or Telnyx (``Simulator(platform=...)``) and the app speaks the same,
with the credentials the simulator hands out. What the caller hears and presses, how the
call goes (legs ringing, answering, recording) and what the flow ends up with must not
depend on the platform: each scenario's result is compared with the expected one and
with every other platform's run of it.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

import callflow
from callflow._loader import load_app
from callflow.simulator import (
    Chaos,
    Phone,
    Simulator,
    Transcript,
    serve_asgi,
    serve_simulator,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CALLER = "+34600000001"
CALLER_ID = "+34900000000"  # the reminder's caller id: its app has no number of its own


def _telnyx_ready() -> bool:
    """Whether the simulator's Telnyx front end (built separately) is there yet."""
    try:
        module = importlib.import_module("callflow.simulator._telnyx")
    except ImportError:
        return False
    return hasattr(module, "TelnyxFrontEnd")

PLATFORMS = [
    "bluevia",
    "twilio",
    pytest.param("telnyx", marks=pytest.mark.skipif(
        not _telnyx_ready(), reason="the simulator's Telnyx front end has not landed yet")),
]

# -- what each example says (the transcript lines every platform must produce) ---------------

WELCOME = "Welcome to Acme."
MENU = "For sales, press 1. For support, press 2. For our opening hours, press 3."
HOLD = "Please hold while we put you through."
GOODBYE = "Thank you for calling Acme. Goodbye."
NOBODY = "Sorry, all our agents are busy right now. Please call again later."
HOURS = "We are open Monday to Friday, from nine in the morning to six in the evening."
GREETING = "You have reached the voicemail of Acme. Nobody can take your call right now."
RECORD_PROMPT = "Please leave your message after the beep, and press hash when you are done."
FORWARD_PROMPT = "Please leave a message after the beep, and press hash when you are done."
REMINDER = ("Hello there. This is a reminder of your appointment tomorrow at ten in the "
            "morning at the Acme clinic. To confirm it, press 1. To cancel it, press 2.")


@dataclass(frozen=True)
class Scenario:
    example: str
    number: str | None  # None: an outbound call placed with App.call
    script: tuple[str, ...]
    phones: tuple[tuple[str, Phone], ...] = ()
    spoken: tuple[str, ...] | None = None  # the expected lines, where worth spelling out
    keys: str = ""
    data: dict[str, Any] | None = None  # what the flow leaves in call.data (see outcome())


SCENARIOS = {
    "ivr-sales-answers": Scenario(
        "ivr", "+34900000001", ("press-next:1",),
        (("+34910000001", Phone.answers(after=2, hang_up_after=5)),),
        (WELCOME, MENU, HOLD, "A caller for sales.", GOODBYE), "1",
        {"choice": "sales", "dial": ("answered", "+34910000001")}),
    "ivr-support-all-busy": Scenario(
        "ivr", "+34900000001", ("press-next:2",),
        tuple((n, Phone.busy()) for n in ("+34910000002", "+34910000003", "+34910000004")),
        (WELCOME, MENU, HOLD, NOBODY, GOODBYE), "2", {"choice": "support",
                                                      "dial": ("busy", None)}),
    "ivr-hours-after-a-wrong-key": Scenario(
        "ivr", "+34900000001", ("press-next:9", "press-next:3"), keys="93"),
    "ivr-silence": Scenario("ivr", "+34900000001", ()),
    "voicemail-kept": Scenario(
        "voicemail", "+34900000002", ("wait:beep", "talk:3", "press:#", "press-next:1"),
        spoken=(GREETING, RECORD_PROMPT, "You said:",
                "To keep this message, press 1. To record it again, press 2.",
                "Your message has been saved. Goodbye."), keys="#1"),
    "voicemail-again": Scenario(
        "voicemail", "+34900000002",
        ("wait:beep", "talk:2", "press:#", "press-next:2", "wait:beep", "talk:4", "press:#",
         "press-next:1"), keys="#2#1", data={"message": (True, 4)}),
    "forward-answered": Scenario(
        "forward", "+34900000003", (),
        (("+34610000001", Phone.no_answer()),
         ("+34610000002", Phone.answers(after=3, hang_up_after=4))), spoken=()),
    "forward-busy-voicemail": Scenario(
        "forward", "+34900000003", ("wait:beep", "talk:2", "press:#"),
        (("+34610000001", Phone.busy()), ("+34610000002", Phone.busy())),
        ("The line is busy.", FORWARD_PROMPT,
         "Thank you for your message. We will call you back. Goodbye."), "#"),
    "forward-no-answer": Scenario(
        "forward", "+34900000003", ("wait:beep", "talk:2", "press:#"),
        (("+34610000001", Phone.no_answer()), ("+34610000002", Phone.no_answer())),
        keys="#", data={"dial": ("no_answer", None), "voicemail": (True, 2)}),
    "reminder-confirmed": Scenario(
        "reminder", None, ("press-next:1",),
        spoken=(REMINDER, "Thank you. Your appointment is confirmed. See you soon. Goodbye."),
        keys="1"),
    "reminder-busy": Scenario("reminder", None, (), ((CALLER, Phone.busy()),), spoken=(),
                              data={}),
}

# Each scenario's result per platform, so that a later run compares with an earlier one.
SEEN: dict[tuple[str, str], dict[str, Any]] = {}


# -- running one -----------------------------------------------------------------------------


@asynccontextmanager
async def served(example: str, platform: str) -> AsyncIterator[tuple[callflow.App, Simulator]]:
    """The example's app and a simulator speaking ``platform``, over real sockets."""
    app = load_app(EXAMPLES / f"{example}.py")
    sim = Simulator(platform=platform)
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                        **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            for number in app.numbers:  # the account's numbers (Telnyx: before the app
                sim.add_account_number(number)  # points its connection at itself)
            await app.configure_numbers()
            yield app, sim


def keep_calls(app: callflow.App) -> list[callflow.Call]:
    """The Call objects of the app's sessions, to read what the flow left in ``data``."""
    calls: list[callflow.Call] = []
    original = app._new_session

    def new_session(*args: Any) -> Any:
        session = original(*args)
        if session is not None:
            calls.append(session.call)
        return session

    app._new_session = new_session  # type: ignore[method-assign]
    return calls


def outcome(data: dict[str, Any]) -> dict[str, Any]:
    """What a flow left in ``call.data``, without what differs by nature (ids, URLs)."""
    result: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, callflow.DialResult):
            value = (value.status, value.number)
        elif isinstance(value, callflow.RecordResult):
            value = (value.url is not None, round(value.duration))
        result[key] = value
    return result


# How a front end joins two parties (a bridge, a private conference) is its own business:
# the caller hears the same either way, so bridging is not part of the skeleton.
SKELETON = {"speak", "keys", "ringing", "answered", "busy", "no-answer", "failed",
            "not-reachable", "beep", "recording-started", "recording-stopped", "play"}


def skeleton(transcript: Transcript) -> list[list[str]]:
    """The call as the people on it lived it: who rang, answered, spoke, pressed, in order.

    Things that happen at the same moment (three phones ringing at once) come in no
    particular order, so each moment is a sorted group."""
    moments: dict[float, list[str]] = {}
    for entry in transcript.entries:
        if entry.kind not in SKELETON:
            continue
        text = entry.text if entry.kind in ("speak", "keys") else ""
        if entry.kind in ("ringing", "answered", "busy", "no-answer"):
            text = entry.text.split(" ")[0]  # the number, not the ids
        moments.setdefault(entry.at, []).append(f"{entry.kind}:{text}" if text else entry.kind)
    return [sorted(group) for _, group in sorted(moments.items())]


async def run(scenario: Scenario, platform: str) -> dict[str, Any]:
    async with served(scenario.example, platform) as (app, sim):
        calls = keep_calls(app)
        for number, phone in scenario.phones:
            sim.add_phone(number, phone)
        answered = True
        if scenario.number is not None:
            call = await sim.place_inbound_call(CALLER, scenario.number,
                                                script=list(scenario.script))
        else:
            sim.add_account_number(CALLER_ID, callback_url=app.callback_url)
            if not scenario.phones:
                sim.add_phone(CALLER, Phone.answers(after=1, script=list(scenario.script)))
            result = await app.call(CALLER, flow="reminder", caller_id=CALLER_ID)
            answered = result.answered
            # The app knows the call by the provider's id, which a front end may keep
            # apart from the simulator's: find the simulated call itself.
            [call] = [c for c in sim.calls.values() if c.direction == "outbound"]
        with anyio.fail_after(10):
            transcript = await call.wait_ended()
            for flow_call in calls:
                await app.wait_ended(flow_call.id)
        assert app.sessions == {}
    if answered:
        [flow_call] = calls
    else:
        assert calls == []
    return {"answered": answered, "spoken": transcript.spoken, "keys": transcript.keys,
            "skeleton": skeleton(transcript), "data": outcome(calls[0].data) if calls else {},
            "errors": transcript.texts("error")}


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_an_example_runs_the_same_on_every_platform(name: str, platform: str) -> None:
    scenario = SCENARIOS[name]
    result = await run(scenario, platform)
    assert result["errors"] == [], result["errors"]
    if scenario.spoken is not None:
        assert tuple(result["spoken"]) == scenario.spoken
    assert result["keys"] == scenario.keys
    if scenario.data is not None:
        assert result["data"] == scenario.data
    for (other_name, other), seen in SEEN.items():
        if other_name == name and other != platform:
            assert result == seen, f"{platform} and {other} differ on {name}"
    SEEN[(name, platform)] = result


@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
async def test_a_silent_recording_is_where_platforms_differ(platform: str) -> None:
    """The one documented difference the examples meet: a recording nobody spoke into.
    BlueVia hands the flow a silent recording; Twilio trims silence and skips the
    <Record> action of an empty one, so the flow gets no recording at all."""
    silent = Scenario("voicemail", "+34900000002", ("wait:beep", "silence:6", "hangup:30"))
    result = await run(silent, platform)
    heard = result["spoken"][2]
    assert heard == ("You said:" if platform == "bluevia" else "Sorry, I did not hear a message.")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_caller_hanging_up_mid_recording_keeps_the_message() -> None:
    """Callers end voicemail by hanging up: record() returns the recording, then CallEnded."""
    hangs_up = Scenario("voicemail", "+34900000002", ("wait:beep", "talk:3", "hangup:4"))
    kept = {platform: (await run(hangs_up, platform))["data"]
            for platform in ("bluevia", "twilio")}
    assert kept["bluevia"] == kept["twilio"], kept
    assert kept["bluevia"].get("message"), kept


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_caller_hanging_up_mid_recording_leaves_the_same_message_everywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hangs_up = Scenario("voicemail", "+34900000002", ("wait:beep", "talk:3", "hangup:4"))
    kept = {"bluevia": (await run(hangs_up, "bluevia"))["data"],
            "twilio": (await run(hangs_up, "twilio"))["data"]}
    racing = Chaos(reorder=1.0, seed=1)  # "completed" before the <Record> action
    monkeypatch.setattr(Simulator, "__init__", _with_chaos(Simulator.__init__, racing))
    kept["twilio-reordered"] = (await run(hangs_up, "twilio"))["data"]
    assert kept["bluevia"] == kept["twilio"] == kept["twilio-reordered"], kept


def _with_chaos(init: Any, chaos: Chaos) -> Any:
    def wrapped(self: Simulator, *args: Any, **options: Any) -> None:
        init(self, *args, **{**options, "chaos": chaos})
    return wrapped


# -- the command line ---------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLOW_")}
    return subprocess.run([sys.executable, "-m", "callflow", *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=EXAMPLES.parent)


def said_and_pressed(stdout: str) -> list[str]:
    """What ``callflow call`` shows the caller hearing and pressing (without the times)."""
    return [line.split("s  ", 1)[1] for line in stdout.splitlines()
            if "🔊" in line or "⌨" in line]


@functools.cache
def on_bluevia(*args: str) -> list[str]:
    done = cli("call", *args)
    assert done.returncode == 0, done.stderr
    return said_and_pressed(done.stdout)


@pytest.mark.parametrize("platform", PLATFORMS[1:])
def test_callflow_call_on_a_platform_prints_what_bluevia_prints(platform: str) -> None:
    """``callflow call examples/ivr.py --platform twilio --press 1``: offline, throwaway
    credentials, what the caller hears and presses as on BlueVia."""
    done = cli("call", "examples/ivr.py", "--platform", platform, "--press", "1")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("inbound call +34600000001 → +34900000001, flow reception "
                                  f"(virtual time, {platform})\n")
    assert said_and_pressed(done.stdout) == on_bluevia("examples/ivr.py", "--press", "1")


def test_callflow_call_outbound_and_chaos_on_twilio(capsys: pytest.CaptureFixture[str]) -> None:
    from callflow.cli._main import main

    status = main(["call", str(EXAMPLES / "reminder.py"), "--outbound", "--press", "1",
                   "--platform", "twilio", "--duplicate-webhooks", "1",
                   "--reorder-webhooks", "1", "--json"])
    out = capsys.readouterr().out
    assert status == 0
    data = json.loads(out)
    spoken = [e["text"] for e in data["entries"] if e["kind"] == "speak"]
    assert spoken == [REMINDER, "Thank you. Your appointment is confirmed. See you soon. "
                                "Goodbye."]
    duplicates = [e for e in data["entries"] if e["kind"] == "notification"
                  and e["text"].endswith("(duplicate)")]
    assert duplicates and not [e for e in data["entries"] if e["kind"] == "error"]


def test_a_platform_the_cli_does_not_know(capsys: pytest.CaptureFixture[str]) -> None:
    from callflow.cli._main import main

    assert main(["call", str(EXAMPLES / "ivr.py"), "--platform", "nexmo"]) == 2
    assert "invalid choice: 'nexmo'" in capsys.readouterr().err


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_flow_that_never_waits_is_ended_by_the_stall_watchdog(platform: str) -> None:
    """A flow busy in its own loop: the caller hears the apology and the app hangs up,
    on every platform. Twilio keeps the caller on hold meanwhile (a redirect every second
    or so): that must not keep restarting the watchdog's count."""
    app = callflow.App()

    @app.flow(number="+34900000009")
    async def spins(call: callflow.Call) -> None:
        await call.say("One moment.")
        while True:  # noqa: ASYNC110 (the point: never reaches a verb that waits)
            await anyio.sleep(0.01)

    sim = Simulator(platform=platform)
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=0.2,
                                        stall_timeout=1.5, **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            sim.add_account_number("+34900000009")
            await app.configure_numbers()
            call = await sim.place_inbound_call(CALLER, "+34900000009", script=[])
            with anyio.fail_after(20):
                transcript = await call.wait_ended()
            assert app.sessions == {}
    assert transcript.spoken[0] == "One moment."
    assert transcript.spoken[-1] == app.settings.apology
    assert any("application hung up" in line for line in transcript.render().splitlines()), \
        transcript.render()
