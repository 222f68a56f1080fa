"""The ``callflow`` command line: serve a flows file, or place a call with one of its flows.

Commands are listed in ``COMMANDS`` as ``"module:function"``. Each function takes the
subparsers object, adds its parser, and sets ``run`` (``run(args) -> int``, the exit status)
as that parser's default, so a new command is one line here plus its own module.
``add_connection_options`` and ``settings_from_args`` are shared by every command that runs
an app.

Errors the user can fix (every ``CallflowError``) print as one line on stderr, exit status 2,
no traceback. The core never imports this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio

from .. import __version__
from .._app import App
from .._exceptions import CallflowError, ConfigurationError, PlatformError
from .._loader import load_app
from .._server import Listener, serve_until_signal
from .._settings import Settings
from ..stores import open_store

__all__ = (
    "COMMANDS",
    "add_connection_options",
    "add_platform_options",
    "build_parser",
    "main",
    "run_async",
    "settings_from_args",
    "setup_logging",
)

COMMANDS: dict[str, str] = {
    "call": "callflow.cli._call:add_parser",
    "dev": "callflow.cli._dev:add_parser",
    "serve": "callflow.cli._main:add_serve_parser",
    "dial": "callflow.cli._main:add_dial_parser",
    "simulator": "callflow.cli._simulator:add_parser",
    "history": "callflow.cli._history:add_parser",
}
"""Subcommand name → ``"module:function"`` that adds its parser, in the order of ``--help``."""

T = TypeVar("T")

EXIT_OK = 0
EXIT_NOT_ANSWERED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
HANGUP_WAIT = 120.0
"""Seconds ``callflow dial`` keeps serving after the flow ended, for the platform's hang-up."""

# Command-line options that map onto Settings fields of the same name.
SETTING_OPTIONS = (
    "public_url", "platform_url", "api_key", "api_secret", "secret", "response_budget",
    "caller_id", "platform", "twilio_account_sid", "twilio_auth_token", "telnyx_api_key",
    "telnyx_public_key", "telnyx_connection_id", "store", "cache_size",
)
DEFAULT_STORE = "sqlite:///.callflow/calls.db"
"""Where ``callflow serve`` keeps its calls unless told otherwise: a file under the
working directory, so a restart (or a second worker) picks the calls up."""
PLATFORMS = ("bluevia", "twilio", "telnyx")

DESCRIPTION = """\
Serve telephone call flows written as Python coroutines.

A flows file is a Python file that creates a callflow.App and registers flows on it
(@app.flow), or registers flows with the module-level @callflow.flow decorator."""

EPILOG = """\
examples:
  callflow serve examples/ivr.py
  callflow serve flows.py --public-url https://abc.example.net --platform-url https://voice.example.com
  callflow dial examples/reminder.py +34600000001 --flow reminder

Settings also come from CALLFLOW_* environment variables (CALLFLOW_PLATFORM_URL,
CALLFLOW_API_KEY, CALLFLOW_SECRET, ...); options given on the command line win.
Run 'callflow COMMAND --help' for a command's options."""


# -- the parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``callflow`` parser, with a subparser per entry of ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="callflow",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"callflow {__version__}")
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", dest="command", required=True
    )
    for target in COMMANDS.values():
        _resolve(target)(subparsers)
    return parser


