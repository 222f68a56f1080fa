"""``callflow dial``: one outbound call or a campaign, as real processes against a simulator.

The simulator runs in the test's process (so that its phones can be set and its transcripts
read directly); ``callflow dial`` runs as a subprocess that reaches it over loopback HTTP,
as the documented commands do.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import pty
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from callflow._server import Listener, serving
from callflow.cli._campaign import read_numbers
from callflow.simulator import Clock, Phone, Simulator, Transcript

REPO = Path(__file__).resolve().parent.parent
REMINDER = str(REPO / "examples" / "reminder.py")
TIMEOUT = 120.0
CALLER = "+34900000001"

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CALLFLOW_")}


@asynccontextmanager
async def simulator(clock: Clock | None = None) -> AsyncIterator[tuple[Simulator, str]]:
    """A fresh simulator (no account numbers) served on a free port."""
    sim = Simulator(clock=clock or Clock.virtual())
    async with serving(sim, Listener.bind("127.0.0.1", 0), graceful_timeout=1.0) as url:
        sim.base_url = url
        yield sim, url


async def dial(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[bytes]:
    """``callflow dial ARGS``, its flows on the test's event loop (asyncio or trio)."""
    backend = ("--backend", "trio") if _on_trio() else ()
    with anyio.fail_after(TIMEOUT):
        return await anyio.run_process(
            [sys.executable, "-m", "callflow", "dial", *args, *backend],
            check=False, env=clean_env(), cwd=cwd)


def _on_trio() -> bool:
    import sniffio

    return sniffio.current_async_library() == "trio"


def outcome_in(sim: Simulator, call_id: str) -> str:
    """What the simulator's transcript says became of a call."""
    kinds = [entry.kind for entry in sim.calls[call_id].transcript.entries]
    for kind, outcome in (("answered", "answered"), ("busy", "busy"),
                          ("no-answer", "no_answer"), ("failed", "failed"),
                          ("not-reachable", "failed")):
        if kind in kinds:
            return outcome
    return "?"


def up_for(transcript: Transcript) -> float:
    """Seconds from the answer to the end, by the simulator's transcript."""
    (answered,) = [e.at for e in transcript.entries if e.kind == "answered"]
    return (transcript.duration or 0.0) - answered


# -- one call ----------------------------------------------------------------------------------


async def test_the_documented_command_works_on_a_fresh_simulator() -> None:
    async with simulator() as (sim, url):
        sim.add_phone("+34600000001", Phone.answers(1.0, press="1"))
        done = await dial(REMINDER, "+34600000001", "--from", CALLER, "--platform-url", url,
                          "--data", "name=Ana", "--data", "when=on Monday at ten")
        out, err = done.stdout.decode(), done.stderr.decode()
        assert done.returncode == 0, out + err
        assert f"configured on the platform: {CALLER} → callback URL (it had none)" in out
        assert "call.data: " in out
        data = json.loads(out.split("call.data: ", 1)[1].splitlines()[0])
        assert data == {"name": "Ana", "when": "on Monday at ten", "confirmed": True}
        (call,) = sim.calls.values()
        spoken = call.transcript.texts("speak")
        assert spoken[0].startswith("Hello Ana. This is a reminder of your appointment "
                                    "on Monday at ten")
        said = float(out.split("ended: answered, ", 1)[1].split("s", 1)[0])
        assert abs(said - up_for(call.transcript)) < 1  # the platform's whole seconds
        assert err == ""  # warnings and errors only, by default


async def test_json_gives_the_outcome_duration_and_data() -> None:
    async with simulator() as (sim, url):
        sim.add_phone("+34600000002", Phone.answers(1.0, press="2"))
        done = await dial(REMINDER, "+34600000002", "--from", CALLER, "--platform-url", url,
                          "--json")
        assert done.returncode == 0, done.stderr.decode()
        result = json.loads(done.stdout)  # stdout is the JSON alone
        (call,) = sim.calls.values()
        assert result["call_id"] == call.call_id
        assert (result["number"], result["outcome"], result["error"]) == (
            "+34600000002", "answered", None)
        assert result["data"] == {"confirmed": False}
        assert abs(result["duration"] - up_for(call.transcript)) < 1
        assert "calling +34600000002" in done.stderr.decode()


@pytest.mark.parametrize(("phone", "outcome"), [
    (Phone.busy(), "busy"), (Phone.no_answer(), "no_answer"), (Phone.failing(), "failed"),
])
async def test_an_unanswered_call_exits_1_with_its_outcome(phone: Phone, outcome: str) -> None:
    async with simulator() as (sim, url):
        sim.add_phone("+34600000003", phone)
        done = await dial(REMINDER, "+34600000003", "--from", CALLER, "--platform-url", url,
                          "--json")
        assert done.returncode == 1, done.stderr.decode()
        result = json.loads(done.stdout)
        assert result["outcome"] == outcome == outcome_in(sim, result["call_id"])
        assert result["duration"] == 0


