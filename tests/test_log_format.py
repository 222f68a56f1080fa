"""``--log-format json``: every line a JSON object; lines about a call carry its id and flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FLOWS = '''
import logging

import callflow
from callflow import Call

app = callflow.App()
log = logging.getLogger("shop")


@app.flow(number="+34900000001", name="orders")
async def take_order(call: Call) -> None:
    log.info("asking for the order")
    answer = await call.gather(prompt="Your order?", num_digits=1)
    log.warning("out of stock: %s", answer.digits)
    raise RuntimeError("the shop is closed")
'''


def test_a_call_logs_json_lines_with_its_id_and_flow(tmp_path: Path) -> None:
    flows = tmp_path / "shop.py"
    flows.write_text(FLOWS, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLOW_")}
    done = subprocess.run(
        [sys.executable, "-m", "callflow", "call", str(flows), "--press", "7", "-v",
         "--log-format", "json", "--json"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 1, done.stderr  # the flow raised: `callflow call` says so
    report = json.loads(done.stdout)
    assert "the shop is closed" in report["error"]
    call_id = report["call_id"]
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # each line parses
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    about = [line for line in lines if call_id in line["message"] or "call_id" in line]
    assert all(line.get("call_id") == call_id for line in about)
    # The flow is named from the line that chose it on, the flow's own lines included.
    chosen = next(i for i, line in enumerate(about) if "runs flow orders" in line["message"])
    assert all(line["flow"] == "orders" for line in about[chosen:])
    own = [line for line in about if line["logger"] == "shop"]
    assert [(line["level"], line["message"]) for line in own] == [
        ("info", "asking for the order"), ("warning", "out of stock: 7")]
    raised = next(line for line in about if "the flow raised" in line["message"])
    assert raised["level"] == "error" and raised["flow"] == "orders"
    assert "RuntimeError: the shop is closed" in raised["exception"]
    assert raised["time"].endswith("Z") and raised["time"][10] == "T"


def test_text_stays_the_default(tmp_path: Path) -> None:
    flows = tmp_path / "shop.py"
    flows.write_text(FLOWS, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLOW_")}
    done = subprocess.run([sys.executable, "-m", "callflow", "call", str(flows), "-v"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert "runs flow orders" in done.stderr
    assert not done.stderr.lstrip().startswith("{")