def _resolve(target: str) -> Callable[[Any], None]:
    module_name, _, function = target.partition(":")
    add_parser: Callable[[Any], None] = getattr(importlib.import_module(module_name), function)
    return add_parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Where the app listens, how the platform reaches it and how it reaches the platform."""
    server = parser.add_argument_group("server")
    server.add_argument(
        "--host", default=DEFAULT_HOST,
        help=f"address to listen on (default: {DEFAULT_HOST}; 0.0.0.0 for every interface)",
    )
    server.add_argument(
        "--port", type=_port, default=DEFAULT_PORT,
        help=f"port to listen on (default: {DEFAULT_PORT}; 0 picks a free port)",
    )
    server.add_argument(
        "--public-url", metavar="URL",
        help="the URL the platform reaches this app at, e.g. a tunnel's or proxy's "
             "(default: http://HOST:PORT, with the port actually bound; CALLFLOW_PUBLIC_URL)",
    )
    server.add_argument(
        "--secret",
        help="the webhook secret inside the callback URLs (default: made once and kept in "
             "the store; with --store memory, random at each start; CALLFLOW_SECRET)",
    )
    server.add_argument(
        "--response-budget", type=_seconds, metavar="S",
        help="seconds a notification waits for a slow flow before the rest of its commands "
             "go through the platform's REST API (default: 2; CALLFLOW_RESPONSE_BUDGET)",
    )
    server.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio",
        help="the event loop the flows run on (default: asyncio)",
    )
    server.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info",
        help="info logs one line per notification and per command batch (default: info)",
    )
    platform = parser.add_argument_group("platform")
    platform.add_argument(
        "--platform-url", metavar="URL",
        help="the platform's REST API (default: the platform's own; for bluevia "
             "http://127.0.0.1:8080, a local 'callflow simulator'; CALLFLOW_PLATFORM_URL)",
    )
    platform.add_argument("--api-key", help="API key for the platform (CALLFLOW_API_KEY)")
    platform.add_argument(
        "--api-secret", help="API secret for the platform (CALLFLOW_API_SECRET)"
    )
    add_platform_options(platform)


def add_platform_options(group: Any, *, default: str | None = None) -> None:
    """``--platform`` and each provider's credentials, as ``Settings`` fields of the same
    names (``None`` when not given: ``CALLFLOW_*`` variables and the file's ``App(...)``
    then decide)."""
    group.add_argument(
        "--platform", choices=PLATFORMS, default=default,
        help=f"the provider whose wire format to speak (default: {default or 'bluevia'}"
             f"{'' if default else '; CALLFLOW_PLATFORM'})",
    )
    group.add_argument("--twilio-account-sid", metavar="SID",
                       help="Twilio: the account SID, AC... (CALLFLOW_TWILIO_ACCOUNT_SID)")
    group.add_argument("--twilio-auth-token", metavar="TOKEN",
                       help="Twilio: the auth token (CALLFLOW_TWILIO_AUTH_TOKEN)")
    group.add_argument("--telnyx-api-key", metavar="KEY",
                       help="Telnyx: the API v2 key (CALLFLOW_TELNYX_API_KEY)")
    group.add_argument("--telnyx-public-key", metavar="KEY",
                       help="Telnyx: the base64 Ed25519 public key of webhook signatures "
                            "(CALLFLOW_TELNYX_PUBLIC_KEY)")
    group.add_argument("--telnyx-connection-id", metavar="ID",
                       help="Telnyx: the Call Control Application (CALLFLOW_TELNYX_CONNECTION_ID)")


def add_serve_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve a flows file and point its numbers at it",
        description="Serve the flows in FILE under hypercorn until Ctrl+C (SIGINT) or SIGTERM.\n"
                    "On start, each of the app's numbers is pointed at this app on the platform\n"
                    "(POST /comms/v1/me/numbers/{number}), and the callback URLs are printed.\n"
                    "Logs one line per notification and per batch of commands.",
        epilog="examples:\n"
               "  callflow serve examples/ivr.py\n"
               "  callflow serve examples/ivr.py --port 0 --no-configure\n"
               "  callflow serve flows.py --public-url https://abc.example.net \\\n"
               "      --platform-url https://voice.example.com --api-key K --api-secret S\n"
               "\n"
               "try it without a platform:\n"
               "  callflow serve examples/ivr.py --no-configure --secret s3cret\n"
               "  curl -d '{\"eventName\": \"CalledNumber\", \"callId\": \"c1\",\n"
               "            \"callerId\": \"tel:+34600000001\", \"destination\": "
               "\"tel:+34900000001\",\n"
               "            \"timestamp\": \"2024-01-01T00:00:00Z\"}' \\\n"
               "      http://127.0.0.1:8000/callflow/s3cret/events",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="the flows file (a .py path)")
    durable = parser.add_argument_group("durable calls")
    durable.add_argument(
        "--store", metavar="URL",
        help=f"where calls are kept, so a restart, a crash or another worker loses none: "
             f"sqlite:///PATH (one host), postgresql://USER@HOST/DB (several hosts; pip "
             f"install \"callflow[postgresql]\") or memory (this process only) "
             f"(default: {DEFAULT_STORE}; CALLFLOW_STORE)",
    )
    durable.add_argument(
        "--cache-size", type=_count, metavar="N",
        help="suspended calls each worker keeps in memory; the others are rebuilt from the "
             "store when their next notification comes (default: 10000; CALLFLOW_CACHE_SIZE)",
    )
    durable.add_argument(
        "--workers", type=_positive, metavar="N", default=1,
        help="processes serving the same port, sharing the store (default: 1)",
    )
    parser.add_argument(
        "--no-configure", dest="configure", action="store_false",
        help="do not configure the numbers on the platform (configure their callback URLs "
             "by hand with the printed URL; pass --secret so it stays the same)",
    )
    add_connection_options(parser)
    parser.set_defaults(run=run_serve)


def add_dial_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dial",
        help="place an outbound call that runs a flow from a flows file",
        description="Serve the flows in FILE, call NUMBER through the platform, and run the\n"
                    "flow when the call is answered. Exits when the call is over: status 0 if\n"
                    "it was answered, 1 if it was busy, not answered or failed.",
        epilog="examples:\n"
               "  callflow dial examples/reminder.py +34600000001\n"
               "  callflow dial flows.py +34600000001 --flow survey --from +34900000001",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="the flows file (a .py path)")
    parser.add_argument("number", metavar="NUMBER", help="the number to call, e.g. +34600000001")
    parser.add_argument(
        "--flow", metavar="NAME",
        help="the flow to run when answered (default: the app's default flow, or its only one)",
    )
    parser.add_argument(
        "--from", dest="caller_id", metavar="NUMBER",
        help="the caller id (default: CALLFLOW_CALLER_ID, else the app's first number)",
    )
    parser.add_argument(
        "--machine-detection", choices=("detect", "wait_for_beep"),
        help="tell a person from an answering machine (call.answered_by); wait_for_beep "
             "starts the flow after a machine's beep (Twilio, Telnyx)",
    )
    add_connection_options(parser)
    parser.set_defaults(run=run_dial)


# -- settings and logging -----------------------------------------------------------------------


def settings_from_args(app: App, args: argparse.Namespace, listening_url: str) -> Settings:
    """The app's settings with the command line's options on top.

    The app's settings are the defaults, then ``CALLFLOW_*`` variables, then any given to
    ``App(...)`` in the flows file. The public URL, unless chosen somewhere, is where the
    app listens.
    """
    base = app.settings
    overrides: dict[str, Any] = {}
    for name in SETTING_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if "public_url" not in overrides and not _public_url_chosen(base):
        overrides["public_url"] = listening_url
    settings = dataclasses.replace(base, **overrides)
    settings.public_url = _check_url("public URL", settings.public_url)
    if settings.platform_url:  # empty: the platform's own API (Settings.api_url)
        settings.platform_url = _check_url("platform URL", settings.platform_url)
    return settings


def _public_url_chosen(settings: Settings) -> bool:
    return bool(os.environ.get("CALLFLOW_PUBLIC_URL")) or (
        settings.public_url != Settings().public_url
    )


def _check_url(what: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"the {what} {url!r} is not an http:// or https:// URL")
    return url.rstrip("/")


class _Formatter(logging.Formatter):
    """``HH:MM:SS callflow <message>``, with the level named when it is not plain info."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        if record.levelno >= logging.WARNING or record.levelno < logging.INFO:
            head, _, message = text.partition(f"{record.name} ")
            text = f"{head}{record.name} {record.levelname.lower()}: {message}"
        return text


