"""``callflow simulator``: the platform simulator and its telephones, as a server process.

Apps reach it as their platform (``callflow serve`` points at http://127.0.0.1:8080 by
default); calls are placed into it from outside with ``callflow call --against URL`` or the
simulator's ``/simulator`` HTTP extension. ``--platform twilio`` (or ``telnyx``) makes it
speak that provider's wire format instead of BlueVia's.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import anyio

from .. import __version__
from .._exceptions import ConfigurationError
from .._server import Listener, serve_until_signal
from ..simulator import Chaos, Clock, ConfigError, Phone, Simulator
from ._main import (
    EXIT_OK,
    PLATFORMS,
    _port,
    add_log_format_option,
    add_log_level,
    run_async,
    setup_logging,
)

__all__ = (
    "add_chaos_options",
    "add_clock_options",
    "add_parser",
    "chaos_from_args",
    "clock_from_args",
    "clock_name",
    "phone_option",
    "settings_options",
)

DEFAULT_PORT = 8080  # Settings.platform_url's default: serve and simulator meet with no options


def phone_option(text: str) -> tuple[str, str | dict[str, Any]]:
    """``NUMBER=BEHAVIOUR[,KEY=VALUE...]`` → (number, the config file's form of a phone).

    e.g. ``+34910000001=busy``, ``+34910000001=answer,after=2,press=1#,hang_up_after=10``
    or ``+34910000001=answer,script=wait:hello;press:1``.
    """
    number, sep, spec = text.partition("=")
    if not sep or not number.strip() or not spec.strip():
        raise ConfigurationError(
            f"--phone {text!r}: use NUMBER=BEHAVIOUR, e.g. +34910000001=busy"
        )
    behaviour, *settings = (part.strip() for part in spec.split(","))
    phone: dict[str, Any] = {"behaviour": behaviour}
    for setting in settings:
        key, sep, value = setting.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ConfigurationError(f"--phone {text!r}: {setting!r} is not KEY=VALUE")
        if key == "beep":  # an answering machine's (machine,greeting=8,beep=no)
            phone[key] = value.strip().lower() in ("1", "true", "yes", "on")
        elif key in ("after", "hang_up_after", "greeting", "record"):
            try:
                phone[key] = float(value)
            except ValueError:
                raise ConfigurationError(
                    f"--phone {text!r}: {key} must be a number of seconds"
                ) from None
        elif key == "script":
            phone[key] = [step for step in value.split(";") if step.strip()]
        else:
            phone[key] = value
    try:
        Phone.from_config(phone)
    except ConfigError as exc:
        raise ConfigurationError(f"--phone {text!r}: {exc}") from None
    result: str | dict[str, Any] = behaviour if len(phone) == 1 else phone
    return number.strip(), result


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the speed must be more than 0")
    return value


def add_clock_options(parser: argparse.ArgumentParser) -> None:
    """``--real-time`` / ``--speed N``; virtual time (no waiting at all) by default."""
    group = parser.add_argument_group("time").add_mutually_exclusive_group()
    group.add_argument(
        "--real-time", action="store_true",
        help="run the simulated network at wall-clock speed (default: virtual time, with no "
             "waiting: a 30 s ring is over at once)",
    )
    group.add_argument(
        "--speed", type=_speed, metavar="N",
        help="run the simulated network N times faster than wall-clock time",
    )


def clock_from_args(args: argparse.Namespace) -> Clock:
    if args.real_time:
        return Clock.real()
    if args.speed is not None:
        return Clock.scaled(args.speed)
    return Clock.virtual()


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a probability is from 0 to 1")
    return value


def add_chaos_options(group: Any) -> None:
    """``--duplicate-webhooks P`` / ``--reorder-webhooks P``: what real providers do."""
    group.add_argument(
        "--duplicate-webhooks", type=_probability, default=0.0, metavar="P",
        help="deliver each webhook twice with probability P (twilio: any webhook; the "
             "duplicate's answer is ignored)",
    )
    group.add_argument(
        "--reorder-webhooks", type=_probability, default=0.0, metavar="P",
        help="hold an asynchronous webhook (twilio: status callbacks) back behind the "
             "call's next one with probability P",
    )


def chaos_from_args(args: argparse.Namespace) -> Chaos | None:
    if not (args.duplicate_webhooks or args.reorder_webhooks):
        return None
    return Chaos(duplicate=args.duplicate_webhooks, reorder=args.reorder_webhooks)


def settings_options(settings: dict[str, str]) -> str:
    """Command-line options giving an app these ``Settings`` fields, e.g. credentials."""
    return " ".join(f"--{name.replace('_', '-')} {value}" for name, value in settings.items()
                    if name not in ("api_key", "api_secret") or value not in ("key", "secret"))


def clock_name(clock: Clock) -> str:
    if clock.mode == "scaled":
        return f"{clock.speed:g}x time"
    return "real time" if clock.mode == "real" else "virtual time"


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulator",
        help="run the platform simulator and its telephones as a server",
        description="Serve a simulated voice platform and telephone network until Ctrl+C\n"
                    "(SIGINT) or SIGTERM. Apps use it as their platform; calls are placed\n"
                    "into it from outside with 'callflow call --against URL' or its\n"
                    "/simulator HTTP extension. It speaks one provider's wire format:\n"
                    "  bluevia (default)  REST API under URL/comms/v1, JSON notifications\n"
                    "  twilio             REST API under URL/2010-04-01, TwiML webhooks\n"
                    "  telnyx             REST API under URL/v2, Call Control webhooks\n"
                    "                     signed with Ed25519 (key made up and printed)\n"
                    "The banner prints the credentials and the options an app needs.\n"
                    "Prints its URL on the first line, then one log line per call.",
        epilog="examples:\n"
               "  callflow simulator\n"
               "  callflow serve examples/ivr.py          # in another terminal\n"
               "  callflow call --against http://127.0.0.1:8080 --to +34900000001 --press 1\n"
               "\n"
               "  callflow simulator --port 0 --numbers phones.toml --phone +34910000001=busy\n"
               "  callflow simulator --platform twilio --twilio-account-sid AC123 \\\n"
               "      --twilio-auth-token t0ken --duplicate-webhooks 0.2\n"
               "  callflow simulator --platform telnyx\n"
               "\n"
               "phones.toml:\n"
               "  [phones]\n"
               "  \"+34910000001\" = \"busy\"   # answer | busy | no-answer | unreachable | fail\n"
               "  \"+34910000002\" = { behaviour = \"answer\", after = 2, press = \"1\" }",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT,
        help=f"port to listen on (default: {DEFAULT_PORT}, where apps look by default; "
             "0 picks a free port, printed on start)",
    )
    parser.add_argument(
        "--numbers", metavar="FILE",
        help="a TOML or JSON file of [phones] (how dialled numbers behave) and [numbers] "
             "(account numbers and their callback URLs)",
    )
    parser.add_argument(
        "--phone", action="append", default=[], metavar="NUMBER=BEHAVIOUR",
        help="how a dialled number behaves, e.g. +34910000001=busy or "
             "+34910000001=answer,after=2,press=1 (repeatable; over --numbers)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("CALLFLOW_API_KEY") or "key",
        help="the API key apps must use (default: CALLFLOW_API_KEY, else 'key', as apps)",
    )
    parser.add_argument(
        "--api-secret", default=os.environ.get("CALLFLOW_API_SECRET") or "secret",
        help="the API secret apps must use (default: CALLFLOW_API_SECRET, else 'secret')",
    )
    provider = parser.add_argument_group("provider")
    provider.add_argument(
        "--platform", choices=PLATFORMS,
        default=os.environ.get("CALLFLOW_PLATFORM") or "bluevia",
        help="the provider whose wire format apps see (default: CALLFLOW_PLATFORM, else "
             "bluevia)",
    )
    provider.add_argument(
        "--twilio-account-sid", metavar="SID",
        default=os.environ.get("CALLFLOW_TWILIO_ACCOUNT_SID"),
        help="twilio: the account SID apps must use (default: CALLFLOW_TWILIO_ACCOUNT_SID, "
             "else made up and printed)",
    )
    provider.add_argument(
        "--twilio-auth-token", metavar="TOKEN",
        default=os.environ.get("CALLFLOW_TWILIO_AUTH_TOKEN"),
        help="twilio: the auth token (API password and webhook signing key; default: "
             "CALLFLOW_TWILIO_AUTH_TOKEN, else made up and printed)",
    )
    add_chaos_options(provider)
    add_clock_options(parser)
    parser.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio",
        help="the event loop to run on (default: asyncio)",
    )
    add_log_level(parser, default="info")
    add_log_format_option(parser)
    parser.set_defaults(run=run_simulator)


def run_simulator(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    if args.platform not in PLATFORMS:  # from CALLFLOW_PLATFORM: argparse checks no default
        raise ConfigurationError(f"unknown platform {args.platform!r} (CALLFLOW_PLATFORM); "
                                 f"choose one of: {', '.join(PLATFORMS)}")
    clock = clock_from_args(args)
    sim = Simulator(clock=clock, api_key=args.api_key, api_secret=args.api_secret,
                    platform=args.platform, twilio_account_sid=args.twilio_account_sid,
                    twilio_auth_token=args.twilio_auth_token, chaos=chaos_from_args(args))
    if args.numbers:
        sim.load(args.numbers)
    for text in args.phone:
        number, spec = phone_option(text)
        sim.add_phone(number, Phone.from_config(spec))
    listener = Listener.bind(args.host, args.port)
    sim.base_url = listener.url

    async def ready(url: str) -> None:
        _banner(sim, url, clock)
        await anyio.sleep_forever()

    async def run() -> None:
        await serve_until_signal(sim, listener, ready, graceful_timeout=1.0)

    run_async(run, args.backend)
    print("stopped", flush=True)
    return EXIT_OK


def _banner(sim: Simulator, url: str, clock: Clock) -> None:
    lines = [f"callflow {__version__} simulator on {url} ({clock_name(clock)}"
             f"{'' if sim.platform == 'bluevia' else ', ' + sim.platform})"]
    if sim.platform == "twilio":
        settings = sim.app_settings()
        lines.append(f"Twilio REST API: {url}/2010-04-01 (account "
                     f"{settings['twilio_account_sid']}, auth token "
                     f"{settings['twilio_auth_token']})")
    elif sim.platform == "telnyx":
        settings = sim.app_settings()
        lines.append(f"Telnyx REST API: {url}/v2 (API key {settings['telnyx_api_key']}, "
                     f"connection {settings['telnyx_connection_id']})")
    # The simulator's own API (BlueVia's, and the /simulator extension) is there whatever
    # the platform: `callflow call --against` places calls through it.
    lines.append(f"{'BlueVia ' if sim.platform != 'bluevia' else ''}REST API: {url}/comms/v1 "
                 f"(API key {sim.api_key!r}, secret {sim.api_secret!r}; also the /simulator "
                 "extension's)")
    for number, phone in sorted(sim.phones.items()):
        lines.append(f"  phone {number}: {phone.outcome}")
    for number, config in sorted(sim.account_numbers.items()):
        lines.append(f"  number {number} → {config.callback_url}")
    platform = "" if url == "http://127.0.0.1:8080" else f" --platform-url {url}"
    if sim.platform != "bluevia":
        platform = f" --platform-url {url} {settings_options(sim.app_settings())}"
    auth = f"{sim.api_key}:{sim.api_secret}"
    lines += [
        "serve an app on it (its numbers are pointed at it on start):",
        f"  callflow serve examples/ivr.py{platform}",
        "place a call into it (and print the transcript):",
        f"  callflow call --against {url} --to +34900000001 --press 1",
        f"  curl -u {auth} -H 'content-type: application/json' \\",
        "       -d '{\"to\": \"+34900000001\", \"script\": [\"press-next:1\"]}' "
        f"{url}/simulator/calls",
        f"  curl -u {auth} '{url}/simulator/calls/CALL_ID/transcript?wait=true'",
        "ready: press Ctrl+C to stop",
    ]
    for line in lines:
        print(line, flush=True)
