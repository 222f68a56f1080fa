"""``callflow call``: place one simulated call into a flows file and print what happened.

By default everything runs in this process, over real loopback HTTP: the app (served as
``callflow serve`` would) and a ``Simulator`` (as ``callflow simulator`` would), each on a
port the OS picks. The app points its numbers at the simulator through the REST API, and
the call is placed and its transcript read through the simulator's ``/simulator``
extension: the same path as against a simulator in another process (``--against URL``).

``--platform twilio`` (or ``telnyx``) runs both sides on that provider's wire format,
with throwaway credentials made up for the one run: the same flows, the same script, the
same transcript.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack, nullcontext
from pathlib import Path
from typing import Any

import anyio

from .._app import App
from .._exceptions import ConfigurationError, PlatformError
from .._loader import load_app
from .._machine import MachineDetection
from .._server import Listener, serving
from ..simulator import Simulator, SimulatorClient, Transcript, parse_step
from ._main import (
    EXIT_NOT_ANSWERED,
    EXIT_OK,
    LOG_LEVELS,
    PLATFORMS,
    _check_url,
    _e164,
    _platform_hint,
    add_log_format_option,
    add_log_level,
    add_platform_options,
    run_async,
    setup_logging,
)
from ._simulator import (
    add_chaos_options,
    add_clock_options,
    chaos_from_args,
    clock_from_args,
    clock_name,
    phone_option,
)

__all__ = ("add_parser", "read_script")

DEFAULT_CALLER = "+34600000001"
"""Who calls in (and who an outbound call rings), unless --from / --to say otherwise."""
SPARE_NUMBER = "+34900000000"
"""The number called when an app has only a default flow (it answers any number)."""
FLOW_WAIT = 5.0
"""Real seconds the app's flow gets to finish (its ``finally`` blocks) after the call."""