def setup_logging(level: str = "info") -> None:
    """Log to stderr as ``HH:MM:SS callflow <message>``, at ``level`` and above.

    The libraries under callflow (httpx, hypercorn) only say warnings, except at debug.
    Leaves an existing logging configuration (handlers on the root logger) alone.
    """
    numeric = logging.getLevelName(level.upper())
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root.addHandler(handler)
    root.setLevel(numeric)
    quiet = numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
    for name in ("httpx", "hypercorn.error"):
        logging.getLogger(name).setLevel(quiet)
    logging.getLogger("httpcore").setLevel(max(numeric, logging.WARNING))


def run_async(func: Callable[[], Awaitable[T]], backend: str) -> T:
    """Run ``func`` on the asyncio or trio event loop."""
    if backend == "trio" and importlib.util.find_spec("trio") is None:
        raise ConfigurationError("--backend trio needs trio: pip install trio")
    return anyio.run(func, backend=backend)


def _say(text: str = "") -> None:
    print(text, flush=True)


# -- serve ----------------------------------------------------------------------------------------


def run_serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    app = load_app(args.file)
    listener = Listener.bind(args.host, args.port)
    try:
        settings = settings_from_args(app, args, listener.url)
        if args.store is None and not os.environ.get("CALLFLOW_STORE") and (
                settings.store == Settings().store):
            settings.store = DEFAULT_STORE
        if args.workers > 1 and open_store(settings.store) is None:
            raise ConfigurationError(
                "--workers needs a durable store, so that every worker can answer every "
                f"call: drop --store memory (the default is {DEFAULT_STORE})")
        if args.workers > 1 and settings.platform == "telnyx":
            raise ConfigurationError(
                "Telnyx calls are not durable yet: each lives in the process that took it, "
                "so serve Telnyx with one worker (drop --workers)")
        app.configure(settings)
    except BaseException:
        listener.close()
        raise
    if args.workers > 1:
        from .._workers import serve_workers

        status = serve_workers(args.workers, lambda index: _serve_one(app, listener, args,
                                                                       index))
        listener.close()
        _say("stopped")
        return status
    _serve_one(app, listener, args, 0)
    _say("stopped")
    return EXIT_OK


