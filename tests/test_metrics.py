"""The Prometheus endpoint, scraped over real sockets while the simulator's load generator
places calls; the same through ``callflow serve --workers 2 --metrics``, two real processes."""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import callflow
from callflow import Call
from callflow._loader import load_app
from callflow.simulator import LoadGenerator, Simulator, serve_asgi, serve_simulator

from .durable._process import Worker

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

REPO = Path(__file__).resolve().parent.parent
IVR = REPO / "examples" / "ivr.py"
NUMBER = "+34900000001"
SCRIPT = ["wait:opening hours", "press:3"]


class Scrape:
    """A scrape's samples: ``value(name, **labels)`` sums the samples that match."""

    def __init__(self, text: str) -> None:
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[sample.name].append((sample.labels, sample.value))

    def value(self, name: str, **labels: str) -> float:
        return sum(value for found, value in self.samples.get(name, [])
                   if all(found.get(k) == v for k, v in labels.items()))

    def labels(self, name: str, label: str) -> set[str]:
        return {found[label] for found, _ in self.samples.get(name, []) if label in found}


async def scrape(client: httpx.AsyncClient, url: str) -> Scrape:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


async def test_a_scrape_counts_what_the_load_generator_placed() -> None:
    calls = 30
    app = load_app(IVR)
    async with LoadGenerator() as load, load.serve() as platform_url:
        app.configure(callflow.Settings(platform_url=platform_url, metrics=True,
                                        secret="s3cret"))
        async with serve_asgi(app) as app_url, httpx.AsyncClient() as client:
            app.settings.public_url = app_url
            await app.configure_numbers()
            metrics_url = f"{app_url}/callflow/s3cret/metrics"
            during: list[Scrape] = []
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    async def place() -> None:
                        nonlocal result
                        result = await load.run(NUMBER, calls=calls, rate=300, script=SCRIPT,
                                                expect="Goodbye")
                        tg.cancel_scope.cancel()

                    result = None
                    tg.start_soon(place)
                    while True:  # scrapes while calls go on, until the load is over
                        during.append(await scrape(client, metrics_url))
                        await anyio.lowlevel.checkpoint()
            after = await scrape(client, metrics_url)
            wrong = await client.get(f"{app_url}/callflow/wrong/metrics")
    assert result is not None and result.completed == calls and result.failed == 0
    assert wrong.status_code == 403
    assert len(during) >= 1
    assert all(s.value("callflow_calls_started_total") <= calls for s in during)
    assert after.value("callflow_calls_started_total", flow="reception",
                       direction="inbound") == calls
    # The flow hangs up after its goodbye: each call completed.
    assert after.value("callflow_calls_ended_total", flow="reception",
                       outcome="completed") == calls
    assert after.value("callflow_calls_live") == 0
    assert after.value("callflow_flow_errors_total") == 0
    # Every notification the simulator sent was counted, by kind, and its reply timed.
    assert after.value("callflow_notifications_total", platform="bluevia") == result.notifications
    assert after.value("callflow_notifications_total", kind="incoming") == calls
    assert after.value("callflow_notifications_total", kind="digits") >= calls
    assert after.value("callflow_reply_seconds_count", platform="bluevia") == result.notifications
    assert after.value("callflow_reply_seconds_bucket", platform="bluevia", le="+Inf") == (
        result.notifications)
    assert after.value("callflow_store_seconds_count") == 0  # memory mode: no store


