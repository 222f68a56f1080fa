"""``callflow dial``: place an outbound call that runs a flow, or a campaign of them.

One call (``dial FILE NUMBER``) prints its outcome and the flow's final ``call.data``; a
campaign (``dial FILE --numbers numbers.csv``) places a call per row, so many at a time
and so many a second, shows its progress, and writes one JSON line per number.

What a call came to is read from what this process sees: ``App.call``'s answer (answered,
busy, no answer, failed, or the platform's refusal), the hang-up, and the app's report of a
flow that raised.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .._exceptions import ConfigurationError, PlatformError
from ._main import (
    EXIT_INTERRUPTED,
    EXIT_NOT_ANSWERED,
    EXIT_OK,
    HANGUP_WAIT,
    _banner,
    _count,
    _e164,
    _platform_hint,
    _positive,
    _say,
    add_connection_options,
    platform_reason,
    run_async,
    settings_from_args,
    setup_logging,
)

if TYPE_CHECKING:
    from .._app import App, FlowSpec

__all__ = ("CallOutcome", "add_parser", "read_numbers", "run_dial")

NUMBER_COLUMNS = ("number", "phone", "to", "destination")
"""Header names taken for the column of numbers, in this order (else the first column)."""
PROGRESS_EVERY = 5.0
"""Seconds between two progress lines when stderr is not a terminal."""
REDRAW_EVERY = 0.2
"""Seconds between two redraws of the progress bar on a terminal."""
RETRIABLE = ("busy", "no_answer")


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dial",
        help="place an outbound call, or a campaign of them, that runs a flow",
        description="Serve the flows in FILE, call NUMBER through the platform, and run the\n"
                    "flow when the call is answered; print the outcome (answered, busy, no\n"
                    "answer, failed), its duration and the flow's final call.data.\n"
                    "With --numbers FILE.csv, call every number of the file instead (a\n"
                    "campaign): its other columns go into each call's call.data.\n"
                    "\n"
                    "The caller id (--from) must be one of the account's numbers. If it has\n"
                    "no callback URL on the platform yet, dial points it at this app first\n"
                    "(as 'serve' does with an app's numbers); one that has is left alone.\n"
                    "\n"
                    "Exit status: 0 when every call was answered and its flow ended without\n"
                    "an error; 1 when a call was busy, not answered or failed, or a flow\n"
                    "raised; 2 on errors (bad options, a platform that cannot be reached or\n"
                    "refuses the call); 130 when interrupted.",
        epilog="examples:\n"
               "  callflow dial examples/reminder.py +34600000001 --from +34900000001\n"
               "  callflow dial examples/reminder.py +34600000001 --from +34900000001 \\\n"
               "      --data name=Ana --data 'when=on Monday at ten' --json\n"
               "  callflow dial examples/reminder.py --numbers patients.csv --from +34900000001 \\\n"
               "      --concurrency 20 --rate 5 --retries 2 --retry-delay 600\n"
               "\n"
               "patients.csv (a header row; the number column is number, phone, to or the\n"
               "first; the other columns go into call.data):\n"
               "  number,name,when\n"
               "  +34600000001,Ana,on Monday at ten\n"
               "\n"
               "results (--results, default NUMBERS.results.jsonl), one JSON object a line:\n"
               '  {"number": "+34600000001", "outcome": "answered", "duration": 16.6,\n'
               '   "data": {"name": "Ana", "confirmed": true}, "error": null, ...}',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="the flows file (a .py path)")
    parser.add_argument(
        "number", metavar="NUMBER", nargs="?",
        help="the number to call, e.g. +34600000001 (or --numbers FILE)",
    )
    call = parser.add_argument_group("the call")
    call.add_argument(
        "--flow", metavar="NAME",
        help="the flow to run when answered (default: the app's default flow, or its only one)",
    )
    call.add_argument(
        "--from", dest="caller_id", metavar="NUMBER",
        help="the caller id, one of the account's numbers (default: CALLFLOW_CALLER_ID, "
             "else the app's first number)",
    )
    call.add_argument(
        "--data", action="append", default=[], metavar="KEY=VALUE",
        help="put VALUE (a string) into call.data[KEY] before the flow starts (repeatable)",
    )
    call.add_argument(
        "--no-configure", dest="configure", action="store_false",
        help="do not point an unconfigured caller id at this app",
    )
    call.add_argument(
        "--json", action="store_true",
        help="print the outcome as one JSON object (a campaign: its summary); the other "
             "lines go to stderr",
    )
    campaign = parser.add_argument_group("campaigns")
    campaign.add_argument(
        "--numbers", metavar="FILE.csv",
        help="call every number of this CSV file (a header row names the columns)",
    )
    campaign.add_argument(
        "--concurrency", type=_positive, default=10, metavar="N",
        help="calls up at the same time, at most (default: 10)",
    )
    campaign.add_argument(
        "--rate", type=_rate, metavar="R",
        help="calls placed per second, at most (default: no limit)",
    )
    campaign.add_argument(
        "--retries", type=_count, default=0, metavar="N",
        help="call a busy or unanswered number again, up to N more times (default: 0)",
    )
    campaign.add_argument(
        "--retry-delay", type=_delay, default=60.0, metavar="S",
        help="seconds between two tries of a number (default: 60)",
    )
    campaign.add_argument(
        "--results", metavar="FILE",
        help="where to write one JSON line per number (default: the numbers file with "
             ".results.jsonl, e.g. patients.results.jsonl)",
    )
    add_connection_options(parser, log_level="warning")
    parser.set_defaults(run=run_dial)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of calls a second"
                                         ) from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError("must be more than 0 calls a second")
    return value


def _delay(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError("must be 0 seconds or more")
    return value


# -- what a call came to ----------------------------------------------------------------------


@dataclass
class CallOutcome:
    """One number's result, as a line of the results file."""

    number: str
    outcome: str = "not_called"
    """``answered``, ``busy``, ``no_answer``, ``failed``, or ``not_called`` (interrupted)."""
    duration: float = 0.0
    """Seconds the call was up: the platform's figure where it gives one (BlueVia), else
    from the answer to the hang-up as this process saw them."""
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    call_id: str | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome == "answered" and self.error is None

    def to_json(self) -> str:
        return json.dumps({
            "number": self.number, "outcome": self.outcome,
            "duration": round(self.duration, 3), "data": self.data, "error": self.error,
            "call_id": self.call_id, "attempts": self.attempts,
        }, ensure_ascii=False, default=str)

    def describe(self) -> str:
        words = self.outcome.replace("_", " ")
        if self.outcome == "answered":
            words += f", {self.duration:.1f}s"
        if self.error:
            words += f"; error: {self.error}"
        return words