def _serve_one(app: App, listener: Listener, args: argparse.Namespace, index: int) -> int:
    """Serve until a signal: one worker (``index`` 0 prints the banner, configures)."""

    async def ready(url: str) -> None:
        # What start-up made (modules, the app, the server) lives as long as the process:
        # out of the collector's sight, a full collection scans only the calls' objects.
        gc.collect()
        gc.freeze()
        if index:
            _say(f"worker {index} ready (pid {os.getpid()})")
            await anyio.sleep_forever()
        if args.workers > 1:
            _say(f"worker 0 ready (pid {os.getpid()})")
        workers = f" with {args.workers} workers" if args.workers > 1 else ""
        _banner(app, f"serving {args.file} on {url}{workers}", url)
        if args.configure:
            await _configure_numbers(app)
        else:
            _say("not configuring numbers (--no-configure): set each number's callback URL to "
                 "the callback URL above")
            if app.store is None and not (args.secret or os.environ.get("CALLFLOW_SECRET")):
                _say("  the secret in it changes at each start: pass --secret (or set "
                     "CALLFLOW_SECRET) to keep it")
        _say("ready: press Ctrl+C to stop")
        await anyio.sleep_forever()

    async def run() -> None:
        await serve_until_signal(app, listener, ready)

    run_async(run, args.backend)
    return EXIT_OK


def _banner(app: App, headline: str, listening_url: str) -> None:
    s = app.settings
    _say(f"callflow {__version__} {headline}")
    width = max(len(name) for name in app.flows)
    for spec in app.flows.values():
        answers = (", ".join(spec.numbers) if spec.numbers
                   else "default: calls to any other number")
        _say(f"  flow {spec.name:<{width}}  {answers}")
    if s.public_url != listening_url:
        _say(f"public URL:   {s.public_url}")
    _say(f"callback URL: {app.callback_url}")
    _say(f"fallback URL: {app.fallback_url}")
    _say(f"platform:     {s.api_url} ({s.platform})")
    if app.store is not None:
        durable = (f"cache {s.cache_size} calls" if app.durable is not None
                   else "the secret only: calls on this platform live in the process")
        _say(f"store:        {app.store.url} ({durable})")
    elif s.store in ("memory", "memory://"):
        _say("store:        memory (calls live in this process; a restart drops them)")
    if _is_loopback(s.public_url) and not _is_loopback(s.api_url):
        _say(f"  note: the platform at {s.api_url} cannot reach {s.public_url}; pass "
             "--public-url with an address it can reach (e.g. a tunnel's)")


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


