"""Every example end to end, with the simulator and each app in processes of their own.

``callflow simulator --port 0`` runs the network; ``callflow serve examples/X.py`` runs each
app against it (its numbers are pointed at it on start); calls are placed through the
simulator's ``/simulator`` HTTP extension (and ``callflow call --against``), the reminder
with ``callflow dial``; every test asserts on the simulator's transcript. Readiness is read
from each process's output (its URL, its "ready" line): no sleeping, bounded timeouts, and
every process is terminated at the end.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callflow.simulator import Transcript

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 20.0  # a bound for slow CI machines; nothing waits for it when things work
AUTH = ("key", "secret")

IVR, VOICEMAIL, FORWARD = "+34900000001", "+34900000002", "+34900000003"
REMINDER_FROM, PATIENT = "+34900000009", "+34600000009"

NUMBERS = """\
[phones]
"+34910000001" = { behaviour = "answer", after = 2, hang_up_after = 10 }  # ivr: sales
"+34910000002" = "busy"                                                  # ivr: support
"+34910000003" = { behaviour = "answer", after = 3, hang_up_after = 5 }
"+34910000004" = "no-answer"
"+34610000001" = "busy"                                                  # forward
"+34610000002" = "busy"
"+34600000009" = { behaviour = "answer", after = 2, press = "1" }        # reminder: confirms

[numbers]
"+34900000009" = {}  # the reminder's caller id: an account number
"""


def own_store(args: tuple[str, ...]) -> tuple[str, ...]:
    """``callflow serve`` keeps calls under the working directory by default: give each
    process a store of its own, so that no run meets another's calls."""
    if args[:1] == ("serve",) and "--store" not in args:
        return (*args, "--store", f"sqlite:///{tempfile.mkdtemp(prefix='callflow-')}/calls.db")
    return args


class Process:
    """``python -m callflow ...`` whose stdout lines are read as they come."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLOW_")}
        self.args = args
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "callflow", *own_store(args)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.out, True),
                             daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.err, False),
                             daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, into: list[str], announce: bool) -> None:
        for line in stream:
            into.append(line)
            if announce:
                self._lines.put(line)
        if announce:
            self._lines.put(None)

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """Read stdout until a line matches; fail on timeout or if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.args}: no {pattern!r} in {timeout}s\n"
                                     f"{self.output()}") from None
            if line is None:
                raise AssertionError(f"{self.args} exited without {pattern!r}\n"
                                     f"{self.output()}")
            if match := re.search(pattern, line):
                return match

    def finish(self, timeout: float = TIMEOUT) -> int:
        code = self.popen.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        self.finish()

    def output(self) -> str:
        return f"stdout:\n{''.join(self.out)}stderr:\n{''.join(self.err)}"


@pytest.fixture(scope="module")
def started() -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for process in processes:
        process.stop()


@pytest.fixture(scope="module")
def sim_url(started: list[Process], tmp_path_factory: pytest.TempPathFactory) -> str:
    numbers = tmp_path_factory.mktemp("sim") / "numbers.toml"
    numbers.write_text(NUMBERS)
    sim = Process("simulator", "--port", "0", "--numbers", str(numbers))
    started.append(sim)
    url = sim.wait_for(r"simulator on (http://127\.0\.0\.1:\d+) ")[1]
    sim.wait_for("^ready")
    return url


@pytest.fixture(scope="module")
def apps(started: list[Process], sim_url: str) -> dict[str, Process]:
    """ivr, voicemail and forward, each served by its own ``callflow serve``."""
    served: dict[str, Process] = {}
    for name in ("ivr", "voicemail", "forward"):  # started together, awaited in turn
        served[name] = Process("serve", f"examples/{name}.py", "--port", "0",
                               "--platform-url", sim_url)
        started.append(served[name])
    for process in served.values():
        process.wait_for(r"^configured on the platform: ")
        process.wait_for(r"^ready")
    return served


def place_call(sim_url: str, to: str, *script: str) -> Transcript:
    with httpx.Client(base_url=sim_url, auth=AUTH, timeout=TIMEOUT + 5) as client:
        response = client.post("/simulator/calls", json={"to": to, "script": list(script)})
        assert response.status_code == 201, response.text
        return transcript_of(client, response.json()["callId"])


def transcript_of(client: httpx.Client, call_id: str) -> Transcript:
    response = client.get(f"/simulator/calls/{call_id}/transcript",
                          params={"wait": "true", "timeout": str(TIMEOUT)})
    assert response.status_code == 200, response.text
    transcript = Transcript.from_dict(response.json())
    assert transcript.ended, transcript
    return transcript


def kinds(transcript: Transcript) -> list[str]:
    return [entry.kind for entry in transcript.entries]


def hung_up_by_the_app(transcript: Transcript) -> bool:
    last = [e for e in transcript.entries if e.kind != "notification"][-1]
    return last.kind == "hangup" and last.text.startswith("the application hung up")


# -- ivr ------------------------------------------------------------------------------------------


def test_ivr_sales(sim_url: str, apps: dict[str, Process]) -> None:
    transcript = place_call(sim_url, IVR, "press-next:1")
    assert transcript.spoken[:2] == [
        "Welcome to Acme.",
        "For sales, press 1. For support, press 2. For our opening hours, press 3.",
    ]
    assert transcript.keys == "1"
    assert "Please hold while we put you through." in transcript.spoken
    assert "+34910000001 answered" in transcript.texts("answered")
    assert "A caller for sales." in transcript.spoken  # the whisper, heard by the agent
    assert transcript.spoken[-1] == "Thank you for calling Acme. Goodbye."
    assert hung_up_by_the_app(transcript)
    # the agent hung up 10 s after answering; the caller heard goodbye after that
    bridged = next(e for e in transcript.entries if e.kind == "bridged")
    unbridged = next(e for e in transcript.entries if e.kind == "unbridged")
    assert unbridged.at - bridged.at == pytest.approx(10)