async def test_the_platform_s_own_reason_is_shown() -> None:
    async with simulator() as (_, url):
        done = await dial(REMINDER, "+34600000001", "--from", CALLER, "--platform-url", url,
                          "--no-configure")
        assert done.returncode == 2
        (line,) = done.stderr.decode().splitlines()
        assert line.startswith("callflow: error: cannot place the call: ")
        assert f"tel:{CALLER} is not one of your numbers" in line
        assert "--api-key" not in line  # not a credentials problem
        as_json = await dial(REMINDER, "+34600000001", "--from", CALLER, "--platform-url",
                             url, "--no-configure", "--json")
        assert as_json.returncode == 2
        result = json.loads(as_json.stdout)
        assert (result["outcome"], result["call_id"]) == ("failed", None)
        assert f"tel:{CALLER} is not one of your numbers" in result["error"]


async def test_a_flow_that_raises_exits_1_with_the_error(tmp_path: Path) -> None:
    flows = tmp_path / "broken.py"
    flows.write_text(textwrap.dedent("""
        import callflow

        app = callflow.App()

        @app.flow
        async def survey(call):
            await call.say("One question.")
            call.data["asked"] = True
            raise RuntimeError("the survey service is down")
    """))
    async with simulator() as (sim, url):
        done = await dial(str(flows), "+34600000001", "--from", CALLER, "--platform-url", url,
                          "--json")
        assert done.returncode == 1, done.stderr.decode()
        result = json.loads(done.stdout)
        assert result["outcome"] == "answered"
        assert result["error"] == "RuntimeError: the survey service is down"
        assert result["data"] == {"asked": True}
        (call,) = sim.calls.values()
        assert "One question." in call.transcript.texts("speak")


# -- campaigns ---------------------------------------------------------------------------------


CAMPAIGN_FLOW = """
import callflow

app = callflow.App()

@app.flow
async def notice(call):
    await call.say(f"Hello {call.data.get('name', 'there')}.")
    call.data["told"] = True
"""


def write_numbers(path: Path, count: int) -> list[str]:
    numbers = [f"+3461{n:07d}" for n in range(count)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "phone"])
        writer.writerows([f"P{n}", number] for n, number in enumerate(numbers))
    return numbers


async def test_a_campaign_of_500_numbers_matches_the_simulator_s_transcripts(
    tmp_path: Path, anyio_backend: str,
) -> None:
    (tmp_path / "notice.py").write_text(CAMPAIGN_FLOW)
    # 500 as the issue asks; the same campaign on trio is smaller, to keep the suite fast.
    total = 500 if anyio_backend == "asyncio" else 100
    numbers = write_numbers(tmp_path / "people.csv", total)
    expected: dict[str, str] = {}
    async with simulator() as (sim, url):
        sim.default_phone = Phone.answers(0.5)
        for n, number in enumerate(numbers):
            if n % 10 == 3:
                sim.add_phone(number, Phone.busy())
                expected[number] = "busy"
            elif n % 25 == 7:
                sim.add_phone(number, Phone.no_answer())
                expected[number] = "no_answer"
            elif n % 50 == 11:
                sim.add_phone(number, Phone.failing())
                expected[number] = "failed"
        done = await dial("notice.py", "--numbers", "people.csv", "--from", CALLER,
                          "--platform-url", url, "--concurrency", "50", "--retries", "1",
                          "--retry-delay", "0", cwd=tmp_path)
        out, err = done.stdout.decode(), done.stderr.decode()
        assert done.returncode == 1, out + err  # some were busy
        lines = (tmp_path / "people.results.jsonl").read_text().splitlines()
        results = {r["number"]: r for r in map(json.loads, lines)}
        assert len(lines) == len(results) == total
        for n, number in enumerate(numbers):
            result = results[number]
            want = expected.get(number, "answered")
            assert result["outcome"] == want == outcome_in(sim, result["call_id"]), number
            assert result["attempts"] == (2 if want in ("busy", "no_answer") else 1)
            told = {"told": True} if want == "answered" else {}
            assert result["data"] == {"name": f"P{n}", **told}
            assert result["error"] is None
        # a busy or unanswered number was called twice; the others once
        retried = sum(1 for o in expected.values() if o != "failed")
        assert len(sim.calls) == total + retried
    answered = total - len(expected)
    busy = sum(1 for o in expected.values() if o == "busy")
    summary = out.strip().splitlines()[-1]
    assert summary.startswith(f"done: {total} numbers: {answered} answered, {busy} busy, ")
    assert summary.endswith("results in people.results.jsonl")
    # not a terminal: plain progress lines, the last one complete
    progress = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert progress[-1].startswith(f"progress: {total}/{total} done, {answered} answered, ")
    assert "\x1b" not in err