async def _configure_numbers(app: App) -> None:
    if not app.numbers:
        _say("no numbers to configure: the app has only a default flow; set your numbers' "
             "callback URL to the callback URL above")
        return
    try:
        configured = await app.configure_numbers()
    except PlatformError as exc:
        raise PlatformError(_platform_hint(app, str(exc), exc.status, configuring=True),
                            status=exc.status, body=exc.body) from exc
    _say(f"configured on the platform: {', '.join(configured)} → callback URL")


def _platform_hint(app: App, message: str, status: int | None, *, configuring: bool) -> str:
    url = app.settings.api_url
    if status in (401, 403):
        hint = {
            "twilio": "check --twilio-account-sid and --twilio-auth-token "
                      "(CALLFLOW_TWILIO_ACCOUNT_SID, CALLFLOW_TWILIO_AUTH_TOKEN)",
            "telnyx": "check --telnyx-api-key (CALLFLOW_TELNYX_API_KEY)",
        }.get(app.settings.platform,
              "check --api-key and --api-secret (CALLFLOW_API_KEY, CALLFLOW_API_SECRET)")
    else:
        hint = (f"is a platform running at {url}? Start a local one with 'callflow simulator' "
                "or point --platform-url (CALLFLOW_PLATFORM_URL) at yours")
        if configuring:
            hint += ", or pass --no-configure to configure the numbers by hand"
    if url not in message:
        message = f"{message} (platform: {url})"
    return f"{message}. {hint[0].upper()}{hint[1:]}"


# -- dial ------------------------------------------------------------------------------------------


def run_dial(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    app = load_app(args.file)
    spec = app.get_flow(args.flow)
    to = _e164(args.number, "NUMBER")
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

    async def place_call(url: str) -> int:
        _banner(app, f"serving {args.file} on {url}", url)
        _say(f"calling {to} from {caller} with flow {spec.name}")
        try:
            result = await app.call(to, flow=spec.name, caller_id=caller,
                                    machine_detection=args.machine_detection)
        except PlatformError as exc:
            raise PlatformError(_platform_hint(app, f"cannot place the call: {exc}",
                                               exc.status, configuring=False),
                                status=exc.status, body=exc.body) from exc
        if not result.answered:
            reason = f" ({result.reason})" if result.reason else ""
            _say(f"{result.status.replace('_', ' ')}: call {result.call_id} to {to} was not "
                 f"answered{reason}")
            return EXIT_NOT_ANSWERED
        _say(f"answered: call {result.call_id}; flow {spec.name} is running")
        await app.wait_ended(result.call_id)
        # The flow is done, but the platform may still be playing its last words
        # and will post the hang-up: keep serving until it has.
        with anyio.move_on_after(HANGUP_WAIT):
            await app.wait_hung_up(result.call_id)
        _say(f"call {result.call_id} ended")
        return EXIT_OK

    async def run() -> int | None:
        return await serve_until_signal(app, listener, place_call)

    status = run_async(run, args.backend)
    if status is None:
        _say("interrupted: the call may still be up on the platform")
        return EXIT_INTERRUPTED
    return status


def _e164(number: str, what: str) -> str:
    number = number.strip()
    if number.startswith("tel:"):
        number = number[4:]
    if not (number.startswith("+") and number[1:].isdigit()):
        raise ConfigurationError(f"{what} {number!r} is not an E.164 number like +34600000001")
    return number


# -- main ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``callflow`` command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        # Ctrl+C before the signal handlers were in place (e.g. while importing the file).
        return EXIT_INTERRUPTED
    except Exception as exc:
        error = _user_error(exc)
        if error is None:
            raise
        print(f"callflow: error: {error}", file=sys.stderr, flush=True)
        return EXIT_ERROR


def _user_error(exc: BaseException) -> CallflowError | None:
    """The CallflowError to show for ``exc``, also when it is alone in an exception group."""
    if isinstance(exc, CallflowError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _user_error(exc.exceptions[0])
    return None
