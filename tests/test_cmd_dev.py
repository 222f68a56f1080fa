"""`callflow dev`, driven through a pseudo-terminal as a person would use it (pexpect).

Every wait is an `expect` with a bounded timeout: no sleeping. `--speed` runs the
simulated network faster than real time (20 or 50 times), so each call takes a second or
two; typed keys wait for the app to listen, so the speed does not make them miss.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20


Spawn = Callable[..., Any]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    children: list[Any] = []

    def start(*args: str) -> Any:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        child = pexpect.spawn(
            sys.executable, ["-m", "callflow", "dev", *args], cwd=str(ROOT), env=env,
            encoding="utf-8", codec_errors="replace", timeout=TIMEOUT,
            dimensions=(40, 200),
        )
        children.append(child)
        child.expect("Type \\? for help")
        return child

    yield start
    for child in children:
        if child.isalive():  # a failed test must not leave a process behind
            child.terminate(force=True)


def quit_cleanly(child: Any) -> None:
    child.sendline("q")
    child.expect("bye")
    child.expect(pexpect.EOF)
    child.close()
    assert (child.exitstatus, child.signalstatus) == (0, None)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_call_the_ivr_press_1_and_hear_the_sales_line_ring(spawn: Spawn, backend: str) -> None:
    child = spawn("examples/ivr.py", "--speed", "20", "--backend", backend)
    child.sendline("c")
    child.expect("calls \\+34900000001")
    child.expect("Welcome to Acme")
    child.sendline("1")  # typed during the welcome: it waits for the menu to listen
    child.expect("For sales, press 1")
    child.expect("⌨  1")
    child.expect("Please hold while we put you through")
    child.expect("\\+34910000001 ringing")  # the sales line is dialled
    child.sendline("h")
    child.expect("\\+34600000001 hung up")
    child.expect("call over")
    quit_cleanly(child)


def test_the_app_calls_out_and_the_terminal_answers(spawn: Spawn) -> None:
    child = spawn("examples/reminder.py", "--speed", "50")
    child.sendline("a")
    child.expect("nothing is ringing")
    child.sendline("o")
    child.expect("the app calls \\+34600000001 with flow reminder")
    child.expect("your phone is ringing: a answers")
    child.sendline("a")
    child.expect("answered the call from")
    child.expect("reminder of your appointment")
    child.sendline("1")
    child.expect("Your appointment is confirmed")
    child.expect("you are off the call")
    child.expect("call over")
    quit_cleanly(child)


def test_reject_a_ringing_call(spawn: Spawn) -> None:
    child = spawn("examples/reminder.py", "--speed", "50")
    child.sendline("o")
    child.expect("your phone is ringing")
    child.sendline("h")
    child.expect("rejected the call from")
    child.expect("the app's call to \\+34600000001: busy")
    quit_cleanly(child)


def test_help_errors_and_commands_without_a_call(spawn: Spawn) -> None:
    child = spawn("examples/ivr.py", "--speed", "50")
    child.sendline("?")
    child.expect("press keys")
    child.sendline("dance")
    child.expect("unknown command 'dance'")
    child.sendline("1")
    child.expect("not on a call")
    child.sendline("c +34999999999")
    child.expect("no flow answers \\+34999999999")
    child.sendline("o +34600000001 nosuchflow")
    child.expect("error: no flow named 'nosuchflow'")
    quit_cleanly(child)


def test_ctrl_c_mid_call_hangs_up_and_exits_cleanly(spawn: Spawn) -> None:
    child = spawn("examples/ivr.py", "--speed", "50")
    child.sendline("c")
    child.expect("Welcome to Acme")
    child.kill(signal.SIGINT)
    child.expect("SIGINT: quitting")
    child.expect("\\+34600000001 hung up")
    child.expect("bye")
    child.expect(pexpect.EOF)
    child.close()
    assert (child.exitstatus, child.signalstatus) == (0, None)


def test_end_of_input_waits_for_the_call_then_exits(spawn: Spawn) -> None:
    child = spawn("examples/ivr.py", "--speed", "50")
    child.sendline("c")
    child.sendline("3")
    child.sendeof()  # Ctrl+D
    child.expect("end of input: staying on the call")
    child.expect("We are open Monday to Friday")
    child.expect("Goodbye")
    child.expect("bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
