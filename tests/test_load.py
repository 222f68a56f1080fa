"""Load mode, small and fast: 20 IVR calls at a high rate against the app in this process."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import callflow
from callflow._loader import load_app
from callflow.simulator import LatencyStats, LoadGenerator, LoadResult, serve_asgi
from callflow.simulator._load import percentile

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

IVR = Path(__file__).resolve().parent.parent / "examples" / "ivr.py"
NUMBER = "+34900000001"


async def run_ivr_load(calls: int, rate: float | None, **options: object) -> LoadResult:
    app = load_app(IVR)
    async with LoadGenerator() as load, load.serve() as platform_url:
        app.configure(callflow.Settings(platform_url=platform_url))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            await app.configure_numbers()
            with anyio.fail_after(60):
                return await load.run(
                    NUMBER, calls=calls, rate=rate,
                    script=["wait:opening hours", "press:3"], expect="Goodbye",
                    **options,  # type: ignore[arg-type]
                )


async def test_twenty_calls_at_a_high_rate_all_complete() -> None:
    result = await run_ivr_load(20, rate=500)
    assert result.failures == ()
    assert (result.calls, result.completed, result.failed) == (20, 20, 0)
    assert result.notification_failures == 0
    # CalledNumber and DigitsCollected for each call, at least
    assert result.notifications >= 40
    latency = result.latency
    assert latency is not None and latency.count == result.notifications
    assert 0 < latency.p50 <= latency.p90 <= latency.p99 <= latency.max
    assert result.calls_per_second > 0 and result.notifications_per_second > 0
    assert result.peak_concurrency >= 1
    # the menu, the hours and the goodbye take minutes of speech: simulated, not waited for
    assert result.simulated_seconds > 10
    data = result.to_dict()
    assert data["completed"] == 20 and data["latency"]["p99"] == latency.p99
    table = result.render()
    assert "latency p99" in table and "calls/s" in table


async def test_a_wrong_expectation_is_a_failure_with_its_reason() -> None:
    app = load_app(IVR)
    async with LoadGenerator() as load, load.serve() as platform_url:
        app.configure(callflow.Settings(platform_url=platform_url))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            await app.configure_numbers()
            result = await load.run(NUMBER, calls=3, script=["wait:hours", "press:3"],
                                    expect="no such words", max_concurrent=1)
    assert (result.completed, result.failed) == (0, 3)
    assert "never heard 'no such words'" in result.failures[0]
    assert len(result.failed_transcripts) == 3
    assert result.peak_concurrency == 1


async def test_late_commands_reach_calls_in_every_shard_through_the_router() -> None:
    """A flow slower than its response budget sends the rest by setcommands: the REST
    request must reach the shard that holds the call."""
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def slow(call: callflow.Call) -> None:
        await call.say("Hello.")
        await anyio.sleep(0.2)  # the flow's own I/O, in real time
        await call.say("Done.")

    async with LoadGenerator(shards=4) as load, load.serve() as platform_url:
        app.configure(callflow.Settings(platform_url=platform_url, response_budget=0.05))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            await app.configure_numbers()
            with anyio.fail_after(30):
                result = await load.run(NUMBER, calls=8, rate=100, expect="Done")
    assert result.failures == ()
    assert result.completed == 8


def test_percentiles_by_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 50) == 50
    assert percentile(samples, 99) == 99
    assert percentile(samples, 100) == 100
    assert percentile([3.0], 90) == 3.0
    stats = LatencyStats.of([0.3, 0.1, 0.2])
    assert stats is not None and (stats.p50, stats.max, stats.count) == (0.2, 0.3, 3)
    assert LatencyStats.of([]) is None