class _Steps(argparse.Action):
    """Collects --press, --step and --script in the order given, as script items."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        items: list[tuple[str, str]] = list(getattr(namespace, self.dest, None) or [])
        items.append((self.const, str(values)))
        setattr(namespace, self.dest, items)


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "call",
        help="place a simulated call into a flows file and print the transcript",
        description="Run the flows in FILE and a simulated BlueVia network together in this\n"
                    "process (real HTTP on loopback, no account, network or configuration),\n"
                    "or a simulated Twilio or Telnyx with --platform (throwaway credentials),\n"
                    "place one call into the flow, and print what the caller heard and did.\n"
                    "The simulated caller follows a script: --press KEYS waits for the next\n"
                    "prompt to finish, then presses KEYS when the flow listens for keys.\n"
                    "Time is virtual by default: the call is over at once.\n"
                    "\n"
                    "Exit status: 0 when the call completed, 1 when the flow raised, an\n"
                    "outbound call was not answered or the simulator could not get commands\n"
                    "from the app, 2 on errors. --json adds \"error\": what the flow raised.",
        epilog="examples:\n"
               "  callflow call examples/ivr.py --press 1\n"
               "  callflow call examples/ivr.py --press 2 --phone +34910000002=busy\n"
               "  callflow call examples/voicemail.py --step wait:beep --step talk:3 \\\n"
               "      --step 'press:#' --press 1\n"
               "  callflow call examples/ivr.py --script caller.txt --json\n"
               "  callflow call examples/reminder.py --outbound --press 1\n"
               "  callflow call examples/ivr.py --platform twilio --press 1\n"
               "\n"
               "against a simulator in another process ('callflow simulator'):\n"
               "  callflow call examples/ivr.py --against http://127.0.0.1:8080 --press 1\n"
               "  callflow call --against http://127.0.0.1:8080 --to +34900000001 --press 1\n"
               "      (no FILE: the app is served elsewhere, e.g. by 'callflow serve')\n"
               "\n"
               "script steps (--step, and one per line in a --script file, # comments):\n"
               "  wait:TEXT       until a prompt containing TEXT has been heard\n"
               "  press:KEYS      press KEYS as soon as the flow listens for keys\n"
               "  press-next:KEYS after the next prompt, press KEYS (what --press does)\n"
               "  press-now:KEYS  press at once, listening or not\n"
               "  say:WORDS       say WORDS as soon as the flow listens for speech\n"
               "  say-next:WORDS  after the next prompt, say WORDS (what --say does)\n"
               "  say-now:WORDS   say WORDS at once, listening or not\n"
               "  silence:S  talk:S  hang-up  hang-up:S\n"
               "(FakeCall's words: .press(), .say(), .silence(), .talk(), .hang_up())",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "file", metavar="FILE", nargs="?",
        help="the flows file (a .py path); optional with --against",
    )
    call = parser.add_argument_group("the call")
    call.add_argument(
        "--from", dest="caller", metavar="NUMBER",
        help=f"who calls (default: {DEFAULT_CALLER}); with --outbound, the caller id "
             "(default: the app's first number)",
    )
    call.add_argument(
        "--to", metavar="NUMBER",
        help="the number called (default: the app's first number); with --outbound, the "
             f"phone the app calls (default: {DEFAULT_CALLER})",
    )
    call.add_argument(
        "--press", dest="steps", action=_Steps, const="press", metavar="KEYS",
        help="wait for the next prompt to finish, then press KEYS (0-9 * #) when the flow "
             "listens for keys (repeatable)",
    )
    call.add_argument(
        "--say", dest="steps", action=_Steps, const="say", metavar="WORDS",
        help="wait for the next prompt to finish, then say WORDS when the flow listens for "
             "speech (a gather with input='speech'); "
             "the simulator recognises them against the gather's hints (repeatable)",
    )
    call.add_argument(
        "--step", dest="steps", action=_Steps, const="step", metavar="STEP",
        help="one script step, e.g. wait:sales, silence:5, talk:3, hang-up:10 (repeatable)",
    )
    call.add_argument(
        "--script", dest="steps", action=_Steps, const="script", metavar="FILE",
        help="script steps from a file, one per line, # comments (repeatable)",
    )
    call.add_argument(
        "--outbound", action="store_true",
        help="the app calls the phone instead (App.call with its default flow); the phone "
             "answers after 1 s and follows the script",
    )
    call.add_argument(
        "--flow", metavar="NAME", help="with --outbound: the flow to run (implies --outbound)",
    )
    call.add_argument(
        "--machine-detection", choices=("detect", "wait_for_beep"),
        help="with --outbound: ask the platform whether a person or an answering machine "
             "answered (Twilio, Telnyx); try it with --phone NUMBER=machine",
    )
    network = parser.add_argument_group("the simulated network")
    network.add_argument(
        "--phone", action="append", default=[], metavar="NUMBER=BEHAVIOUR",
        help="how a dialled number behaves: answer, busy, no-answer, unreachable, fail, "
             "machine (an answering machine), with options: "
             "+34910000001=answer,after=2,press=1,hang_up_after=10 or "
             "+34600000001=machine,greeting=8,beep=no (repeatable)",
    )
    network.add_argument(
        "--numbers", metavar="FILE",
        help="the simulator's config file ([phones], [numbers]; see 'callflow simulator')",
    )
    add_clock_options(parser)
    network.add_argument(
        "--against", "--platform-url", dest="platform_url", metavar="URL",
        help="call into a simulator already running at URL ('callflow simulator') instead "
             "of starting one",
    )
    network.add_argument(
        "--no-app", dest="serve_app", action="store_false",
        help="do not serve FILE (it is served elsewhere, against the same simulator); FILE "
             "then only gives the default --to",
    )
    network.add_argument("--api-key", help="the simulator's API key (CALLFLOW_API_KEY)")
    network.add_argument("--api-secret", help="the simulator's API secret (CALLFLOW_API_SECRET)")
    add_chaos_options(network)
    provider = parser.add_argument_group(
        "the provider", "the credentials are made up for the run, unless --against: then "
                        "those of that simulator (or CALLFLOW_* variables)")
    add_platform_options(provider, default=os.environ.get("CALLFLOW_PLATFORM") or "bluevia",
                         from_env=True)
    output = parser.add_argument_group("output")
    output.add_argument(
        "--json", action="store_true", help="print the transcript as JSON",
    )
    output.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="also show the notifications in the transcript, and the app's log lines on "
             "stderr (-vv: debug)",
    )
    add_log_format_option(output)
    add_log_level(output, default="warning", short=False)
    output.add_argument(
        "--timeout", type=float, metavar="S",
        help="give up after S real seconds (default: wait for the call to end)",
    )
    output.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio",
        help="the event loop to run on (default: asyncio)",
    )
    parser.set_defaults(run=run_call, steps=[])


# -- the caller's script ------------------------------------------------------------------------


def read_script(path: str | Path) -> list[str]:
    """The steps of a script file: one per line, blank lines skipped. A ``#`` that starts a
    word starts a comment; inside one (``press:1#``) it is a key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the script {path}: {exc.strerror or exc}") from exc
    steps: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        step = _COMMENT.sub("", line).strip()
        if step:
            _check_step(step, f"{path}, line {number}")
            steps.append(step)
    return steps


_COMMENT = re.compile(r"(^|\s)#.*$")


def _check_step(step: str, where: str) -> None:
    try:
        parse_step(step)
    except Exception as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _script(items: Sequence[tuple[str, str]]) -> list[str]:
    steps: list[str] = []
    for kind, value in items:
        if kind == "script":
            steps += read_script(value)
            continue
        step = (f"press-next:{value}" if kind == "press" else f"say-next:{value}" if kind == "say"
                else value)
        _check_step(step, f"--{kind} {value!r}")
        steps.append(step)
    return steps


# -- running --------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Plan:
    app: App | None
    serve_app: bool
    outbound: bool
    caller: str
    to: str
    flow: str | None
    steps: list[str]
    phones: list[tuple[str, str | dict[str, Any]]]
    machine_detection: MachineDetection | None = None


def _plan(args: argparse.Namespace) -> _Plan:
    steps = _script(args.steps)
    phones = [phone_option(text) for text in args.phone]
    app = load_app(args.file) if args.file else None
    serve_app = app is not None and args.serve_app
    if args.platform_url is None:
        if app is None:
            raise ConfigurationError(
                "nothing to call: give a flows FILE, or --against URL to call into a running "
                "simulator"
            )
        if not serve_app:
            raise ConfigurationError("--no-app needs --against URL: the simulator the app "
                                     "is served against")
    else:
        if args.real_time or args.speed is not None:
            raise ConfigurationError("--real-time and --speed set the clock of a simulator "
                                     "this command starts; with --against, start "
                                     "'callflow simulator' with them")
        if args.numbers:
            raise ConfigurationError("--numbers configures a simulator this command starts; "
                                     "with --against, give it to 'callflow simulator'")
        if args.duplicate_webhooks or args.reorder_webhooks:
            raise ConfigurationError("--duplicate-webhooks and --reorder-webhooks configure a "
                                     "simulator this command starts; with --against, give "
                                     "them to 'callflow simulator'")
    outbound = bool(args.outbound or args.flow)
    caller = _e164(args.caller, "--from") if args.caller else None
    to = _e164(args.to, "--to") if args.to else None
    if outbound:
        if not serve_app or app is None:
            raise ConfigurationError("--outbound needs the app: give FILE, without --no-app")
        app.get_flow(args.flow)  # FlowNotFound lists the flows
        caller = caller or app.settings.caller_id or next(iter(app.numbers), SPARE_NUMBER)
        to = to or DEFAULT_CALLER
    else:
        caller = caller or DEFAULT_CALLER
        to = to or _default_to(app)
        if app is not None:
            _check_answered(app, to, args.file)
    if args.machine_detection and not outbound:
        raise ConfigurationError("--machine-detection is for outbound calls: add --outbound "
                                 "or --flow NAME")
    return _Plan(app, serve_app, outbound, caller, to, args.flow, steps, phones,
                 args.machine_detection)


def _default_to(app: App | None) -> str:
    if app is None:
        raise ConfigurationError("--to is needed without a flows FILE: the number to call")
    return next(iter(app.numbers), SPARE_NUMBER)


def _check_answered(app: App, to: str, file: str) -> None:
    if app.flow_for_number(to) is None:
        numbers = ", ".join(app.numbers) or "none"
        raise ConfigurationError(
            f"--to {to} is not a number of {file} (its numbers: {numbers}), and it has no "
            "default flow to answer other numbers"
        )


def run_call(args: argparse.Namespace) -> int:
    if args.platform not in PLATFORMS:  # from CALLFLOW_PLATFORM: argparse checks no default
        raise ConfigurationError(f"unknown platform {args.platform!r} (CALLFLOW_PLATFORM); "
                                 f"choose one of: {', '.join(PLATFORMS)}")
    verbose = {0: args.log_level, 1: "info"}.get(args.verbose, "debug")
    setup_logging(min(args.log_level, verbose, key=LOG_LEVELS.index), args.log_format)
    plan = _plan(args)
    clock = clock_from_args(args)
    base = plan.app.settings if plan.app is not None else None
    api_key = args.api_key or (base.api_key if base else None) or "key"
    api_secret = args.api_secret or (base.api_secret if base else None) or "secret"
    if args.platform_url:
        args.platform_url = _check_url("simulator URL", args.platform_url)

    async def main() -> tuple[Transcript, str | None]:
        async with AsyncExitStack() as stack:
            sim_url = args.platform_url
            provider = _provider_settings(args)
            if sim_url is None:
                sim = Simulator(clock=clock, api_key=api_key, api_secret=api_secret,
                                config=args.numbers, platform=args.platform,
                                twilio_account_sid=args.twilio_account_sid,
                                twilio_auth_token=args.twilio_auth_token,
                                chaos=chaos_from_args(args))
                provider = sim.app_settings()  # throwaway credentials, for this run only
                if plan.app is not None:  # the account's numbers (Telnyx assigns them all
                    for number in _numbers_used(plan.app, plan):  # to the app's connection)
                        sim.add_account_number(number)
                sim_url = await stack.enter_async_context(
                    serving(sim, Listener.bind("127.0.0.1", 0), graceful_timeout=1.0)
                )
                sim.base_url = sim_url
            app = plan.app
            if plan.serve_app and app is not None:
                listener = Listener.bind("127.0.0.1", 0)
                assert base is not None
                # The app speaks what the simulator speaks, with its credentials.
                credentials = {"api_key": api_key, "api_secret": api_secret, **provider}
                app.configure(dataclasses.replace(
                    base, public_url=listener.url, platform_url=sim_url, **credentials,
                ))
                await stack.enter_async_context(serving(app, listener, graceful_timeout=1.0))
            client = await stack.enter_async_context(
                SimulatorClient(sim_url, api_key=api_key, api_secret=api_secret)
            )
            for number, phone in plan.phones:
                await client.set_phone(number, phone)
            if plan.serve_app and app is not None:
                if args.platform_url is not None:
                    # A shared simulator: give the numbers back to whoever had them.
                    await _remember_numbers(app, client, plan, stack)
                await _point_numbers(app, client, plan)
            call_id, problem = await _place(app, client, plan)
            with anyio.fail_after(args.timeout) if args.timeout else nullcontext():
                transcript = await client.wait_ended(call_id)
            if plan.serve_app and app is not None:
                with anyio.move_on_after(FLOW_WAIT):
                    await app.wait_ended(call_id)
            return transcript, problem

    from ._dial import watching_flow_errors

    try:
        with watching_flow_errors() as flow_errors:
            transcript, problem = run_async(main, args.backend)
    except TimeoutError:
        raise ConfigurationError(f"the call did not end within --timeout {args.timeout:g}s"
                                 ) from None
    # The app in this process said so when its flow raised (not known with --no-app).
    error = flow_errors.errors.get(transcript.call_id)
    if args.json:
        print(json.dumps({**transcript.to_dict(), "error": error}, indent=2,
                         ensure_ascii=False), flush=True)
    else:
        notes = [] if args.platform_url else [clock_name(clock)]
        if args.platform != "bluevia":
            notes.append(args.platform)
        clock_note = f" ({', '.join(notes)})" if notes else ""
        _show(transcript, plan, clock_note, args.verbose > 0, problem)
        if error is not None:
            print(f"the flow raised: {error} (the app's log on stderr has the traceback)",
                  flush=True)
    if problem is not None or error is not None:
        return EXIT_NOT_ANSWERED
    if transcript.texts("error"):
        return EXIT_NOT_ANSWERED
    return EXIT_OK


def _provider_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The platform and the credentials given on the command line (--against)."""
    settings: dict[str, Any] = {"platform": args.platform}
    for name in ("twilio_account_sid", "twilio_auth_token", "telnyx_api_key",
                 "telnyx_public_key", "telnyx_connection_id"):
        if getattr(args, name, None):
            settings[name] = getattr(args, name)
    return settings


def _extra_number(app: App, plan: _Plan) -> str | None:
    """The number a default flow answers, or an outbound call's caller id, when it is not
    one of the app's: it must be an account number pointing at the app too."""
    number = plan.caller if plan.outbound else plan.to
    return None if number in app.numbers else number


def _numbers_used(app: App, plan: _Plan) -> list[str]:
    extra = _extra_number(app, plan)
    return [*app.numbers, *([extra] if extra else [])]


async def _remember_numbers(app: App, client: SimulatorClient, plan: _Plan,
                            stack: AsyncExitStack) -> None:
    for number in _numbers_used(app, plan):
        before = await client.number(number)
        if before is not None and before.get("voiceCallbackUrl"):
            stack.push_async_callback(
                client.configure_number, number, before["voiceCallbackUrl"],
                before.get("voiceFallbackUrl"),
            )


async def _point_numbers(app: App, client: SimulatorClient, plan: _Plan) -> None:
    """Point the app's numbers at it through the REST API, as ``callflow serve`` does."""
    try:
        await app.configure_numbers()
    except PlatformError as exc:
        raise PlatformError(_platform_hint(app, f"cannot configure the numbers: {exc}",
                                           exc.status, configuring=False, body=exc.body),
                            status=exc.status, body=exc.body) from exc
    extra = _extra_number(app, plan)
    if extra is None:
        return
    if app.settings.platform == "bluevia":
        await client.configure_number(extra, app.callback_url, app.fallback_url)
    else:  # through the provider's own API, which also sets what only it has (StatusCallback)
        await app.platform.configure_number(app.http, extra, callback_url=app.callback_url,
                                            fallback_url=app.fallback_url)


async def _place(app: App | None, client: SimulatorClient, plan: _Plan
                 ) -> tuple[str, str | None]:
    """Place the call; its id, and why it was not answered (outbound) or None."""
    if not plan.outbound:
        return await client.place_call(plan.caller, plan.to, script=plan.steps), None
    assert app is not None
    if not any(number == plan.to for number, _ in plan.phones):
        await client.set_phone(plan.to, {"behaviour": "answer", "after": 1.0,
                                         "script": plan.steps})
    try:
        result = await app.call(plan.to, flow=plan.flow, caller_id=plan.caller,
                                machine_detection=plan.machine_detection)
    except PlatformError as exc:
        raise PlatformError(_platform_hint(app, f"cannot place the call: {exc}", exc.status,
                                           configuring=False, body=exc.body),
                            status=exc.status, body=exc.body) from exc
    if result.answered:
        return result.call_id, None
    status = result.status.replace("_", " ")
    reason = f" ({result.reason})" if result.reason and result.reason != status else ""
    return result.call_id, f"{status}{reason}"


def _show(transcript: Transcript, plan: _Plan, clock_note: str, verbose: bool,
          problem: str | None) -> None:
    app = plan.app
    flow = ""
    if app is not None:
        spec = app.get_flow(plan.flow) if plan.outbound else app.flow_for_number(plan.to)
        flow = f", flow {spec.name}" if spec is not None else ""
    direction = "outbound" if plan.outbound else "inbound"
    out = sys.stdout
    out.write(f"{direction} call {plan.caller} → {plan.to}{flow}{clock_note}\n")
    rendered = transcript.render(notifications=verbose)
    if rendered:
        out.write(rendered + "\n")
    duration = transcript.duration or 0.0
    if problem is not None:
        out.write(f"not answered: {problem}\n")
    else:
        out.write(f"call ended after {duration:.1f}s\n")
    errors = transcript.texts("error")
    if errors:
        out.write(f"{len(errors)} error{'s' if len(errors) != 1 else ''} reaching the app "
                  "(see the ⚠ lines; -v shows the notifications)\n")
    out.flush()