async def test_the_progress_bar_is_drawn_on_a_terminal(tmp_path: Path) -> None:
    (tmp_path / "notice.py").write_text(CAMPAIGN_FLOW)
    write_numbers(tmp_path / "people.csv", 20)
    async with simulator() as (_, url):
        leader, follower = pty.openpty()
        try:
            with anyio.fail_after(TIMEOUT):
                done = await anyio.run_process(
                    [sys.executable, "-m", "callflow", "dial", "notice.py", "--numbers",
                     "people.csv", "--from", CALLER, "--platform-url", url, "--json"],
                    check=False, env=clean_env(), cwd=tmp_path, stderr=follower)
            os.close(follower)
            drawn = b""
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                drawn += chunk
        finally:
            os.close(leader)
    assert done.returncode == 0
    assert json.loads(done.stdout)["outcomes"] == {"answered": 20}
    bar = drawn.decode()
    assert "\r\x1b[2K" in bar and "█" in bar
    assert "20/20 done, 20 answered, 0 busy or no answer, 0 failed" in bar
    assert "progress: " not in bar


async def test_ctrl_c_stops_placing_calls_and_lets_the_live_ones_finish(
    tmp_path: Path,
) -> None:
    (tmp_path / "notice.py").write_text(CAMPAIGN_FLOW.replace(
        'call.data["told"] = True', 'await call.wait(1.0)\n    call.data["told"] = True'))
    numbers = write_numbers(tmp_path / "people.csv", 30)
    async with simulator(Clock.real()) as (sim, url), anyio.create_task_group() as tg:
        sim.default_phone = Phone.answers(0.2)
        process = await anyio.open_process(
            [sys.executable, "-m", "callflow", "dial", "notice.py", "--numbers", "people.csv",
             "--from", CALLER, "--platform-url", url, "--concurrency", "3"],
            env=clean_env(), cwd=tmp_path)
        with anyio.fail_after(TIMEOUT), sim.subscribe() as events:
            async for event in events:  # the first call is live: its flow speaks
                if event.entry is not None and event.entry.kind == "speak":
                    break
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130
        tg.cancel_scope.cancel()
    results = [json.loads(line) for line in
               (tmp_path / "people.results.jsonl").read_text().splitlines()]
    assert sorted(r["number"] for r in results) == numbers
    placed = [r for r in results if r["outcome"] != "not_called"]
    assert 1 <= len(placed) < 30
    for result in placed:  # every call placed was let finish its flow
        assert (result["outcome"], result["error"]) == ("answered", None), result
        assert result["data"]["told"] is True
    assert len(sim.calls) == len(placed)


# -- the numbers file --------------------------------------------------------------------------


def test_numbers_file_columns(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("Name,To,when\nAna,+34600000001,Monday\nLuis, tel:+34600000002 ,\n")
    assert read_numbers(path) == [("+34600000001", {"Name": "Ana", "when": "Monday"}),
                                  ("+34600000002", {"Name": "Luis", "when": ""})]
    path.write_text("+34600000001\n+34600000002\n")
    assert [n for n, _ in read_numbers(path)] == ["+34600000001", "+34600000002"]


@pytest.mark.parametrize(("text", "error"), [
    ("", "is empty"),
    ("number\n", "has no numbers"),
    ("number,name\n600000001,Ana\n", "line 2: the number '600000001' is not an E.164"),
    ("+34600000001,Ana\n", "give a header row"),
])
def test_a_bad_numbers_file_is_a_clear_error(tmp_path: Path, text: str, error: str) -> None:
    from callflow import ConfigurationError

    path = tmp_path / "n.csv"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=error):
        read_numbers(path)




# -- the platform's own words ------------------------------------------------------------------


@pytest.mark.parametrize(("body", "reason"), [
    ('{"ClientException": {"exceptionCategory": "POL", "exceptionId": 1, '
     '"text": "%1 is not one of your numbers", "variables": ["tel:+34900000009"]}}',
     "tel:+34900000009 is not one of your numbers"),
    ('{"code": 21210, "message": "The source phone number provided, +34900000009, is not '
     'yet verified for your account", "status": 400}',
     "The source phone number provided, +34900000009, is not yet verified for your account"),
    ('{"errors": [{"code": "10010", "title": "Bad request", '
     '"detail": "The from number is not one of yours."}]}',
     "The from number is not one of yours."),
    ("Service Unavailable", "Service Unavailable"),
    ("<html><body>502 Bad Gateway</body></html>", None),
    ("", None),
    ('{"unexpected": true}', None),
])
def test_the_platform_s_reason_is_read_from_each_provider_s_error_body(
    body: str, reason: str | None,
) -> None:
    from callflow.cli._main import platform_reason

    assert platform_reason(body) == reason


async def test_the_rate_spaces_the_calls_evenly() -> None:
    from callflow.cli._campaign import _Pacer

    pacer = _Pacer(20.0)  # a call every 50 ms
    starts = []
    for _ in range(6):
        await pacer.wait()
        starts.append(anyio.current_time())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.045 for gap in gaps), gaps
    unlimited = _Pacer(None)
    before = anyio.current_time()
    for _ in range(100):
        await unlimited.wait()
    assert anyio.current_time() - before < 0.05
