"""A flow that blocks the event loop is named in the log, with the line it is blocked on.

``time.sleep`` or a CPU-bound loop in a flow stalls every call; served the way ``callflow
serve`` serves (hypercorn on a socket, ``callflow._server.serving``), with the default
settings but a shorter threshold, the app logs a warning naming the call and the flow's
file and line.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import anyio
import httpx
import pytest

from callflow import App, Call, Settings
from callflow._loopwatch import LoopWatch, describe_stack, watching_the_loop
from callflow._server import Listener, serving

from ._platforms import PLATFORMS, incoming, platform_app

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

THRESHOLD = 0.3
BLOCK = 1.2


class Recovered(logging.Handler):
    """Notes the watch's "ran again" warning, which ends a stall's report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "ran again" in record.getMessage():
            self.seen.set()


def blocking_app(platform: str, how: str) -> tuple[App, int]:
    app = platform_app(platform, loop_stall_warning=THRESHOLD, response_budget=10.0)

    @app.flow
    async def blocks(call: Call) -> None:
        if how == "sleep":
            time.sleep(BLOCK)  # noqa: ASYNC251  BLOCKING LINE
        else:
            end = time.monotonic() + BLOCK
            while time.monotonic() < end:  # BLOCKING LINE
                pass
        await call.say("Done.")

    lines = [i for i, text in enumerate(Path(__file__).read_text().splitlines(), 1)
             if text.strip().endswith("BLOCKING LINE")]
    return app, lines[0] if how == "sleep" else lines[1]


@pytest.mark.parametrize("how", ["sleep", "spin"])
@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_flow_that_blocks_the_loop_is_named_with_its_line(
    platform: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callflow")
    recovered = Recovered()
    logging.getLogger("callflow").addHandler(recovered)
    app, line = blocking_app(platform, how)
    listener = Listener.bind("127.0.0.1", 0)
    async with serving(app, listener, graceful_timeout=1.0) as base:
        # Signed over the app's public URL (as behind a proxy), sent to the socket.
        url, body, headers = incoming(platform, "call-blocks")
        path = url.split("://", 1)[1].partition("/")[2]
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(f"{base}/{path}", content=body, headers=headers)
        assert response.status_code == 200, response.text
        try:
            # The watch logs from its own thread: wait for it in a worker thread.
            assert await anyio.to_thread.run_sync(recovered.seen.wait, 5.0)
        finally:
            logging.getLogger("callflow").removeHandler(recovered)
    stalls = [r.getMessage() for r in caplog.records if "event loop has been blocked" in
              r.getMessage()]
    assert len(stalls) == 1, stalls
    assert "call call-blocks" in stalls[0]
    assert f"{__file__}:{line}" in stalls[0], stalls[0]


async def test_no_warning_when_the_loop_is_never_blocked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="callflow")
    async with watching_the_loop(0.2) as watch:
        for _ in range(40):
            await anyio.sleep(0.01)
    assert isinstance(watch, LoopWatch) and watch.stalls == 0
    assert caplog.records == []


async def test_the_watch_is_on_by_default_and_off_at_zero() -> None:
    assert Settings().loop_stall_warning == 1.0
    async with watching_the_loop(0) as watch:
        assert watch is None


def test_a_stall_outside_any_flow_names_where_the_loop_is() -> None:
    import sys

    frame = sys._getframe()
    assert describe_stack(frame).startswith(f"outside any flow, at {__file__}:")
