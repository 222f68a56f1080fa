"""Shutdown: ``callflow serve`` gets SIGTERM with calls in progress.

What it must do: finish the responses in flight (a slow flow's caller still gets its
commands), hang up every live call politely (each gets a goodbye and a hang-up through
setcommands before the process goes), and exit, cleanly, within a bounded time.

One real ``callflow serve`` process per backend, against a fake platform over real HTTP:
three calls wait in a menu and a fourth is mid-response when the signal arrives. The
scenario runs once per backend and the tests below each check one promise about it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from callflow.simulator import serve_asgi

from ._support import FakePlatform, note

pytestmark = pytest.mark.e2e

MENU, SLOW = "+34900000001", "+34900000002"
LIVE = ("live-1", "live-2", "live-3")
EXIT_WITHIN = 10.0
"""Seconds from SIGTERM to exit: hypercorn's graceful timeout (5 s) and some room."""

FLOWS = '''
import anyio
import callflow

app = callflow.App()


@app.flow(number="+34900000001")
async def menu(call):
    await call.say("Welcome.")
    await call.gather(prompt="Press a key.", num_digits=1)
    await call.say("Bye.")


@app.flow(number="+34900000002")
async def slow(call):
    await call.say("One moment.")
    await anyio.sleep(1.0)  # still working when SIGTERM arrives
    await call.gather(prompt="Now press a key.", num_digits=1)
'''


@dataclass
class Outcome:
    """What one run of the scenario saw."""

    backend: str
    slow_status: int | None = None
    slow_error: str | None = None
    slow_commands: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    exit_seconds: float = 0.0
    setcommands: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""

    def output(self) -> str:
        return f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"


class Lines:
    """Collects a process stream's lines; waits for one that matches."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = anyio.Event()

    async def pump(self, stream: Any) -> None:
        pending = ""
        async for chunk in TextReceiveStream(stream):
            pending += chunk
            *complete, pending = pending.split("\n")
            self.lines.extend(complete)
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_for(self, pattern: str) -> re.Match[str]:
        with anyio.fail_after(20):
            while True:
                for line in self.lines:
                    match = re.search(pattern, line)
                    if match:
                        return match
                await self._changed.wait()


async def scenario(backend: str, flows: Path, root: str) -> Outcome:
    outcome = Outcome(backend)
    platform = FakePlatform()
    async with serve_asgi(platform) as platform_url, httpx.AsyncClient(timeout=20) as client:
        env = {**os.environ, "PYTHONPATH": root, "PYTHONUNBUFFERED": "1"}
        env = {k: v for k, v in env.items() if not k.startswith("CALLFLOW_")}
        process: Process = await anyio.open_process(
            [sys.executable, "-m", "callflow", "serve", str(flows), "--port", "0",
             "--platform-url", platform_url, "--secret", "shutdown", "--response-budget", "5",
             "--backend", backend, "--log-level", "info",
             # Memory mode: its calls die with the process, so it hangs them up politely
             # (with a durable store they go on after the restart instead).
             "--store", "memory"], cwd=root, env=env)
        out, err = Lines(), Lines()
        try:
            async with anyio.create_task_group() as tg:
                assert process.stdout is not None and process.stderr is not None
                tg.start_soon(out.pump, process.stdout)
                tg.start_soon(err.pump, process.stderr)
                callback = (await out.wait_for(r"^callback URL: (\S+)$")).group(1)
                await out.wait_for(r"^ready")

                for call_id in LIVE:
                    response = await client.post(callback, json=note("CalledNumber", call_id,
                                                                     callee=MENU))
                    assert response.status_code == 200, response.text

                async def slow_call() -> None:
                    try:
                        response = await client.post(
                            callback, json=note("CalledNumber", "slow-1", callee=SLOW))
                    except httpx.HTTPError as exc:  # cut off: the test below says so
                        outcome.slow_error = f"{type(exc).__name__}: {exc}"
                        return
                    outcome.slow_status = response.status_code
                    outcome.slow_commands = response.json()["commands"]

                tg.start_soon(slow_call)
                # The slow call's notification is inside the app: its flow is working.
                await err.wait_for(r"slow-1 ← CalledNumber")
                signalled = time.monotonic()
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(EXIT_WITHIN + 5):
                    outcome.exit_code = await process.wait()
                outcome.exit_seconds = time.monotonic() - signalled
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            outcome.stdout, outcome.stderr = "\n".join(out.lines), "\n".join(err.lines)
    for request in platform.attempts:
        call_id = request.path.split("/")[-2]
        outcome.setcommands.setdefault(call_id, []).append(request.json["commands"])
    return outcome


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def outcome(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Outcome:
    flows = tmp_path_factory.mktemp("shutdown") / "flows.py"
    flows.write_text(FLOWS)
    backend = str(request.param)
    return anyio.run(scenario, backend, flows, str(request.config.rootpath), backend=backend)


def test_the_response_in_flight_is_finished(outcome: Outcome) -> None:
    assert outcome.slow_error is None, outcome.output()
    assert outcome.slow_status == 200, outcome.output()
    commands = outcome.slow_commands
    assert commands[:2] == [{"notifications": "true"},
                            {"speak": {"text": "One moment.", "voice": "female", "repeat": 1}}]
    assert commands[2]["getDigits"]["speak"]["text"] == "Now press a key."


def test_the_server_exits_cleanly_within_a_bounded_time(outcome: Outcome) -> None:
    assert outcome.exit_code == 0, outcome.output()
    assert outcome.exit_seconds < EXIT_WITHIN, outcome.output()
    assert "SIGTERM: shutting down" in outcome.stderr
    assert "Traceback" not in outcome.stderr, outcome.output()
    assert outcome.stdout.rstrip().endswith("stopped"), outcome.output()


def test_every_live_call_is_hung_up_politely(outcome: Outcome) -> None:
    for call_id in (*LIVE, "slow-1"):
        batches = outcome.setcommands.get(call_id)
        assert batches, f"{call_id}: no setcommands before exit: {json.dumps(outcome.setcommands)}"
        last = batches[-1]
        assert last[-1] == {"hangup": {"reason": "rejected"}}, last
        assert any("speak" in command for command in last), last
