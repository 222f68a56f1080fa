"""callflow: telephone call flows as plain Python coroutines.

    app = callflow.App()

    @app.flow(number="+34900000001")
    async def reception(call: callflow.Call) -> None:
        await call.say("Welcome to Acme.")
"""

from . import _logsafe
from ._app import App, FlowSpec, OutboundCallResult, flow
from ._call import Call, Direction
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
from ._machine import AnsweredBy, MachineDetection
from ._recording import Recording
from ._results import (
    DialResult,
    DialStatus,
    GatherResult,
    QueueResult,
    QueueStatus,
    RecordResult,
)
from ._settings import Settings

__version__ = "0.1.0"

__all__ = (
    "AnsweredBy",
    "App",
    "Call",
    "CallEnded",
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
    "MachineDetection",
    "NonDeterminismError",
    "NotificationError",
    "OutboundCallError",
    "OutboundCallResult",
    "Pause",
    "PlatformError",
    "Play",
    "Prompt",
    "QueueResult",
    "QueueStatus",
    "Record",
    "RecordResult",
    "Recording",
    "Resume",
    "Say",
    "SchemaTooNew",
    "Settings",
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
