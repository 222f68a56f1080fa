"""``callflow serve --call-log FILE`` as a user runs it: real processes, several workers.

The simulator and the served app are processes of their own (see test_e2e_processes);
each call placed must end as exactly one JSON line in the log, whichever worker took it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .test_e2e_processes import AUTH, NUMBERS, TIMEOUT, Process, transcript_of

pytestmark = pytest.mark.e2e

IVR = "+34900000001"


@pytest.fixture
def sim_url(tmp_path: Path) -> Iterator[str]:
    numbers = tmp_path / "numbers.toml"
    numbers.write_text(NUMBERS)
    sim = Process("simulator", "--port", "0", "--numbers", str(numbers))
    try:
        url = sim.wait_for(r"simulator on (http://127\.0\.0\.1:\d+) ")[1]
        sim.wait_for("^ready")
        yield url
    finally:
        sim.stop()


def test_serve_with_workers_logs_each_call_once(sim_url: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    store = f"sqlite:///{tempfile.mkdtemp(prefix='callflow-')}/calls.db"
    app = Process("serve", "examples/ivr.py", "--port", "0", "--platform-url", sim_url,
                  "--workers", "2", "--store", store, "--call-log", str(log))
    try:
        app.wait_for(r"^ready")
        scripts = [["press-next:1"], ["press-next:3"], [], ["press-next:9", "press-next:3"]]
        with httpx.Client(base_url=sim_url, auth=AUTH, timeout=TIMEOUT + 5) as client:
            ids = []
            for script in scripts:
                response = client.post("/simulator/calls", json={"to": IVR, "script": script})
                assert response.status_code == 201, response.text
                ids.append(response.json()["callId"])
            transcripts = [transcript_of(client, call_id) for call_id in ids]
    finally:
        app.stop()  # SIGTERM: the workers hand their last records over before exiting
    assert app.popen.returncode == 0, app.output()
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["call_id"] for r in records) == sorted(ids), app.output()
    by_id = {r["call_id"]: r for r in records}
    for call_id, transcript in zip(ids, transcripts, strict=True):
        record = by_id[call_id]
        assert (record["flow"], record["direction"], record["callee"]) == (
            "reception", "inbound", IVR)
        assert record["outcome"] == "answered" and record["error"] is None
        assert record["hung_up_by"] == "app"
        assert record["started_at"] <= record["ended_at"]
        assert transcript.spoken[0] == "Welcome to Acme."
    choices = [by_id[call_id]["data"].get("choice") for call_id in ids]
    assert choices == ["sales", "hours", None, "hours"]


def test_a_call_log_that_cannot_be_opened_is_an_error_at_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from callflow.cli import main

    missing = tmp_path / "no such directory" / "calls.jsonl"
    ivr = Path(__file__).resolve().parent.parent / "examples" / "ivr.py"
    status = main(["serve", str(ivr), "--port", "0", "--no-configure",
                   "--store", "memory", "--call-log", str(missing)])
    assert status == 2
    assert f"--call-log: cannot open {missing}: No such file or directory" in (
        capsys.readouterr().err)