async def test_errors_pushes_and_the_store_are_counted(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'calls.db'}"
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def slow(call: Call) -> None:
        await call.say("One moment.")
        await anyio.sleep(0.2)  # over the response budget: the rest goes by setcommands
        await call.say("Done.")
        await call.gather(prompt="Press a key.", num_digits=1)

    @app.flow(number="+34900000002")
    async def broken(call: Call) -> None:
        await call.gather(prompt="Press a key.", num_digits=1)
        raise RuntimeError("the CRM is down")

    sim = Simulator()
    async with serve_simulator(sim) as platform_url:
        app.configure(callflow.Settings(platform_url=platform_url, secret="s3cret", metrics=True,
                                        response_budget=0.05, store=store))
        async with serve_asgi(app) as app_url, httpx.AsyncClient() as client:
            app.settings.public_url = app_url
            await app.configure_numbers()
            with anyio.fail_after(30):
                first = await sim.place_inbound_call("+34600000001", NUMBER, script=["press:1"])
                await first.wait_ended()
                second = await sim.place_inbound_call("+34600000001", "+34900000002",
                                                      script=["press:1"])
                await second.wait_ended()
                third = await sim.place_inbound_call("+34600000001", NUMBER,
                                                     script=["hangup:1"])
                await third.wait_ended()
                for call_id in list(app.sessions):  # the flows end just after the calls
                    await app.wait_ended(call_id)
            after = await scrape(client, f"{app_url}/callflow/s3cret/metrics")
    assert after.value("callflow_calls_started_total") == 3
    assert after.value("callflow_calls_ended_total", flow="slow", outcome="completed") == 1
    assert after.value("callflow_calls_ended_total", flow="slow", outcome="caller_hung_up") == 1
    assert after.value("callflow_calls_ended_total", flow="broken", outcome="error") == 1
    assert after.value("callflow_flow_errors_total", flow="broken") == 1
    assert after.value("callflow_calls_live") == 0
    assert after.value("callflow_pushes_total", platform="bluevia") >= 1
    assert after.value("callflow_platform_errors_total") == 0
    # Durable mode: each store operation timed under its own name.
    assert after.value("callflow_store_seconds_count", operation="create") == 3
    assert {"create", "append"} <= after.labels("callflow_store_seconds_count", "operation")


class RefuseSetcommands:
    """The simulator, but the setcommands requests get the statuses in ``refusals`` first."""

    def __init__(self, sim: Simulator, refusals: list[int]) -> None:
        self.sim, self.refusals = sim, refusals

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] == "http" and scope["path"].endswith("/setcommands")
                and self.refusals):
            status = self.refusals.pop(0)
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.sim(scope, receive, send)


async def test_platform_retries_and_errors_are_counted() -> None:
    app = callflow.App()

    @app.flow(number=NUMBER)
    async def slow(call: Call) -> None:
        await anyio.sleep(0.2)  # over the response budget: what follows goes by setcommands
        await call.gather(prompt="Press a key.", num_digits=1)

    sim = Simulator()
    platform = RefuseSetcommands(sim, [503, 400])  # a retry that succeeds, then a refusal
    async with serve_asgi(platform) as platform_url:
        app.configure(callflow.Settings(platform_url=platform_url, secret="s3cret", metrics=True,
                                        response_budget=0.05))
        async with serve_asgi(app) as app_url, httpx.AsyncClient() as client:
            app.settings.public_url = app_url
            await app.configure_numbers()
            with anyio.fail_after(30):
                for _ in range(2):
                    call = await sim.place_inbound_call("+34600000001", NUMBER,
                                                        script=["press:1"])
                    await call.wait_ended()
                for call_id in list(app.sessions):
                    await app.wait_ended(call_id)
            after = await scrape(client, f"{app_url}/callflow/s3cret/metrics")
    assert platform.refusals == []
    assert after.value("callflow_platform_retries_total", platform="bluevia",
                       operation="push") == 1
    assert after.value("callflow_platform_errors_total", platform="bluevia",
                       operation="push") == 1
    # The first call's batch went through on its second attempt; the second call's never.
    assert after.value("callflow_pushes_total") == 1
    assert after.value("callflow_calls_ended_total", outcome="completed") == 2


async def test_telnyx_commands_are_pushes() -> None:
    app = load_app(IVR)
    sim = Simulator(platform="telnyx")
    sim.add_account_number(NUMBER)
    async with serve_simulator(sim) as platform_url:
        app.configure(callflow.Settings(platform_url=platform_url, secret="s3cret", metrics=True,
                                        **sim.app_settings()))
        async with serve_asgi(app) as app_url, httpx.AsyncClient() as client:
            app.settings.public_url = app_url
            await app.configure_numbers()
            with anyio.fail_after(30):
                call = await sim.place_inbound_call("+34600000001", NUMBER, script=SCRIPT)
                await call.wait_ended()
                for call_id in list(app.sessions):
                    await app.wait_ended(call_id)
            after = await scrape(client, f"{app_url}/callflow/s3cret/metrics")
    assert after.value("callflow_calls_started_total", flow="reception") == 1
    assert after.value("callflow_calls_ended_total", flow="reception", outcome="completed") == 1
    assert after.value("callflow_calls_live") == 0
    assert after.value("callflow_notifications_total", platform="telnyx",
                       kind="incoming") == 1
    # Each command is a REST request on Telnyx: answer, the speeches, the gather, hang-up.
    assert after.value("callflow_pushes_total", platform="telnyx") >= 4
    assert after.value("callflow_reply_seconds_count", platform="telnyx") == (
        after.value("callflow_notifications_total"))


