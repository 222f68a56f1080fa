"""What the benchmark scripts share: the benchmark call, recording it, CPU accounting.

The benchmark call is one complete IVR call into examples/ivr.py (or a bench app that
speaks the same): CalledNumber, the menu, the caller presses 1, the dial to sales, the
agent answers, talks and hangs up, the goodbye, the hang-up. ``record_call`` plays it with
the simulator against an app reachable at a callback URL and keeps every notification and
its answer, as bytes on the wire.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callflow.simulator import LoadGenerator, Phone  # noqa: E402
from callflow.simulator._lean_http import LeanTransport  # noqa: E402

__all__ = ("AGENT", "NUMBER", "ROOT", "SALES", "SCRIPT", "Exchange", "Recorder", "cpu_of",
           "own_cpu", "record_call")

NUMBER = "+34900000001"
SALES = "+34910000001"
SCRIPT = ["wait:opening hours", "press:1"]
EXPECT = "Goodbye"
AGENT = Phone.answers(0.5, hang_up_after=1.0)
"""The sales agent: answers after half a second, hangs up a second later (virtual time)."""


@dataclass(frozen=True)
class Exchange:
    """One notification as sent (path and query, body) and the app's answer."""

    target: bytes
    body: bytes
    answer: bytes


class Recorder(httpx.AsyncBaseTransport):
    """The simulator's transport to the app, noting every notification and its answer."""

    def __init__(self) -> None:
        self.inner = LeanTransport()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        response = await self.inner.handle_async_request(request)
        answer = await response.aread()
        if response.status_code != 200:
            raise SystemExit(f"the app answered {response.status_code}: {answer[:300]!r}")
        self.exchanges.append(Exchange(request.url.raw_path, body, answer))
        return httpx.Response(response.status_code, headers=response.headers, content=answer)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def record_call(callback_url: str) -> tuple[bytes, list[Exchange]]:
    """The benchmark call into the app at `callback_url`: its call id and its exchanges."""
    recorder = Recorder()
    async with LoadGenerator(shards=1, transport=recorder) as load:
        load.sim.add_phone(SALES, AGENT)
        load.sim.add_account_number(NUMBER, callback_url=callback_url)
        result = await load.run(NUMBER, calls=1, script=SCRIPT, expect=EXPECT)
    if result.completed != 1:
        raise SystemExit(f"the recorded call failed: {result.failures}")
    call_id = json.loads(recorder.exchanges[0].body)["callId"].encode()
    return call_id, recorder.exchanges


def own_cpu() -> float:
    """CPU seconds this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_of(pid: int) -> float:
    """CPU seconds used so far by process `pid` (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
