"""Exceptions raised by callflow.

The tree::

    CallflowError
    ├── CallEnded              the call is over (the caller hung up, or the flow did)
    ├── ConfigurationError     the app or a command line is set up wrongly
    │   ├── FlowNotFound       no flow is registered under that name or number
    │   └── SchemaTooNew       the store was written by a newer callflow
    ├── NotificationError      a webhook the app cannot accept (bad JSON, missing field, forged)
    ├── FlowError              a flow misused the API (e.g. queued too many commands)
    │   └── NonDeterminismError   a replayed flow no longer matches the call's history
    ├── PlatformError          the platform's REST API refused or failed a request
    │   └── OutboundCallError  an outbound call could not be placed
    ├── StepError              a call.step failed with an exception replay cannot rebuild
    ├── StoreError             the call store failed a request
    │   ├── StoreUnavailable   it cannot be reached, or did not answer in time
    │   ├── Fenced             another worker took the call over (this copy is stale)
    │   └── HistoryError       a call's history cannot be read
    └── UnsupportedFeature     the platform cannot do what the flow asked (a verb or an option)

Expected outcomes (a busy line, a gather that timed out) are values on results,
never exceptions.
"""

from __future__ import annotations

__all__ = (
    "CallEnded",
    "CallflowError",
    "ConfigurationError",
    "FlowError",
    "FlowNotFound",
    "Fenced",
    "HistoryError",
    "NonDeterminismError",
    "NotificationError",
    "OutboundCallError",
    "PlatformError",
    "SchemaTooNew",
    "StepError",
    "StoreError",
    "StoreUnavailable",
    "UnsupportedFeature",
)


class CallflowError(Exception):
    """The root of every exception callflow raises."""


class CallEnded(CallflowError):
    """The call is over: raised from whatever the flow awaits, and from every later verb."""

    def __init__(self, call_id: str, by: str = "caller") -> None:
        super().__init__(f"call {call_id} ended (hung up by {by})")
        self.call_id = call_id
        self.by = by


class ConfigurationError(CallflowError):
    """The app, a flows file or a command line is set up wrongly."""


class FlowNotFound(ConfigurationError):
    """No flow is registered under the name or number asked for."""


class NotificationError(CallflowError):
    """A webhook notification the app cannot accept.

    ``status`` is the HTTP status the app answers with and ``code`` a short
    machine-readable reason (``malformed_json``, ``missing_field``, ...).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class FlowError(CallflowError):
    """A flow misused the call API."""


class PlatformError(CallflowError):
    """The platform's REST API refused or failed a request.

    ``status`` is the HTTP status (None when the platform was not reached), and
    ``gone`` is true when the platform said the call no longer exists, so there
    is nothing to retry.
    """

    def __init__(self, message: str, *, status: int | None = None, body: str = "",
                 gone: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.gone = gone


class OutboundCallError(PlatformError):
    """An outbound call could not be placed."""


class UnsupportedFeature(CallflowError):
    """The platform the app runs on cannot do what the flow asked.

    Raised from the verb that asked for it (so the flow can catch it and do
    without), naming the verb, the option when it is one, and the platform.
    """

    def __init__(self, verb: str, platform: str, *, option: str | None = None,
                 hint: str = "") -> None:
        what = f"{verb}({option}=...)" if option else f"{verb}()"
        message = f"{platform} does not support {what}"
        super().__init__(f"{message}; {hint}" if hint else message)
        self.verb = verb
        self.platform = platform
        self.option = option


class NonDeterminismError(FlowError):
    """Replaying a flow asked for something else than its history holds at that point.

    The flow's code changed while the call was live, or it branches on data that was
    not recorded with ``call.step()`` (the clock, a random number, a database read).
    """


class StepError(CallflowError):
    """A ``call.step`` failed with an exception that replay cannot re-create as it was."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name


class StoreError(CallflowError):
    """The call store failed a request."""


class StoreUnavailable(StoreError):
    """The call store cannot be reached, or did not answer in time."""


class Fenced(StoreError):
    """Another worker took the call's lease: this worker's copy of the call is stale."""


class HistoryError(StoreError):
    """A call's history cannot be read (written by something else, or damaged)."""


class SchemaTooNew(ConfigurationError):
    """The store was written by a newer callflow, whose layout this one does not know."""