class _FlowErrors(logging.Handler):
    """Collects the app's report of a flow that raised, by call id."""

    # The session logs "<call id>: the flow raised; apologising and hanging up" (with the
    # exception) or "<call id>: <error>; apologising and hanging up".
    MARK = "apologising and hanging up"

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if not (isinstance(record.msg, str) and record.msg.endswith(self.MARK)
                and record.args and isinstance(record.args, tuple)):
            return
        call_id = str(record.args[0])
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            self.errors[call_id] = f"{type(exc).__name__}: {exc}".rstrip(": ")
        elif len(record.args) > 1:
            self.errors[call_id] = str(record.args[1])
        else:
            self.errors[call_id] = "the flow raised"


@contextmanager
def _watching_flow_errors() -> Iterator[_FlowErrors]:
    handler = _FlowErrors()
    logger = logging.getLogger("callflow")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class _Dialer:
    """Places one call at a time for a number, with its retries."""

    def __init__(self, app: App, spec: FlowSpec, caller: str, args: argparse.Namespace,
                 errors: _FlowErrors) -> None:
        self.app, self.spec, self.caller, self.args, self.errors = app, spec, caller, args, errors

    async def attempt(self, outcome: CallOutcome, data: dict[str, Any],
                      on_answered: Callable[[], None] = lambda: None) -> None:
        """Place one call to ``outcome.number`` and wait for its end; fills ``outcome``."""
        import anyio

        outcome.attempts += 1
        outcome.data = data
        try:
            result = await self.app.call(outcome.number, flow=self.spec.name,
                                         caller_id=self.caller, data=data)
        except PlatformError as exc:
            outcome.outcome, outcome.error = "failed", _refusal(exc)
            if exc.status is None or exc.status == 401:
                raise  # nothing can get through: not this number's fault
            return
        outcome.call_id = result.call_id
        if not result.answered:
            outcome.outcome = result.status
            if result.status == "failed":
                outcome.error = result.reason or "the call failed"
            return
        outcome.outcome = "answered"
        on_answered()
        answered = anyio.current_time()
        await self.app.wait_ended(result.call_id)
        # The flow is done, but the platform may still be playing its last words
        # and will post the hang-up: keep serving until it has.
        with anyio.move_on_after(HANGUP_WAIT):
            await self.app.wait_hung_up(result.call_id)
        outcome.duration = (await self._platform_duration(result.call_id)
                            or anyio.current_time() - answered)
        outcome.error = self.errors.errors.get(result.call_id)


    async def _platform_duration(self, call_id: str) -> float | None:
        """The call's duration as the platform bills it, where it says (BlueVia's call
        object has ``duration``, whole seconds); None elsewhere, or when it does not say."""
        if self.app.settings.platform != "bluevia":
            return None
        from urllib.parse import quote

        import httpx

        try:
            response = await self.app.http.get(f"/comms/v1/calls/{quote(call_id, safe='')}",
                                               params={"fields": "duration"})
            return float(response.json()["duration"]) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None


