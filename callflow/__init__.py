"""callflow: telephone call flows as plain Python coroutines.

    app = callflow.App()

    @app.flow(number="+34900000001")
    async def reception(call: callflow.Call) -> None:
        await call.say("Welcome to Acme.")
"""

from typing import TYPE_CHECKING

from . import _logsafe
from ._commands import (
    Command,
    Conference,
    ConferenceOptions,
    Dequeue,
    Dial,
    Enqueue,
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
    StartRecording,
    StopRecording,
    Transfer,
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
from ._machine import AnsweredBy, MachineDetection
from ._recording import Recording
from ._records import CallRecord, HungUpBy
from ._results import (
    DialResult,
    DialStatus,
    GatherResult,
    QueueResult,
    QueueStatus,
    RecordResult,
)
from ._settings import Settings
from ._ssml import EmphasisLevel, ProsodyPitch, ProsodyRate, ProsodyVolume, Speech

if TYPE_CHECKING:
    from ._app import App, FlowSpec, Lifespan, OutboundCallResult, flow
    from ._call import Call, Direction

__version__ = "0.1.0"

# What pulls in the HTTP client, the platform adapters (and cryptography) and the session
# runtime is imported on first use, so that `import callflow` (and `callflow --help`) stays
# fast: bench/startup.py measures it, tests/test_startup.py keeps it lazy.
_LAZY = {
    "App": "._app", "FlowSpec": "._app", "Lifespan": "._app", "OutboundCallResult": "._app",
    "flow": "._app",
    "Call": "._call", "Direction": "._call",
}

if not TYPE_CHECKING:  # a module __getattr__ seen by mypy would hide misspelt names

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'callflow' has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(module, __name__), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY))

__all__ = (
    "AnsweredBy",
    "App",
    "Call",
    "CallEnded",
    "CallRecord",
    "CallflowError",
    "Command",
    "Conference",
    "ConferenceOptions",
    "ConfigurationError",
    "Dequeue",
    "Dial",
    "DialResult",
    "DialStatus",
    "Direction",
    "EmphasisLevel",
    "Enqueue",
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
    "MachineDetection",
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
    "QueueResult",
    "QueueStatus",
    "Record",
    "RecordResult",
    "Recording",
    "Resume",
    "Say",
    "SchemaTooNew",
    "SendDigits",
    "Settings",
    "Speech",
    "SpeechInput",
    "StartRecording",
    "StepError",
    "StopRecording",
    "StoreError",
    "StoreUnavailable",
    "Transfer",
    "UnsupportedFeature",
    "Voice",
    "__version__",
    "flow",
)

# Outside text (call ids, numbers) reaches callflow's logs: escape what could forge a line.
_logsafe.install()
