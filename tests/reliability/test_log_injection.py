"""Log injection: text from a webhook cannot start a log line of its own.

A call id (or a number, or a reason) holding a newline would forge a line in the app's log.
Each platform's first notification carries one, and the log, formatted as a handler writes
it, must hold no line that the sender wrote.
"""

from __future__ import annotations

import logging

import anyio
import httpx
import pytest

from callflow import Call
from callflow._logsafe import escape

from ._platforms import PLATFORMS, incoming, platform_app
from ._support import PUBLIC

FORGED = "FORGED INFO callflow: transfer approved"
HOSTILE_IDS = [f"call-1\n{FORGED}", f"call-1\r{FORGED}", f"call-1\u2028{FORGED}",
               f"call-1\x1b[2K\r{FORGED}", f"call-1\x85{FORGED}"]


def forged_lines(text: str) -> list[str]:
    # str.splitlines() splits on every line boundary a terminal or a log viewer might honour.
    return [line for line in text.splitlines() if line.startswith(FORGED)
            or line.startswith("\x1b[2K")]


@pytest.mark.anyio
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("call_id", HOSTILE_IDS, ids=["lf", "cr", "u2028", "ansi", "nel"])
async def test_a_call_id_cannot_forge_a_log_line(
    platform: str, call_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = platform_app(platform)
    started = anyio.Event()

    @app.flow
    async def waits(call: Call) -> None:
        started.set()
        await call.gather(prompt="Press a key.", num_digits=1, timeout=60)

    caplog.set_level(logging.INFO, logger="callflow")
    async with app, httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                      base_url=PUBLIC) as client:
        url, body, headers = incoming(platform, call_id)
        response = await client.post(url, content=body, headers=headers)
        assert response.status_code == 200, response.text
        with anyio.fail_after(5):
            await started.wait()
    logged = caplog.text
    assert forged_lines(logged) == []
    assert escape(call_id) in logged  # the call was logged, escaped


def test_escape_leaves_printable_text_alone_and_shows_the_rest_as_repr_does() -> None:
    text = "call +34 600 → ok"
    assert escape(text) is text
    assert escape("a\nb\rc\td\x00e\x1bf\u2028g\U000e0001") == (
        "a\\nb\\rc\\td\\x00e\\x1bf\\u2028g\\U000e0001")


def test_an_exception_argument_with_a_newline_is_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callflow")
    logging.getLogger("callflow").warning("refused: %s", ValueError(f"bad\n{FORGED}"))
    assert forged_lines(caplog.text) == []
    assert "bad\\nFORGED" in caplog.text
