"""The command line of durable calls: the default store, --workers, callflow history, errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from callflow.cli._main import main

from ._process import FLOWS, REPO, Worker

pytestmark = pytest.mark.e2e

CALLED = {"eventName": "CalledNumber", "callerId": "tel:+34600000001",
          "destination": "tel:+34900000077", "timestamp": "2026-12-03T10:00:00Z"}


def test_serve_keeps_calls_in_a_sqlite_file_under_the_working_directory(
    tmp_path: Path,
) -> None:
    """The default store, and its path in the banner; then ``callflow history`` reads it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLOW_")}
    env["SURVEY_STEPS"] = str(tmp_path / "steps.txt")
    server = subprocess.Popen(
        [sys.executable, "-m", "callflow", "serve", str(FLOWS), "--port", "0",
         "--no-configure", "--secret", "s3cret"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        lines = []
        for line in server.stdout:
            lines.append(line)
            if line.startswith("ready"):
                break
        banner = "".join(lines)
        url = next(ln.split()[-1] for ln in lines if ln.startswith("callback URL:"))
        assert f"store:        sqlite:///{tmp_path}/.callflow/calls.db" in banner, banner
        answer = httpx.post(url, json={**CALLED, "callId": "call-7"}, timeout=20)
        assert answer.status_code == 200
        assert answer.json()["commands"][1]["getDigits"]["speak"]["text"] == "Question one."
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
    assert (tmp_path / ".callflow" / "calls.db").exists()
    listed = subprocess.run([sys.executable, "-m", "callflow", "history"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert "call-7" in listed.stdout and "survey" in listed.stdout and "waiting" in listed.stdout
    shown = subprocess.run([sys.executable, "-m", "callflow", "history", "call-7"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "flow survey, +34600000001 → +34900000077" in shown.stdout
    assert "step note returned 'start'" in shown.stdout
    assert "🔊 'Question one.'" in shown.stdout


def test_history_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALLFLOW_STORE", raising=False)
    assert main(["history"]) == 2
    assert "no store at" in capsys.readouterr().err
    assert main(["history", "--store", "memory"]) == 2
    assert "keeps no history" in capsys.readouterr().err
    url = f"sqlite:///{tmp_path}/calls.db"
    assert main(["history", "--store", url]) == 0
    assert "no calls in the store yet" in capsys.readouterr().out
    assert main(["history", "--store", url, "nope"]) == 2
    assert "no call 'nope'" in capsys.readouterr().err
    assert main(["history", "--store", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_an_unreachable_store_at_start_is_one_line_and_status_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "callflow", "serve", str(FLOWS), "--port", "0",
         "--no-configure", "--store", "postgresql://postgres@127.0.0.1:1/none"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("CALLFLOW_")})
    assert done.returncode == 2, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("callflow: error:")]
    assert len(errors) == 1 and "127.0.0.1" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_workers_need_a_durable_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(FLOWS), "--workers", "2", "--store", "memory",
                 "--no-configure", "--port", "0"]) == 2
    assert "--workers needs a durable store" in capsys.readouterr().err
    assert main(["serve", str(FLOWS), "--workers", "2", "--platform", "telnyx",
                 "--no-configure", "--port", "0"]) == 2
    assert "serve Telnyx with one worker" in capsys.readouterr().err


async def ready_workers(server: Worker, count: int) -> set[int]:
    """The pids of the first ``count`` "worker N ready" lines (waiting for them)."""
    pattern = re.compile(r"^worker \d ready \(pid (\d+)\)")
    while True:
        pids = {int(m[1]) for line in server.lines if (m := pattern.match(line))}
        if len(pids) >= count:
            return pids
        await server.wait_for(pattern.pattern)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_workers_share_one_port_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    log = tmp_path / "steps.txt"
    server = Worker("serve", str(FLOWS), "--port", "0", "--no-configure", "--workers", "2",
                    "--store", f"sqlite:///{tmp_path}/calls.db", "--secret", "s3cret",
                    env={"SURVEY_STEPS": str(log)})
    try:
        port = await server.started()
        pids = await ready_workers(server, 2)
        url = f"http://127.0.0.1:{port}/callflow/s3cret/events"
        served: set[int] = set()
        for n, pid in enumerate(sorted(pids)):
            other = next(p for p in pids if p != pid)
            os.kill(other, signal.SIGSTOP)  # only `pid` can accept now
            try:
                async with httpx.AsyncClient(timeout=20) as client:
                    answer = await client.post(url, json={**CALLED, "callId": f"w-{n}"})
                assert answer.status_code == 200
            finally:
                os.kill(other, signal.SIGCONT)
            served |= {int(line.split()[-1]) for line in log.read_text().splitlines()}
        assert served == pids
        victim = max(pids)
        os.kill(victim, signal.SIGKILL)
        await server.wait_for(r"worker \d \(pid \d+\) stopped with status -9; starting another")
        now = await ready_workers(server, 3)
        assert len(now - pids) == 1 and victim not in now - pids
    finally:
        code = await server.stop()
    assert code == 0, server.output
    assert server.lines[-1] == "stopped\n", server.output
