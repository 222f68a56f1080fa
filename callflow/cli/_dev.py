"""``callflow dev FILE``: an interactive terminal telephone wired to the flows in FILE.

The app and the simulator run in this one process and talk real HTTP over the loopback, as
they would across the internet. The simulator's clock runs in real time (``--speed N``: N
times faster), so each line of speech appears when the simulator starts saying it and the
call moves at the pace a caller would hear it.

The interface is line-based on purpose (no curses): it works the same in a terminal, in a
pseudo-terminal driven by a test, and with commands piped in. What the terminal shows comes
from ``Simulator.subscribe()``; what the person does goes through a ``LiveCaller``; the
terminal's own number is a ``LivePhone``, so the app's outbound calls ring it.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from .. import __version__
from .._app import App
from .._exceptions import CallflowError, ConfigurationError
from .._loader import load_app
from .._server import SHUTDOWN_SIGNALS, Listener, serving
from ..simulator import (
    Clock,
    LiveCaller,
    LiveEvent,
    LivePhone,
    SimCall,
    Simulator,
    serve_simulator,
)
from ._main import (
    PLATFORMS,
    _e164,
    _port,
    add_log_format_option,
    add_log_level,
    run_async,
    settings_from_args,
    setup_logging,
)

__all__ = ("DevPhone", "add_parser", "run_dev")

YOUR_NUMBER = "+34600000001"
"""The terminal phone's number unless ``--from`` says otherwise."""

SPARE_NUMBER = "+34900000000"
"""An account number for apps without numbers (only a default flow): the number their
inbound calls go to, and their outbound calls' caller id."""

KEYS = frozenset("0123456789*#")
QUIT_GRACE = 2.0
"""Real seconds the app gets, on quitting, to see the hang-up and finish its flows."""

HELP = """\
commands (then Enter):
  c [NUMBER]           call the app (default {default})
  0-9 * #              press keys, e.g. 1 or 1234# (they wait for the app to listen)
  t [SECONDS]          talk, e.g. into a recording (default 3 s)
  h                    hang up (or reject a ringing call)
  o [NUMBER] [FLOW]    make the app call out (default: your phone, {you}); it rings here
  a                    answer the ringing phone
  ?                    this help
  q                    quit (Ctrl+C and Ctrl+D too)"""


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dev",
        help="an interactive terminal telephone: call your flows and hear them",
        description="Run the flows in FILE and a simulated telephone network in this\n"
                    "process, and use the terminal as a telephone: call the app, hear what\n"
                    "it says as it says it, press keys, hang up, and answer the calls the\n"
                    "app places. No account, network or configuration needed.",
        epilog="examples:\n"
               "  callflow dev examples/ivr.py              # then: c, 1, h, q\n"
               "  callflow dev examples/reminder.py         # then: o, a, 1\n"
               "  callflow dev examples/ivr.py --speed 5 --numbers phones.toml\n"
               "  callflow dev examples/ivr.py --web          # a phone in your browser\n"
               "  callflow dev examples/ivr.py --web --platform twilio --virtual",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="the flows file (a .py path)")
    parser.add_argument(
        "--from", dest="phone", metavar="NUMBER", default=YOUR_NUMBER,
        help=f"your phone's number: the caller id of your calls, and the number that "
             f"rings here when the app calls it (default: {YOUR_NUMBER})",
    )
    parser.add_argument(
        "--speed", type=_speed, default=1.0, metavar="N",
        help="run the simulated network N times faster than real time (default: 1)",
    )
    parser.add_argument(
        "--web", action="store_true",
        help="a telephone in your browser instead of the terminal: prints its URL "
             "(a keypad, the live transcript spoken aloud, recordings, other phones)",
    )
    parser.add_argument(
        "--web-port", type=_port, default=0, metavar="PORT",
        help="with --web: the port to serve the page on (default: 0, a free port)",
    )
    parser.add_argument(
        "--virtual", action="store_true",
        help="with --web: virtual time, which skips ahead whenever the app waits for "
             "nobody and stands still while it waits for you",
    )
    parser.add_argument(
        "--platform", choices=PLATFORMS, default="bluevia",
        help="the provider whose wire format the simulator and app speak (default: bluevia)",
    )
    parser.add_argument(
        "--numbers", metavar="FILE",
        help="how other numbers behave (busy, no answer...): a simulator config file, "
             "TOML or JSON, as for 'callflow simulator --numbers'",
    )
    parser.add_argument(
        "--notifications", action="store_true",
        help="also show each notification the simulator sends the app",
    )
    parser.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio",
        help="the event loop the flows run on (default: asyncio)",
    )
    add_log_level(parser, default="warning")
    add_log_format_option(parser)
    parser.set_defaults(run=run_dev)


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError("the speed must be more than 0 and at most 1000")
    return value


