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
import json
import logging
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    add_connection_options,
    platform_reason,
    run_async,
    settings_from_args,
    setup_logging,
)

if TYPE_CHECKING:
    from .._app import App, FlowSpec
    from .._machine import MachineDetection

__all__ = ("RETRIABLE", "CallOutcome", "Dialer", "add_parser", "prepare", "refusal", "run_dial",
           "tell", "watching_flow_errors")

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
               "  callflow dial examples/reminder.py --numbers patients.csv \\\n"
               "      --from +34900000001 --concurrency 20 --rate 5 --retries 2 --retry-delay 600\n"
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
        "--machine-detection", choices=("detect", "wait_for_beep"),
        help="tell a person from an answering machine (call.answered_by, and answered_by "
             "in the outcome); wait_for_beep starts the flow after a machine's beep "
             "(Twilio, Telnyx)",
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
    # A free port by default: the platform gets this app's URL with each call, and a
    # 'callflow serve' may well hold 8000 already.
    add_connection_options(parser, port=0, log_level="warning")
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
    answered_by: str | None = None
    """``human``, ``machine`` or ``unknown`` with ``--machine-detection``; else None."""

    @property
    def ok(self) -> bool:
        return self.outcome == "answered" and self.error is None

    def to_json(self) -> str:
        return json.dumps({
            "number": self.number, "outcome": self.outcome,
            "duration": round(self.duration, 3), "data": self.data, "error": self.error,
            "call_id": self.call_id, "attempts": self.attempts,
            **({"answered_by": self.answered_by} if self.answered_by else {}),
        }, ensure_ascii=False, default=str)

    def describe(self) -> str:
        words = self.outcome.replace("_", " ")
        if self.outcome == "answered":
            words += f", {self.duration:.1f}s"
            if self.answered_by:
                words += f", by a {'person' if self.answered_by == 'human' else self.answered_by}"
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
def watching_flow_errors() -> Iterator[_FlowErrors]:
    handler = _FlowErrors()
    logger = logging.getLogger("callflow")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class Dialer:
    """Places calls with one flow and caller id, and tells what each came to."""

    def __init__(self, app: App, spec: FlowSpec, caller: str, errors: _FlowErrors,
                 machine_detection: MachineDetection | None = None) -> None:
        self.app, self.spec, self.caller, self.errors = app, spec, caller, errors
        self.machine_detection = machine_detection

    async def attempt(self, outcome: CallOutcome, data: dict[str, Any],
                      on_answered: Callable[[], None] = lambda: None) -> None:
        """Place one call to ``outcome.number`` and wait for its end; fills ``outcome``."""
        import anyio

        outcome.attempts += 1
        outcome.data = data
        try:
            result = await self.app.call(outcome.number, flow=self.spec.name,
                                         caller_id=self.caller, data=data,
                                         machine_detection=self.machine_detection)
        except PlatformError as exc:
            outcome.outcome, outcome.error = "failed", refusal(exc)
            if exc.status is None or exc.status == 401:
                raise  # nothing can get through: not this number's fault
            return
        outcome.call_id = result.call_id
        if not result.answered:
            outcome.outcome = result.status
            if result.status == "failed" and result.reason not in (None, "", "failed"):
                outcome.error = result.reason  # the platform's words, when it gave some
            return
        outcome.outcome = "answered"
        outcome.answered_by = result.answered_by
        on_answered()
        answered = anyio.current_time()
        await self.app.wait_ended(result.call_id)
        # The flow is done, but the platform may still be playing its last words
        # and will post the hang-up: keep serving until it has.
        with anyio.move_on_after(HANGUP_WAIT):
            await self.app.wait_hung_up(result.call_id)
        billed = await self._platform_duration(result.call_id)
        outcome.duration = anyio.current_time() - answered if billed is None else billed
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


def refusal(exc: PlatformError) -> str:
    """What the platform said when it refused a request, in its own words when it gave any."""
    message = str(exc)
    reason = platform_reason(exc.body)
    if reason and reason not in message:
        message = f"{message}: {reason}"
    return message


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

    setup_logging(args.log_level, args.log_format)
    if (args.number is None) == (args.numbers is None):
        raise ConfigurationError("give the NUMBER to call, or --numbers FILE.csv for a "
                                 "campaign (not both)")
    base_data = _data_options(args.data)
    if args.numbers:
        from ._campaign import read_numbers

        rows = read_numbers(args.numbers)
    else:
        rows = [(_e164(args.number, "NUMBER"), {})]
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
        from ._campaign import run_campaign

        return run_campaign(app, spec, caller, listener, rows, base_data, args, out)
    return _run_one(app, spec, caller, listener, rows[0][0], base_data, args, out)


def tell(out: TextIO, text: str = "") -> None:
    print(text, file=out, flush=True)


async def prepare(app: App, url: str, caller: str, args: argparse.Namespace,
                   out: TextIO) -> None:
    with _to(out):
        _banner(app, f"serving {args.file} on {url}", url)
    if args.configure:
        configured = await _configure_caller_id(app, caller)
        if configured:
            tell(out, f"configured on the platform: {caller} → callback URL (it had none)")


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
                                                f"{refusal(exc)}", exc.status,
                                           configuring=True),
                            status=exc.status, body=exc.body) from exc
    return True


def _run_one(app: App, spec: FlowSpec, caller: str, listener: Any, to: str,
             data: dict[str, Any], args: argparse.Namespace, out: TextIO) -> int:
    from .._server import serve_until_signal

    outcome = CallOutcome(to)

    async def place_call(url: str) -> int:
        await prepare(app, url, caller, args, out)
        tell(out, f"calling {to} from {caller} with flow {spec.name}")
        with watching_flow_errors() as errors:
            dialer = Dialer(app, spec, caller, errors, args.machine_detection)
            try:
                await dialer.attempt(outcome, data, lambda: tell(
                    out, f"answered: call {outcome.call_id}; flow {spec.name} is running"))
            except PlatformError as exc:
                if args.json:  # scripts read the error here too (and the status is 2)
                    print(outcome.to_json(), flush=True)
                raise PlatformError(_platform_hint(app, f"cannot place the call: "
                                                        f"{refusal(exc)}",
                                                   exc.status, configuring=False),
                                    status=exc.status, body=exc.body) from exc
        if outcome.call_id is None:  # the platform refused to place it
            if args.json:
                print(outcome.to_json(), flush=True)
            raise PlatformError(f"cannot place the call: {outcome.error}")
        if outcome.outcome != "answered":
            reason = f" ({outcome.error})" if outcome.error else ""
            tell(out, f"{outcome.outcome.replace('_', ' ')}: call {outcome.call_id} to {to} "
                       f"was not answered{reason}")
        else:
            tell(out, f"call {outcome.call_id} ended: answered, {outcome.duration:.1f}s"
                       + (f"; the flow raised: {outcome.error}" if outcome.error else ""))
            tell(out, f"call.data: {json.dumps(outcome.data, ensure_ascii=False, default=str)}")
        if args.json:
            print(outcome.to_json(), flush=True)
        return EXIT_OK if outcome.ok else EXIT_NOT_ANSWERED

    async def run() -> int | None:
        return await serve_until_signal(app, listener, place_call)

    status = run_async(run, args.backend)
    if status is None:
        tell(out, "interrupted: the call may still be up on the platform")
        return EXIT_INTERRUPTED
    return status
