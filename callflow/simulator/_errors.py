"""Exceptions raised by the simulator.

Its own tree, under callflow's root (so the command line shows any of them as one line)::

    callflow.CallflowError
    └── SimulatorError
        ├── ApiError           an error response of the REST API (status + BlueVia error body)
        │   └── WireError      a request or response body that does not follow the protocol
        └── ConfigError        a bad phone/number configuration or script step
"""

from __future__ import annotations

from typing import Any

from .._exceptions import CallflowError

__all__ = ("ApiError", "ConfigError", "SimulatorError", "WireError")


class SimulatorError(CallflowError):
    """Root of the simulator's exceptions."""


class ApiError(SimulatorError):
    """An error the REST API reports as `{"ClientException": {...}}`."""

    def __init__(
        self,
        status: int,
        category: str,
        exception_id: int,
        text: str,
        variables: tuple[str, ...] = (),
    ) -> None:
        super().__init__(text.replace("%1", variables[0]) if variables else text)
        self.status = status
        self.category = category
        self.exception_id = exception_id
        self.text = text
        self.variables = variables

    def body(self) -> dict[str, Any]:
        """The JSON error body of the reference's "Errors" section."""
        kind = "ServerException" if self.status >= 500 else "ClientException"
        return {
            kind: {
                "exceptionCategory": self.category,
                "exceptionId": self.exception_id,
                "text": self.text,
                "variables": list(self.variables),
            }
        }


class WireError(ApiError):
    """An invalid field (SVC/1) or command list (SVC/2)."""

    def __init__(self, field: str, *, commands: bool = False, detail: str = "") -> None:
        if commands:
            super().__init__(400, "SVC", 2, "Invalid command list: %1", (field,))
        else:
            super().__init__(400, "SVC", 1, "Invalid input value for %1", (field,))
        self.field = field
        self.detail = detail


class ConfigError(SimulatorError):
    """A phone behaviour, script step or config file the simulator cannot use."""