def run_dev(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    out = _terminal_safe(sys.stdout)
    app = load_app(args.file)
    you = _e164(args.phone, "--from")
    if args.virtual and not args.web:
        raise ConfigurationError("--virtual needs --web: in the terminal, time runs for real "
                                 "(--speed N runs it faster)")
    clock = (Clock.virtual() if args.virtual else Clock.real() if args.speed == 1
             else Clock.scaled(args.speed))
    sim = Simulator(clock=clock, platform=args.platform)
    if args.numbers:
        sim.load(args.numbers)
    listener = Listener.bind("127.0.0.1", 0)

    async def main() -> int:
        async with serve_simulator(sim) as sim_url:
            options = argparse.Namespace(
                # Always this process's simulator and listener, whatever CALLFLOW_* says.
                public_url=listener.url, platform_url=sim_url,
                **{"api_key": sim.api_key, "api_secret": sim.api_secret,
                   **sim.app_settings()},
            )
            app.configure(settings_from_args(app, options, listener.url))
            if not (app.settings.caller_id or app.numbers):
                app.settings.caller_id = SPARE_NUMBER
            for number in app.numbers:  # the account's numbers (Telnyx's, to configure)
                if number not in sim.account_numbers:
                    sim.add_account_number(number)
            async with serving(app, listener, graceful_timeout=1.0):
                phone = DevPhone(app, sim, you, out=out, notifications=args.notifications)
                await phone.start()
                if args.web:
                    from ._web import serve_web_phone

                    sim.phones.pop(you, None)  # the browser's phone rings instead
                    await serve_web_phone(app, sim, you, default_to=phone.default_number,
                                          file=args.file, out=out, port=args.web_port)
                    return 0
                phone.banner(args.file, args.speed)
                await phone.run(_LineReader(_stdin_fd()))
        return 0

    try:
        return run_async(main, args.backend)
    finally:
        listener.close()


def _terminal_safe(stream: TextIO) -> TextIO:
    # A terminal that cannot show a symbol gets a "?" rather than a crash.
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors="replace")
    return stream


def _stdin_fd() -> int | None:
    try:
        fd = sys.stdin.fileno()
        os.fstat(fd)
    except (AttributeError, ValueError, OSError):
        return None  # no standard input at all: behave as at its end
    return fd