def _refusal(exc: PlatformError) -> str:
    """What the platform said when it refused a request, in its own words when it gave any."""
    message = str(exc)
    reason = platform_reason(exc.body)
    if reason and reason not in message:
        message = f"{message}: {reason}"
    return message


# -- the numbers file ------------------------------------------------------------------------


def read_numbers(path: str | Path) -> list[tuple[str, dict[str, str]]]:
    """The rows of a campaign's CSV file: (E.164 number, the other columns by name).

    The first row names the columns; the numbers are in the column named ``number``,
    ``phone``, ``to`` or ``destination`` (any case), else in the first. A file whose first
    row is a number has no header: one number per row, nothing else.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigurationError(f"cannot read the numbers file {path}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
    if not rows:
        raise ConfigurationError(f"the numbers file {path} is empty")
    first = rows[0][0].strip()
    if first.startswith("+") or first.startswith("tel:"):
        header = ["number"]
        if any(len(row) > 1 for row in rows):
            raise ConfigurationError(
                f"{path}: give a header row (e.g. number,name) to name the columns that go "
                "into call.data")
        body, start = rows, 1
    else:
        header = [name.strip() for name in rows[0]]
        body, start = rows[1:], 2
    lowered = [name.lower() for name in header]
    column = next((lowered.index(n) for n in NUMBER_COLUMNS if n in lowered), 0)
    numbers: list[tuple[str, dict[str, str]]] = []
    problems: list[str] = []
    for line, row in enumerate(body, start):
        if len(row) > len(header):
            problems.append(f"line {line}: {len(row)} columns, the header names {len(header)}")
            continue
        cells = dict(zip(header, (cell.strip() for cell in row), strict=False))
        text = cells.pop(header[column], "")
        try:
            number = _e164(text, "the number")
        except ConfigurationError as exc:
            problems.append(f"line {line}: {exc}")
            continue
        numbers.append((number, {k: v for k, v in cells.items() if k}))
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ConfigurationError(f"{path}: " + "; ".join(problems[:5]) + more)
    if not numbers:
        raise ConfigurationError(f"the numbers file {path} has no numbers")
    return numbers


def _data_options(items: list[str]) -> dict[str, str]:
    data: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--data {item!r}: use KEY=VALUE, e.g. name=Ana")
        data[key.strip()] = value
    return data


# -- running -----------------------------------------------------------------------------------


def run_dial(args: argparse.Namespace) -> int:
    from .._loader import load_app
    from .._server import Listener

    setup_logging(args.log_level)
    if (args.number is None) == (args.numbers is None):
        raise ConfigurationError("give the NUMBER to call, or --numbers FILE.csv for a "
                                 "campaign (not both)")
    base_data = _data_options(args.data)
    rows = (read_numbers(args.numbers) if args.numbers
            else [(_e164(args.number, "NUMBER"), {})])
    app = load_app(args.file)
    spec = app.get_flow(args.flow)
    if args.caller_id:
        args.caller_id = _e164(args.caller_id, "--from")
    listener = Listener.bind(args.host, args.port)
    try:
        app.configure(settings_from_args(app, args, listener.url))
        caller = app.settings.caller_id or next(iter(app.numbers), "")
        if not caller:
            raise ConfigurationError(
                "no caller id: pass --from NUMBER (or set CALLFLOW_CALLER_ID), or give one of "
                "the app's flows a number"
            )
    except BaseException:
        listener.close()
        raise
    out = sys.stderr if args.json else sys.stdout
    if args.numbers:
        return _run_campaign(app, spec, caller, listener, rows, base_data, args, out)
    return _run_one(app, spec, caller, listener, rows[0][0], base_data, args, out)


def _tell(out: TextIO, text: str = "") -> None:
    print(text, file=out, flush=True)


async def _prepare(app: App, url: str, caller: str, args: argparse.Namespace,
                   out: TextIO) -> None:
    with _to(out):
        _banner(app, f"serving {args.file} on {url}", url)
    if args.configure:
        configured = await _configure_caller_id(app, caller)
        if configured:
            _tell(out, f"configured on the platform: {caller} → callback URL (it had none)")


@contextmanager
def _to(out: TextIO) -> Iterator[None]:
    """Send what ``_say`` prints to ``out``."""
    saved = sys.stdout
    sys.stdout = out
    try:
        yield
    finally:
        sys.stdout = saved


async def _configure_caller_id(app: App, caller: str) -> bool:
    """Point the caller id at this app if it has no callback URL on the platform.

    BlueVia refuses to place a call from a number that is not the account's (403); a
    simulator's account owns the numbers pointed at an app. A number already pointing
    somewhere (at a 'callflow serve', say) is left alone. Only BlueVia lets us ask
    (GET /comms/v1/me/numbers/{number}); on the others the caller id must be configured.
    """
    if app.settings.platform != "bluevia" or caller in app.numbers:
        return False
    from urllib.parse import quote

    import httpx

    try:
        response = await app.http.get(f"/comms/v1/me/numbers/{quote('tel:' + caller, safe=':')}")
    except httpx.HTTPError:
        return False  # placing the call says what is wrong, with its hint
    if response.status_code == 200:
        return False
    if response.status_code != 404:
        return False
    try:
        await app.platform.configure_number(app.http, caller, callback_url=app.callback_url,
                                            fallback_url=app.fallback_url)
    except PlatformError as exc:
        raise PlatformError(_platform_hint(app, f"cannot configure the caller id {caller}: "
                                                f"{_refusal(exc)}", exc.status,
                                           configuring=True),
                            status=exc.status, body=exc.body) from exc
    return True


def _run_one(app: App, spec: FlowSpec, caller: str, listener: Any, to: str,
             data: dict[str, Any], args: argparse.Namespace, out: TextIO) -> int:
    from .._server import serve_until_signal

    outcome = CallOutcome(to)

    async def place_call(url: str) -> int:
        await _prepare(app, url, caller, args, out)
        _tell(out, f"calling {to} from {caller} with flow {spec.name}")
        with _watching_flow_errors() as errors:
            dialer = _Dialer(app, spec, caller, args, errors)
            try:
                await dialer.attempt(outcome, data, lambda: _tell(
                    out, f"answered: call {outcome.call_id}; flow {spec.name} is running"))
            except PlatformError as exc:
                raise PlatformError(_platform_hint(app, f"cannot place the call: "
                                                        f"{_refusal(exc)}",
                                                   exc.status, configuring=False),
                                    status=exc.status, body=exc.body) from exc
        if outcome.call_id is None:  # the platform refused to place it
            raise PlatformError(f"cannot place the call: {outcome.error}")
        if outcome.outcome != "answered":
            reason = f" ({outcome.error})" if outcome.error else ""
            _tell(out, f"{outcome.outcome.replace('_', ' ')}: call {outcome.call_id} to {to} "
                       f"was not answered{reason}")
        else:
            _tell(out, f"call {outcome.call_id} ended: answered, {outcome.duration:.1f}s"
                       + (f"; the flow raised: {outcome.error}" if outcome.error else ""))
            _tell(out, f"call.data: {json.dumps(outcome.data, ensure_ascii=False, default=str)}")
        if args.json:
            print(outcome.to_json(), flush=True)
        return EXIT_OK if outcome.ok else EXIT_NOT_ANSWERED

    async def run() -> int | None:
        return await serve_until_signal(app, listener, place_call)

    status = run_async(run, args.backend)
    if status is None:
        _tell(out, "interrupted: the call may still be up on the platform")
        return EXIT_INTERRUPTED
    return status


# -- campaigns ---------------------------------------------------------------------------------


class _Progress:
    """Counts a campaign's calls and shows them on stderr: a bar redrawn in place on a
    terminal, a plain line every few seconds otherwise (a log file, CI)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.tty = stream.isatty()
        self.done = self.answered = self.unanswered = self.failed = self.live = 0
        self.started = time.monotonic()
        self._last = 0.0

    def finished(self, outcome: CallOutcome) -> None:
        self.done += 1
        if outcome.outcome == "answered" and outcome.error is None:
            self.answered += 1
        elif outcome.outcome in RETRIABLE:
            self.unanswered += 1
        else:
            self.failed += 1

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        left = self.total - self.done
        eta = _clock(left / rate) if rate > 0 and left else ("-" if left else "0:00")
        return (f"{self.done}/{self.total} done, {self.answered} answered, "
                f"{self.unanswered} busy or no answer, {self.failed} failed, "
                f"{self.live} live, {rate:.1f} calls/s, ETA {eta}")

    def show(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if not final and now - self._last < REDRAW_EVERY:
                return
            width = 24
            filled = width * self.done // max(self.total, 1)
            bar = "█" * filled + "░" * (width - filled)
            self.stream.write(f"\r\x1b[2K{bar} {self.line()}" + ("\n" if final else ""))
        else:
            if not final and now - self._last < PROGRESS_EVERY:
                return
            self.stream.write(f"progress: {self.line()}\n")
        self._last = now
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _run_campaign(app: App, spec: FlowSpec, caller: str, listener: Any,
                  rows: list[tuple[str, dict[str, str]]], base: dict[str, Any],
                  args: argparse.Namespace, out: TextIO) -> int:
    import signal

    import anyio

    from .._server import SHUTDOWN_SIGNALS, serving

    results_path = Path(args.results) if args.results else Path(args.numbers).with_suffix(
        ".results.jsonl")
    try:
        results = results_path.open("w", encoding="utf-8")
    except OSError as exc:
        listener.close()
        raise ConfigurationError(f"cannot write the results to {results_path}: "
                                 f"{exc.strerror or exc}") from None
    outcomes = [CallOutcome(number) for number, _ in rows]
    progress = _Progress(len(rows), sys.stderr)
    stopping = anyio.Event()
    fatal: list[PlatformError] = []

    async def campaign(url: str) -> None:
        await _prepare(app, url, caller, args, out)
        rate = f", at most {args.rate:g} a second" if args.rate else ""
        _tell(out, f"calling {len(rows)} numbers from {caller} with flow {spec.name}, "
                   f"{args.concurrency} at a time{rate}; results to {results_path}")
        _tell(out, "press Ctrl+C to stop placing calls (the live ones finish)")
        slots = anyio.Semaphore(args.concurrency)
        pace = _Pacer(args.rate)
        with _watching_flow_errors() as errors:
            dialer = _Dialer(app, spec, caller, args, errors)

            async def one(index: int) -> None:
                outcome = outcomes[index]
                try:
                    while True:
                        data = {**base, **rows[index][1]}
                        progress.live += 1
                        try:
                            await dialer.attempt(outcome, data)
                        finally:
                            progress.live -= 1
                            slots.release()
                        if (outcome.outcome not in RETRIABLE
                                or outcome.attempts > args.retries or stopping.is_set()):
                            break
                        with anyio.move_on_after(args.retry_delay):
                            await stopping.wait()
                        if stopping.is_set():
                            break
                        await slots.acquire()
                        if stopping.is_set():
                            slots.release()
                            break
                        await pace.wait()
                except PlatformError as exc:
                    fatal.append(exc)
                    stopping.set()
                progress.finished(outcome)
                results.write(outcome.to_json() + "\n")
                results.flush()

            async with anyio.create_task_group() as tg:
                tg.start_soon(_redraw, progress)
                async with anyio.create_task_group() as calls:
                    for index in range(len(rows)):
                        await slots.acquire()
                        if stopping.is_set():
                            slots.release()
                            break
                        await pace.wait()
                        calls.start_soon(one, index)
                tg.cancel_scope.cancel()
        progress.show(final=True)

    async def run() -> bool:
        interrupted = False
        with anyio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
            async with serving(app, listener) as url, anyio.create_task_group() as tg:

                async def watch() -> None:
                    nonlocal interrupted
                    async for signum in signals:
                        if stopping.is_set() or signum == signal.SIGTERM:
                            tg.cancel_scope.cancel()  # a second Ctrl+C: stop now
                            return
                        interrupted = True
                        stopping.set()
                        sys.stderr.write("\nstopping: no new calls; waiting for the live ones "
                                         "(Ctrl+C again to stop at once)\n")

                tg.start_soon(watch)
                try:
                    await campaign(url)
                finally:
                    tg.cancel_scope.cancel()
        return interrupted

    try:
        interrupted = run_async(run, args.backend)
    finally:
        for outcome in outcomes:
            if outcome.attempts == 0:  # never placed: a re-run can pick these up
                results.write(outcome.to_json() + "\n")
        results.close()
    if fatal:
        exc = fatal[0]
        raise PlatformError(_platform_hint(app, f"cannot place the calls: {_refusal(exc)}",
                                           exc.status, configuring=False),
                            status=exc.status, body=exc.body)
    return _summary(outcomes, results_path, args, out, interrupted)


def _summary(outcomes: list[CallOutcome], path: Path, args: argparse.Namespace, out: TextIO,
             interrupted: bool) -> int:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
    raised = sum(1 for o in outcomes if o.outcome == "answered" and o.error)
    parts = [f"{n} {name.replace('_', ' ')}" for name, n in sorted(counts.items())]
    if raised:
        parts.append(f"{raised} flow{'s' if raised != 1 else ''} raised")
    _tell(out, f"{'interrupted' if interrupted else 'done'}: {len(outcomes)} numbers: "
               f"{', '.join(parts)}; results in {path}")
    if args.json:
        print(json.dumps({"numbers": len(outcomes), "outcomes": counts, "flow_errors": raised,
                          "interrupted": interrupted, "results": str(path)}), flush=True)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_NOT_ANSWERED


async def _redraw(progress: _Progress) -> None:
    import anyio

    while True:
        progress.show()
        await anyio.sleep(REDRAW_EVERY)


class _Pacer:
    """At most ``rate`` starts a second (None: no limit), evenly spaced."""

    def __init__(self, rate: float | None) -> None:
        self.gap = 1.0 / rate if rate else 0.0
        self.next = 0.0

    async def wait(self) -> None:
        if not self.gap:
            return
        import anyio

        now = anyio.current_time()
        at = max(now, self.next)
        self.next = at + self.gap
        if at > now:
            await anyio.sleep(at - now)

