"""The browser phone's server (`WebPhone`) without a browser: its page ships in the package,
its event stream over a real socket, virtual time held for the person, and the errors the
page shows. (tests/web/ drives the page itself in Chromium.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from callflow.simulator import Clock, Simulator, WebPhone, serve_asgi
from callflow.simulator._web import STATIC_FILES

from ._app import APP, App

ROOT = Path(__file__).resolve().parents[2]
CALLER = "+34600000001"
NUMBER = "+34900000001"
Event = dict[str, Any]


def menu_app() -> App:
    """A one-key menu with a 5 s timeout: "You pressed N", or "Nothing pressed"."""
    return App({
        "/voice": lambda n: [
            {"getDigits": {"actionUrl": f"{APP}/digits", "numberOfDigits": 1, "timeout": 5,
                           "speak": {"text": "Press 1 for sales"}}},
            {"speak": {"text": "Nothing pressed"}},
            {"hangup": {}},
        ],
        "/digits": lambda n: [{"speak": {"text": f"You pressed {n['digits']}"}}, {"hangup": {}}],
    })


def test_the_page_is_package_data_with_nothing_from_elsewhere() -> None:
    web = resources.files("callflow.simulator").joinpath("web")
    for name, _ in STATIC_FILES.values():
        assert web.joinpath(name).is_file(), name
    page = web.joinpath("index.html").read_text()
    assert 'src="phone.js"' in page and 'href="phone.css"' in page
    for name, _ in STATIC_FILES.values():  # no CDN, no remote fonts: it works offline
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", web.joinpath(name).read_text())


@pytest.mark.e2e
def test_the_wheel_ships_the_page(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, timeout=300)
    [wheel] = tmp_path.glob("callflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name, _ in STATIC_FILES.values():
        assert f"callflow/simulator/web/{name}" in names


@asynccontextmanager
async def web_phone(app: App) -> AsyncIterator[tuple[WebPhone, httpx.AsyncClient]]:
    """A virtual-time simulator whose number answers with `app`, and its browser phone
    served over a real socket; yields the phone and a client at its URL."""
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    sim = Simulator(http_client=client, clock=Clock.virtual())
    sim.add_account_number(NUMBER, callback_url=f"{APP}/voice", fallback_url=f"{APP}/fallback")
    phone = WebPhone(sim, CALLER, default_to=NUMBER)
    async with client, sim, phone.running(), serve_asgi(phone) as url, httpx.AsyncClient(
        base_url=url, timeout=10
    ) as page:
        yield phone, page


class Stream:
    """The page's view: the events of ``GET /events``, read until what a test waits for."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self.lines = lines
        self.seen: list[Event] = []

    async def wait_for(self, found: Callable[[Event], bool]) -> Event:
        with anyio.fail_after(10):
            async for line in self.lines:
                if line.startswith("data: "):
                    event = json.loads(line.removeprefix("data: "))
                    self.seen.append(event)
                    if found(event):
                        return event
        raise AssertionError(f"the stream ended; seen: {self.seen}")

    def spoken(self) -> list[str]:
        return [e["text"] for e in self.seen if e["type"] == "entry" and e["kind"] == "speak"]


@asynccontextmanager
async def events(page: httpx.AsyncClient) -> AsyncIterator[Stream]:
    async with page.stream("GET", "/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response.aiter_lines())


def holding(event: Event) -> bool:
    return event["type"] == "state" and event["holding"]


def said(text: str) -> Callable[[Event], bool]:
    return lambda e: e["type"] == "entry" and e["kind"] == "speak" and e["text"] == text


@pytest.mark.anyio
async def test_virtual_time_waits_for_the_persons_keys() -> None:
    async with web_phone(menu_app()) as (_, page), events(page) as stream:
        first = await stream.wait_for(lambda e: e["type"] == "state")
        assert first["clock"] == "virtual" and not first["on_call"]
        assert (await page.post("/api/call", json={})).json()["message"] == f"calling {NUMBER}"
        await stream.wait_for(holding)  # the menu listens: a 5 s timeout, held
        assert (await page.post("/api/keys", json={"keys": "1"})).status_code == 200
        await stream.wait_for(said("You pressed 1"))
        await stream.wait_for(lambda e: e["type"] == "end")
        assert "Nothing pressed" not in stream.spoken()
        line = next(e for e in stream.seen if e["type"] == "entry" and e["kind"] == "keys")
        assert line["line"].endswith("⌨  1") and line["mine"]


@pytest.mark.anyio
async def test_letting_time_pass_times_the_menu_out() -> None:
    async with web_phone(menu_app()) as (phone, page), events(page) as stream:
        answer = await page.post("/api/skip", json={})
        assert answer.status_code == 400 and "not held" in answer.json()["error"]
        await page.post("/api/call", json={"from": "+34600000009"})
        await stream.wait_for(holding)
        assert (await page.post("/api/skip", json={})).status_code == 200
        await stream.wait_for(said("Nothing pressed"))
        await stream.wait_for(lambda e: e["type"] == "end")
        assert not phone.holding
        # A page that connects now gets the call so far, marked as such (not spoken again).
        async with events(page) as late:
            await late.wait_for(said("Nothing pressed"))
            assert all(e.get("backlog") for e in late.seen if e["type"] == "entry")


@pytest.mark.anyio
async def test_what_the_page_cannot_do_is_answered_with_a_reason() -> None:
    async with web_phone(menu_app()) as (phone, page):
        async def error(path: str, body: Any) -> str:
            response = await page.post(path, content=json.dumps(body))
            assert response.status_code == 400, response.text
            return str(response.json()["error"])

        assert "not on a call" in await error("/api/keys", {"keys": "1"})
        assert "not on a call" in await error("/api/hangup", {})
        assert "not on a call" in await error("/api/say", {"text": "sales"})
        assert "nothing is ringing" in await error("/api/answer", {})
        assert "'12a' is not a string of keys" in await error("/api/keys", {"keys": "12a"})
        assert "unknown action 'dance'" in await error("/api/dance", {})
        assert "not a JSON object" in await error("/api/call", [1])
        assert "is not a phone number" in await error("/api/call", {"to": "sales"})
        assert "your own phone" in await error("/api/phone", {"number": CALLER,
                                                              "outcome": "busy"})
        assert "'maybe' is not one of" in await error("/api/phone", {"number": "+34910000001",
                                                                     "outcome": "maybe"})
        assert "cannot make the app call out" in await error("/api/callout", {})
        assert (await page.post("/api/phone", json={"number": "+34910000001",
                                                    "outcome": "busy"})).status_code == 200
        state = (await page.get("/state")).json()
        assert state["phones"] == {"+34910000001": "busy"}
        assert state["speech_input"] is True  # the simulator takes speech (LiveCaller.say)
        assert (await page.get("/recordings/nope.wav")).status_code == 404
        phone.sim.recordings["r1"] = b"RIFF...."
        recording = await page.get("/recordings/r1.wav")
        assert recording.headers["content-type"] == "audio/wav"
        assert recording.content == b"RIFF...."
        script = await page.get("/phone.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert (await page.get("/nothing")).status_code == 404