class _LineReader:
    """Lines from a file descriptor, awaited without a thread where the OS can poll it."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self._buffer = b""
        self._eof = fd is None
        self._pollable = True

    async def readline(self) -> str | None:
        """The next line without its newline; None at the end of input."""
        while b"\n" not in self._buffer and not self._eof:
            chunk = await self._read()
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True
        if not self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", "replace").rstrip("\r")

    async def _read(self) -> bytes:
        assert self.fd is not None
        if self._pollable:
            try:
                await anyio.wait_readable(self.fd)
            except (OSError, ValueError):
                self._pollable = False  # e.g. a regular file: epoll refuses those
            else:
                return os.read(self.fd, 4096)
        return await anyio.to_thread.run_sync(os.read, self.fd, 4096, abandon_on_cancel=True)


class DevPhone:
    """The terminal telephone: shows every call as it happens and runs typed commands."""

    def __init__(
        self, app: App, sim: Simulator, number: str, *, out: TextIO, notifications: bool = False
    ) -> None:
        self.app = app
        self.sim = sim
        self.number = number
        self.out = out
        self.notifications = notifications
        self.phone = LivePhone()
        self.active: LiveCaller | None = None
        self.default_number = next(iter(app.numbers), SPARE_NUMBER)
        self._labels: dict[str, int] = {}
        self._ends: dict[str, anyio.Event] = {}
        self._tg: TaskGroup | None = None

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    async def start(self) -> None:
        """Point the app's numbers at it on the simulator, and plug in the terminal phone."""
        await self.app.configure_numbers()
        caller_id = self.app.settings.caller_id or self.default_number
        for number in {self.default_number, caller_id}:
            self._ensure_account_number(number)
        self.sim.add_phone(self.number, self.phone)

    def _ensure_account_number(self, number: str) -> None:
        if number not in self.sim.account_numbers:
            self.sim.add_account_number(
                number, callback_url=self.app.callback_url, fallback_url=self.app.fallback_url
            )

    def banner(self, file: str, speed: float) -> None:
        pace = "real time" if speed == 1 else f"{speed:g}x real time"
        self.say(f"callflow {__version__} dev: {file}, a simulated network in {pace}")
        width = max(len(name) for name in self.app.flows)
        for spec in self.app.flows.values():
            answers = ", ".join(spec.numbers) if spec.numbers else "default flow"
            self.say(f"  flow {spec.name:<{width}}  {answers}")
        self.say(f"your phone is {self.number}. Type ? for help, c to call the app.")

    def help(self) -> None:
        self.say(HELP.format(default=self.default_number, you=self.number))

    # -- running -----------------------------------------------------------------------

    async def run(self, lines: _LineReader) -> None:
        """Show calls and run commands until q, the end of input, or a signal.

        Quitting hangs up first and waits (briefly) until the terminal has shown the end
        of the call; a second Ctrl+C quits at once.
        """
        with self.sim.subscribe() as events, anyio.open_signal_receiver(
            *SHUTDOWN_SIGNALS
        ) as signals:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._show, events)
                reading = anyio.CancelScope()

                async def on_signal() -> None:
                    async for signum in signals:
                        self.say(f"{signal.Signals(signum).name}: quitting")
                        if reading.cancel_called:
                            tg.cancel_scope.cancel()
                        reading.cancel()

                tg.start_soon(on_signal)
                with reading:
                    await self._commands(lines)
                await self._hang_up_all()
                tg.cancel_scope.cancel()
        self.say("bye")

    async def _commands(self, lines: _LineReader) -> None:
        while True:
            line = await lines.readline()
            if line is None:
                if self.active is not None and self.active.live:
                    self.say("end of input: staying on the call until it ends (Ctrl+C quits)")
                    await self.active.wait_ended()
                return
            try:
                if not await self.command(line):
                    return
            except CallflowError as exc:
                self.say(f"error: {exc}")

    async def _hang_up_all(self) -> None:
        active, self.active = self.active, None
        for ring in list(self.phone.rings):
            ring.reject()
        if active is None or not active.live:
            return
        active.hang_up()
        call_id = active.call.call_id
        with anyio.move_on_after(QUIT_GRACE):
            await self._end_shown(call_id).wait()
            await self.app.wait_ended(call_id)

    def _end_shown(self, call_id: str) -> anyio.Event:
        """Set once the terminal has shown that the call is over."""
        return self._ends.setdefault(call_id, anyio.Event())

    # -- commands ----------------------------------------------------------------------

    async def command(self, line: str) -> bool:
        """Run one typed line; False to quit."""
        words = line.split()
        if not words:
            return True
        if all(set(word) <= KEYS for word in words):
            self._press("".join(words))
            return True
        name, rest = words[0].lower(), words[1:]
        if name in ("q", "quit", "exit"):
            return False
        handler = self._handlers().get(name)
        if handler is None:
            self.say(f"unknown command {words[0]!r}: type ? for help")
            return True
        await handler(rest)
        return True

    def _handlers(self) -> dict[str, Callable[[list[str]], Awaitable[None]]]:
        return {
            "?": self._help, "help": self._help,
            "c": self._call, "call": self._call,
            "h": self._hang_up, "hangup": self._hang_up,
            "a": self._answer, "answer": self._answer,
            "o": self._call_out, "out": self._call_out,
            "t": self._talk, "talk": self._talk,
        }

    async def _help(self, rest: list[str]) -> None:
        self.help()

    def _press(self, keys: str) -> None:
        caller = self.active
        if caller is None or not caller.live:
            self.say("not on a call: c calls the app, a answers a ringing call")
            return
        assert self._tg is not None
        self._tg.start_soon(caller.press, keys)

    async def _call(self, rest: list[str]) -> None:
        if self._on_a_call():
            return
        to = _e164(rest[0], "NUMBER") if rest else self.default_number
        if self.app.flow_for_number(to) is None:
            numbers = ", ".join(self.app.numbers)
            self.say(f"no flow answers {to}; the app's numbers: {numbers}")
            return
        self._ensure_account_number(to)
        call = await self.sim.place_inbound_call(self.number, to)
        self._label(call)
        self.active = LiveCaller(call.main)

    async def _hang_up(self, rest: list[str]) -> None:
        if self.active is not None and self.active.live:
            self.active.hang_up()
            self.active = None
        elif self.phone.rings:
            ring = self.phone.rings[0]
            ring.reject()
            self.say(f"rejected the call from {ring.caller}")
        else:
            self.active = None
            self.say("not on a call")

    async def _answer(self, rest: list[str]) -> None:
        if not self.phone.rings:
            self.say("nothing is ringing")
            return
        if self._on_a_call():
            return
        ring = self.phone.rings[0]
        self.active = ring.answer()
        self.say(f"answered the call from {ring.caller}")

    async def _call_out(self, rest: list[str]) -> None:
        to, flow = self.number, None
        for word in rest:
            if word.startswith(("+", "tel:")):
                to = _e164(word, "NUMBER")
            else:
                flow = word
        spec = self.app.get_flow(flow)
        assert self._tg is not None
        self._tg.start_soon(self._place_outbound, to, spec.name)

    async def _place_outbound(self, to: str, flow: str) -> None:
        self.say(f"the app calls {to} with flow {flow}")
        try:
            result = await self.app.call(to, flow=flow)
        except CallflowError as exc:
            self.say(f"error: the app could not call {to}: {exc}")
            return
        reason = f" ({result.reason})" if result.reason else ""
        self.say(f"the app's call to {to}: {result.status.replace('_', ' ')}{reason}")

    async def _talk(self, rest: list[str]) -> None:
        try:
            seconds = float(rest[0]) if rest else 3.0
        except ValueError:
            raise ConfigurationError(f"{rest[0]!r} is not a number of seconds") from None
        if self.active is None or not self.active.live:
            self.say("not on a call")
            return
        self.active.talk(seconds)

    def _on_a_call(self) -> bool:
        if self.active is not None and self.active.live:
            self.say("you are on a call: h hangs up first")
            return True
        return False

    # -- what the terminal shows ---------------------------------------------------------

    def _label(self, call: SimCall) -> int:
        return self._labels.setdefault(call.call_id, len(self._labels) + 1)

    async def _show(self, events: MemoryObjectReceiveStream[LiveEvent]) -> None:
        async for event in events:
            label = self._label(event.call)
            entry = event.entry
            if entry is None:
                duration = event.call.transcript.duration or 0.0
                self.say(f"[{label}] call over after {duration:.1f}s")
                self._end_shown(event.call.call_id).set()
            elif entry.kind != "notification" or self.notifications:
                self.say(f"[{label}]{entry.render()}")
                if entry.kind == "ringing" and self._rings_here(event.call, entry.leg_id):
                    self.say(f"[{label}] your phone is ringing: a answers, h rejects")
            if self.active is not None and self.active.call is event.call and not (
                self.active.live
            ):
                self.active = None
                self.say("you are off the call: c calls the app again")

    def _rings_here(self, call: SimCall, leg_id: str | None) -> bool:
        return any(
            ring.call is call and ring.leg.leg_id == leg_id for ring in self.phone.rings
        )
