"""Services and lifecycle: ``App(lifespan=...)`` and ``call.services``.

The lifespan runs when the app starts (the ASGI lifespan protocol under hypercorn, or
``async with app``) and ends after the last call; flows reach what it yields as
``call.services``; ``FakeCall(services=...)`` hands a flow fakes instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

import callflow
from callflow import App, Call, ConfigurationError
from callflow.simulator import Simulator, serve_asgi, serve_simulator
from callflow.testing import FakeCall

from .test_e2e_processes import Process

pytestmark = pytest.mark.anyio

NUMBER = "+34900000001"


class Weather:
    """A service a flow needs: here, one that must be opened and closed."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.open = False

    async def today(self, city: str) -> str:
        assert self.open, "used outside the lifespan"
        self.log.append(f"asked about {city}")
        return "sunny"


@dataclass
class Services:
    weather: Weather


async def forecast(call: Call[Services]) -> None:
    report = await call.services.weather.today("Madrid")
    await call.say(f"Madrid is {report} today.")


def weather_app(log: list[str]) -> App:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[Services]:
        weather = Weather(log)
        weather.open = True
        log.append("started")
        try:
            yield Services(weather)
        finally:
            weather.open = False
            log.append("stopped")

    app = App(lifespan=lifespan)
    app.flow(number=NUMBER)(forecast)
    return app


async def test_a_test_hands_the_flow_fakes_for_its_services() -> None:
    class FakeWeather:
        async def today(self, city: str) -> str:
            return "raining"

    fake = await FakeCall(forecast, services=Services(FakeWeather())).run()  # type: ignore[arg-type]
    assert fake.heard == ["Madrid is raining today."]


async def test_without_a_lifespan_call_services_says_what_to_do() -> None:
    fake = await FakeCall(forecast).run()
    assert isinstance(fake.error, ConfigurationError)
    assert "App(lifespan=...)" in str(fake.error) and "FakeCall(flow, services=...)" in str(
        fake.error)


async def test_hypercorn_runs_the_lifespan_around_the_calls() -> None:
    log: list[str] = []
    app = weather_app(log)
    sim = Simulator()
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, **sim.app_settings()))
        async with serve_asgi(app) as app_url:  # the ASGI lifespan protocol enters it
            assert log == ["started"]
            assert isinstance(app.services, Services)
            app.settings.public_url = app_url
            await app.configure_numbers()
            call = await sim.place_inbound_call("+34600000001", NUMBER)
            with anyio.fail_after(10):
                transcript = await call.wait_ended()
        assert log == ["started", "asked about Madrid", "stopped"]
    assert transcript.spoken == ["Madrid is sunny today."]
    with pytest.raises(ConfigurationError, match="not running"):
        app.services  # noqa: B018


async def test_a_lifespan_that_fails_stops_the_start() -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        raise OSError("the database is not there")
        yield

    app = App(lifespan=lifespan, platform_url="http://127.0.0.1:9")
    app.flow(number=NUMBER)(forecast)
    with pytest.raises(OSError, match="the database is not there"):
        async with app:
            pass
    with pytest.raises(ConfigurationError, match="failed to start: the database is not there"):
        async with serve_asgi(app):
            pass


async def test_a_durable_call_rebuilt_on_another_worker_gets_that_workers_services(
        tmp_path: Path) -> None:
    from callflow.platforms import Webhook

    store = f"sqlite:///{tmp_path}/calls.db"

    def worker(name: str) -> App:
        @asynccontextmanager
        async def lifespan(app: App) -> AsyncIterator[str]:
            yield name

        app = App(lifespan=lifespan, store=store, secret="s", platform_url="http://127.0.0.1:9",
                  response_budget=None)

        @app.flow(number=NUMBER)
        async def which(call: Call[str]) -> None:
            # Replay runs the flow again: what it sends before must not depend on the
            # worker (the history would not match), what it sends after may.
            await call.gather(prompt="Press a key.", num_digits=1)
            await call.say(f"Now on {call.services}.")

        return app

    body = ('{"eventName": "%s", "callId": "c1", "legId": "l1", "callerId": "tel:+3460000001",'
            ' "destination": "tel:' + NUMBER + '", "timestamp": "2026-12-03T10:00:00Z"%s}')
    a, b = worker("a"), worker("b")
    async with a, b:
        first = await a.handle_webhook(Webhook("POST", "http://app/", "/", {}, {},
                                               (body % ("CalledNumber", "")).encode()))
        second = await b.handle_webhook(Webhook(
            "POST", "http://app/", "/", {"step": "1"}, {},
            (body % ("DigitsCollected", ', "digits": "1"')).encode()))
    assert "Press a key." in first.body.decode()
    assert "Now on b." in second.body.decode()


# -- the command line: every worker runs it, and so does callflow call ------------------------

FLOWS = '''
import os
from contextlib import asynccontextmanager
import callflow

LOG = os.environ["LIFESPAN_LOG"]

def note(text):
    with open(LOG, "a") as file:
        file.write(f"{text} {os.getpid()}\\n")

@asynccontextmanager
async def lifespan(app):
    note("start")
    yield {"greeting": "Hello from the lifespan."}
    note("stop")

app = callflow.App(lifespan=lifespan)

@app.flow(number="+34900000001")
async def hello(call):
    await call.say(call.services["greeting"])
'''


@pytest.fixture
def flows_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "flows.py"
    path.write_text(FLOWS)
    monkeypatch.setenv("LIFESPAN_LOG", str(tmp_path / "lifespan.log"))
    return path


@pytest.mark.e2e
def test_each_serve_worker_runs_the_lifespan(flows_file: Path, tmp_path: Path) -> None:
    app = Process("serve", str(flows_file), "--port", "0", "--no-configure", "--workers", "2",
                  "--store", f"sqlite:///{tmp_path}/calls.db")
    try:
        for _ in range(2):  # each worker says so, before or after the parent's banner
            app.wait_for(r"^worker \d ready")
    finally:
        app.stop()
    assert app.popen.returncode == 0, app.output()
    lines = (tmp_path / "lifespan.log").read_text().split()
    starts = set(lines[1::2][i] for i, w in enumerate(lines[::2]) if w == "start")
    stops = set(lines[1::2][i] for i, w in enumerate(lines[::2]) if w == "stop")
    assert len(starts) == 2 and starts == stops, lines
    assert str(os.getpid()) not in starts


@pytest.mark.e2e
def test_callflow_call_runs_the_lifespan(flows_file: Path, tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-m", "callflow", "call", str(flows_file)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert done.returncode == 0, done.stderr
    assert "Hello from the lifespan." in done.stdout
    assert (tmp_path / "lifespan.log").read_text().split()[::2] == ["start", "stop"]
