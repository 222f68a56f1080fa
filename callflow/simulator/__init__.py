"""A BlueVia Voice platform simulator with simulated telephones.

    async with Simulator() as sim:
        sim.add_account_number("+34900000001", callback_url="http://127.0.0.1:8000/voice")
        call = await sim.place_inbound_call("+34600000001", "+34900000001", script=["press:1"])
        print(await call.wait_ended())

From another process, drive a running simulator (`callflow simulator`) over its `/simulator`
HTTP extension with `SimulatorClient`. See docs/reference/simulator.md.
"""

from ._client import SimulatorClient
from ._clock import Clock, ClockMode, Signal
from ._engine import Leg, SimCall
from ._errors import ApiError, ConfigError, SimulatorError, WireError
from ._live import LiveCaller, LiveEvent, LivePhone, Ring
from ._load import LatencyStats, LoadGenerator, LoadResult
from ._network import (
    DEFAULT_PHONE,
    HangUp,
    Machine,
    NetworkConfig,
    NumberConfig,
    Outcome,
    Phone,
    Press,
    Silence,
    Step,
    Talk,
    Utter,
    WaitFor,
    load_config,
    parse_config,
    parse_script,
    parse_step,
)
from ._serving import serve_asgi
from ._simulator import PLATFORMS, Chaos, NotificationOutcome, Simulator, serve_simulator
from ._telnyx import TelnyxFrontEnd, TelnyxWebhook
from ._transcript import EntryKind, Transcript, TranscriptEntry
from ._twilio import TwilioFrontEnd
from ._web import WebPhone
from ._wire import parse_commands

__all__ = (
    "ApiError",
    "Chaos",
    "Clock",
    "ClockMode",
    "ConfigError",
    "DEFAULT_PHONE",
    "EntryKind",
    "HangUp",
    "LatencyStats",
    "Leg",
    "LiveCaller",
    "LiveEvent",
    "LivePhone",
    "LoadGenerator",
    "LoadResult",
    "NetworkConfig",
    "NotificationOutcome",
    "NumberConfig",
    "Outcome",
    "Machine",
    "PLATFORMS",
    "Phone",
    "Press",
    "Ring",
    "Signal",
    "Silence",
    "SimCall",
    "Simulator",
    "SimulatorClient",
    "SimulatorError",
    "Step",
    "Talk",
    "TelnyxFrontEnd",
    "TelnyxWebhook",
    "Transcript",
    "TranscriptEntry",
    "TwilioFrontEnd",
    "Utter",
    "WaitFor",
    "WebPhone",
    "WireError",
    "load_config",
    "parse_commands",
    "parse_config",
    "parse_script",
    "parse_step",
    "serve_asgi",
    "serve_simulator",
)