async def test_metrics_are_off_by_default() -> None:
    app = callflow.App(secret="s3cret")
    async with serve_asgi(app) as app_url, httpx.AsyncClient() as client:
        response = await client.get(f"{app_url}/callflow/s3cret/metrics")
    assert app.metrics is None
    assert response.status_code == 404
    assert "--metrics" in response.json()["error"]["message"]


def metrics_dirs(tmp: Path) -> list[Path]:
    """The directories ``serve --workers --metrics`` made for the workers' figures."""
    return [p for p in tmp.iterdir() if p.name.startswith("callflow-metrics-")]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the flows run in the workers
async def test_two_workers_report_the_figures_of_both(tmp_path: Path) -> None:
    calls = 40
    async with LoadGenerator() as load, load.serve() as platform_url:
        worker = Worker("serve", str(IVR), "--port", "0", "--workers", "2", "--metrics",
                        "--secret", "s3cret", "--store", f"sqlite:///{tmp_path / 'calls.db'}",
                        "--platform-url", platform_url, "--log-format", "json",
                        env={"TMPDIR": str(tmp_path)})
        try:
            port = await worker.started()
            for index in (0, 1):
                if f"worker {index} ready" not in worker.output:
                    await worker.wait_for(rf"worker {index} ready")
            shared = metrics_dirs(tmp_path)
            assert len(shared) == 1, worker.output
            with anyio.fail_after(90):
                result = await load.run(NUMBER, calls=calls, rate=200, script=SCRIPT,
                                        expect="Goodbye")
            assert result.completed == calls, result.render()
            # Both workers wrote figures (one file per process and kind), and whichever
            # worker answers a scrape sums them: several scrapes, spread by the kernel.
            writers = {re.sub(r"\D", "", f.stem) for f in shared[0].glob("counter_*.db")}
            url = f"http://127.0.0.1:{port}/callflow/s3cret/metrics"
            scrapes = []
            for _ in range(6):
                async with httpx.AsyncClient() as fresh:  # a new connection each time
                    scrapes.append(await scrape(fresh, url))
        finally:
            status = await worker.stop()
    assert len(writers) == 2, f"one worker took every call: {writers}\n{worker.output}"
    for s in scrapes:
        assert s.value("callflow_calls_started_total", flow="reception") == calls
        assert s.value("callflow_calls_ended_total", flow="reception",
                       outcome="completed") == calls
        assert s.value("callflow_calls_live") == 0
        assert s.value("callflow_notifications_total") == result.notifications
        assert s.value("callflow_store_seconds_count", operation="create") == calls
    assert status == 0
    # Both workers' log lines are JSON; every line about a call names it, and its flow but
    # on a notification's own line ("← ...") when it reaches a worker that has not met the
    # call yet (it comes before the flow is chosen, or rebuilt from the store).
    logs = [json.loads(line) for line in worker.lines if line.startswith("{")]
    about = [line for line in logs if "call_id" in line]
    assert len({line["call_id"] for line in about}) == calls
    flowless = [line for line in about if line.get("flow") != "reception"
                and " ← " not in line["message"]]
    assert not flowless, flowless[:5]
    # The parent removes the directory when it stops.
    assert not metrics_dirs(tmp_path)
    assert not os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def test_the_setting_reads_yes_and_no_and_refuses_the_rest() -> None:
    assert callflow.Settings.from_env({"CALLFLOW_METRICS": "1"}).metrics is True
    assert callflow.Settings.from_env({"CALLFLOW_METRICS": "off"}).metrics is False
    assert callflow.Settings.from_env({}).metrics is False
    with pytest.raises(callflow.ConfigurationError, match="CALLFLOW_METRICS='maybe'"):
        callflow.Settings.from_env({"CALLFLOW_METRICS": "maybe"})
