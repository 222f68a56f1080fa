"""The browser phone (`callflow dev FILE --web`) in a real browser: Debian's Chromium, driven
by Playwright, against the real command in a subprocess.

Every wait is on something real: the command prints the page's URL once it serves it, and
Playwright's `expect` waits (bounded) for what the page shows. One browser for the module;
each test gets a fresh page. Skipped where Chromium or Playwright is missing, except under
``CI=true`` (.ci/run installs both).

``CALLFLOW_UPDATE_SCREENSHOTS=1`` makes `test_screenshot_for_the_docs` write the
documentation's picture, docs/images/browser-phone.png; otherwise it goes to a temporary
directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def _missing(problem: str) -> None:
    if os.environ.get("CI") == "true":  # as the durable tests: CI must run them
        raise RuntimeError(f"{problem} (under CI=true the browser tests must run)")
    pytest.skip(problem, allow_module_level=True)


pexpect = pytest.importorskip("pexpect")
try:
    from playwright import sync_api
except ImportError:
    _missing("Playwright is not installed (pip install -e '.[dev]')")
expect = sync_api.expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    _missing("Chromium is not installed (apt-get install chromium)")

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "images" / "browser-phone.png"
TIMEOUT = 20
WAIT_MS = 15_000
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Chromium with a fresh profile, shared by the module's tests."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 760},
        )
        context.set_default_timeout(WAIT_MS)
        yield context
        context.close()


Serve = Callable[..., str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start `callflow dev FILE --web ...`; returns the page's URL once it is served."""
    children: list[Any] = []

    def start(*args: str) -> str:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        child = pexpect.spawn(sys.executable, ["-m", "callflow", "dev", *args, "--web"],
                              cwd=str(ROOT), env=env, encoding="utf-8", timeout=TIMEOUT)
        children.append(child)
        child.expect(r"browser phone: (http://127\.0\.0\.1:\d+)/")
        return str(child.match.group(1))

    yield start
    for child in children:
        child.kill(signal.SIGINT)
        child.expect("bye")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.before


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; the test fails if its script raised anything."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert errors == []


def transcript(page: Any) -> Any:
    return page.get_by_role("log", name="Live transcript")


def key(page: Any, name: str) -> Any:
    return page.get_by_role("group", name="Keypad").get_by_role("button", name=name, exact=True)


def expect_speech_input_marked(page: Any) -> None:
    """The "Say" box works where the simulator hears words, and says why not elsewhere."""
    from callflow.simulator import LiveCaller

    say = page.get_by_role("textbox", name="Say")
    if callable(getattr(LiveCaller, "say", None)):
        expect(say).to_be_enabled()
    else:
        expect(say).to_be_disabled()
        expect(say).to_have_attribute("placeholder", "not supported yet")


@pytest.mark.parametrize(("platform", "options"), [
    ("bluevia", ["--speed", "20", "--backend", "trio"]),
    ("twilio", ["--virtual"]),
    ("telnyx", ["--speed", "20"]),
])
def test_call_the_ivr_press_1_and_find_sales_busy(
    serve: Serve, page: Any, platform: str, options: list[str]
) -> None:
    page.goto(serve("examples/ivr.py", "--platform", platform, *options))
    expect(page.locator("#network")).to_contain_text(platform)
    # Set the sales line busy from the page, before calling.
    page.get_by_label("Phone number").fill("+34910000001")
    page.get_by_label("When called").select_option("busy")
    page.get_by_role("button", name="Set").click()
    expect(page.get_by_label("when +34910000001 is called")).to_have_value("busy")

    expect(page.get_by_label("Call", exact=True)).to_have_value("+34900000001")
    page.get_by_role("button", name="Call", exact=True).click()
    log = transcript(page)
    expect(log).to_contain_text("+34600000001 calls +34900000001")
    expect(log).to_contain_text("Welcome to Acme.")
    expect(log).to_contain_text("For sales, press 1")
    expect_speech_input_marked(page)
    key(page, "1").click()
    expect(log).to_contain_text("⌨  1")
    expect(log).to_contain_text("Please hold while we put you through.")
    expect(log).to_contain_text(re.compile(r"\+34910000001.*busy"))
    expect(log).to_contain_text("all our agents are busy")
    expect(log).to_contain_text("Thank you for calling Acme. Goodbye.")
    expect(log).to_contain_text("call over")
    expect(page.get_by_role("status")).to_have_text("Idle")


def test_keyboard_digits_and_recordings_played_back(serve: Serve, page: Any) -> None:
    page.goto(serve("examples/voicemail.py", "--virtual", "--platform", "twilio"))
    page.get_by_label("Call", exact=True).fill("+34900000002")
    page.get_by_role("button", name="Call", exact=True).click()
    log = transcript(page)
    expect(log).to_contain_text("after the beep")
    # Under virtual time the recording waits for the caller; "Talk" lets 3 s pass.
    expect(page.get_by_role("button", name="Let time pass")).to_be_enabled()
    page.get_by_role("button", name="Talk 3 s").click()
    expect(log).to_contain_text("recorded")
    expect(log).to_contain_text("To keep this message, press 1")
    expect(log.locator("audio")).to_have_count(2)  # the recording, and its playback
    audio = log.locator("audio").first
    src = audio.get_attribute("src")
    assert src is not None and src.startswith("/recordings/")
    with urllib.request.urlopen(page.url.rstrip("/") + src, timeout=TIMEOUT) as response:
        assert response.headers["content-type"] == "audio/wav"
        assert response.read(4) == b"RIFF"
    page.locator("body").click()  # out of the text boxes: digits go to the keypad
    page.keyboard.press("1")
    expect(log).to_contain_text("Your message has been saved. Goodbye.")
    expect(log).to_contain_text("call over")


def test_the_app_calls_out_and_the_page_answers(serve: Serve, page: Any) -> None:
    page.goto(serve("examples/reminder.py", "--platform", "telnyx", "--virtual"))
    page.get_by_role("button", name="Call out").click()
    expect(page.get_by_role("status")).to_contain_text("Ringing: a call from")
    page.get_by_role("button", name="Answer").click()
    log = transcript(page)
    expect(log).to_contain_text("answered")
    expect(log).to_contain_text("press 1")
    key(page, "1").click()
    expect(log).to_contain_text("call over")
    expect(log).to_contain_text("the app's call to +34600000001: answered")


def test_screenshot_for_the_docs(serve: Serve, page: Any, tmp_path: Path) -> None:
    page.goto(serve("examples/ivr.py", "--speed", "50"))
    page.get_by_label("Phone number").fill("+34910000001")
    page.get_by_role("button", name="Set").click()
    expect(page.get_by_label("when +34910000001 is called")).to_be_visible()
    page.get_by_role("button", name="Call", exact=True).click()
    log = transcript(page)
    expect(log).to_contain_text("For sales, press 1")
    key(page, "1").click()
    expect(log).to_contain_text(re.compile(r"\+34910000001.*answered"))
    expect(log).to_contain_text("A caller for sales.")
    update = os.environ.get("CALLFLOW_UPDATE_SCREENSHOTS") == "1"
    target = SCREENSHOT if update else tmp_path / SCREENSHOT.name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page.get_by_role("button", name="Hang up").click()
    expect(log).to_contain_text("call over")
