"""Speech answers and hotkeys replay: a reception call rebuilt on every notification.

Hotkeys keep no history of their own: they are decided from gather results, which the
history has (``callflow/_hotkeys.py``).  With ``cache_size=0`` every notification rebuilds
the call from its history; the wire answers must be the bytes memory mode sends.
"""

from __future__ import annotations

import pytest

from ._wire import normalise
from .test_replay import Scenario, run

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

SCENARIOS = {
    "by-voice": Scenario("reception", "+34900000005", ("say-next:support please",)),
    "unclear-then-key": Scenario("reception", "+34900000005",
                                 ("say-next:weather", "press-next:3")),
    "hotkey": Scenario("reception", "+34900000005", ("press-next:0",)),
}


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_speech_and_hotkeys_replay_byte_for_byte(name: str, sqlite_url: str) -> None:
    scenario = SCENARIOS[name]
    memory, memory_wire = await run(scenario, "twilio")
    replayed, replayed_wire = await run(scenario, "twilio", store=sqlite_url, cache_size=0)
    assert normalise(replayed.render()) == normalise(memory.render())
    assert replayed.texts("error") == []
    assert replayed_wire == memory_wire
    assert len(replayed_wire) >= 3
