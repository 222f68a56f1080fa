"""callflow: telephone call flows as plain Python coroutines.

    app = callflow.App()

    @app.flow(number="+34900000001")
    async def reception(call: callflow.Call) -> None:
        await call.say("Welcome to Acme.")
"""

from . import _logsafe
from ._app import App, FlowSpec, Lifespan, OutboundCallResult, flow
from ._call import Call, Direction
from ._commands import (
    Command,
    Conference,
    ConferenceOptions,
    Dial,
    Gather,
    Hangup,
    Pause,
    Play,
    Prompt,
    Record,
    Resume,
    Say,
    SendDigits,
    SpeechInput,
    Voice,
)
from ._events import Event, EventKind
from ._exceptions import (
    CallEnded,
    CallflowError,
    ConfigurationError,
    Fenced,
    FlowError,
    FlowNotFound,
    HistoryError,
    NonDeterminismError,
    NotificationError,
    OutboundCallError,
    PlatformError,
    SchemaTooNew,
    StepError,
    StoreError,
    StoreUnavailable,
    UnsupportedFeature,
)
from ._hotkeys import HotkeyHandler, HotkeyPressed, Hotkeys
from ._records import CallRecord, HungUpBy
from ._results import DialResult, DialStatus, GatherResult, RecordResult
from ._settings import Settings
from ._ssml import EmphasisLevel, ProsodyPitch, ProsodyRate, ProsodyVolume, Speech

__version__ = "0.1.0"

__all__ = (
    "App",
    "Call",
    "CallEnded",
    "CallRecord",
    "CallflowError",
    "Command",
    "Conference",
    "ConferenceOptions",
    "ConfigurationError",
    "Dial",
    "DialResult",
    "DialStatus",
    "Direction",
    "EmphasisLevel",
    "Event",
    "EventKind",
    "Fenced",
    "FlowError",
    "FlowNotFound",
    "FlowSpec",
    "Gather",
    "GatherResult",
    "Hangup",
    "HistoryError",
    "HotkeyHandler",
    "HotkeyPressed",
    "Hotkeys",
    "HungUpBy",
    "Lifespan",
    "NonDeterminismError",
    "NotificationError",
    "OutboundCallError",
    "OutboundCallResult",
    "Pause",
    "PlatformError",
    "Play",
    "Prompt",
    "ProsodyPitch",
    "ProsodyRate",
    "ProsodyVolume",
    "Record",
    "RecordResult",
    "Resume",
    "Say",
    "SchemaTooNew",
    "SendDigits",
    "Settings",
    "Speech",
    "SpeechInput",
    "StepError",
    "StoreError",
    "StoreUnavailable",
    "UnsupportedFeature",
    "Voice",
    "__version__",
    "flow",
)

# Outside text (call ids, numbers) reaches callflow's logs: escape what could forge a line.
_logsafe.install()
