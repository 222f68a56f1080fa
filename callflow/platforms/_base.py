"""The interface every platform adapter implements.

Adapters are sans-I/O, like flask's ``sansio`` package: they parse a webhook
into an ``Event`` and render commands into a response body or into REST
requests, and never touch a socket.  The app does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._commands import Command
from .._events import Event

__all__ = ("ApiRequest", "Platform", "UrlFor")

UrlFor = Callable[[int], str]
"""Builds the app's action URL for a step (secret included)."""


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """A REST request to the platform, relative to its base URL."""

    method: str
    path: str
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


class Platform(Protocol):
    """A telephony provider's wire format."""

    name: str

    def parse_notification(self, body: bytes, query: Mapping[str, str]) -> Event:
        """Turn a webhook body into an event; raise NotificationError when it is bad."""

    def render_commands(
        self, commands: Sequence[Command], *, url_for: UrlFor, first: bool
    ) -> Any:
        """The JSON-able response body (or setcommands body) for these commands.

        ``first`` is true for the first batch a call receives.
        """

    def set_commands_request(self, call_id: str, body: Any) -> ApiRequest:
        """The request that replaces a live call's command queue."""

    def create_call_request(
        self, *, to: str, caller_id: str, callback_url: str, fallback_url: str | None
    ) -> ApiRequest:
        """The request that places an outbound call."""

    def configure_number_request(
        self, number: str, *, callback_url: str, fallback_url: str | None
    ) -> ApiRequest:
        """The request that points a number's inbound calls at the app."""

    def call_id_from_create_response(self, status: int, body: bytes) -> str:
        """The new call's id from the create-call response; raise PlatformError otherwise."""