def test_ivr_support_first_answer_wins(sim_url: str, apps: dict[str, Process]) -> None:
    transcript = place_call(sim_url, IVR, "press-next:2")
    assert transcript.keys == "2"
    assert transcript.texts("ringing") == [f"+3491000000{n} ringing" for n in (2, 3, 4)]
    assert transcript.texts("busy") == ["+34910000002 busy"]
    assert transcript.texts("answered") == ["+34910000003 answered"]
    assert "A caller for support." in transcript.spoken
    assert "+34910000004 no answer" not in transcript.texts("no-answer")  # it was hung up
    assert transcript.spoken[-1] == "Thank you for calling Acme. Goodbye."


def test_ivr_no_input(sim_url: str, apps: dict[str, Process]) -> None:
    transcript = place_call(sim_url, IVR)
    menu = "For sales, press 1. For support, press 2. For our opening hours, press 3."
    assert transcript.keys == ""
    assert transcript.spoken.count(menu) >= 2  # asked again
    assert "bridged" not in kinds(transcript)
    assert transcript.spoken[-1] == "Thank you for calling Acme. Goodbye."
    assert hung_up_by_the_app(transcript)


def test_ivr_with_callflow_call_against_the_simulator(sim_url: str,
                                                      apps: dict[str, Process]) -> None:
    """``callflow call --against`` (no FILE): a third process calls into the served app."""
    caller = Process("call", "--against", sim_url, "--to", IVR, "--press", "3")
    try:
        assert caller.finish() == 0, caller.output()
    finally:
        caller.stop()
    out = "".join(caller.out)
    assert out.startswith(f"inbound call +34600000001 → {IVR}\n")
    assert "⌨  3" in out and "We are open Monday to Friday" in out


def test_callflow_call_with_a_file_gives_the_numbers_back(sim_url: str,
                                                          apps: dict[str, Process]) -> None:
    """``callflow call FILE --against``: its own app takes the numbers for one call, then the
    served app has them again."""
    caller = Process("call", "examples/ivr.py", "--against", sim_url, "--press", "3")
    try:
        assert caller.finish() == 0, caller.output()
    finally:
        caller.stop()
    assert "We are open Monday to Friday" in "".join(caller.out)
    transcript = place_call(sim_url, IVR, "press-next:3")
    assert not transcript.texts("error")  # the served app answered: it has its number back
    assert transcript.spoken[-1] == "Thank you for calling Acme. Goodbye."


# -- voicemail ------------------------------------------------------------------------------------


def test_voicemail_records_plays_back_and_keeps(sim_url: str, apps: dict[str, Process]) -> None:
    transcript = place_call(sim_url, VOICEMAIL, "wait:beep", "talk:3", "press:#",
                            "press-next:1")
    assert transcript.spoken[0].startswith("You have reached the voicemail of Acme.")
    assert "beep" in kinds(transcript)
    stopped = next(e for e in transcript.entries if e.kind == "recording-stopped")
    url = stopped.data["recordingUrl"]
    assert url.startswith(sim_url + "/recordings/")
    assert transcript.texts("play") == [url]  # "You said:" and the message played back
    assert transcript.keys == "#1"
    assert transcript.spoken[-1] == "Your message has been saved. Goodbye."
    wav = httpx.get(url, timeout=TIMEOUT)
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF"


# -- forward --------------------------------------------------------------------------------------


def test_forward_to_busy_lines_takes_a_message(sim_url: str, apps: dict[str, Process]) -> None:
    transcript = place_call(sim_url, FORWARD, "wait:beep", "talk:2", "press:#")
    assert sorted(transcript.texts("busy")) == ["+34610000001 busy", "+34610000002 busy"]
    assert transcript.spoken[:2] == [
        "The line is busy.",
        "Please leave a message after the beep, and press hash when you are done.",
    ]
    assert "recording-stopped" in kinds(transcript)
    assert transcript.spoken[-1] == "Thank you for your message. We will call you back. Goodbye."
    assert hung_up_by_the_app(transcript)


# -- reminder: an outbound call, placed with callflow dial ----------------------------------------


def test_reminder_dialled_and_confirmed(sim_url: str, started: list[Process]) -> None:
    dial = Process("dial", "examples/reminder.py", PATIENT, "--from", REMINDER_FROM,
                   "--port", "0", "--platform-url", sim_url)
    started.append(dial)
    call_id = dial.wait_for(r"^answered: call (\S+);")[1]
    assert dial.finish() == 0, dial.output()
    with httpx.Client(base_url=sim_url, auth=AUTH, timeout=TIMEOUT + 5) as client:
        transcript = transcript_of(client, call_id)
    assert transcript.direction == "outbound"
    assert transcript.caller == REMINDER_FROM and transcript.callee == PATIENT
    assert transcript.spoken[0].startswith("Hello there. This is a reminder of your appointment")
    assert transcript.keys == "1"
    assert transcript.spoken[-1] == (
        "Thank you. Your appointment is confirmed. See you soon. Goodbye."
    )
    # callflow dial serves until the platform's hang-up, so the goodbye is heard in full.
    assert hung_up_by_the_app(transcript), transcript


def test_the_processes_stop_cleanly(started: list[Process], apps: dict[str, Process]) -> None:
    """SIGTERM: each server says so and exits 0 (run last: it stops them)."""
    for process in started:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
    for process in started:
        assert process.finish() == 0, process.output()
        assert "Traceback" not in "".join(process.err), process.output()
    assert all("stopped\n" in process.out for process in [*apps.values(), started[0]])

